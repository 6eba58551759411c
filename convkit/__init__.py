"""convkit: train convolutional networks, export them to ONNX and re-measure them under ONNX Runtime."""

__version__ = "0.1.0"
