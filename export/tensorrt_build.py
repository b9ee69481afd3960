"""`rdvla build`: TensorRT engines from a bundle's ONNX graphs, built on the device that will run them.

Engines go to `engines/<precision>/<graph>.plan` inside the bundle with a `build.log`, and are
recorded in `manifest["engines"][precision]` (file, SHA-256, I/O as TensorRT reports them, and the
TensorRT / CUDA / GPU they are tied to) and in `manifest["files"]`, so the bundle's hash check and
the TensorRT backend's compatibility check cover them.

Precision policy. The bundle's graphs are exported in FP32, so TensorRT owns the precision choice:
an fp16 (or int8) build parses them into a weakly typed network, enables FP16 (and INT8 for
explicit Q/DQ graphs), and pins to FP32, with OBEY_PRECISION_CONSTRAINTS, the layers that overflow
or lose range in FP16: normalisations, softmax, reductions, the power/square-root steps of
decomposed norms, the element-wise layers that work on FP32 values (the residual stream fed by the
recurrent latent, the halting statistics) and every layer that writes a network output, so latent and
actions leave the engine as FP32 values, not up-cast FP16 ones: the recurrence accumulates in the
latent. MatMuls, convolutions and attention products run in FP16. A graph whose entry says `"strongly_typed": true` (its types
were already fixed, e.g. by ModelOpt AutoCast or Q/DQ with FP16 high precision) is parsed as a
strongly typed network instead and built exactly as typed. INT8 needs the Q/DQ graphs the
calibration step lists in `manifest["graphs_int8"]`; TensorRT's implicit INT8 calibrators are
deprecated since TensorRT 10.1 and are not used. FP8 and FP4 are refused: Orin (SM 8.7) has no such
tensor cores and bundles carry no FP8/FP4 graphs.

TensorRT is imported inside functions only; everything that decides (precision policy, profile
shapes, which layers stay FP32, manifest bookkeeping, error messages) is a plain function tested
without it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Mapping, Optional, Sequence

from rdvla.runtime.backends import base as names
from rdvla.runtime.backends.tensorrt import (
    EngineEnvironment,
    IOTensor,
    TensorRTUnavailable,
    dynamic_dims,
    make_trt_logger,
    numpy_dtype_name,
    query_environment,
    require_pycuda,
    require_tensorrt,
    resolve_shape,
)
from rdvla.runtime.bundle import MANIFEST, Bundle, BundleError, TensorSpec

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8", "fp32")
REFUSED = ("fp8", "fp4")
TYPICAL_PROMPT_LEN = 56  # the LIBERO prompts are 44-56 tokens
_ALIASES = {"nvfp4": "fp4", "half": "fp16", "float16": "fp16", "float32": "fp32"}
# The oldest GPU generation with each kind of arithmetic: Maxwell-Tegra FP16, Pascal DP4A, Ada FP8, Blackwell FP4.
_MIN_CAPABILITY = {"fp32": (0, 0), "fp16": (5, 3), "int8": (6, 1), "fp8": (8, 9), "fp4": (10, 0)}
_MIB = 1 << 20


class BuildError(ValueError):
    """A build request this tool refuses or a build TensorRT could not finish (reported in one line)."""


def check_precision(precision: str, capability: Optional[tuple[int, int]] = None) -> str:
    """The canonical precision name, or BuildError for an unknown one, FP8/FP4, or one the GPU lacks."""
    wanted = _ALIASES.get(precision.lower(), precision.lower())
    if wanted not in PRECISIONS and wanted not in REFUSED:
        raise BuildError(f"unknown precision {precision!r}: choose {', '.join(PRECISIONS)}")
    need = _MIN_CAPABILITY[wanted]
    if capability is not None and tuple(capability) < need:
        usable = [p for p in PRECISIONS if _MIN_CAPABILITY[p] <= tuple(capability)]
        orin = " (Jetson Orin has no FP8/FP4 tensor cores)" if wanted in REFUSED else ""
        raise BuildError(
            f"{wanted} needs compute capability {need[0]}.{need[1]} or newer and this GPU is "
            f"{capability[0]}.{capability[1]}{orin}: build {' or '.join(usable)}"
        )
    if wanted in REFUSED:
        raise BuildError(
            f"{wanted} engines are not supported: they need compute capability {need[0]}.{need[1]} or newer "
            f"(Jetson Orin is 8.7, without FP8/FP4 tensor cores) and {wanted.upper()} Q/DQ graphs, which bundles "
            "do not carry; build fp16 or int8"
        )
    return wanted


@dataclass(frozen=True)
class GraphSource:
    """The ONNX file one engine is built from."""

    name: str
    file: str  # relative to the bundle root
    quantized: bool  # an explicit Q/DQ graph from manifest["graphs_int8"]
    strongly_typed: bool  # the graph fixes its own tensor types


def graph_sources(bundle: Bundle, precision: str, selected: Optional[Sequence[str]] = None) -> list[GraphSource]:
    """What to build: the selected graphs (default all), from their Q/DQ versions for int8."""
    available = list(bundle.graphs)
    wanted = list(dict.fromkeys(selected)) if selected else available
    unknown = [g for g in wanted if g not in bundle.graphs]
    if unknown:
        raise BuildError(f"unknown graph {', '.join(unknown)}: this bundle has {', '.join(available)}")
    quantized: Mapping[str, Any] = bundle.manifest.get("graphs_int8") or {}
    if precision == "int8" and not quantized:
        raise BuildError(
            f"{bundle.root}: int8 engines are built from explicit Q/DQ graphs (manifest 'graphs_int8') and this "
            "bundle has none: run the calibration step on it first, or build fp16"
        )
    sources = []
    for graph in wanted:
        qdq = quantized.get(graph) if precision == "int8" else None
        entry: Mapping[str, Any] = qdq if qdq is not None else bundle.manifest["graphs"][graph]
        source = GraphSource(graph, str(entry["file"]), qdq is not None, bool(entry.get("strongly_typed", False)))
        if not bundle.path(source.file).is_file():
            raise BuildError(f"{bundle.root}: graph file {source.file} ({graph}) is missing; re-export the bundle")
        if precision == "int8" and qdq is None:
            log.warning("%s has no Q/DQ graph: its int8 engine is built from %s with FP16 kernels", graph, source.file)
        sources.append(source)
    return sources


@dataclass(frozen=True)
class PrecisionPolicy:
    strongly_typed: bool
    set_flags: tuple[str, ...]  # BuilderFlag names
    clear_flags: tuple[str, ...]
    pin_fp32: bool  # apply `fp32_layers` as layer precision constraints


def precision_policy(precision: str, source: GraphSource) -> PrecisionPolicy:
    """How one graph is built at `precision` (see the module docstring)."""
    if source.strongly_typed:
        return PrecisionPolicy(True, (), (), False)
    if precision == "fp32":
        # TF32 would round matmul inputs to 10 mantissa bits: fp32 engines are the accuracy reference.
        return PrecisionPolicy(False, (), ("TF32",), False)
    low = ("FP16", "INT8") if precision == "int8" and source.quantized else ("FP16",)
    return PrecisionPolicy(False, (*low, "OBEY_PRECISION_CONSTRAINTS"), (), True)


def profile_shapes(
    spec: TensorSpec, ranges: Mapping[str, tuple[int, int]], typical: int = TYPICAL_PROMPT_LEN
) -> Optional[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) of a dynamic input for its optimisation profile; None for a static one.

    opt is the typical prompt length clamped into the exported range: TensorRT tunes kernels for it.
    """
    if not any(isinstance(d, str) for d in spec.shape):
        return None
    low = {d: lo for d, (lo, _) in ranges.items()}
    opt = {d: min(max(typical, lo), hi) for d, (lo, hi) in ranges.items()}
    high = {d: hi for d, (_, hi) in ranges.items()}
    return resolve_shape(spec, low), resolve_shape(spec, opt), resolve_shape(spec, high)


