"""TensorRT backend: a bundle's engines on device buffers, the recurrent core iterated without allocation.

Load, once: check that the engines in `manifest["engines"][precision]` were built for this GPU and
this TensorRT, check each engine file's SHA-256, deserialise, allocate every device buffer and
pinned staging buffer, bind the addresses that never change, and capture the core step as CUDA
graphs, one per ping-pong direction.

Per query: `run_context` stages the host inputs through pinned memory and enqueues the VLM+Prelude
engine; `reset_latent` loads S0. Per iteration: one graph launch (or `execute_async_v3` where capture
was not possible), one event record, and, only when the loop asks for it, a 260-byte readback of
the halting scalars followed by an event wait.

tensorrt and pycuda are imported inside functions only, so this module imports where they are
absent (CI); its library-free parts (buffer plan, ping-pong schedule, compatibility checks) are
plain functions tested there. A backend instance must be used from the thread that created it:
it makes the device's primary CUDA context current on that thread.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from rdvla.runtime.backends import base as names
from rdvla.runtime.backends.base import Backend
from rdvla.runtime.bundle import MANIFEST, Bundle, BundleError, GraphSpec, TensorSpec, sha256_file
from rdvla.runtime.halting import MAX_SUPPORTED_ITERATIONS

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

# mse and cosine live in one allocation, each at a 256-byte aligned offset, so one copy reads both.
SCALAR_STRIDE = 256
_SCALAR_FLOATS = SCALAR_STRIDE // 4 + 1

_TRT_MISSING = (
    "TensorRT is not installed: {why}; on a Jetson it comes with JetPack (python3-libnvinfer; a virtual "
    "environment needs --system-site-packages to see it), elsewhere install the TensorRT wheel for your CUDA"
)
_PYCUDA_MISSING = (
    "pycuda is not installed: {why}; rdvla drives CUDA through it for TensorRT, on a Jetson run "
    "`pip install pycuda` with JetPack's /usr/local/cuda/bin on PATH"
)

# TensorRT DataType names -> numpy dtype names (the manifest's vocabulary).
_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "FP8": "float8_e4m3fn",
    "INT4": "int4",
    "FP4": "float4_e2m1fn",
}


class TensorRTUnavailable(ValueError):
    """TensorRT or pycuda cannot be imported (a ValueError, so the CLI reports it in one line)."""


def require_tensorrt() -> str:
    """Import TensorRT's Python bindings or raise `TensorRTUnavailable`; returns TensorRT's version."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # also a present package whose libnvinfer.so cannot load
        raise TensorRTUnavailable(_TRT_MISSING.format(why=f"import tensorrt failed ({exc})")) from None
    version = getattr(trt, "__version__", None)
    # tensorrt-stubs alone leave an importable namespace package named `tensorrt` with no bindings.
    if not isinstance(version, str) or not hasattr(trt, "Builder"):
        raise TensorRTUnavailable(_TRT_MISSING.format(why="only its type stubs (tensorrt-stubs) are present"))
    return version


def require_pycuda() -> Any:
    """Import and initialise `pycuda.driver` or raise `TensorRTUnavailable`; returns the module."""
    try:
        import pycuda.driver as cuda
    except (ImportError, OSError) as exc:
        raise TensorRTUnavailable(_PYCUDA_MISSING.format(why=f"import pycuda.driver failed ({exc})")) from None
    cuda.init()
    return cuda


def numpy_dtype_name(trt_name: str) -> str:
    """The numpy name of a TensorRT DataType name (FLOAT -> float32)."""
    if trt_name not in _DTYPES:
        raise BundleError(f"TensorRT data type {trt_name} has no counterpart in this runtime")
    return _DTYPES[trt_name]


