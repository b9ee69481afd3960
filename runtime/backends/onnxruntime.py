"""ONNX Runtime backend: the executable stand-in for TensorRT on machines without it.

Every tensor the loop touches lives in a numpy array allocated once at load and wrapped as an
OrtValue (CPU OrtValues share the numpy memory), and every (graph, ping-pong direction) has its
own pre-built IOBinding (directions and buffers from `pingpong`, as every backend). An iteration is therefore one `run_with_iobinding` call: no allocation,
no copy; the halting scalars are read straight from their bound arrays.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from rdvla.runtime import contract
from rdvla.runtime.backends.base import Backend
from rdvla.runtime.backends.registry import register
from rdvla.runtime.backends.pingpong import ACTIONS_PAIR, DIRECTIONS, LATENT_PAIR, Direction, PingPong, slots
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import BundleError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")


def graph_file(bundle: Bundle, graph: str, precision: str) -> str:
    """The bundle-relative file of `graph` at `precision`; a graph the calibration left in FP32 runs as exported."""
    if precision == "fp32":
        return bundle.graph(graph).file
    section = bundle.manifest.calibrated.get(precision) or {}
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
        raise BundleError("onnxruntime is not installed: pip install 'rdvla[robot]'") from None
    return onnxruntime


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    summary = "CPU stand-in, the default"
    options = ("providers", "threads")

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
        for graph in contract.GRAPHS:
            path = bundle.path(graph_file(bundle, graph, precision))
            try:
                self.sessions[graph] = ort.InferenceSession(str(path), options, providers=providers)
            except Exception as exc:  # onnxruntime's own exception types (Fail, InvalidProtobuf, ...) for a bad graph
                reason = " ".join(str(exc).split())[:300]
                raise BundleError(f"{path}: ONNX Runtime cannot load this graph ({reason}): re-export the bundle") from None
        self.dims = bundle.dims
        n_core, n_coda = len(bundle.dims.recurrent_vlm_layers), len(bundle.dims.coda_vlm_layers)
        self._core_names = [contract.INJECTION, *contract.kv_names("core", n_core)]
        self._coda_names = contract.kv_names("coda", n_coda)
        # Context tensors: written by vlm_prelude, read by every core graph (static: `Bundle.check_dims`).
        prelude_out = {t.name: t for t in bundle.graph(contract.VLM_PRELUDE).outputs}
        self._context = {n: np.zeros(prelude_out[n].shape, prelude_out[n].dtype) for n in self._core_names + self._coda_names}
        chunk = (1, self.dims.chunk_len, self.dims.action_dim)
        self._buffers = {
            LATENT_PAIR: [np.zeros(self.dims.latent_shape, np.float32) for _ in range(2)],
            ACTIONS_PAIR: [np.zeros(chunk, np.float32) for _ in range(2)],
        }
        self._mse = np.zeros(1, np.float32)
        self._cosine = np.zeros(1, np.float32)
        self._schedule = PingPong()
        self._bind_loop()

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
        reads = {contract.CORE_STEP: core, contract.CORE_STEP_DECODE: {**core, **coda}, contract.DECODE: coda}
        scalars = {contract.MSE: self._mse, contract.COSINE: self._cosine}
        self._bindings = {}
        for graph, directions in DIRECTIONS.items():
            for direction in directions:
                bound = {name: self._buffers[pair][i] for name, (pair, i) in slots(graph, direction).items()}
                contract_inputs = contract.CONTRACT[graph][0]
                inputs = {n: a for n, a in bound.items() if n in contract_inputs}
                outputs = {n: a for n, a in bound.items() if n not in contract_inputs}
                if graph == contract.CORE_STEP_DECODE:
                    outputs.update(scalars)
                self._bindings[(graph, direction)] = self._binding(graph, {**inputs, **reads[graph]}, outputs)
        self._prelude_outputs = {n: self._value(self._context[n]) for n in self._core_names + self._coda_names}

    def _run(self, graph: str, direction: Direction) -> None:
        self.sessions[graph].run_with_iobinding(self._bindings[(graph, direction)])

    def run_context(self, pixel_values: np.ndarray, input_ids: np.ndarray, proprio: np.ndarray) -> None:
        session = self.sessions[contract.VLM_PRELUDE]
        binding = session.io_binding()
        binding.bind_cpu_input(contract.PIXEL_VALUES, np.ascontiguousarray(pixel_values, np.float32))
        binding.bind_cpu_input(contract.INPUT_IDS, np.ascontiguousarray(input_ids, np.int64))
        binding.bind_cpu_input(contract.PROPRIO, np.ascontiguousarray(proprio, np.float32))
        for name, value in self._prelude_outputs.items():
            binding.bind_ortvalue_output(name, value)
        session.run_with_iobinding(binding)

    def reset_latent(self, init_latent: np.ndarray) -> None:
        if init_latent.shape != self.dims.latent_shape:
            raise ValueError(f"initial latent has shape {init_latent.shape}, expected {self.dims.latent_shape}")
        self._schedule.reset()
        self._buffers[LATENT_PAIR][0][...] = init_latent
        self._buffers[ACTIONS_PAIR][0].fill(0.0)

    def step(self) -> None:
        self._run(contract.CORE_STEP, self._schedule.step())

    def step_decode(self, read: bool = True) -> Optional[tuple[float, float]]:
        self._run(contract.CORE_STEP_DECODE, self._schedule.step_decode())
        return (float(self._mse[0]), float(self._cosine[0])) if read else None

    def decode(self) -> None:
        self._run(contract.DECODE, self._schedule.decode())

    def actions(self) -> np.ndarray:
        return self._buffers[ACTIONS_PAIR][self._schedule.actions][0].copy()

    def latent(self) -> np.ndarray:
        return self._buffers[LATENT_PAIR][self._schedule.latent].copy()

    def context(self) -> dict[str, np.ndarray]:
        """The VLM+Prelude outputs of the last query (parity checks compare them per output)."""
        return {k: v.copy() for k, v in self._context.items()}


register(OnnxRuntimeBackend)
