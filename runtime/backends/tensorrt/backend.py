"""TensorRT backend: a bundle's engines on device buffers, the recurrent core iterated without allocation.

Load, once: check the TensorRT version (10 or newer), that the engines in
`manifest["engines"][precision]` were built for this GPU and this TensorRT, and each engine file's
SHA-256; deserialise, allocate every device buffer and pinned staging buffer, bind the addresses
that never change, and capture the core step as CUDA graphs, one per ping-pong direction
(`capture.capture_or_fallback` with `cuda_graphs.capture`).

Per query: `run_context` stages the host inputs through pinned memory and enqueues the VLM+Prelude
engine; `reset_latent` loads S0. Per iteration: one graph launch (or `execute_async_v3` where capture
was not possible), one event record, and, only when the loop asks for it, a 260-byte readback of
the halting scalars followed by an event wait.

CUDA is driven through cuda-python's runtime API (see `cuda_runtime` for why not pycuda), on the
device's primary CUDA context, the one TensorRT uses. A backend instance is not thread-safe; its CUDA
graphs were captured in thread-local mode on the thread that created it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

import numpy as np

from rdvla.runtime import contract
from rdvla.runtime.backends.base import Backend
from rdvla.runtime.backends.capture import DISABLED, Runner, capture_or_fallback
from rdvla.runtime.backends.registry import register
from rdvla.runtime.backends.pingpong import ACTIONS_PAIR, DIRECTIONS, LATENT_PAIR, Direction, PingPong, slots
from rdvla.runtime.backends.tensorrt.buffers import (
    SCALAR_FLOATS,
    SCALAR_STRIDE,
    check_engine_io,
    check_resolved_outputs,
    engine_io,
    plan_buffers,
    shape_of,
)
from rdvla.runtime.backends.tensorrt.cuda_graphs import CudaGraph, capture
from rdvla.runtime.backends.tensorrt.cuda_runtime import CudaRuntime, PinnedArray, stream_address
from rdvla.runtime.backends.tensorrt.environment import (
    check_engine_compat,
    check_engine_sources,
    engine_section,
    query_environment,
    rebuild_hint,
    require_cuda,
    require_tensorrt,
    verify_engine_files,
)
from rdvla.runtime.backends.tensorrt.logger import make_trt_logger
from rdvla.runtime.backends.tensorrt.build_record import layer_precision_lines
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import BundleError, Manifest, TensorSpec
from rdvla.runtime.halting import MAX_SUPPORTED_ITERATIONS

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

CORE_GRAPHS = (contract.CORE_STEP, contract.CORE_STEP_DECODE)


@dataclass(frozen=True)
class EngineTensor:
    """One engine tensor's memory: its device buffer (the address TensorRT binds) and, where the host
    writes or reads it, its page-locked host array (an input's staging buffer, the halting scalars'
    readback). TensorRT's Python samples pair a tensor's host and device memory in one object too
    (samples/python/common_runtime.py, HostDeviceMem)."""

    name: str
    shape: tuple[int, ...]
    device: int
    host: Optional[PinnedArray] = None

    def pinned(self) -> PinnedArray:
        if self.host is None:
            raise RuntimeError(f"{self.name} lives on the device only")
        return self.host


@dataclass(frozen=True)
class PingPongTensor:
    """A tensor the core graphs read and write in turns (latent, actions): its two device buffers, the
    page-locked array its first buffer is loaded from at each query (S0; zero actions), and the one
    it is read back into."""

    name: str
    shape: tuple[int, ...]
    device: tuple[int, int]
    load: PinnedArray
    readback: PinnedArray


def capture_skip_reason(enabled: bool, io: Sequence[TensorSpec]) -> Optional[str]:
    """None when an engine should be captured as CUDA graphs, else why it runs with execute_async_v3."""
    if not enabled:
        return DISABLED
    dynamic = [t.name for t in io if t.is_dynamic]
    if dynamic:
        return f"dynamic shapes ({', '.join(dynamic)}); a captured graph replays fixed shapes only"
    return None


class TensorRTBackend(Backend):
    """The bundle's TensorRT engines with the recurrent core iterated on device buffers.

    `iteration_times_ms()` returns the device-side time of each iteration of the last query, measured
    with CUDA events recorded around every `step` / `step_decode` since the last `reset_latent`.
    `execution_modes()` tells, per core graph, whether it replays CUDA graphs or runs
    `execute_async_v3` (and why).
    """

    name = "tensorrt"
    default_precision = "fp16"
    summary = "Jetson, after `rdvla build`"
    options = ("cuda_graphs",)
    iteration_times = True

    def __init__(self, bundle: Bundle, precision: str = "fp16", cuda_graphs: bool = True) -> None:
        self.bundle = bundle
        self.precision = precision
        self._schedule = PingPong()
        self._iterations = 0
        self._modes: dict[str, str] = {}
        self._runners: dict[str, dict[Direction, Runner]] = {}
        self._graphs: list[CudaGraph] = []
        self._execution_contexts: dict[str, trt.IExecutionContext] = {}
        self._engines: dict[str, trt.ICudaEngine] = {}
        # What to release at close, in allocation order (a load that fails part-way releases what it made).
        self._device_allocations: list[int] = []
        self._pinned_allocations: list[PinnedArray] = []
        self._inputs: dict[str, EngineTensor] = {}  # host inputs of VLM+Prelude, each with its staging buffer
        self._context: dict[str, EngineTensor] = {}  # what VLM+Prelude writes for the core to read
        self._pairs: dict[str, PingPongTensor] = {}
        self._events: list[Any] = []
        self._sync: dict[str, Any] = {}
        self._input_shapes: dict[str, tuple[int, ...]] = {}
        self._checked_prompts: set[int] = set()
        self._runtime: Optional[trt.Runtime] = None
        self._stream: Any = None
        self._closed = False

        trt_version = require_tensorrt()
        cuda = self._cuda = require_cuda()
        env = query_environment(trt_version, cuda)
        section = engine_section(bundle.manifest, precision, bundle.root)
        check_engine_compat(section.environment, env, precision, bundle.root)
        check_engine_sources(section, bundle.manifest, precision, bundle.root)
        self.plan = plan_buffers(bundle)
        paths = verify_engine_files(bundle, section, precision)
        cuda.set_device(0)
        try:
            self._load(cuda, paths, cuda_graphs)
        except BaseException:
            self.close()
            raise

    # -- load ------------------------------------------------------------------------------------

    def _load(self, cuda: CudaRuntime, paths: Mapping[str, Path], cuda_graphs: bool) -> None:
        import tensorrt as trt

        self._trt_logger = make_trt_logger(log)
        runtime = self._runtime = trt.Runtime(self._trt_logger)
        self._stream = cuda.stream()
        self._stream_address = stream_address(self._stream)
        io: dict[str, list[TensorSpec]] = {}
        for graph in contract.GRAPHS:
            rel = paths[graph].relative_to(self.bundle.root)
            # Read and deserialise one engine at a time: on Orin host and device share the same DRAM.
            engine: Optional[trt.ICudaEngine] = runtime.deserialize_cuda_engine(paths[graph].read_bytes())
            if engine is None:
                raise BundleError(
                    f"{self.bundle.root}: TensorRT could not deserialise {rel} (see its messages above): "
                    f"{rebuild_hint(self.bundle.root, self.precision)}"
                )
            io[graph] = engine_io(engine)
            check_engine_io(self.bundle.graph(graph), io[graph], self.bundle.root, self.precision)
            execution_context: Optional[trt.IExecutionContext] = engine.create_execution_context()
            if execution_context is None:
                raise RuntimeError(f"TensorRT could not create an execution context for {graph} (device memory exhausted?)")
            self._engines[graph], self._execution_contexts[graph] = engine, execution_context
        self._allocate(cuda)
        self._bind_static()
        for graph in CORE_GRAPHS:
            self._capture_core(cuda, graph, capture_skip_reason(cuda_graphs, io[graph]))
        log.info(
            "TensorRT %s engines loaded: %.1f MB of I/O buffers on the device, %.1f MB pinned; %s",
            self.precision,
            self.plan.device_bytes / 1e6,
            self.plan.pinned_bytes / 1e6,
            ", ".join(f"{g}: {m}" for g, m in self._modes.items()),
        )

    def _device_buffer(self, cuda: CudaRuntime, nbytes: int) -> int:
        address = cuda.device_buffer(nbytes)
        self._device_allocations.append(address)
        return address

    def _pinned_array(self, cuda: CudaRuntime, spec: TensorSpec, zero: bool = False) -> PinnedArray:
        pinned = cuda.pinned_array(tuple(int(d) for d in spec.shape), spec.dtype, zero)
        self._pinned_allocations.append(pinned)
        return pinned

    def _tensor(self, cuda: CudaRuntime, spec: TensorSpec, staged: bool = False) -> EngineTensor:
        host = self._pinned_array(cuda, spec) if staged else None
        return EngineTensor(spec.name, tuple(int(d) for d in spec.shape), self._device_buffer(cuda, spec.nbytes), host)

    def _pair(self, cuda: CudaRuntime, name: str, spec: TensorSpec, load_zeros: bool) -> PingPongTensor:
        device = (self._device_buffer(cuda, spec.nbytes), self._device_buffer(cuda, spec.nbytes))
        load = self._pinned_array(cuda, spec, zero=load_zeros)
        return PingPongTensor(name, tuple(int(d) for d in spec.shape), device, load, self._pinned_array(cuda, spec))

    def _allocate(self, cuda: CudaRuntime) -> None:
        plan = self.plan
        self._inputs = {spec.name: self._tensor(cuda, spec, staged=True) for spec in plan.host_inputs}
        self._context = {spec.name: self._tensor(cuda, spec) for spec in plan.context}
        # The latent pair is loaded with S0 each query, the actions pair with zeros (no previous actions).
        self._pairs = {LATENT_PAIR: self._pair(cuda, LATENT_PAIR, plan.latent, load_zeros=False),
                       ACTIONS_PAIR: self._pair(cuda, ACTIONS_PAIR, plan.actions, load_zeros=True)}
        # mse and cosine, SCALAR_STRIDE bytes apart in one device block, read back with one copy.
        scalars = TensorSpec("scalars", "float32", (SCALAR_FLOATS,))
        self._scalars = EngineTensor("scalars", (SCALAR_FLOATS,), self._device_buffer(cuda, 2 * SCALAR_STRIDE),
                                     self._pinned_array(cuda, scalars))
        # staged: host inputs have left their staging buffers; loaded: S0 has left its staging buffer.
        self._sync = {k: cuda.event(timing=False) for k in ("staged", "loaded", "scalars")}
        # events[0] opens the first iteration of a query, events[k] closes iteration k.
        self._events = [cuda.event() for _ in range(MAX_SUPPORTED_ITERATIONS + 1)]
        self._addresses = {
            (graph, d): {name: self._pairs[pair].device[i] for name, (pair, i) in slots(graph, d).items()}
            for graph, directions in DIRECTIONS.items()
            for d in directions
        }

    def _set_address(self, graph: str, name: str, address: int) -> None:
        if not self._execution_contexts[graph].set_tensor_address(name, address):
            raise RuntimeError(f"TensorRT refused the address of {name} in {graph}")

    def _bind_static(self) -> None:
        for tensor in (*self._inputs.values(), *self._context.values()):
            self._set_address(contract.VLM_PRELUDE, tensor.name, tensor.device)
        for graph in (*CORE_GRAPHS, contract.DECODE):
            for spec in self.bundle.graph(graph).inputs:
                if spec.name in self._context:
                    self._set_address(graph, spec.name, self._context[spec.name].device)
        for i, spec in enumerate(self.plan.scalars):
            self._set_address(contract.CORE_STEP_DECODE, spec.name, self._scalars.device + i * SCALAR_STRIDE)

    def _bind(self, graph: str, direction: Direction) -> None:
        for name, address in self._addresses[(graph, direction)].items():
            self._set_address(graph, name, address)

    def _enqueue(self, graph: str) -> None:
        if not self._execution_contexts[graph].execute_async_v3(self._stream_address):
            raise RuntimeError(f"TensorRT could not enqueue {graph} (see its messages above)")

    def _direct_runner(self, graph: str, direction: Direction) -> Runner:
        def run() -> None:
            self._bind(graph, direction)
            self._enqueue(graph)

        return run

    def _capture_core(self, cuda: CudaRuntime, graph: str, skip_reason: Optional[str]) -> None:
        """Every direction of core graph `graph` as a CUDA graph replay, or run directly (`capture_or_fallback`)."""
        captured: list[CudaGraph] = []
        stream = self._stream

        def capture_one(run: Runner) -> Runner:
            """The runner's enqueue, with its addresses bound, captured as a CUDA graph; returns its replay."""
            cuda_graph = capture(cuda, stream, run)
            captured.append(cuda_graph)
            return lambda: cuda_graph.launch(stream)

        execution = capture_or_fallback(
            graph,
            {d: self._direct_runner(graph, d) for d in DIRECTIONS[graph]},
            capture_one,
            self.synchronize,
            warmup_runs=1,
            direct="execute_async_v3",
            skip_reason=skip_reason,
        )
        if len(captured) < len(DIRECTIONS[graph]):  # a capture that failed part-way: what it captured never replays
            _release_all(CudaGraph.destroy, captured)
        self._graphs += captured
        self._runners[graph], self._modes[graph] = execution.runners, execution.mode

    # -- per query -------------------------------------------------------------------------------

    def _live(self) -> CudaRuntime:
        """The CUDA runtime, checked once per query: the per-iteration calls rely on this check."""
        if self._closed:
            raise RuntimeError("the TensorRT backend is closed")
        return self._cuda

    def run_context(self, pixel_values: np.ndarray, input_ids: np.ndarray, proprio: np.ndarray) -> None:
        self._run_context({contract.PIXEL_VALUES: pixel_values, contract.INPUT_IDS: input_ids, contract.PROPRIO: proprio})

    def run_staged_context(self, input_ids: np.ndarray, proprio: np.ndarray) -> None:
        """pixel_values were written into their pinned staging buffer (`pixel_values_buffer`): no host copy."""
        self._run_context({contract.INPUT_IDS: input_ids, contract.PROPRIO: proprio})

    def _run_context(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Stage the given host inputs (an input left out is already in its staging buffer), copy them
        to the device and enqueue VLM+Prelude."""
        cuda = self._live()
        prompt = int(arrays[contract.INPUT_IDS].shape[-1])
        dims = {d: prompt for d in self.plan.dynamic}
        spec = self.bundle.graph(contract.VLM_PRELUDE)
        execution_context = self._execution_contexts[contract.VLM_PRELUDE]
        # The previous query's copies must have left the staging buffers before they are overwritten.
        cuda.wait(self._sync["staged"])
        for tensor in spec.inputs:
            shape = tuple(int(d) for d in tensor.resolve(dims).shape)
            memory = self._inputs[tensor.name]
            staging = memory.pinned()
            view = staging.array.reshape(-1)[: int(np.prod(shape, dtype=np.int64))]
            if tensor.name in arrays:
                array = np.asarray(arrays[tensor.name])
                if array.shape != shape:
                    raise ValueError(f"{tensor.name} has shape {array.shape}, expected {shape}")
                np.copyto(view.reshape(shape), array, casting="same_kind")
            cuda.copy_to_device(memory.device, staging, view.nbytes, self._stream)
            if self._input_shapes.get(tensor.name) != shape:
                if not execution_context.set_input_shape(tensor.name, shape):
                    raise BundleError(f"the {contract.VLM_PRELUDE} engine rejects {tensor.name} of shape {shape}")
                self._input_shapes[tensor.name] = shape
        if prompt not in self._checked_prompts:
            resolved = {t.name: shape_of(execution_context.get_tensor_shape(t.name)) for t in spec.outputs}
            check_resolved_outputs(spec, resolved, dims, self.bundle.root, self.precision)
            self._checked_prompts.add(prompt)
        cuda.record(self._sync["staged"], self._stream)
        self._enqueue(contract.VLM_PRELUDE)

    def pixel_values_buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """The page-locked staging buffer of pixel_values itself, once the previous query's copy has left it."""
        cuda = self._live()
        staging = self._inputs[contract.PIXEL_VALUES].pinned().array
        if staging.shape != shape:
            raise ValueError(f"{contract.PIXEL_VALUES} has shape {shape}, the engine takes {staging.shape}")
        cuda.wait(self._sync["staged"])
        return staging

    def reset_latent(self, init_latent: np.ndarray) -> None:
        cuda = self._live()
        latent = np.asarray(init_latent)
        if latent.shape != self.plan.latent.shape:
            raise ValueError(f"init_latent has shape {latent.shape}, expected {self.plan.latent.shape}")
        cuda.wait(self._sync["loaded"])
        latents, actions = self._pairs[LATENT_PAIR], self._pairs[ACTIONS_PAIR]
        np.copyto(latents.load.array, latent, casting="same_kind")
        self._schedule.reset()
        cuda.copy_to_device(latents.device[0], latents.load, latents.load.array.nbytes, self._stream)
        cuda.copy_to_device(actions.device[0], actions.load, actions.load.array.nbytes, self._stream)
        cuda.record(self._sync["loaded"], self._stream)
        self._iterations = 0

    # -- per iteration: no allocation, no synchronisation, no check the per-query calls made -------

    def _run_iteration(self, graph: str, direction: Direction) -> None:
        if self._iterations == 0:
            self._cuda.record(self._events[0], self._stream)
        self._runners[graph][direction]()
        self._iterations += 1
        if self._iterations < len(self._events):
            self._cuda.record(self._events[self._iterations], self._stream)

    def step(self) -> None:
        self._run_iteration(contract.CORE_STEP, self._schedule.step())

    def step_decode(self, read: bool = True) -> Optional[tuple[float, float]]:
        self._run_iteration(contract.CORE_STEP_DECODE, self._schedule.step_decode())
        if not read:
            return None
        cuda, scalars = self._cuda, self._scalars.pinned()
        cuda.copy_to_host(scalars, self._scalars.device, self._stream)
        cuda.record(self._sync["scalars"], self._stream)
        cuda.wait(self._sync["scalars"])
        return float(scalars.array[0]), float(scalars.array[SCALAR_STRIDE // 4])

    def decode(self) -> None:
        self._bind(contract.DECODE, self._schedule.decode())
        self._enqueue(contract.DECODE)

    # -- readback ----------------------------------------------------------------------------------

    def _read(self, pair: str, index: int) -> np.ndarray:
        cuda = self._live()
        tensor = self._pairs[pair]
        host = tensor.readback
        cuda.copy_to_host(host, tensor.device[index], self._stream)
        cuda.synchronize(self._stream)
        return np.array(host.array, copy=True)

    def actions(self) -> np.ndarray:
        return self._read(ACTIONS_PAIR, self._schedule.actions).reshape(self.plan.actions.shape[-2:])

    def latent(self) -> np.ndarray:
        return self._read(LATENT_PAIR, self._schedule.latent)

    def iteration_times_ms(self) -> list[float]:
        """Device time of each iteration since the last `reset_latent`, in milliseconds.

        Waits for the last iteration to finish. Iterations beyond MAX_SUPPORTED_ITERATIONS are not timed.
        """
        cuda = self._live()
        count = min(self._iterations, len(self._events) - 1)
        if count == 0:
            return []
        cuda.wait(self._events[count])
        return [cuda.elapsed_ms(self._events[k], self._events[k + 1]) for k in range(count)]

    @classmethod
    def layer_precisions(cls, manifest: Manifest, precision: str) -> list[str]:
        return layer_precision_lines(manifest, precision)

    def execution_modes(self) -> dict[str, str]:
        """How each core graph runs: CUDA graph replay, or execute_async_v3 and why."""
        return dict(self._modes)

    def synchronize(self) -> None:
        if not self._closed and self._stream is not None:
            self._cuda.synchronize(self._stream)

    def close(self) -> None:
        if self._closed:
            return
        cuda = self._cuda
        try:
            self.synchronize()
        finally:
            # Graphs before the buffers they write, TensorRT objects before the memory they were bound to.
            self._runners.clear()
            _release_all(CudaGraph.destroy, self._graphs)
            self._execution_contexts.clear()
            self._engines.clear()
            self._runtime = None
            self._inputs, self._context, self._pairs = {}, {}, {}
            _release_all(cuda.free_host, self._pinned_allocations)
            self._pinned_allocations = []
            _release_all(cuda.destroy_event, [*self._events, *self._sync.values()])
            self._events, self._sync = [], {}
            _release_all(cuda.free, self._device_allocations)
            if self._stream is not None:
                _release_all(cuda.destroy_stream, [self._stream])
            self._stream = None
            self._closed = True


def _release_all(release: Callable[[Any], None], items: list[Any]) -> None:
    """Release every item even when one fails: a failure is logged, the rest is still freed."""
    for item in items:
        try:
            release(item)
        except Exception as exc:  # closing must not stop half-way and leak the rest
            log.warning("releasing a CUDA resource failed: %s", exc)
    items.clear()


register(TensorRTBackend)
