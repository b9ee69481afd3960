"""The backend interface: what the recurrent loop asks of an engine runner.

A backend owns every buffer of one bundle's graphs. `run_context` runs the VLM+Prelude graph once
per query and keeps its outputs where the core graphs read them (device memory for TensorRT);
the loop then calls `step` / `step_decode` k times. Latent and previous-action buffers ping-pong
inside the backend: nothing is allocated, copied to the host or synchronised per iteration except
the two halting scalars `step_decode` returns when asked to read them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Optional

import numpy as np

from rdvla.runtime.manifest import BundleError

if TYPE_CHECKING:
    from rdvla.runtime.bundle import Bundle

# Graph and tensor names of the bundle contract (manifest.json lists shapes and dtypes).
VLM_PRELUDE = "vlm_prelude"
CORE_STEP = "core_step"  # latent -> next_latent
CORE_STEP_DECODE = "core_step_decode"  # latent, prev_actions -> next_latent, actions, mse, cosine
DECODE = "decode"  # latent -> actions
GRAPHS = (VLM_PRELUDE, CORE_STEP, CORE_STEP_DECODE, DECODE)

PIXEL_VALUES, INPUT_IDS, PROPRIO = "pixel_values", "input_ids", "proprio"
INJECTION = "injection"
LATENT, NEXT_LATENT = "latent", "next_latent"
PREV_ACTIONS, ACTIONS = "prev_actions", "actions"
MSE, COSINE = "mse", "cosine"
# Where each precision's graphs are listed: `rdvla calibrate` adds the half and the Q/DQ graphs.


def kv_names(stage: str, count: int) -> list[str]:
    """Context tensor names of one stage ('core' or 'coda'): [core0_keys, core0_values, core1_keys, ...]."""
    return [f"{stage}{i}_{part}" for i in range(count) for part in ("keys", "values")]


# The tensors every backend binds by name: (inputs, outputs) of each graph, besides the context K/V.
_CONTRACT = {
    VLM_PRELUDE: ({PIXEL_VALUES, INPUT_IDS, PROPRIO}, {INJECTION}),
    CORE_STEP: ({LATENT, INJECTION}, {NEXT_LATENT}),
    CORE_STEP_DECODE: ({LATENT, PREV_ACTIONS, INJECTION}, {NEXT_LATENT, ACTIONS, MSE, COSINE}),
    DECODE: ({LATENT}, {ACTIONS}),
}


def check_dims(bundle: "Bundle") -> None:
    """Refuse a manifest whose model dimensions do not fit its graphs' tensors: the backends size every buffer
    from the dimensions, and the graphs' own I/O is checked against the manifest when the bundle opens."""
    dims, side = bundle.dims, bundle.preprocess.image_size
    chunk = (1, dims.chunk_len, dims.action_dim)
    kv = (1, dims.num_heads, dims.context_tokens, dims.head_dim)
    latent_fields = "model.chunk_len, model.hidden_dim"
    context = kv_names("core", len(dims.recurrent_vlm_layers)) + kv_names("coda", len(dims.coda_vlm_layers))
    expected = {
        PIXEL_VALUES: ((1, 6 * dims.num_images, side, side), "model.num_images, preprocess.image_size"),
        PROPRIO: ((1, dims.proprio_dim), "model.proprio_dim"),
        LATENT: (dims.latent_shape, latent_fields), NEXT_LATENT: (dims.latent_shape, latent_fields),
        INJECTION: (dims.latent_shape, latent_fields),
        PREV_ACTIONS: (chunk, "model.chunk_len, model.action_dim"), ACTIONS: (chunk, "model.chunk_len, model.action_dim"),
        **{name: (kv, "model.num_heads, model.context_tokens, model.hidden_dim") for name in context},
    }
    for graph in GRAPHS:
        spec = bundle.graph(graph)
        needed_inputs, needed_outputs = _CONTRACT[graph]
        lacking = sorted((needed_inputs - {t.name for t in spec.inputs}) | (needed_outputs - {t.name for t in spec.outputs}))
        if lacking:
            raise BundleError(f"{bundle.root}: graph {spec.file} ({graph}) has no {', '.join(lacking)}: it is not the "
                              f"{graph} graph of an rdvla bundle; re-export the bundle")
        for tensor in (*spec.inputs, *spec.outputs):
            want, fields = expected.get(tensor.name, (None, ""))
            if want is not None and tensor.shape != want:
                raise BundleError(f"{bundle.root}: manifest.json's {fields} ask for {tensor.name} {list(want)}, graph "
                                  f"{spec.file} has {list(tensor.shape)}: re-export the bundle")
    produced = {t.name for t in bundle.graph(VLM_PRELUDE).outputs}
    missing = [name for name in context if name not in produced]
    if missing:
        raise BundleError(f"{bundle.root}: manifest.json's model lists {len(context) // 2} core and coda layers, "
                          f"graph {bundle.graph(VLM_PRELUDE).file} has no {missing[0]}: re-export the bundle")


class Backend(ABC):
    """One bundle's graphs, loaded once, with every buffer allocated once."""

    name: str = "backend"
    _staging: Optional[np.ndarray] = None

    @abstractmethod
    def run_context(self, pixel_values: np.ndarray, input_ids: np.ndarray, proprio: np.ndarray) -> None:
        """Run VLM+Prelude on (1,12,224,224) f32, (1,P) i64, (1,8) f32 normalised proprio."""

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
        into, for `run_context` to read without a copy where it can (TensorRT: its page-locked
        staging buffer). Allocated once; valid until the next `run_context`."""
        if self._staging is None or self._staging.shape != shape:
            self._staging = np.empty(shape, np.float32)
        return self._staging

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op for host backends)."""

    def close(self) -> None:
        """Release buffers and engines."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