def parse_l4t_release(text: str) -> Optional[str]:
    """'# R36 (release), REVISION: 4.3, ...' (/etc/nv_tegra_release) -> 'R36.4.3'."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{match.group(1)}.{match.group(2)}" if match else None


def l4t_release(path: Path = Path("/etc/nv_tegra_release")) -> Optional[str]:
    """The Jetson Linux (L4T) release, recorded next to engines for benchmarks; None off Jetson."""
    try:
        return parse_l4t_release(path.read_text(errors="replace"))
    except OSError:
        return None


@dataclass(frozen=True)
class EngineEnvironment:
    """What a TensorRT engine is tied to, as recorded in `manifest["engines"][precision]` at build time."""

    tensorrt_version: str
    cuda_version: str  # of the driver, e.g. "12.6"
    gpu_name: str
    compute_capability: str  # "8.7"
    sm_count: int
    l4t_release: Optional[str] = None

    @property
    def capability(self) -> tuple[int, int]:
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> "EngineEnvironment":
        try:
            return cls(
                str(section["tensorrt_version"]),
                str(section["cuda_version"]),
                str(section["gpu_name"]),
                str(section["compute_capability"]),
                int(section["sm_count"]),
                section.get("l4t_release"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"malformed engines section in {MANIFEST} ({type(exc).__name__}: {exc})") from None

    def same_target(self, other: "EngineEnvironment") -> bool:
        """Whether an engine built in one environment deserialises and runs as tuned in the other."""
        return (self.tensorrt_version, self.compute_capability, self.gpu_name, self.sm_count) == (
            other.tensorrt_version,
            other.compute_capability,
            other.gpu_name,
            other.sm_count,
        )


def query_environment(tensorrt_version: str, cuda: Any, device: int = 0) -> EngineEnvironment:
    """This machine's GPU, read through an initialised `pycuda.driver`."""
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    driver = int(cuda.get_driver_version())
    return EngineEnvironment(
        tensorrt_version=tensorrt_version,
        cuda_version=f"{driver // 1000}.{driver % 1000 // 10}",
        gpu_name=str(dev.name()),
        compute_capability=f"{major}.{minor}",
        sm_count=int(dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)),
        l4t_release=l4t_release(),
    )


def _rebuild_hint(root: Path, precision: str) -> str:
    return f"run `rdvla build {root} --precision {precision}` on this device"


def engine_section(manifest: Mapping[str, Any], precision: str, root: Path) -> dict[str, Any]:
    """`manifest["engines"][precision]`, refusing a bundle that lacks it or any graph's engine."""
    engines = manifest.get("engines") or {}
    if precision not in engines:
        have = f" (it has {', '.join(sorted(engines))})" if engines else ""
        raise BundleError(f"{root}: no {precision} TensorRT engines in this bundle{have}: {_rebuild_hint(root, precision)}")
    section = dict(engines[precision])
    missing = [g for g in names.GRAPHS if g not in section.get("graphs", {})]
    if missing:
        raise BundleError(
            f"{root}: the {precision} engines lack {', '.join(missing)} (a partial build): {_rebuild_hint(root, precision)}"
        )
    return section


def check_engine_compat(section: Mapping[str, Any], env: EngineEnvironment, precision: str, root: Path) -> None:
    """Refuse engines built with another TensorRT or for another GPU than the running ones."""
    built = EngineEnvironment.from_section(section)
    problems = []
    if built.tensorrt_version != env.tensorrt_version:
        problems.append(f"TensorRT {built.tensorrt_version} (this device runs {env.tensorrt_version})")
    if built.compute_capability != env.compute_capability:
        problems.append(f"compute capability {built.compute_capability} (this GPU is {env.compute_capability})")
    if (built.gpu_name, built.sm_count) != (env.gpu_name, env.sm_count):
        problems.append(f"GPU {built.gpu_name} with {built.sm_count} SMs (this GPU: {env.gpu_name} with {env.sm_count} SMs)")
    if problems:
        raise BundleError(
            f"{root}: the {precision} engines were built for {'; '.join(problems)}. A TensorRT engine only runs "
            f"with the TensorRT version and on the GPU model it was built with: {_rebuild_hint(root, precision)}"
        )
    if built.cuda_version != env.cuda_version:
        log.warning("%s engines were built under CUDA %s, this device runs CUDA %s", precision, built.cuda_version, env.cuda_version)


def check_engine_sources(section: Mapping[str, Any], manifest: Mapping[str, Any], precision: str, root: Path) -> None:
    """Refuse engines built from graph files the bundle no longer holds (a re-export left them stale)."""
    files: Mapping[str, str] = manifest.get("files", {})
    for graph, record in section["graphs"].items():
        source, digest = record.get("source"), record.get("source_sha256")
        # A robot-side bundle may drop the ONNX graphs to save space; only a listed source can be stale.
        if source in files and digest is not None and files[source] != digest:
            raise BundleError(
                f"{root}: the {precision} engine of {graph} was built from another version of {source} "
                f"(stale after a re-export): {_rebuild_hint(root, precision)}"
            )


