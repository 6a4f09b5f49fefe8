"""Data-aware algorithms as pure functions (arrays and statistics in, arrays and params out):
range refinement today; weight algorithms (GPTQ, AWQ-style scaling, mixed precision, LUT) next.

Imports `edgeq.ir` and `edgeq.quant` only.
"""
