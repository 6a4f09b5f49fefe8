"""Data-aware algorithms as pure functions (arrays and statistics in, arrays and params out),
registered by name in `registry`: range refinement today; weight algorithms (GPTQ, AWQ-style
scaling, mixed precision, LUT) next. Importing this package registers every built-in one.

Imports `edgeq.ir` and `edgeq.quant` only.
"""

from edgeq.algorithms import gptq, grids, refine  # noqa: F401  (registers)
from edgeq.algorithms.registry import (
    ALGORITHMS,
    Algorithm,
    available_algorithms,
    get_algorithm,
    register_algorithm,
)

__all__ = ["ALGORITHMS", "Algorithm", "available_algorithms", "get_algorithm", "register_algorithm"]