def verify_engine_files(bundle: Bundle, section: Mapping[str, Any], precision: str) -> dict[str, Path]:
    """Check every engine file against the SHA-256 recorded at build time; returns graph -> path."""
    files: Mapping[str, str] = bundle.manifest.get("files", {})
    paths = {}
    for graph in names.GRAPHS:
        record = section["graphs"][graph]
        rel, digest = record["file"], record["sha256"]
        path = bundle.path(rel)
        if not path.is_file():
            raise BundleError(f"{bundle.root}: engine file {rel} is missing: {_rebuild_hint(bundle.root, precision)}")
        if files.get(rel, digest) != digest:
            raise BundleError(f"{bundle.root}: {MANIFEST} lists two different SHA-256 for {rel}: {_rebuild_hint(bundle.root, precision)}")
        if sha256_file(path) != digest:
            raise BundleError(
                f"{bundle.root}: {rel} does not match the SHA-256 recorded when it was built (corrupted, edited "
                f"or copied from another build): {_rebuild_hint(bundle.root, precision)}"
            )
        paths[graph] = path
    return paths


@dataclass(frozen=True)
class IOTensor:
    """One engine input or output as TensorRT reports it (-1 marks a dynamic dimension)."""

    name: str
    mode: str  # "input" or "output"
    dtype: str  # numpy name
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "IOTensor":
        return cls(data["name"], data["mode"], data["dtype"], tuple(data["shape"]))


def engine_io(engine: "trt.ICudaEngine") -> list[IOTensor]:
    """The I/O tensors of a deserialised engine."""
    import tensorrt as trt

    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        dims = engine.get_tensor_shape(name)
        shape = tuple(int(dims[k]) for k in range(len(dims)))
        tensors.append(IOTensor(name, mode, numpy_dtype_name(engine.get_tensor_dtype(name).name), shape))
    return tensors


