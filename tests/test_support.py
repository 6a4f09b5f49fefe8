"""Op support is derived from the lowerings, and the README's table is what the code says."""

from __future__ import annotations

from tools.readme_ops import README, render, section


def test_readme_op_table_matches_the_code() -> None:
    assert section(README.read_text()) == render(), (
        "README.md's op table is stale: run `.venv/bin/python tools/readme_ops.py --write`"
    )
