"""The README's op table, generated from the code: for every target, how each common edge op
runs (native, decomposed into ops the runtime has, a float island, or not at all), as
`edgeq.support.op_support` derives it from the exporters' lowerings.

    .venv/bin/python tools/readme_ops.py          # print the table
    .venv/bin/python tools/readme_ops.py --write  # rewrite the marked section of README.md

`tests/test_support.py` fails when the README's section differs from what this prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BEGIN, END = "<!-- ops-table:begin (tools/readme_ops.py) -->", "<!-- ops-table:end -->"
# the ops of the committed exporter-made graphs and real models after `prepare`, plus the common
# edge set of issue #14
OPS = (
    "Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Max", "Min",
    "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Gelu", "Erf",
    "Softmax", "LayerNormalization", "BatchNormalization", "MaxPool", "AveragePool",
    "GlobalAveragePool", "ReduceMean", "ReduceSum", "ReduceL2", "Resize", "Concat", "Split",
    "Slice", "Gather", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Expand",
    "Pad", "Pow", "Cast", "Abs", "Neg", "Sqrt", "Exp", "Equal", "Where", "And", "Not", "LSTM", "GRU",
)  # fmt: skip
MARK = {"native": "native", "decomposed": "decomposed", "float island": "float island"}


def render() -> str:
    from edgeq.support import op_support, refusal
    from edgeq.targets import available_targets

    targets = available_targets()
    tables = {t: op_support(t) for t in targets}
    lines = [BEGIN, "",
             "| op | " + " | ".join(f"`{t}`" for t in targets) + " |",
             "|---|" + "---|" * len(targets)]  # fmt: skip
    for op in OPS:
        cells = []
        for t in targets:
            row = tables[t].get(op)
            cells.append(MARK[row["kind"]] if row else "no")
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines.append("")
    reasons = []
    for t in targets:
        missing = [op for op in OPS if op not in tables[t]]
        if missing:
            reasons.append(
                f"- `{t}` refuses " + "; ".join(f"{op}: {refusal(op, t)}" for op in missing)
            )
    lines += [*reasons, "", END]
    return "\n".join(lines)


def section(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite README.md's section")
    args = parser.parse_args(argv)
    table = render()
    if not args.write:
        print(table)
        return 0
    text = README.read_text()
    README.write_text(text.replace(section(text), table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
