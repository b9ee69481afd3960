"""What a build writes into the manifest: `manifest.engines[precision]` and the engine files' hashes.

The section records, per engine, its file and SHA-256, the graph it was built from (and that
graph's hash, so a re-export makes it stale), the precision plan, the I/O as TensorRT reports it,
the optimisation profile, how many layers the build pinned to FP32 and how many layers run in each
precision as TensorRT chose them (`inspector.layer_precisions`); and, for the whole section, the
TensorRT / CUDA / GPU the engines are tied to (`environment.EngineEnvironment`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Sequence

from rdvla.runtime import bundle as names
from rdvla.runtime.backends.tensorrt.environment import EngineEnvironment
from rdvla.runtime.backends.tensorrt.precision import BuildError
from rdvla.runtime.manifest import Manifest, TensorSpec


@dataclass(frozen=True)
class EngineRecord:
    """One built engine, as `manifest["engines"][precision]["graphs"][graph]` records it."""

    graph: str
    file: str  # bundle-relative .plan path
    sha256: str
    bytes: int
    source: str
    source_sha256: str
    quantized: bool
    strongly_typed: bool
    flags: tuple[str, ...]
    pinned_fp32_layers: int  # layers the build constrained to FP32 (requests, see layer_precisions)
    build_seconds: float
    io: tuple[TensorSpec, ...]
    profile: Optional[Mapping[str, Sequence[Sequence[int]]]] = None  # input -> [min, opt, max]
    layer_precisions: Optional[Mapping[str, int]] = None  # precision -> layers, as the engine inspector reports them

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
            "pinned_fp32_layers": self.pinned_fp32_layers,
            "build_seconds": round(self.build_seconds, 1),
            "io": [t.to_json() for t in self.io],
        }
        if self.profile:
            data["profile"] = {k: [list(s) for s in v] for k, v in self.profile.items()}
        if self.layer_precisions is not None:
            data["layer_precisions"] = dict(self.layer_precisions)
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
    manifest: Manifest,
    precision: str,
    records: Sequence[EngineRecord],
    env: EngineEnvironment,
    builder: Mapping[str, Any],
    build_log: tuple[str, str],
    built_at: str,
    partial: bool = False,
) -> Manifest:
    """`manifest` with the engines section of `precision` and the new files' hashes.

    A full build replaces the section (and forgets the hashes of the files it listed); a partial one
    (`rdvla build --graphs`) updates the rebuilt graphs and keeps the others.
    """
    engines = copy.deepcopy(manifest.engines)
    files = dict(manifest.files)
    old = engines.get(precision)
    graphs: dict[str, Any] = {}
    if old is not None:
        if partial:
            check_partial_rebuild(old, env, precision)
            graphs = dict(old.get("graphs", {}))
        else:
            for rel in [rec.get("file") for rec in old.get("graphs", {}).values()] + [old.get("log")]:
                files.pop(str(rel), None)
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
    return replace(manifest, engines=engines, files=files)


def _graph_order(graph: str) -> tuple[int, str]:
    return (names.GRAPHS.index(graph) if graph in names.GRAPHS else len(names.GRAPHS), graph)


def layer_precision_lines(manifest: Manifest, precision: str) -> list[str]:
    """Per engine of `precision`, what TensorRT made of the precision plan (Myelin may override layer precisions)."""
    section = manifest.engines.get(precision) or {}
    return [f"engine {graph}: {describe_layers(record)}" for graph, record in section.get("graphs", {}).items()]


def describe_layers(record: Mapping[str, Any]) -> str:
    """One engine's layers per precision as TensorRT built them, and how many the build pinned to FP32."""
    chosen = record.get("layer_precisions")
    built = ", ".join(f"{count} {precision}" for precision, count in chosen.items()) if chosen else "not recorded"
    pinned = record.get("pinned_fp32_layers")
    return f"layers as built: {built}" + (f" ({pinned} pinned to FP32)" if pinned else "")
