"""The graph and what runs it: graph IR, ONNX loader/writer, opset upgrade, passes (each with a
verifier), the op registry and the JAX op set, the interpreter.

Imports nothing from `edgeq.quant`, `edgeq.algorithms`, exporters, calibration sources or the CLI.
"""
