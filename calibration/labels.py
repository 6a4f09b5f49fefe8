"""Labels for evaluation samples: what the task metric compares the model's outputs with.

A data folder may hold a `labels.json` beside its samples (it is not a sample file, so it never
mixes kinds), or a labels file is given explicitly (`--labels FILE`):

* `labels.json`: an object mapping sample file names to labels, e.g.
  `{"line_000.png": "Beautiful is better than ugly.", ...}` (text for CTC models),
  `{"cat_01.jpg": 281, ...}` (class indices), or lists (boxes `[[x0, y0, x1, y1, class], ...]`);
* `labels.tsv` / `labels.txt` given with `--labels`: one `name<TAB>label` per line (text or an
  integer).

Samples without a label make the whole set unlabelled for that run (the metric then compares
with float instead), and the report says how many labels were missing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import CalibrationDataError

LABELS_FILE = "labels.json"


def find_labels(data: Any) -> Path | None:
    """`labels.json` inside a data folder, if there is one."""
    if isinstance(data, str | Path) and Path(data).is_dir():
        path = Path(data) / LABELS_FILE
        return path if path.is_file() else None
    return None


def read_labels(path: str | Path) -> dict[str, Any]:
    """Sample name -> label from a .json object or a name<TAB>label text file."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationDataError(f"labels file '{path}' does not exist",
                                   "pass a labels.json or a name<TAB>label .tsv file")  # fmt: skip
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CalibrationDataError(
            f"labels file '{path}' is not UTF-8 text", "save it as UTF-8"
        ) from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CalibrationDataError(f"labels file '{path}' is not valid JSON: {exc}",
                                       "fix its syntax") from None  # fmt: skip
        if not isinstance(data, dict):
            raise CalibrationDataError(f"labels file '{path}' must hold an object",
                                       'write {"sample.png": label, ...}')  # fmt: skip
        return {str(k): v for k, v in data.items()}
    labels: dict[str, Any] = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition("\t")
        if not sep:
            raise CalibrationDataError(f"labels file '{path}' line {i} has no TAB",
                                       "write one name<TAB>label per line")  # fmt: skip
        labels[name] = int(value) if value.strip().lstrip("-").isdigit() else value
    return labels


def labels_for(names: Sequence[str], labels: dict[str, Any] | None) -> tuple[list[Any] | None, int]:
    """(labels in the order of `names`, or None unless every sample has one; missing count)."""
    if not labels or not names:
        return None, len(names) if labels else 0
    missing = sum(n not in labels for n in names)
    if missing:
        return None, missing
    return [labels[n] for n in names], 0


__all__ = ["LABELS_FILE", "find_labels", "labels_for", "read_labels"]
