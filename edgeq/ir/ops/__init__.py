"""The JAX op set: importing this package registers every op."""

from edgeq.ir.ops import control, elementwise, nn, reduce, rnn, tensor  # noqa: F401
from edgeq.ir.ops.registry import (
    OpContext,
    OpDef,
    is_supported,
    lookup,
    register,
    supported_ops,
)

__all__ = ["OpContext", "OpDef", "is_supported", "lookup", "register", "supported_ops"]
