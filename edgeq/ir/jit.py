"""`jit`: jax.jit with the compiler settings edgeq's programs want on each backend.

edgeq compiles a few large programs (the calibration step, the per-layer report, range and
weight searches) and runs each on a handful of batches, so on GPUs compile time dominates:
measured on an H100 (PP-OCRv4 rec, 64 samples), XLA's kernel autotuning and Triton GEMM
compilation made `edgeq calibrate` take 37 s instead of 24 s while the plan was the same.
They are switched off per program (never through a global flag); convolutions keep cuDNN's
heuristic algorithm choice and GEMMs cuBLAS. Float32 precision is set explicitly in the ops
themselves (`precision=HIGHEST`), not here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax

# XLA debug options applied to every edgeq program on a backend (EDGEQ_XLA_AUTOTUNE=1 keeps
# the GPU autotuner, e.g. for a very long calibration where run time matters more)
GPU_OPTIONS: dict[str, Any] = {"xla_gpu_autotune_level": 0, "xla_gpu_enable_triton_gemm": False}


def compiler_options() -> dict[str, Any] | None:
    if (
        jax.default_backend() in ("gpu", "cuda", "rocm")
        and os.environ.get("EDGEQ_XLA_AUTOTUNE") != "1"
    ):
        return dict(GPU_OPTIONS)
    return None


def jit(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """`jax.jit(fn, **kwargs)` with `compiler_options()` for the default backend."""
    options = compiler_options()
    if options:
        kwargs.setdefault("compiler_options", options)
    return jax.jit(fn, **kwargs)


__all__ = ["GPU_OPTIONS", "compiler_options", "jit"]