def dynamic_dims(graphs: Mapping[str, GraphSpec], prompt_len: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """(min, max) of every named dynamic dimension; only the prompt length may vary.

    The prompt axis is recognised by position (the last axis of input_ids) as well as by the name
    "prompt_len", since exporters differ in how they name dynamic axes.
    """
    dims = {"prompt_len": prompt_len}
    for spec in graphs.values():
        for tensor in spec.inputs:
            if tensor.name == names.INPUT_IDS and tensor.shape and isinstance(tensor.shape[-1], str):
                dims[tensor.shape[-1]] = prompt_len
    for graph, spec in graphs.items():
        for tensor in (*spec.inputs, *spec.outputs):
            for dim in tensor.shape:
                if isinstance(dim, str) and dim not in dims:
                    raise BundleError(
                        f"graph {graph}: tensor {tensor.name} has dynamic dimension {dim!r}; "
                        "only the prompt length (input_ids) may vary"
                    )
    return dims


def resolve_shape(tensor: TensorSpec, dims: Mapping[str, int]) -> tuple[int, ...]:
    """The concrete shape of `tensor` with each named dimension replaced from `dims`."""
    return tuple(dims[d] if isinstance(d, str) else int(d) for d in tensor.shape)


@dataclass(frozen=True)
class BufferSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class BufferPlan:
    """Every buffer the backend allocates at load, sized from the manifest's graph specs.

    host_inputs  VLM+Prelude inputs at their largest shape: a pinned staging buffer and a device buffer each
    context      VLM+Prelude outputs, written once per query and read by every core iteration
    latent        two device buffers (ping-pong), plus pinned buffers to load S0 and read the latent back
    actions      two device buffers (ping-pong), plus pinned zeros and a pinned readback buffer
    scalars      mse and cosine, one device block of 2 x SCALAR_STRIDE bytes and its pinned mirror
    """

    host_inputs: tuple[BufferSpec, ...]
    context: tuple[BufferSpec, ...]
    latent: BufferSpec
    actions: BufferSpec
    scalars: tuple[BufferSpec, BufferSpec]
    dynamic: Mapping[str, tuple[int, int]]

    @property
    def device_bytes(self) -> int:
        once = sum(b.nbytes for b in (*self.host_inputs, *self.context))
        return once + 2 * (self.latent.nbytes + self.actions.nbytes) + 2 * SCALAR_STRIDE

    @property
    def pinned_bytes(self) -> int:
        return sum(b.nbytes for b in self.host_inputs) + 2 * (self.latent.nbytes + self.actions.nbytes) + 4 * _SCALAR_FLOATS


def _fail(graph: str, problem: str) -> BundleError:
    return BundleError(f"graph {graph} breaks the bundle contract (runtime/backends/base.py): {problem}")


def plan_buffers(bundle: Bundle) -> BufferPlan:
    """Check the four graphs against the contract of `runtime.backends.base` and size every buffer."""
    graphs = {g: bundle.graph(g) for g in names.GRAPHS}
    dims = dynamic_dims(graphs, bundle.prompt_len)
    largest = {d: high for d, (_, high) in dims.items()}

    def buffer(t: TensorSpec) -> BufferSpec:
        return BufferSpec(t.name, t.dtype, resolve_shape(t, largest))

    vlm = graphs[names.VLM_PRELUDE]
    context = {t.name: buffer(t) for t in vlm.outputs}
    loop_inputs = {names.LATENT, names.PREV_ACTIONS}
    expected_outputs = {
        names.CORE_STEP: {names.NEXT_LATENT},
        names.CORE_STEP_DECODE: {names.NEXT_LATENT, names.ACTIONS, names.MSE, names.COSINE},
        names.DECODE: {names.ACTIONS},
    }
    specs: dict[str, TensorSpec] = {t.name: t for t in vlm.outputs}
    for graph, outputs in expected_outputs.items():
        spec = graphs[graph]
        unknown = [t.name for t in spec.inputs if t.name not in context and t.name not in loop_inputs]
        if unknown:
            raise _fail(graph, f"inputs {', '.join(unknown)} are neither loop latent nor outputs of {names.VLM_PRELUDE}")
        if names.LATENT not in {t.name for t in spec.inputs}:
            raise _fail(graph, f"no {names.LATENT} input")
        got = {t.name for t in spec.outputs}
        if got != outputs:
            raise _fail(graph, f"outputs {sorted(got)}, expected {sorted(outputs)}")
        for t in (*spec.inputs, *spec.outputs):
            seen = specs.setdefault(t.name, t)
            if buffer(seen) != buffer(t):
                raise _fail(graph, f"{t.name} is {t.dtype} {list(t.shape)} here but {seen.dtype} {list(seen.shape)} elsewhere")
    if names.PREV_ACTIONS not in {t.name for t in graphs[names.CORE_STEP_DECODE].inputs}:
        raise _fail(names.CORE_STEP_DECODE, f"no {names.PREV_ACTIONS} input")
    pairs = ((names.LATENT, names.NEXT_LATENT), (names.PREV_ACTIONS, names.ACTIONS))
    for a, b in pairs:
        if buffer(specs[a]) != replace(buffer(specs[b]), name=a):
            raise _fail(names.CORE_STEP_DECODE, f"{a} and {b} differ in shape or dtype; they share ping-pong buffers")
    loop = [specs[n] for n in (names.LATENT, names.PREV_ACTIONS, names.MSE, names.COSINE)]
    for t in loop:
        if t.dtype != "float32":
            raise _fail(names.CORE_STEP_DECODE, f"{t.name} is {t.dtype}; latent, actions and halting scalars cross engines in float32")
    for t in loop[2:]:
        if buffer(t).nbytes != 4:
            raise _fail(names.CORE_STEP_DECODE, f"{t.name} has shape {list(t.shape)}; a halting scalar is one float32")
    return BufferPlan(
        host_inputs=tuple(buffer(t) for t in vlm.inputs),
        context=tuple(context.values()),
        latent=buffer(specs[names.LATENT]),
        actions=buffer(specs[names.PREV_ACTIONS]),
        scalars=(buffer(specs[names.MSE]), buffer(specs[names.COSINE])),
        dynamic=dims,
    )


def check_engine_io(spec: GraphSpec, io: Sequence[IOTensor], root: Path, precision: str) -> None:
    """Refuse an engine whose I/O names, dtypes or static shapes differ from the manifest's graph spec.

    TensorRT 8.6 (JetPack 5) has no INT64 I/O and turns input_ids into INT32; that one difference is accepted.
    """
    expected = {t.name: (mode, t) for mode, group in (("input", spec.inputs), ("output", spec.outputs)) for t in group}
    got = {t.name: t for t in io}
    problems = []
    for name in sorted(set(expected) ^ set(got)):
        problems.append(f"{name} is {'missing from the engine' if name in expected else 'not in the graph spec'}")
    for name in sorted(set(expected) & set(got)):
        mode, want = expected[name]
        have = got[name]
        dtype_ok = have.dtype == want.dtype or (name == names.INPUT_IDS and (want.dtype, have.dtype) == ("int64", "int32"))
        static = tuple(-1 if isinstance(d, str) else int(d) for d in want.shape)
        if have.mode != mode or not dtype_ok or have.shape != static:
            problems.append(f"{name}: engine {have.mode} {have.dtype} {list(have.shape)}, spec {mode} {want.dtype} {list(static)}")
    if problems:
        raise BundleError(
            f"{root}: the {precision} engine of {spec.name} does not match the bundle's graph ({'; '.join(problems)}): "
            f"{_rebuild_hint(root, precision)}"
        )


# Every (graph, direction) the loop can ask for. A direction is the pair of ping-pong indices current
# before the call: (latent,) for core_step, (latent, actions) for the graphs that write actions. Each call
# writes the other buffer of each pair it advances (as the ONNX Runtime backend does); the two indices
# move independently because `step` advances the latent without decoding.
DIRECTIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    names.CORE_STEP: ((0,), (1,)),
    names.CORE_STEP_DECODE: ((0, 0), (0, 1), (1, 0), (1, 1)),
    names.DECODE: ((0, 0), (0, 1), (1, 0), (1, 1)),
}


