"""Errors users see. Each carries a one-line message that names the problem and the fix."""

from __future__ import annotations


class EdgeqError(Exception):
    """Base class: `str(err)` is a single line: what is wrong, then how to fix it."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}" if fix else problem)


class ModelLoadError(EdgeqError):
    """The file is missing, truncated, not ONNX, or refers to data it must not read."""


class UnsupportedOpError(EdgeqError):
    """A node uses an op (or an attribute value) edgeq cannot run."""


class DynamicShapeError(EdgeqError):
    """A dimension is still symbolic where a fixed shape is required."""


class GraphError(EdgeqError):
    """The graph is malformed: cycles, undefined values, duplicate outputs."""


class InputError(EdgeqError):
    """A user-supplied input (shape spec, value spec, feed) is malformed."""
