"""Checks of ONNX graphs against what TensorRT's ONNX parser imports, without the onnx package."""
