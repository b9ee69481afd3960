"""The backend registry: every backend class registers itself, in its own module, with what it can do.

A backend module ends with ``register(ItsBackend)``; what the backend can do beyond the interface
is declared on its class (`Backend`'s capabilities: default precision, options, per-iteration
device timings, layer precisions). The registry imports the built-in backends (`BUILT_IN`, one list
of module names) the first time it is asked, and nothing else names a backend. Each backend module
imports its library (onnxruntime, TensorRT, PyTorch) inside its functions only, so importing it to
register costs nothing; `load_backend` is where the library loads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Optional, TypeVar

if TYPE_CHECKING:
    from rdvla.runtime.backends.base import Backend
    from rdvla.runtime.bundle import Bundle

BUILT_IN = (
    "rdvla.runtime.backends.onnxruntime",
    "rdvla.runtime.backends.tensorrt.backend",
    "rdvla.runtime.backends.torch_split",
)

B = TypeVar("B", bound="type[Backend]")

_KINDS: dict[str, "type[Backend]"] = {}
_loaded = False


def register(backend: B) -> B:
    """Make `backend` available by its `name` (a later registration under the same name replaces it)."""
    _KINDS[backend.name] = backend
    return backend


def unregister(name: str) -> None:
    _KINDS.pop(name, None)


def _load_built_in() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILT_IN:
            importlib.import_module(module)


def backend_names() -> tuple[str, ...]:
    """The registered backends, sorted (registration order depends on what was imported first)."""
    _load_built_in()
    return tuple(sorted(_KINDS))


def backend_kind(name: str) -> "type[Backend]":
    """The registered backend class `name`; a ValueError lists the ones there are."""
    _load_built_in()
    kind = _KINDS.get(name)
    if kind is None:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(sorted(_KINDS))}")
    return kind


def load_backend(bundle: "Bundle", name: str, precision: Optional[str] = None, **options: object) -> "Backend":
    """Backend `name` for `bundle` at `precision` (default: the backend's); its library is imported here."""
    kind = backend_kind(name)
    unknown = sorted(set(options) - set(kind.options))
    if unknown:
        raise ValueError(f"the {name} backend takes no option {', '.join(unknown)}")
    return kind(bundle, precision=precision or kind.default_precision, **options)  # type: ignore[call-arg]