@dataclass(frozen=True)
class LayerInfo:
    """What the FP32 policy needs to know about one network layer."""

    index: int
    kind: str  # LayerType name
    op: Optional[str]  # ElementWiseOperation / UnaryOperation name for those layers
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    float_outputs: bool  # constraining a layer with integer (shape) outputs to FP32 would fail the build


_FP32_KINDS = {"NORMALIZATION": "normalisation", "SOFTMAX": "softmax", "REDUCE": "reduction"}
_FP32_OPS = {("ELEMENTWISE", "POW"): "power (decomposed norm)", ("UNARY", "SQRT"): "square root (decomposed norm)"}
_CHAIN_KINDS = ("ELEMENTWISE", "UNARY", "REDUCE")


def fp32_layers(layers: Sequence[LayerInfo], network_inputs: Collection[str], network_outputs: Collection[str]) -> dict[int, str]:
    """Layer index -> why it must run in FP32 in an FP16 build.

    Layers arrive in topological order. Besides normalisations, softmax and reductions, FP32 spreads
    through element-wise layers from FP32 values: the network inputs (the recurrent latent, the
    previous actions, pixel values), reductions, powers and square roots (the rest of a decomposed
    RMSNorm, the halting statistics) and the layers that write network outputs. It stops at the first
    layer of another kind (typically a MatMul, which runs in FP16), so the residual stream and the
    statistics stay FP32 and the heavy layers do not.
    """
    pinned: dict[int, str] = {}
    chain = set(network_inputs)
    outputs = set(network_outputs)
    for layer in layers:
        if not layer.float_outputs:
            continue
        reason = _FP32_KINDS.get(layer.kind) or _FP32_OPS.get((layer.kind, layer.op or ""))
        if reason is None and layer.kind in ("ELEMENTWISE", "UNARY") and chain.intersection(layer.inputs):
            reason = "element-wise on an FP32 value"
        writes_output = bool(outputs.intersection(layer.outputs))
        if reason is None and writes_output:
            reason = "writes an FP32 network output"
        if reason is None:
            continue
        pinned[layer.index] = reason
        if layer.kind in _CHAIN_KINDS or writes_output:
            chain.update(layer.outputs)
    return pinned


