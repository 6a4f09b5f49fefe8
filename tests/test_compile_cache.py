"""The persistent compilation cache: where it lives, how it is turned off, and that JAX
really writes and reuses entries there (in subprocesses: JAX's cache is process-global)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeq.compile_cache import default_cache_dir, enable_compilation_cache

CHILD = """
import json, sys
from pathlib import Path
import jax, jax.numpy as jnp
from edgeq.compile_cache import enable_compilation_cache
folder = enable_compilation_cache(Path(sys.argv[1]), min_compile_seconds=0.0)
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + 3.0)
x = jnp.ones((64, 64))
y = float(f(x).sum())
hits = events.count("/jax/compilation_cache/cache_hits")
print(json.dumps({"folder": str(folder), "y": y, "hits": hits}))
"""


def test_default_dir_and_switch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EDGEQ_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "edgeq" / "xla"
    monkeypatch.setenv("EDGEQ_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    for off in ("off", "0", "", "None"):
        monkeypatch.setenv("EDGEQ_CACHE_DIR", off)
        assert default_cache_dir() is None
        assert enable_compilation_cache() is None


def test_unwritable_folder_turns_the_cache_off(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert enable_compilation_cache(blocker / "xla") is None


def test_entries_are_written_and_reused(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "xla")], cwd=root,
                             capture_output=True, text=True, check=True)  # fmt: skip
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if len(runs) == 1:
            entries = sorted(p.name for p in (tmp_path / "xla").iterdir())
            assert entries, "the first run wrote no cache entry"
    assert runs[0]["folder"] == str(tmp_path / "xla")
    assert runs[0]["y"] == runs[1]["y"]
    assert runs[0]["hits"] == 0 and runs[1]["hits"] >= 1  # the second run loaded, not compiled
    assert sorted(p.name for p in (tmp_path / "xla").iterdir()) == entries
