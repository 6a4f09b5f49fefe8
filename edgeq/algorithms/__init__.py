"""Data-aware algorithms as pure functions (arrays and statistics in, arrays and params out),
registered by name in `registry`: range refinement (`refine`), weight grids (`rtn`), GPTQ
(`gptq`, solved layer by layer through `layerwise`), palettization (`lut`), activation-aware
scaling (`awq`) and mixed precision (`mixed_precision`); `data_aware` applies a recipe's weight
algorithms to a plan. Importing this package registers every built-in one.

Imports `edgeq.ir` and `edgeq.quant` only.
"""

from edgeq.algorithms import (  # noqa: F401  (registers)
    bias_correction,
    branch_scales,
    equalize,
    gptq,
    grids,
    lut,
    mixed_precision,
    rare_values,
    refine,
    smoothing,
)
from edgeq.algorithms.registry import (
    ALGORITHMS,
    Algorithm,
    available_algorithms,
    get_algorithm,
    register_algorithm,
)

__all__ = ["ALGORITHMS", "Algorithm", "available_algorithms", "get_algorithm", "register_algorithm"]
