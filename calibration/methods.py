"""The INT8 quantisers `rdvla calibrate` offers and their calibration methods (no ONNX import here)."""

QUANTIZERS = ("ort", "modelopt")
METHODS = {"ort": ("minmax", "percentile", "entropy"), "modelopt": ("max", "entropy")}
DEFAULT_METHOD = {"ort": "minmax", "modelopt": "max"}