def slots(graph: str, direction: tuple[int, ...]) -> dict[str, tuple[str, int]]:
    """Tensor name -> (buffer pair, index) that one direction of `graph` binds."""
    if graph == names.CORE_STEP:
        (s,) = direction
        return {names.LATENT: ("latent", s), names.NEXT_LATENT: ("latent", 1 - s)}
    s, a = direction
    if graph == names.CORE_STEP_DECODE:
        return {
            names.LATENT: ("latent", s),
            names.NEXT_LATENT: ("latent", 1 - s),
            names.PREV_ACTIONS: ("actions", a),
            names.ACTIONS: ("actions", 1 - a),
        }
    if graph == names.DECODE:
        return {names.LATENT: ("latent", s), names.ACTIONS: ("actions", 1 - a)}
    raise ValueError(f"{graph} has no ping-pong buffers")


@dataclass
class PingPong:
    """Which of the two latent / action buffers holds the current latent and the latest actions."""

    latent: int = 0
    actions: int = 0

    def reset(self) -> None:
        self.latent = self.actions = 0

    def step(self) -> tuple[int]:
        direction = (self.latent,)
        self.latent ^= 1
        return direction

    def step_decode(self) -> tuple[int, int]:
        direction = (self.latent, self.actions)
        self.latent ^= 1
        self.actions ^= 1
        return direction

    def decode(self) -> tuple[int, int]:
        direction = (self.latent, self.actions)
        self.actions ^= 1
        return direction


def capture_plan(enabled: bool, capture_api: bool, io: Sequence[IOTensor]) -> Optional[str]:
    """None when an engine should be captured as CUDA graphs, else why it runs with execute_async_v3."""
    if not enabled:
        return "CUDA graphs disabled"
    if not capture_api:
        return "this pycuda has no stream capture (pycuda 2021.1 or newer has it)"
    dynamic = [t.name for t in io if -1 in t.shape]
    if dynamic:
        return f"dynamic shapes ({', '.join(dynamic)}); a captured graph replays fixed shapes only"
    return None


_SEVERITY_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "VERBOSE")


def make_trt_logger(target: logging.Logger, sink: Optional[list[str]] = None) -> "trt.ILogger":
    """A TensorRT logger that forwards to `target` (TensorRT's INFO as DEBUG) and, if given, appends to `sink`.

    VERBOSE messages are dropped unless `target` logs DEBUG: TensorRT emits thousands during a build.
    """
    import tensorrt as trt

    levels = {
        trt.ILogger.INTERNAL_ERROR: ("INTERNAL_ERROR", logging.CRITICAL),
        trt.ILogger.ERROR: ("ERROR", logging.ERROR),
        trt.ILogger.WARNING: ("WARNING", logging.WARNING),
        trt.ILogger.INFO: ("INFO", logging.DEBUG),
        trt.ILogger.VERBOSE: ("VERBOSE", logging.DEBUG),
    }

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            label, level = levels.get(severity, ("INFO", logging.DEBUG))
            if label == "VERBOSE" and not target.isEnabledFor(logging.DEBUG):
                return
            if sink is not None:
                sink.append(f"[TensorRT {label}] {msg}")
            target.log(level, "TensorRT: %s", msg)

    return _Logger()


