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
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

import numpy as np

from rdvla.runtime import bundle as names
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
from rdvla.runtime.backends.tensorrt.records import layer_precision_lines
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import BundleError, Manifest, TensorSpec
from rdvla.runtime.halting import MAX_SUPPORTED_ITERATIONS

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

CORE_GRAPHS = (names.CORE_STEP, names.CORE_STEP_DECODE)


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
        self._device_allocations: list[int] = []
        self._pinned: dict[str, PinnedArray] = {}
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
        check_engine_compat(section, env, precision, bundle.root)
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
        for graph in names.GRAPHS:
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

    def _pinned_array(self, cuda: CudaRuntime, key: str, spec: TensorSpec, zero: bool = False) -> None:
        self._pinned[key] = cuda.pinned_array(tuple(int(d) for d in spec.shape), spec.dtype, zero)

    def _allocate(self, cuda: CudaRuntime) -> None:
        plan = self.plan
        self._host_inputs: dict[str, int] = {}
        for spec in plan.host_inputs:
            self._pinned_array(cuda, spec.name, spec)
            self._host_inputs[spec.name] = self._device_buffer(cuda, spec.nbytes)
        self._context_buffers = {spec.name: self._device_buffer(cuda, spec.nbytes) for spec in plan.context}
        self._buffers = {
            LATENT_PAIR: [self._device_buffer(cuda, plan.latent.nbytes) for _ in range(2)],
            ACTIONS_PAIR: [self._device_buffer(cuda, plan.actions.nbytes) for _ in range(2)],
        }
        self._scalars = self._device_buffer(cuda, 2 * SCALAR_STRIDE)
        self._scalar_addresses = {plan.scalars[0].name: self._scalars, plan.scalars[1].name: self._scalars + SCALAR_STRIDE}
        # The readback buffer of each pair is pinned under the pair's name (`_read`).
        self._pinned_array(cuda, "init_latent", plan.latent)
        self._pinned_array(cuda, LATENT_PAIR, plan.latent)
        self._pinned_array(cuda, "zero_actions", plan.actions, zero=True)
        self._pinned_array(cuda, ACTIONS_PAIR, plan.actions)
        self._pinned_array(cuda, "scalars", TensorSpec("scalars", "float32", (SCALAR_FLOATS,)))
        # staged: host inputs have left their staging buffers; loaded: S0 has left its staging buffer.
        self._sync = {k: cuda.event(timing=False) for k in ("staged", "loaded", "scalars")}
        # events[0] opens the first iteration of a query, events[k] closes iteration k.
        self._events = [cuda.event() for _ in range(MAX_SUPPORTED_ITERATIONS + 1)]
        self._addresses = {
            (graph, d): {name: self._buffers[pair][i] for name, (pair, i) in slots(graph, d).items()}
            for graph, directions in DIRECTIONS.items()
            for d in directions
        }

    def _set_address(self, graph: str, name: str, address: int) -> None:
        if not self._execution_contexts[graph].set_tensor_address(name, address):
            raise RuntimeError(f"TensorRT refused the address of {name} in {graph}")

    def _bind_static(self) -> None:
        for name, address in self._host_inputs.items():
            self._set_address(names.VLM_PRELUDE, name, address)
        for name, address in self._context_buffers.items():
            self._set_address(names.VLM_PRELUDE, name, address)
        for graph in (*CORE_GRAPHS, names.DECODE):
            for tensor in self.bundle.graph(graph).inputs:
                if tensor.name in self._context_buffers:
                    self._set_address(graph, tensor.name, self._context_buffers[tensor.name])
        for name, address in self._scalar_addresses.items():
            self._set_address(names.CORE_STEP_DECODE, name, address)

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
        self._run_context({names.PIXEL_VALUES: pixel_values, names.INPUT_IDS: input_ids, names.PROPRIO: proprio})

    def run_staged_context(self, input_ids: np.ndarray, proprio: np.ndarray) -> None:
        """pixel_values were written into their pinned staging buffer (`pixel_values_buffer`): no host copy."""
        self._run_context({names.INPUT_IDS: input_ids, names.PROPRIO: proprio})

    def _run_context(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Stage the given host inputs (an input left out is already in its staging buffer), copy them
        to the device and enqueue VLM+Prelude."""
        cuda = self._live()
        prompt = int(arrays[names.INPUT_IDS].shape[-1])
        dims = {d: prompt for d in self.plan.dynamic}
        spec = self.bundle.graph(names.VLM_PRELUDE)
        execution_context = self._execution_contexts[names.VLM_PRELUDE]
        # The previous query's copies must have left the staging buffers before they are overwritten.
        cuda.wait(self._sync["staged"])
        for tensor in spec.inputs:
            shape = tuple(int(d) for d in tensor.resolve(dims).shape)
            staging = self._pinned[tensor.name]
            view = staging.array.reshape(-1)[: int(np.prod(shape, dtype=np.int64))]
            if tensor.name in arrays:
                array = np.asarray(arrays[tensor.name])
                if array.shape != shape:
                    raise ValueError(f"{tensor.name} has shape {array.shape}, expected {shape}")
                np.copyto(view.reshape(shape), array, casting="same_kind")
            cuda.copy_to_device(self._host_inputs[tensor.name], staging, view.nbytes, self._stream)
            if self._input_shapes.get(tensor.name) != shape:
                if not execution_context.set_input_shape(tensor.name, shape):
                    raise BundleError(f"the {names.VLM_PRELUDE} engine rejects {tensor.name} of shape {shape}")
                self._input_shapes[tensor.name] = shape
        if prompt not in self._checked_prompts:
            resolved = {t.name: shape_of(execution_context.get_tensor_shape(t.name)) for t in spec.outputs}
            check_resolved_outputs(spec, resolved, dims, self.bundle.root, self.precision)
            self._checked_prompts.add(prompt)
        cuda.record(self._sync["staged"], self._stream)
        self._enqueue(names.VLM_PRELUDE)

    def pixel_values_buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """The page-locked staging buffer of pixel_values itself, once the previous query's copy has left it."""
        cuda = self._live()
        staging = self._pinned[names.PIXEL_VALUES].array
        if staging.shape != shape:
            raise ValueError(f"{names.PIXEL_VALUES} has shape {shape}, the engine takes {staging.shape}")
        cuda.wait(self._sync["staged"])
        return staging

    def reset_latent(self, init_latent: np.ndarray) -> None:
        cuda = self._live()
        latent = np.asarray(init_latent)
        if latent.shape != self.plan.latent.shape:
            raise ValueError(f"init_latent has shape {latent.shape}, expected {self.plan.latent.shape}")
        cuda.wait(self._sync["loaded"])
        init, zeros = self._pinned["init_latent"], self._pinned["zero_actions"]
        np.copyto(init.array, latent, casting="same_kind")
        self._schedule.reset()
        cuda.copy_to_device(self._buffers[LATENT_PAIR][0], init, init.array.nbytes, self._stream)
        cuda.copy_to_device(self._buffers[ACTIONS_PAIR][0], zeros, zeros.array.nbytes, self._stream)
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
        self._run_iteration(names.CORE_STEP, self._schedule.step())

    def step_decode(self, read: bool = True) -> Optional[tuple[float, float]]:
        self._run_iteration(names.CORE_STEP_DECODE, self._schedule.step_decode())
        if not read:
            return None
        cuda, scalars = self._cuda, self._pinned["scalars"]
        cuda.copy_to_host(scalars, self._scalars, self._stream)
        cuda.record(self._sync["scalars"], self._stream)
        cuda.wait(self._sync["scalars"])
        return float(scalars.array[0]), float(scalars.array[SCALAR_STRIDE // 4])

    def decode(self) -> None:
        self._bind(names.DECODE, self._schedule.decode())
        self._enqueue(names.DECODE)

    # -- readback ----------------------------------------------------------------------------------

    def _read(self, pair: str, index: int) -> np.ndarray:
        cuda = self._live()
        host = self._pinned[pair]
        cuda.copy_to_host(host, self._buffers[pair][index], self._stream)
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
            _release_all(cuda.free_host, list(self._pinned.values()))
            self._pinned.clear()
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
