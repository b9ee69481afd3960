"""The backend interface: what the recurrent loop asks of an engine runner.

A backend owns every buffer of one bundle's graphs. `run_context` runs the VLM+Prelude graph once
per query and keeps its outputs where the core graphs read them (device memory for TensorRT);
the loop then calls `step` / `step_decode` k times. Latent and previous-action buffers ping-pong
inside the backend: nothing is allocated, copied to the host or synchronised per iteration except
the two halting scalars `step_decode` returns when asked to read them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Optional

import numpy as np

if TYPE_CHECKING:
    from rdvla.runtime.manifest import Manifest


class Backend(ABC):
    """One bundle's graphs, loaded once, with every buffer allocated once."""

    name: ClassVar[str] = "backend"  # what `registry.register` files it under (--backend)
    # Capabilities: what a backend can do beyond the interface, declared by its class and read by the
    # commands through the registry (never found by probing an instance).
    default_precision: ClassVar[str] = "fp32"  # what a command runs without --precision
    summary: ClassVar[str] = ""  # a few words for --backend's help
    options: ClassVar[tuple[str, ...]] = ()  # keyword options beyond the precision (`registry.load_backend`)
    iteration_times: ClassVar[bool] = False  # `iteration_times_ms()` measures each iteration on the device
    _staging: Optional[np.ndarray] = None

    @classmethod
    def layer_precisions(cls, manifest: "Manifest", precision: str) -> list[str]:
        """What the builds of `precision` made of the precision plan, a line per engine (TensorRT: the
        layer precisions its inspector reported); none for a backend that runs the graphs as they are."""
        return []

    @abstractmethod
    def run_context(self, pixel_values: np.ndarray, input_ids: np.ndarray, proprio: np.ndarray) -> None:
        """Run VLM+Prelude on (1,12,224,224) f32, (1,P) i64, (1,8) f32 normalised proprio.

        The prompt length P lies in the bundle's range: the caller checks it (`Policy.act`, once per query)."""

    @abstractmethod
    def reset_latent(self, init_latent: np.ndarray) -> None:
        """Load S0 (1,8,D) f32 and clear the previous-action buffer."""

    @abstractmethod
    def step(self) -> None:
        """One latent-only iteration (fixed iterations: no Coda decode)."""

    @abstractmethod
    def step_decode(self, read: bool = True) -> Optional[tuple[float, float]]:
        """One iteration plus decode; returns (mse, cosine) against the previous decode when `read`.

        With `read=False` nothing is synchronised (a `check_every` > 1 loop skips the readback).
        """

    @abstractmethod
    def decode(self) -> None:
        """Decode the current latent into the action buffer (the end of a query of fixed iterations)."""

    @abstractmethod
    def actions(self) -> np.ndarray:
        """The action buffer copied to the host: (8, 7) float32 normalised actions."""

    @abstractmethod
    def latent(self) -> np.ndarray:
        """The current latent copied to the host: (1, 8, D) float32."""

    def pixel_values_buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 host array of `shape` that preprocessing may write the next query's pixel_values
        into, then hand over with `run_staged_context` (TensorRT: its page-locked staging buffer, so
        nothing is copied on the host). Allocated once; valid until the next query's context."""
        if self._staging is None or self._staging.shape != shape:
            self._staging = np.empty(shape, np.float32)
        return self._staging

    def run_staged_context(self, input_ids: np.ndarray, proprio: np.ndarray) -> None:
        """`run_context` on the pixel_values written into `pixel_values_buffer`."""
        if self._staging is None:
            raise RuntimeError("no pixel_values staged: write them into pixel_values_buffer() first")
        self.run_context(self._staging, input_ids, proprio)

    def iteration_times_ms(self) -> list[float]:
        """Device time of each iteration since the last `reset_latent`, in milliseconds; only backends
        declaring `iteration_times` measure it."""
        raise NotImplementedError(f"the {self.name} backend does not time iterations on the device")

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op for host backends)."""

    def close(self) -> None:
        """Release buffers and engines."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
