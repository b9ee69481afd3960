"""Backends run a bundle's graphs; each imports its library lazily (see `load_backend`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rdvla.runtime.backends.base import Backend
    from rdvla.runtime.bundle import Bundle

BACKENDS = ("onnxruntime", "tensorrt", "torch")


def load_backend(bundle: "Bundle", name: str, precision: str = "fp32", **options: object) -> "Backend":
    """Instantiate backend `name` for `bundle`; the backend's library is imported only here."""
    if name == "onnxruntime":
        from rdvla.runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle, precision=precision, **options)  # type: ignore[arg-type]
    if name == "tensorrt":
        from rdvla.runtime.backends.tensorrt.backend import TensorRTBackend

        return TensorRTBackend(bundle, precision=precision, **options)  # type: ignore[arg-type]
    if name == "torch":
        from rdvla.runtime.backends.torch_split import TorchBackend

        return TorchBackend(bundle, precision=precision, **options)  # type: ignore[arg-type]
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
