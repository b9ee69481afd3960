"""The backend interface: what the recurrent loop asks of an engine runner.

A backend owns every buffer of one bundle's graphs. `run_context` runs the VLM+Prelude graph once
per query and keeps its outputs where the core graphs read them (device memory for TensorRT);
the loop then calls `step` / `step_decode` k times. Latent and previous-action buffers ping-pong
inside the backend: nothing is allocated, copied to the host or synchronised per iteration except
the two halting scalars `step_decode` returns when asked to read them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

import numpy as np


class Backend(ABC):
    """One bundle's graphs, loaded once, with every buffer allocated once."""

    name: str = "backend"
    _staging: Optional[np.ndarray] = None

    @abstractmethod
    def run_context(self, pixel_values: np.ndarray, input_ids: np.ndarray, proprio: np.ndarray) -> None:
        """Run VLM+Prelude on (1,12,224,224) f32, (1,P) i64, (1,8) f32 normalised proprio.

        The prompt length P lies in the bundle's range: the caller checks it (`Policy.act`, once per query)."""

    @abstractmethod
    def reset_latent(self, init_latent: np.ndarray) -> None:
        """Load S0 (1,8,D) f32 and clear the previous-action buffer."""

    @abstractmethod
    def step(self) -> None:
        """One latent-only iteration (fixed depth: no Coda decode)."""

    @abstractmethod
    def step_decode(self, read: bool = True) -> Optional[tuple[float, float]]:
        """One iteration plus decode; returns (mse, cosine) against the previous decode when `read`.

        With `read=False` nothing is synchronised (a `check_every` > 1 loop skips the readback).
        """

    @abstractmethod
    def decode(self) -> None:
        """Decode the current latent into the action buffer (the end of a fixed-depth query)."""

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

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op for host backends)."""

    def close(self) -> None:
        """Release buffers and engines."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