class TensorRTBackend(Backend):
    """The bundle's TensorRT engines with the recurrent core iterated on device buffers.

    `iteration_times_ms()` returns the device-side time of each iteration of the last query, measured
    with CUDA events recorded around every `step` / `step_decode` since the last `reset_latent`.
    `execution_modes()` tells, per core graph, whether it replays CUDA graphs or runs
    `execute_async_v3` (and why).
    """

    name = "tensorrt"

    def __init__(self, bundle: Bundle, precision: str = "fp16", check_every: int = 1, cuda_graphs: bool = True) -> None:
        if check_every < 1:
            raise ValueError(f"check_every must be at least 1, got {check_every}")
        self.bundle = bundle
        self.precision = precision
        # The loop's readback cadence, kept for it; the backend reads the scalars exactly when asked.
        self.check_every = check_every
        self._schedule = PingPong()
        self._iterations = 0
        self._modes: dict[str, str] = {}
        self._graphs: dict[tuple[str, tuple[int, ...]], Any] = {}
        self._contexts: dict[str, trt.IExecutionContext] = {}
        self._engines: dict[str, trt.ICudaEngine] = {}
        self._allocations: list[Any] = []
        self._pinned: dict[str, np.ndarray] = {}
        self._events: list[Any] = []
        self._sync: dict[str, Any] = {}
        self._input_shapes: dict[str, tuple[int, ...]] = {}
        self._runtime: Optional[trt.Runtime] = None
        self._stream: Any = None
        self._cuda_context: Any = None

        trt_version = require_tensorrt()
        cuda = require_pycuda()
        env = query_environment(trt_version, cuda)
        section = engine_section(bundle.manifest, precision, bundle.root)
        check_engine_compat(section, env, precision, bundle.root)
        check_engine_sources(section, bundle.manifest, precision, bundle.root)
        self.plan = plan_buffers(bundle)
        paths = verify_engine_files(bundle, section, precision)
        self._cuda = cuda
        # The primary context is the one TensorRT's runtime API calls use: one context, shared.
        self._cuda_context = cuda.Device(0).retain_primary_context()
        self._cuda_context.push()
        try:
            self._load(paths, cuda_graphs)
        except BaseException:
            self.close()
            raise

    # -- load ------------------------------------------------------------------------------------

    def _load(self, paths: Mapping[str, Path], cuda_graphs: bool) -> None:
        import tensorrt as trt

        cuda = self._cuda
        self._trt_logger = make_trt_logger(log)
        runtime = self._runtime = trt.Runtime(self._trt_logger)
        self._stream = cuda.Stream()
        io: dict[str, list[IOTensor]] = {}
        for graph in names.GRAPHS:
            rel = paths[graph].relative_to(self.bundle.root)
            # Read and deserialise one engine at a time: on Orin host and device share the same DRAM.
            engine: Optional[trt.ICudaEngine] = runtime.deserialize_cuda_engine(paths[graph].read_bytes())
            if engine is None:
                raise BundleError(
                    f"{self.bundle.root}: TensorRT could not deserialise {rel} (see its messages above): "
                    f"{_rebuild_hint(self.bundle.root, self.precision)}"
                )
            io[graph] = engine_io(engine)
            check_engine_io(self.bundle.graph(graph), io[graph], self.bundle.root, self.precision)
            context: Optional[trt.IExecutionContext] = engine.create_execution_context()
            if context is None:
                raise RuntimeError(f"TensorRT could not create an execution context for {graph} (device memory exhausted?)")
            self._engines[graph], self._contexts[graph] = engine, context
        self._allocate({t.name: t for t in io[names.VLM_PRELUDE]})
        self._bind_static()
        for graph in (names.CORE_STEP, names.CORE_STEP_DECODE):
            self._prepare_graphs(graph, capture_plan(cuda_graphs, hasattr(self._stream, "begin_capture"), io[graph]))
        log.info(
            "TensorRT %s engines loaded: %.1f MB of I/O buffers on the device, %.1f MB pinned; %s",
            self.precision,
            self.plan.device_bytes / 1e6,
            self.plan.pinned_bytes / 1e6,
            ", ".join(f"{g}: {m}" for g, m in self._modes.items()),
        )

    def _device_buffer(self, nbytes: int) -> int:
        alloc = self._cuda.mem_alloc(nbytes)
        self._allocations.append(alloc)
        # Zeroed so that warm-up and capture runs read defined values.
        self._cuda.memset_d8(alloc, 0, nbytes)
        return int(alloc)

    def _allocate(self, vlm_io: Mapping[str, IOTensor]) -> None:
        cuda, plan = self._cuda, self.plan
        self._host_inputs: dict[str, int] = {}
        for spec in plan.host_inputs:
            staged = replace(spec, dtype=vlm_io[spec.name].dtype)  # input_ids may be int32 (TensorRT 8.6)
            self._pinned[spec.name] = cuda.pagelocked_empty(staged.shape, staged.dtype)
            self._host_inputs[spec.name] = self._device_buffer(staged.nbytes)
        self._context_buffers = {spec.name: self._device_buffer(spec.nbytes) for spec in plan.context}
        self._buffers = {
            "latent": [self._device_buffer(plan.latent.nbytes) for _ in range(2)],
            "actions": [self._device_buffer(plan.actions.nbytes) for _ in range(2)],
        }
        scalars = self._device_buffer(2 * SCALAR_STRIDE)
        self._scalars = scalars
        self._scalar_addresses = {plan.scalars[0].name: scalars, plan.scalars[1].name: scalars + SCALAR_STRIDE}
        self._pinned["init_latent"] = cuda.pagelocked_empty(plan.latent.shape, plan.latent.dtype)
        self._pinned["latent"] = cuda.pagelocked_empty(plan.latent.shape, plan.latent.dtype)
        self._pinned["zero_actions"] = cuda.pagelocked_zeros(plan.actions.shape, plan.actions.dtype)
        self._pinned["actions"] = cuda.pagelocked_empty(plan.actions.shape, plan.actions.dtype)
        self._pinned["scalars"] = cuda.pagelocked_empty((_SCALAR_FLOATS,), np.float32)
        # staged: host inputs have left their staging buffers; loaded: S0 has left its staging buffer.
        self._sync = {k: cuda.Event(cuda.event_flags.DISABLE_TIMING) for k in ("staged", "loaded", "scalars")}
        # events[0] opens the first iteration of a query, events[k] closes iteration k.
        self._events = [cuda.Event() for _ in range(MAX_SUPPORTED_ITERATIONS + 1)]
        self._addresses = {
            (graph, d): {name: self._buffers[pair][i] for name, (pair, i) in slots(graph, d).items()}
            for graph, directions in DIRECTIONS.items()
            for d in directions
        }

    def _set_address(self, graph: str, name: str, address: int) -> None:
        if not self._contexts[graph].set_tensor_address(name, address):
            raise RuntimeError(f"TensorRT refused the address of {name} in {graph}")

    def _bind_static(self) -> None:
        for name, address in self._host_inputs.items():
            self._set_address(names.VLM_PRELUDE, name, address)
        for name, address in self._context_buffers.items():
            self._set_address(names.VLM_PRELUDE, name, address)
        for graph in (names.CORE_STEP, names.CORE_STEP_DECODE, names.DECODE):
            for tensor in self.bundle.graph(graph).inputs:
                if tensor.name in self._context_buffers:
                    self._set_address(graph, tensor.name, self._context_buffers[tensor.name])
        for name, address in self._scalar_addresses.items():
            self._set_address(names.CORE_STEP_DECODE, name, address)

    def _bind(self, graph: str, direction: tuple[int, ...]) -> None:
        for name, address in self._addresses[(graph, direction)].items():
            self._set_address(graph, name, address)

    def _enqueue(self, graph: str) -> None:
        if not self._contexts[graph].execute_async_v3(self._stream.handle):
            raise RuntimeError(f"TensorRT could not enqueue {graph} (see its messages above)")

    def _prepare_graphs(self, graph: str, reason: Optional[str]) -> None:
        directions = DIRECTIONS[graph]
        # One enqueue per direction before capturing: the first run after binding does one-off work
        # (lazy kernel loading, scratch set-up) that must not end up inside a graph.
        for d in directions:
            self._bind(graph, d)
            self._enqueue(graph)
        self._stream.synchronize()
        if reason is None:
            try:
                captured = {d: self._capture(graph, d) for d in directions}
            except Exception as exc:  # whatever broke the capture, the engine still runs without graphs
                reason = f"capture failed ({type(exc).__name__}: {exc})"
            else:
                self._graphs.update({(graph, d): g for d, g in captured.items()})
                self._modes[graph] = f"CUDA graphs ({len(captured)} directions)"
                return
        (log.info if reason == "CUDA graphs disabled" else log.warning)("%s runs with execute_async_v3: %s", graph, reason)
        self._modes[graph] = f"execute_async_v3: {reason}"

    def _capture(self, graph: str, direction: tuple[int, ...]) -> Any:
        self._bind(graph, direction)
        self._stream.begin_capture()
        try:
            enqueued = self._contexts[graph].execute_async_v3(self._stream.handle)
        finally:
            # Ends capture mode even when the enqueue raised, so the stream stays usable for the fallback.
            captured = self._stream.end_capture()
        if not enqueued:
            raise RuntimeError("execute_async_v3 returned False while capturing")
        return captured.instantiate()

    # -- per query -------------------------------------------------------------------------------

    def run_context(self, pixel_values: np.ndarray, input_ids: np.ndarray, proprio: np.ndarray) -> None:
        self.bundle.check_prompt(input_ids)
        prompt = int(input_ids.shape[-1])
        arrays = {names.PIXEL_VALUES: pixel_values, names.INPUT_IDS: input_ids, names.PROPRIO: proprio}
        dims = {d: prompt for d in self.plan.dynamic}
        # The previous query's copies must have left the staging buffers before they are overwritten.
        self._sync["staged"].synchronize()
        for tensor in self.bundle.graph(names.VLM_PRELUDE).inputs:
            address = self._host_inputs[tensor.name]
            shape = resolve_shape(tensor, dims)
            array = np.asarray(arrays[tensor.name])
            if array.shape != shape:
                raise ValueError(f"{tensor.name} has shape {array.shape}, expected {shape}")
            count = int(np.prod(shape, dtype=np.int64))
            view = self._pinned[tensor.name].reshape(-1)[:count]
            np.copyto(view.reshape(shape), array, casting="same_kind")
            self._cuda.memcpy_htod_async(address, view, self._stream)
            if self._input_shapes.get(tensor.name) != shape:
                if not self._contexts[names.VLM_PRELUDE].set_input_shape(tensor.name, shape):
                    raise BundleError(f"the {names.VLM_PRELUDE} engine rejects {tensor.name} of shape {shape}")
                self._input_shapes[tensor.name] = shape
        self._sync["staged"].record(self._stream)
        self._enqueue(names.VLM_PRELUDE)

    def reset_latent(self, init_latent: np.ndarray) -> None:
        latent = np.asarray(init_latent)
        if latent.shape != self.plan.latent.shape:
            raise ValueError(f"init_latent has shape {latent.shape}, expected {self.plan.latent.shape}")
        self._sync["loaded"].synchronize()
        np.copyto(self._pinned["init_latent"], latent, casting="same_kind")
        self._schedule.reset()
        self._cuda.memcpy_htod_async(self._buffers["latent"][0], self._pinned["init_latent"], self._stream)
        self._cuda.memcpy_htod_async(self._buffers["actions"][0], self._pinned["zero_actions"], self._stream)
        self._sync["loaded"].record(self._stream)
        self._iterations = 0

    # -- per iteration: no allocation, no synchronisation ----------------------------------------

    def _iterate(self, graph: str, direction: tuple[int, ...]) -> None:
        if self._iterations == 0:
            self._events[0].record(self._stream)
        replay = self._graphs.get((graph, direction))
        if replay is not None:
            replay.launch(self._stream)
        else:
            self._bind(graph, direction)
            self._enqueue(graph)
        self._iterations += 1
        if self._iterations < len(self._events):
            self._events[self._iterations].record(self._stream)

    def step(self) -> None:
        self._iterate(names.CORE_STEP, self._schedule.step())

    def step_decode(self, read: bool = True) -> Optional[tuple[float, float]]:
        self._iterate(names.CORE_STEP_DECODE, self._schedule.step_decode())
        if not read:
            return None
        scalars = self._pinned["scalars"]
        self._cuda.memcpy_dtoh_async(scalars, self._scalars, self._stream)
        self._sync["scalars"].record(self._stream)
        self._sync["scalars"].synchronize()
        return float(scalars[0]), float(scalars[SCALAR_STRIDE // 4])

    def decode(self) -> None:
        direction = self._schedule.decode()
        self._bind(names.DECODE, direction)
        self._enqueue(names.DECODE)

    # -- readback ----------------------------------------------------------------------------------

    def _read(self, pair: str, index: int) -> np.ndarray:
        host = self._pinned[pair]
        self._cuda.memcpy_dtoh_async(host, self._buffers[pair][index], self._stream)
        self._stream.synchronize()
        return np.array(host, copy=True)

    def actions(self) -> np.ndarray:
        return self._read("actions", self._schedule.actions).reshape(self.plan.actions.shape[-2:])

    def latent(self) -> np.ndarray:
        return self._read("latent", self._schedule.latent)

    def iteration_times_ms(self) -> list[float]:
        """Device time of each iteration since the last `reset_latent`, in milliseconds.

        Waits for the last iteration to finish. Iterations beyond MAX_SUPPORTED_ITERATIONS are not timed.
        """
        count = min(self._iterations, len(self._events) - 1)
        if count == 0:
            return []
        self._events[count].synchronize()
        return [float(self._events[k + 1].time_since(self._events[k])) for k in range(count)]

    def execution_modes(self) -> dict[str, str]:
        """How each core graph runs: CUDA graph replay, or execute_async_v3 and why."""
        return dict(self._modes)

    def synchronize(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()

    def close(self) -> None:
        if self._cuda_context is None:
            return
        try:
            self.synchronize()
        finally:
            # Destroy in dependency order while the context is still current.
            self._graphs.clear()
            self._contexts.clear()
            self._engines.clear()
            self._runtime = None
            self._pinned.clear()
            self._events = []
            self._sync.clear()
            for alloc in self._allocations:
                alloc.free()
            self._allocations.clear()
            self._stream = None
            context, self._cuda_context = self._cuda_context, None
            context.pop()
            context.detach()
