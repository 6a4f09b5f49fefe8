"""ONNX QDQ artifacts: the writer for onnxruntime CPU and Snapdragon QNN (`qdq`), and the check
of which nodes would leave the QNN HTP (`qnn_check`)."""
