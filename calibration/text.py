"""Text calibration data: one sample per non-empty line, tokenized with a `tokenizer.json`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import CalibrationDataError, CalibrationSource, Feed, sample_files

logger = logging.getLogger(__name__)

#: Tokenizer outputs a text model can take, with the input names commonly used for each.
ROLES: dict[str, tuple[str, ...]] = {
    "input_ids": ("input_ids", "ids"),
    "attention_mask": ("attention_mask", "input_mask", "mask"),
    "token_type_ids": ("token_type_ids", "segment_ids", "type_ids"),
}


def roles_for_inputs(input_names: Sequence[str]) -> dict[str, str]:
    """Map tokenizer roles to model input names (e.g. ``{"input_ids": "input_ids"}``).

    Every input must match a role by name (see `ROLES`), and `input_ids` must be present.
    """
    mapping: dict[str, str] = {}
    for name in input_names:
        role = next((r for r, aliases in ROLES.items() if name.lower() in aliases), None)
        if role is None or role in mapping:
            raise CalibrationDataError(
                f"model input '{name}' is not a tokenizer output "
                f"(known: {', '.join(a for aliases in ROLES.values() for a in aliases)})",
                "feed this model with .npz samples or an IterableSource instead of text",
            )
        mapping[role] = name
    if "input_ids" not in mapping:
        raise CalibrationDataError(
            f"model inputs {list(input_names)} have no input_ids",
            "feed this model with .npz samples or an IterableSource instead of text",
        )
    return mapping


def _load_tokenizer(path: Path, seq_len: int) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise CalibrationDataError(
            "text calibration data needs the tokenizers library, which is not installed",
            "pip install tokenizers",
        ) from exc
    if not path.is_file():
        raise CalibrationDataError(
            f"tokenizer file '{path}' does not exist", "pass the model's tokenizer.json"
        )
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust binding raises a plain Exception
        raise CalibrationDataError(
            f"tokenizer file '{path}' cannot be loaded: {exc}",
            "pass a Hugging Face tokenizers tokenizer.json",
        ) from exc
    pad = tok.padding or {}
    pad_token = str(pad.get("pad_token", "[PAD]"))
    pad_id = pad.get("pad_id")
    if pad_id is None:
        pad_id = tok.token_to_id(pad_token) or 0
    tok.enable_padding(
        pad_id=int(pad_id),
        pad_type_id=int(pad.get("pad_type_id", 0)),
        pad_token=pad_token,
        length=seq_len,
    )
    tok.enable_truncation(max_length=seq_len)
    return tok


class TextSource(CalibrationSource):
    """One sample per non-empty line of a .txt file (or of every .txt file in a folder).

    Names are ``"<file>:<line>"`` (1-based line number), in file-name then line order.
    Each sample is padded/truncated to `seq_len` tokens and holds int64 [1, seq_len] arrays
    for the roles in `input_names` (role -> model input name; default: all three roles under
    their usual names).
    """

    kind = "text"

    def __init__(
        self,
        path: str | Path,
        tokenizer_json: str | Path,
        seq_len: int,
        input_names: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise CalibrationDataError(
                f"seq_len must be a positive integer, got {seq_len!r}",
                "fix the model's sequence length (e.g. --input-shape input_ids=1,128)",
            )
        self.seq_len = seq_len
        roles = dict(input_names) if input_names is not None else {r: r for r in ROLES}
        unknown = sorted(set(roles) - set(ROLES))
        if unknown or "input_ids" not in roles:
            raise CalibrationDataError(
                f"TextSource input_names must map roles {', '.join(ROLES)} to model inputs "
                f"(input_ids required), got {roles}",
                "e.g. {'input_ids': 'input_ids', 'attention_mask': 'attention_mask'}",
            )
        self.input_names = roles
        self._tokenizer = _load_tokenizer(Path(tokenizer_json), seq_len)
        self._lines = _read_lines(self.path)
        self._by_name = {name: i for i, (name, _) in enumerate(self._lines)}

    def names(self) -> list[str]:
        return [name for name, _ in self._lines]

    def __len__(self) -> int:
        return len(self._lines)

    def load(self, name: str) -> Feed:
        if name not in self._by_name:
            raise CalibrationDataError(
                f"'{name}' is not a sample of text source '{self.path}'",
                "use a name from source.names()",
            )
        encoding = self._tokenizer.encode(self._lines[self._by_name[name]][1])
        values = {
            "input_ids": encoding.ids,
            "attention_mask": encoding.attention_mask,
            "token_type_ids": encoding.type_ids,
        }
        return {
            model_name: np.asarray(values[role], dtype=np.int64).reshape(1, self.seq_len)
            for role, model_name in self.input_names.items()
        }

    def __repr__(self) -> str:
        return f"TextSource('{self.path}', {len(self)} lines, seq_len={self.seq_len})"


def _read_lines(path: Path) -> list[tuple[str, str]]:
    if path.is_dir():
        files = [p for p in sample_files(path) if p.suffix.lower() == ".txt"]
    elif path.is_file():
        files = [path]
    else:
        raise CalibrationDataError(
            f"text calibration path '{path}' does not exist",
            "pass a .txt file or a folder of .txt files, one sample per line",
        )
    lines: list[tuple[str, str]] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CalibrationDataError(
                f"text calibration file '{file}' cannot be read: {exc}", "save it as UTF-8"
            ) from exc
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                lines.append((f"{file.name}:{number}", line))
    if not lines:
        raise CalibrationDataError(
            f"text calibration path '{path}' has no non-empty lines",
            "write one calibration sentence per line",
        )
    logger.debug("read %d calibration lines from %d file(s) in %s", len(lines), len(files), path)
    return lines
