"""edgeq: one static post-training quantization plan, many edge runtimes."""

from edgeq.errors import EdgeqError
from edgeq.graph import Graph, Node, ValueInfo
from edgeq.interpreter import Interpreter
from edgeq.onnx_io import load_model
from edgeq.passes import prepare

__version__ = "0.1.0"

__all__ = [
    "EdgeqError",
    "Graph",
    "Interpreter",
    "Node",
    "ValueInfo",
    "__version__",
    "load_model",
    "prepare",
]