def format_parser_error(node: int, node_name: str, operator: str, desc: str) -> str:
    if node < 0:
        return desc
    where = f"node {node}" + (f" {node_name}" if node_name else "") + (f" ({operator})" if operator else "")
    return f"{where}: {desc}"


_MEMORY = re.compile(r"out of memory|insufficient|memory allocation|could not allocate|cudaErrorMemoryAllocation|workspace", re.I)
_ERROR_PREFIXES = ("[TensorRT ERROR]", "[TensorRT INTERNAL_ERROR]")


def build_failure_message(graph: str, messages: Sequence[str], workspace_mb: Optional[int], log_path: str) -> str:
    """One line saying why TensorRT returned no engine, from the messages it logged during the build."""
    errors = [m for m in messages if m.startswith(_ERROR_PREFIXES)]
    if errors:
        memory = next((m for m in reversed(errors) if _MEMORY.search(m)), None)
    else:
        memory = next((m for m in reversed(messages) if _MEMORY.search(m)), None)
    if memory is None:
        reason = errors[-1].split("] ", 1)[-1] if errors else "TensorRT gave no reason"
        return f"TensorRT could not build {graph}: {reason} (full log: {log_path})"
    detail = memory.split("] ", 1)[-1]
    if workspace_mb is not None and "workspace" in detail.lower():
        advice = f"--workspace {workspace_mb} is too small for some layer: raise it, or omit it to let TensorRT use what it needs"
    else:
        advice = "close other GPU programs, build one graph at a time with --graphs, or cap tactic memory with --workspace 1024"
    return f"not enough GPU memory to build {graph} ({detail}): {advice} (full log: {log_path})"


