"""`rdvla build`: TensorRT engines from a bundle's ONNX graphs, built on the device that will run them.

Engines go to `engines/<precision>/<graph>.plan` inside the bundle with a `build.log`, and are
recorded in `manifest["engines"][precision]` (`records`), so the bundle's hash check and the
TensorRT backend's compatibility check cover them.

What each engine is built from: fp32 from `graphs`; fp16 from the `graphs_fp16` that `rdvla calibrate`
converted and validated, when the bundle has them (strongly typed: built exactly as typed), else
from `graphs` with FP16 enabled and the FP32 layers of `precision.fp32_layers` pinned; int8 from the
Q/DQ `graphs_int8` (TensorRT's implicit INT8 calibrators are deprecated since TensorRT 10.1 and not
used). Every engine is built with ProfilingVerbosity.DETAILED so that the engine inspector can say
which precision each layer runs in (`inspector`).

TensorRT is imported inside functions only; everything that decides (sources, precision plan,
profile shapes, FP32 layers, manifest bookkeeping, error messages) is a plain function tested
without it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from rdvla.runtime.backends.tensorrt.build_memory import check_build_memory, read_memory
from rdvla.runtime.backends.tensorrt.buffers import dynamic_dims, numpy_dtype_name, shape_of
from rdvla.runtime.backends.tensorrt.environment import query_environment, require_cuda, require_tensorrt
from rdvla.runtime.backends.tensorrt.inspector import InspectorFormatError, layer_precisions
from rdvla.runtime.backends.tensorrt.logger import make_trt_logger
from rdvla.runtime.backends.tensorrt.precision import (
    REFUSED,
    BuildError,
    GraphSource,
    LayerInfo,
    PrecisionPlan,
    canonical_precision,
    check_precision,
    fp32_layers,
    precision_plan,
)
from rdvla.runtime.graph_check.rules import require_compatible
from rdvla.runtime.backends.tensorrt.build_record import EngineRecord, check_partial_rebuild, engine_dir, record_engines
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import MANIFEST, TensorSpec
from rdvla.runtime.outputs import atomic_write, check_new_file

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

TYPICAL_PROMPT_LEN = 56  # the LIBERO prompts are 44-56 tokens
_MIB = 1 << 20


def graph_sources(bundle: Bundle, precision: str, selected: Optional[Sequence[str]] = None) -> list[GraphSource]:
    """What to build: the selected graphs (default all), from their calibrated versions for fp16 and int8."""
    available = list(bundle.graphs)
    wanted = list(dict.fromkeys(selected)) if selected else available
    unknown = [g for g in wanted if g not in bundle.graphs]
    if unknown:
        raise BuildError(f"unknown graph {', '.join(unknown)}: this bundle has {', '.join(available)}")
    # fp32 reads `graphs` itself; fp16 and int8 read what the calibration wrote.
    calibrated: Mapping[str, Any] = bundle.manifest.calibrated.get(precision) or {}
    if precision == "int8" and not calibrated:
        raise BuildError(
            f"{bundle.root}: int8 engines are built from explicit Q/DQ graphs (manifest 'graphs_int8') and this "
            f"bundle has none: run `rdvla calibrate {bundle.root} --precision int8` on it first, or build fp16"
        )
    sources = []
    for graph in wanted:
        entry = calibrated.get(graph)
        used: Mapping[str, Any] = entry if entry is not None else bundle.graph(graph).to_json()
        source = GraphSource(graph, str(used["file"]), precision == "int8" and entry is not None, bool(used.get("strongly_typed", False)))
        if not bundle.path(source.file).is_file():
            raise BuildError(f"{bundle.root}: graph file {source.file} ({graph}) is missing; re-export the bundle")
        if calibrated and entry is None:
            kind = "Q/DQ graph: its int8 engine is built" if precision == "int8" else "calibrated FP16 graph: its fp16 engine is built"
            log.warning("%s has no %s from %s with FP16 kernels", graph, kind, source.file)
        sources.append(source)
    return sources


def profile_shapes(
    spec: TensorSpec, ranges: Mapping[str, tuple[int, int]], typical: int = TYPICAL_PROMPT_LEN
) -> Optional[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) of a dynamic input for its optimisation profile; None for a static one.

    opt is the typical prompt length clamped into the exported range: TensorRT tunes kernels for it.
    """
    if not spec.is_dynamic:
        return None
    low = {d: lo for d, (lo, _) in ranges.items()}
    opt = {d: min(max(typical, lo), hi) for d, (lo, hi) in ranges.items()}
    high = {d: hi for d, (_, hi) in ranges.items()}

    def shape(dims: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(int(d) for d in spec.resolve(dims).shape)

    return shape(low), shape(opt), shape(high)


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


def attach_timing_cache(config: "trt.IBuilderConfig", path: Optional[Path], note: Callable[[str], None]) -> "trt.ITimingCache":
    """The timing cache of `path` attached to `config`, or a new one (noted) when the file cannot be read, is not a
    timing cache, or comes from another device or TensorRT.

    `create_timing_cache` binds `IBuilderConfig::createTimingCache`, which returns a pointer, so unreadable bytes may
    come back as None; `set_timing_cache` binds `setTimingCache(ITimingCache const&, bool)` and returns false on a
    mismatch (TensorRT 10.3: include/NvInfer.h, python/src/infer/pyCore.cpp). None must not reach it: a reference
    parameter refuses None with a TypeError instead of falling back.
    """
    data = b""
    if path is not None and path.is_file():
        try:
            data = path.read_bytes()
        except OSError as exc:
            note(f"timing cache {path} cannot be read ({exc}); starting a new one")
    if data:
        cache = config.create_timing_cache(data)
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return cache
        why = "is not a timing cache TensorRT can read" if cache is None else "is from another device or TensorRT"
        note(f"timing cache {path} {why}; starting a new one")
    cache = config.create_timing_cache(b"")
    if cache is None:
        raise BuildError("TensorRT could not create an empty timing cache; check the TensorRT install (rdvla doctor)")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


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
    bundle.verify_files([rel for rel in bundle.manifest.files if not rel.startswith("engines/")])
    return bundle


def _probe_capability() -> Optional[tuple[int, int]]:
    try:
        return require_cuda().device_info().capability
    except Exception:  # only tailors a refusal message: no cuda-python, no driver or no GPU all mean "unknown"
        return None


def build_engines(
    bundle: Bundle,
    precision: str,
    workspace_mb: Optional[int] = None,
    timing_cache: Optional[Path] = None,
    graphs: Optional[Sequence[str]] = None,
) -> list[EngineRecord]:
    """Build the engines of `bundle` at `precision` on this GPU, write them and record them in the manifest."""
    wanted = canonical_precision(precision)
    precision = check_precision(wanted, _probe_capability() if wanted in REFUSED else None)
    if workspace_mb is not None and workspace_mb < 1:
        raise BuildError(f"--workspace must be a positive number of MiB, got {workspace_mb}")
    if timing_cache is not None:  # written at the end of a build that may take an hour: checked first
        check_new_file(timing_cache, overwrite=True, option="--timing-cache")
    sources = graph_sources(bundle, precision, graphs)
    swapping = check_build_memory(bundle.root, sources, precision, workspace_mb, read_memory())
    if swapping is not None:
        log.warning("%s", swapping)
    ranges = dynamic_dims(bundle.graphs, bundle.prompt_len)
    env = query_environment(require_tensorrt(), require_cuda())
    check_precision(precision, env.capability)
    partial = {s.name for s in sources} != set(bundle.graphs)
    existing = bundle.manifest.engines.get(precision)
    if partial:
        check_partial_rebuild(existing, env, precision)
    require_compatible(bundle.path(s.file) for s in sources)  # before TensorRT's parser meets what it cannot read

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
            chosen = ", ".join(f"{n} {p}" for p, n in (record.layer_precisions or {}).items()) or "unknown"
            build_log.note(
                f"[{i}/{len(sources)}] {source.name}: {record.bytes / 1e6:.1f} MB in {record.build_seconds:.0f} s "
                f"({', '.join(record.flags) or 'as typed'}; {record.pinned_fp32_layers} layers pinned to FP32; "
                f"layers as built: {chosen})"
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
    record_engines(bundle.manifest, precision, records, env, settings, (log_rel, log_sha), built_at, partial).save(bundle.root)
    return records


class _EngineBuilder:
    """The thin layer that calls TensorRT: one Builder, one Runtime (to inspect) and one timing cache, one graph at a time."""

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
        self.runtime = trt.Runtime(self.logger)
        self.cache: Optional[trt.ITimingCache] = None
        self.optimization_level: Optional[int] = None

    def _network(self, strongly_typed: bool) -> "trt.INetworkDefinition":
        import tensorrt as trt

        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
        return self.builder.create_network(flags)

    def _config(self, plan: PrecisionPlan) -> "trt.IBuilderConfig":
        import tensorrt as trt

        config = self.builder.create_builder_config()
        # Per-layer precisions and formats in the engine, for the inspector (a few KB more per engine).
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if self.workspace_mb is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mb * _MIB)
        for name in plan.set_flags:
            config.set_flag(getattr(trt.BuilderFlag, name))
        for name in plan.clear_flags:
            config.clear_flag(getattr(trt.BuilderFlag, name))
        if self.cache is None:
            self.cache = attach_timing_cache(config, self.timing_cache_path, self.build_log.note)
        else:
            config.set_timing_cache(self.cache, ignore_mismatch=False)
        self.optimization_level = config.builder_optimization_level
        return config

    def build(self, source: GraphSource, precision: str, out_dir: Path, rel_dir: str) -> EngineRecord:
        import tensorrt as trt

        start = time.perf_counter()
        plan = precision_plan(precision, source)
        network = self._network(plan.strongly_typed)
        parser = trt.OnnxParser(network, self.logger)
        # parse_from_file resolves external weight files relative to the .onnx file.
        if not parser.parse_from_file(str(self.bundle.path(source.file))):
            errors = [self._parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
            raise BuildError(f"{source.file}: TensorRT's ONNX parser rejected the graph: {'; '.join(errors) or 'no details'}")
        config = self._config(plan)
        pinned = self._pin_fp32(network) if plan.pin_fp32 else {}
        profile = self._profile(network, config, source)
        io = self._network_io(network)
        first_message = len(self.build_log.lines)
        serialized = self.builder.build_serialized_network(network, config)
        if serialized is None:
            messages = self.build_log.lines[first_message:]
            raise BuildError(build_failure_message(source.name, messages, self.workspace_mb, str(out_dir / "build.log")))
        del config, parser, network  # the inspection and the next graph's build need this memory
        path = out_dir / f"{source.name}.plan"
        with open(path, "wb") as f:
            f.write(serialized)
        digest, size = hashlib.sha256(serialized).hexdigest(), serialized.nbytes
        chosen = self._inspect(serialized, source.name)
        del serialized
        return EngineRecord(
            graph=source.name,
            file=f"{rel_dir}/{source.name}.plan",
            sha256=digest,
            bytes=int(size),
            source=source.file,
            source_sha256=self.bundle.manifest.files[source.file],  # listed: the bundle opened
            quantized=source.quantized,
            strongly_typed=source.strongly_typed,
            flags=plan.recorded_flags,
            pinned_fp32_layers=len(pinned),
            build_seconds=time.perf_counter() - start,
            io=io,
            profile=profile,
            layer_precisions=chosen,
        )

    def _inspect(self, serialized: "trt.IHostMemory", graph: str) -> Optional[dict[str, int]]:
        """Layer counts per precision as the built engine runs them; None (logged) when they cannot be read."""
        import tensorrt as trt

        engine = self.runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            self.build_log.note(f"{graph}: the engine could not be deserialised for inspection; layer precisions not recorded")
            return None
        inspector = engine.create_engine_inspector()
        try:
            return layer_precisions(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        except InspectorFormatError as exc:
            self.build_log.note(f"{graph}: layer precisions not recorded ({exc})")
            return None
        finally:
            del inspector, engine

    @staticmethod
    def _parser_error(error: "trt.ParserError") -> str:
        return format_parser_error(int(error.node()), error.node_name(), error.node_operator(), str(error.desc()))

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
        for tensor in self._network_io(network):
            if tensor.mode != "input" or not tensor.is_dynamic:
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
    def _network_io(network: "trt.INetworkDefinition") -> tuple[TensorSpec, ...]:
        tensors = [(network.get_input(i), "input") for i in range(network.num_inputs)]
        tensors += [(network.get_output(i), "output") for i in range(network.num_outputs)]
        return tuple(
            TensorSpec(t.name, numpy_dtype_name(t.dtype.name), shape_of(t.shape), mode)
            for t, mode in tensors
        )

    def save_timing_cache(self) -> None:
        if self.timing_cache_path is None or self.cache is None:
            return
        with atomic_write(self.timing_cache_path) as temporary:
            temporary.write_bytes(bytes(self.cache.serialize()))
        self.build_log.note(f"timing cache saved to {self.timing_cache_path}")
