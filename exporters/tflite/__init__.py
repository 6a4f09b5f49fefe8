"""TFLite artifacts for LiteRT (rpi) and TFLite Micro (tflm).

`builder` writes flatbuffers; `converter` walks the graph and owns the table of lowerings;
`ops` (builtins with integer kernels) and `float_islands` (float32 between DEQUANTIZE and
QUANTIZE) register into that table, sharing helpers from `lowering`; `exporter` is the entry
point; `bundle` makes TFLite Micro firmware bundles.
"""