@dataclass(frozen=True)
class EngineRecord:
    """One built engine, as `manifest["engines"][precision]["graphs"][graph]` records it."""

    graph: str
    file: str  # bundle-relative .plan path
    sha256: str
    bytes: int
    source: str
    source_sha256: Optional[str]
    quantized: bool
    strongly_typed: bool
    flags: tuple[str, ...]
    fp32_layers: int
    build_seconds: float
    io: tuple[IOTensor, ...]
    profile: Optional[Mapping[str, Sequence[Sequence[int]]]] = None  # input -> [min, opt, max]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "file": self.file,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "source": self.source,
            "source_sha256": self.source_sha256,
            "quantized": self.quantized,
            "strongly_typed": self.strongly_typed,
            "flags": list(self.flags),
            "fp32_layers": self.fp32_layers,
            "build_seconds": round(self.build_seconds, 1),
            "io": [t.to_json() for t in self.io],
        }
        if self.profile:
            data["profile"] = {k: [list(s) for s in v] for k, v in self.profile.items()}
        return data


def engine_dir(precision: str) -> str:
    return f"engines/{precision}"


def check_partial_rebuild(existing: Optional[Mapping[str, Any]], env: EngineEnvironment, precision: str) -> None:
    """Refuse rebuilding some graphs when the others were built for another TensorRT or GPU."""
    if existing is None:
        return
    built = EngineEnvironment.from_section(existing)
    if not built.same_target(env):
        raise BuildError(
            f"the existing {precision} engines were built with TensorRT {built.tensorrt_version} for GPU "
            f"{built.gpu_name} (SM {built.compute_capability}); rebuilding only some graphs here would mix "
            "targets: rebuild all graphs (omit --graphs)"
        )


def record_engines(
    manifest: Mapping[str, Any],
    precision: str,
    records: Sequence[EngineRecord],
    env: EngineEnvironment,
    builder: Mapping[str, Any],
    build_log: tuple[str, str],
    built_at: str,
    partial: bool = False,
) -> dict[str, Any]:
    """A copy of `manifest` with the engines section of `precision` and the new files' hashes.

    A full build replaces the section (and forgets the hashes of the files it listed); a partial one
    (`rdvla build --graphs`) updates the rebuilt graphs and keeps the others.
    """
    out = copy.deepcopy(dict(manifest))
    engines = out.setdefault("engines", {})
    files = out.setdefault("files", {})
    old = engines.get(precision)
    graphs: dict[str, Any] = {}
    if old is not None:
        if partial:
            check_partial_rebuild(old, env, precision)
            graphs = dict(old.get("graphs", {}))
        else:
            for rec in old.get("graphs", {}).values():
                files.pop(rec.get("file"), None)
            files.pop(old.get("log"), None)
    for record in records:
        graphs[record.graph] = record.to_json()
        files[record.file] = record.sha256
    log_rel, log_sha = build_log
    files[log_rel] = log_sha
    engines[precision] = {
        **env.to_json(),
        "built_at": built_at,
        "builder": dict(builder),
        "log": log_rel,
        "graphs": {g: graphs[g] for g in sorted(graphs, key=_graph_order)},
    }
    return out


def _graph_order(graph: str) -> tuple[int, str]:
    return (names.GRAPHS.index(graph) if graph in names.GRAPHS else len(names.GRAPHS), graph)


def save_manifest(root: Path, manifest: Mapping[str, Any]) -> None:
    """Replace manifest.json atomically: a crash leaves the old or the new one, never half of one."""
    tmp = root / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, root / MANIFEST)


