"""ONNX Runtime backend: the executable stand-in for TensorRT on machines without it.

Every tensor the loop touches lives in a numpy array allocated once at load and wrapped as an
OrtValue (CPU OrtValues share the numpy memory), and every (graph, ping-pong direction) has its
own pre-built IOBinding. An iteration is therefore one `run_with_iobinding` call: no allocation,
no copy; the halting scalars are read straight from their bound arrays.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from rdvla.runtime.backends import base as names
from rdvla.runtime.backends.base import Backend
from rdvla.runtime.bundle import Bundle, BundleError, TensorSpec

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
# Where each precision's graphs are listed: `rdvla calibrate` adds the half and the Q/DQ graphs.
GRAPH_SECTIONS = {"fp32": "graphs", "fp16": "graphs_fp16", "int8": "graphs_int8"}


def graph_file(bundle: Bundle, graph: str, precision: str) -> str:
    """The bundle-relative file of `graph` at `precision`; a graph the calibration left in FP32 runs as exported."""
    if precision == "fp32":
        return bundle.graph(graph).file
    section = bundle.manifest.get(GRAPH_SECTIONS[precision]) or {}
    if not section:
        raise BundleError(f"{bundle.root} has no {precision} graphs: run `rdvla calibrate {bundle.root} --precision {precision}` first")
    entry = section.get(graph)
    if entry is None:
        log.warning("%s has no %s graph: running the FP32 graph", graph, precision)
        return bundle.graph(graph).file
    return str(entry["file"])


def _import_onnxruntime():  # type: ignore[no-untyped-def]
    try:
        import onnxruntime
    except ImportError:
        raise BundleError("onnxruntime is not installed: pip install 'rdvla[onnxruntime]'") from None
    return onnxruntime


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, bundle: Bundle, precision: str = "fp32", providers: Optional[list[str]] = None, threads: int = 0) -> None:
        if precision not in PRECISIONS:
            raise BundleError(f"onnxruntime backend runs precision {', '.join(PRECISIONS)}; got {precision!r}")
        ort = _import_onnxruntime()
        self._ort = ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        providers = providers or ["CPUExecutionProvider"]
        self.sessions = {}
        for graph in names.GRAPHS:
            path = bundle.path(graph_file(bundle, graph, precision))
            self.sessions[graph] = ort.InferenceSession(str(path), options, providers=providers)
        self.dims = bundle.dims
        n_core, n_coda = len(bundle.dims.recurrent_vlm_layers), len(bundle.dims.coda_vlm_layers)
        self._core_names = [names.INJECTION, *names.kv_names("core", n_core)]
        self._coda_names = names.kv_names("coda", n_coda)
        # Context tensors: written by vlm_prelude, read by every core graph.
        prelude_out = {t.name: t for t in bundle.graph(names.VLM_PRELUDE).outputs}
        self._context = {n: self._array(prelude_out[n]) for n in self._core_names + self._coda_names}
        chunk = (1, self.dims.chunk_len, self.dims.action_dim)
        self._latents = [np.zeros(self.dims.latent_shape, np.float32) for _ in range(2)]
        self._actions = [np.zeros(chunk, np.float32) for _ in range(2)]
        self._mse = np.zeros(1, np.float32)
        self._cosine = np.zeros(1, np.float32)
        self._s = 0  # which latent buffer holds the current latent
        self._a = 0  # which action buffer holds the latest decode
        self._bind_loop()

    @staticmethod
    def _array(spec: TensorSpec) -> np.ndarray:
        if any(isinstance(d, str) for d in spec.shape):
            raise BundleError(f"context tensor {spec.name} has a dynamic shape {spec.shape}; the bundle is malformed")
        return np.zeros(spec.shape, dtype=spec.dtype)

    def _value(self, array: np.ndarray):  # type: ignore[no-untyped-def]
        return self._ort.OrtValue.ortvalue_from_numpy(array)

    def _binding(self, graph: str, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]):  # type: ignore[no-untyped-def]
        binding = self.sessions[graph].io_binding()
        for name, array in inputs.items():
            binding.bind_ortvalue_input(name, self._value(array))
        for name, array in outputs.items():
            binding.bind_ortvalue_output(name, self._value(array))
        return binding

    def _bind_loop(self) -> None:
        core = {n: self._context[n] for n in self._core_names}
        coda = {n: self._context[n] for n in self._coda_names}
        self._step = [
            self._binding(names.CORE_STEP, {names.LATENT: self._latents[s], **core}, {names.NEXT_LATENT: self._latents[1 - s]})
            for s in (0, 1)
        ]
        self._step_decode = {
            (s, a): self._binding(
                names.CORE_STEP_DECODE,
                {names.LATENT: self._latents[s], names.PREV_ACTIONS: self._actions[a], **core, **coda},
                {names.NEXT_LATENT: self._latents[1 - s], names.ACTIONS: self._actions[1 - a],
                 names.MSE: self._mse, names.COSINE: self._cosine},
            )
            for s in (0, 1) for a in (0, 1)
        }
        self._decode = {
            (s, a): self._binding(names.DECODE, {names.LATENT: self._latents[s], **coda}, {names.ACTIONS: self._actions[1 - a]})
            for s in (0, 1) for a in (0, 1)
        }
        self._prelude_outputs = {n: self._value(self._context[n]) for n in self._core_names + self._coda_names}

    def run_context(self, pixel_values: np.ndarray, input_ids: np.ndarray, proprio: np.ndarray) -> None:
        session = self.sessions[names.VLM_PRELUDE]
        binding = session.io_binding()
        binding.bind_cpu_input(names.PIXEL_VALUES, np.ascontiguousarray(pixel_values, np.float32))
        binding.bind_cpu_input(names.INPUT_IDS, np.ascontiguousarray(input_ids, np.int64))
        binding.bind_cpu_input(names.PROPRIO, np.ascontiguousarray(proprio, np.float32))
        for name, value in self._prelude_outputs.items():
            binding.bind_ortvalue_output(name, value)
        session.run_with_iobinding(binding)

    def reset_latent(self, init_latent: np.ndarray) -> None:
        if init_latent.shape != self.dims.latent_shape:
            raise ValueError(f"initial latent has shape {init_latent.shape}, expected {self.dims.latent_shape}")
        self._s, self._a = 0, 0
        self._latents[0][...] = init_latent
        self._actions[0].fill(0.0)

    def step(self) -> None:
        self.sessions[names.CORE_STEP].run_with_iobinding(self._step[self._s])
        self._s = 1 - self._s

    def step_decode(self, read: bool = True) -> Optional[tuple[float, float]]:
        self.sessions[names.CORE_STEP_DECODE].run_with_iobinding(self._step_decode[(self._s, self._a)])
        self._s, self._a = 1 - self._s, 1 - self._a
        return (float(self._mse[0]), float(self._cosine[0])) if read else None

    def decode(self) -> None:
        self.sessions[names.DECODE].run_with_iobinding(self._decode[(self._s, self._a)])
        self._a = 1 - self._a

    def actions(self) -> np.ndarray:
        return self._actions[self._a][0].copy()

    def latent(self) -> np.ndarray:
        return self._latents[self._s].copy()

    def context(self) -> dict[str, np.ndarray]:
        """The VLM+Prelude outputs of the last query (parity checks compare them per output)."""
        return {k: v.copy() for k, v in self._context.items()}