class _BuildLog:
    """Progress lines for the console (logging) and, with TensorRT's own messages, for build.log."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, message: str) -> None:
        log.info("%s", message)
        self.lines.append(f"{datetime.now().strftime('%H:%M:%S')} {message}")

    def write(self, path: Path) -> str:
        text = "\n".join(self.lines) + "\n"
        path.write_text(text)
        return hashlib.sha256(text.encode()).hexdigest()


def open_for_build(root: Path) -> Bundle:
    """The bundle with every file's hash checked except existing engines', which the build replaces.

    An interrupted or hand-edited earlier build must not lock the user out of rebuilding.
    """
    bundle = Bundle.open(root, verify_hashes=False)
    bundle.verify_files([rel for rel in bundle.manifest.get("files", {}) if not rel.startswith("engines/")])
    return bundle


def _probe_capability() -> Optional[tuple[int, int]]:
    try:
        cuda = require_pycuda()
        major, minor = cuda.Device(0).compute_capability()
        return int(major), int(minor)
    except Exception:  # only tailors a refusal message: no pycuda, no driver or no GPU all mean "unknown"
        return None


def build_engines(
    bundle: Bundle,
    precision: str,
    workspace_mb: Optional[int] = None,
    timing_cache: Optional[Path] = None,
    graphs: Optional[Sequence[str]] = None,
) -> list[EngineRecord]:
    """Build the engines of `bundle` at `precision` on this GPU, write them and record them in the manifest."""
    wanted = _ALIASES.get(precision.lower(), precision.lower())
    precision = check_precision(wanted, _probe_capability() if wanted in REFUSED else None)
    if workspace_mb is not None and workspace_mb < 1:
        raise BuildError(f"--workspace must be a positive number of MiB, got {workspace_mb}")
    sources = graph_sources(bundle, precision, graphs)
    ranges = dynamic_dims(bundle.graphs, bundle.prompt_len)
    trt_version = require_tensorrt()
    env = query_environment(trt_version, require_pycuda())
    check_precision(precision, env.capability)
    partial = {s.name for s in sources} != set(bundle.graphs)
    existing = (bundle.manifest.get("engines") or {}).get(precision)
    if partial:
        check_partial_rebuild(existing, env, precision)

    final_dir = bundle.path(engine_dir(precision))
    staging = bundle.path(f"engines/.{precision}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    build_log = _BuildLog()
    build_log.note(
        f"rdvla build {bundle.root} --precision {precision}: TensorRT {env.tensorrt_version}, CUDA {env.cuda_version}, "
        f"{env.gpu_name} (SM {env.compute_capability}, {env.sm_count} SMs), L4T {env.l4t_release or 'n/a'}"
    )
    settings: dict[str, Any] = {
        "precision": precision,
        "workspace_mb": workspace_mb,
        "timing_cache": str(timing_cache) if timing_cache else None,
        "typical_prompt_len": TYPICAL_PROMPT_LEN,
    }
    start = time.perf_counter()
    records = []
    try:
        builder = _EngineBuilder(bundle, ranges, workspace_mb, timing_cache, build_log)
        for i, source in enumerate(sources, 1):
            build_log.note(f"[{i}/{len(sources)}] {source.name}: building from {source.file}")
            record = builder.build(source, precision, staging, engine_dir(precision))
            build_log.note(
                f"[{i}/{len(sources)}] {source.name}: {record.bytes / 1e6:.1f} MB in {record.build_seconds:.0f} s "
                f"({', '.join(record.flags) or 'as typed'}; {record.fp32_layers} layers kept in FP32)"
            )
            records.append(record)
        settings["builder_optimization_level"] = builder.optimization_level
        builder.save_timing_cache()
    except BaseException:
        build_log.write(staging / "build.log")  # left in the staging folder for the error message to point at
        raise
    build_log.note(f"built {len(records)} engines in {time.perf_counter() - start:.0f} s")
    log_sha = build_log.write(staging / "build.log")
    final_dir.mkdir(parents=True, exist_ok=True)
    for path in staging.iterdir():
        os.replace(path, final_dir / path.name)
    staging.rmdir()
    built_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    log_rel = f"{engine_dir(precision)}/build.log"
    manifest = record_engines(bundle.manifest, precision, records, env, settings, (log_rel, log_sha), built_at, partial)
    save_manifest(bundle.root, manifest)
    return records


class _EngineBuilder:
    """The thin layer that calls TensorRT: one Builder and one timing cache, one graph at a time."""

    def __init__(
        self,
        bundle: Bundle,
        ranges: Mapping[str, tuple[int, int]],
        workspace_mb: Optional[int],
        timing_cache: Optional[Path],
        build_log: _BuildLog,
    ) -> None:
        import tensorrt as trt

        self.bundle, self.ranges, self.workspace_mb = bundle, ranges, workspace_mb
        self.timing_cache_path = timing_cache
        self.build_log = build_log
        self.logger = make_trt_logger(log, sink=build_log.lines)
        self.builder = trt.Builder(self.logger)
        self.cache: Optional[trt.ITimingCache] = None
        self.optimization_level: Optional[int] = None
        self.major = int(trt.__version__.split(".")[0])

    def _network(self, strongly_typed: bool, file: str) -> "trt.INetworkDefinition":
        import tensorrt as trt

        flags = 0
        if strongly_typed:
            flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
            if flag is None:
                raise BuildError(f"{file} is strongly typed and TensorRT {trt.__version__} predates strongly typed networks (9.1)")
            flags |= 1 << int(flag)
        if self.major < 10:  # implicit-batch networks were the default before TensorRT 10
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        return self.builder.create_network(flags)

    def _config(self, policy: PrecisionPolicy) -> "trt.IBuilderConfig":
        import tensorrt as trt

        config = self.builder.create_builder_config()
        if self.workspace_mb is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mb * _MIB)
        for name in policy.set_flags:
            config.set_flag(getattr(trt.BuilderFlag, name))
        for name in policy.clear_flags:
            config.clear_flag(getattr(trt.BuilderFlag, name))
        if self.cache is None:
            path = self.timing_cache_path
            data = path.read_bytes() if path is not None and path.is_file() else b""
            self.cache = config.create_timing_cache(data)
            if not config.set_timing_cache(self.cache, ignore_mismatch=False) and data:
                self.build_log.note(f"timing cache {path} is from another device or TensorRT; starting a new one")
                self.cache = config.create_timing_cache(b"")
                config.set_timing_cache(self.cache, ignore_mismatch=False)
        else:
            config.set_timing_cache(self.cache, ignore_mismatch=False)
        self.optimization_level = config.builder_optimization_level
        return config

    def build(self, source: GraphSource, precision: str, out_dir: Path, rel_dir: str) -> EngineRecord:
        import tensorrt as trt

        start = time.perf_counter()
        policy = precision_policy(precision, source)
        network = self._network(policy.strongly_typed, source.file)
        parser = trt.OnnxParser(network, self.logger)
        # parse_from_file resolves external weight files relative to the .onnx file.
        if not parser.parse_from_file(str(self.bundle.path(source.file))):
            errors = [self._parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
            raise BuildError(f"{source.file}: TensorRT's ONNX parser rejected the graph: {'; '.join(errors) or 'no details'}")
        config = self._config(policy)
        pinned = self._pin_fp32(network) if policy.pin_fp32 else {}
        profile = self._profile(network, config, source)
        io = self._network_io(network)
        first_message = len(self.build_log.lines)
        serialized = self.builder.build_serialized_network(network, config)
        if serialized is None:
            messages = self.build_log.lines[first_message:]
            raise BuildError(build_failure_message(source.name, messages, self.workspace_mb, str(out_dir / "build.log")))
        path = out_dir / f"{source.name}.plan"
        with open(path, "wb") as f:
            f.write(serialized)
        digest, size = hashlib.sha256(serialized).hexdigest(), serialized.nbytes
        del serialized, config, parser, network  # the next graph's build needs this memory
        return EngineRecord(
            graph=source.name,
            file=f"{rel_dir}/{source.name}.plan",
            sha256=digest,
            bytes=int(size),
            source=source.file,
            source_sha256=self.bundle.manifest.get("files", {}).get(source.file),
            quantized=source.quantized,
            strongly_typed=source.strongly_typed,
            flags=policy.set_flags + tuple(f"no {f}" for f in policy.clear_flags) + (("STRONGLY_TYPED",) if policy.strongly_typed else ()),
            fp32_layers=len(pinned),
            build_seconds=time.perf_counter() - start,
            io=io,
            profile=profile,
        )

    @staticmethod
    def _parser_error(error: Any) -> str:
        def field(name: str) -> str:
            value = getattr(error, name, None)  # node_name / node_operator are missing before TensorRT 10
            return str(value() if callable(value) else value or "")

        return format_parser_error(int(error.node()), field("node_name"), field("node_operator"), str(error.desc()))

    def _pin_fp32(self, network: "trt.INetworkDefinition") -> dict[int, str]:
        import tensorrt as trt

        specific: dict[trt.LayerType, type[trt.ILayer]] = {
            trt.LayerType.ELEMENTWISE: trt.IElementWiseLayer,
            trt.LayerType.UNARY: trt.IUnaryLayer,
        }
        floats = (trt.DataType.FLOAT, trt.DataType.HALF)
        infos = []
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            op = None
            cls = specific.get(layer.type)
            if cls is not None:
                layer.__class__ = cls  # get_layer returns the base class; the subclass exposes .op
                op = layer.op.name  # type: ignore[attr-defined]
            outputs = [layer.get_output(k) for k in range(layer.num_outputs)]
            infos.append(
                LayerInfo(
                    index=i,
                    kind=layer.type.name,
                    op=op,
                    inputs=tuple(t.name for t in (layer.get_input(k) for k in range(layer.num_inputs)) if t is not None),
                    outputs=tuple(t.name for t in outputs),
                    float_outputs=all(t.dtype in floats for t in outputs),
                )
            )
        network_inputs = {network.get_input(k).name for k in range(network.num_inputs)}
        network_outputs = {network.get_output(k).name for k in range(network.num_outputs)}
        pinned = fp32_layers(infos, network_inputs, network_outputs)
        for index in pinned:
            layer = network.get_layer(index)
            layer.precision = trt.float32
            for k in range(layer.num_outputs):
                layer.set_output_type(k, trt.float32)
        return pinned

    def _profile(
        self, network: "trt.INetworkDefinition", config: "trt.IBuilderConfig", source: GraphSource
    ) -> Optional[dict[str, list[list[int]]]]:
        import tensorrt as trt

        specs = {t.name: t for t in self.bundle.graph(source.name).inputs}
        shapes: dict[str, list[list[int]]] = {}
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if -1 not in [tensor.shape[k] for k in range(len(tensor.shape))]:
                continue
            spec = specs.get(tensor.name)
            bounds = profile_shapes(spec, self.ranges) if spec is not None else None
            if bounds is None:
                raise BuildError(f"{source.file}: input {tensor.name} is dynamic in the graph but not in {MANIFEST}; re-export the bundle")
            shapes[tensor.name] = [list(s) for s in bounds]
        if not shapes:
            return None
        profile = self.builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, trt.Dims(low), trt.Dims(opt), trt.Dims(high))
        config.add_optimization_profile(profile)
        return shapes

    @staticmethod
    def _network_io(network: "trt.INetworkDefinition") -> tuple[IOTensor, ...]:
        tensors = [(network.get_input(i), "input") for i in range(network.num_inputs)]
        tensors += [(network.get_output(i), "output") for i in range(network.num_outputs)]
        return tuple(
            IOTensor(t.name, mode, numpy_dtype_name(t.dtype.name), tuple(int(t.shape[k]) for k in range(len(t.shape))))
            for t, mode in tensors
        )

    def save_timing_cache(self) -> None:
        if self.timing_cache_path is None or self.cache is None:
            return
        tmp = self.timing_cache_path.with_name(self.timing_cache_path.name + ".tmp")
        tmp.write_bytes(bytes(self.cache.serialize()))
        os.replace(tmp, self.timing_cache_path)
        self.build_log.note(f"timing cache saved to {self.timing_cache_path}")
