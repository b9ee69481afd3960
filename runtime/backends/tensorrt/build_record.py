"""What a build writes into the manifest: `manifest.engines[precision]` (a `manifest.EngineSection`)
and the engine files' hashes.

The section records, per engine, its file and SHA-256, the graph it was built from (and that
graph's hash, so a re-export makes it stale), the precision plan, the I/O as TensorRT reports it,
the optimisation profile, how many layers the build pinned to FP32 and how many layers run in each
precision as TensorRT chose them (`inspector.layer_precisions`); and, for the whole section, the
TensorRT / CUDA / GPU the engines are tied to (`environment.EngineEnvironment`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, Optional, Sequence

from rdvla.runtime import contract
from rdvla.runtime.backends.tensorrt.precision import BuildError
from rdvla.runtime.manifest import EngineEnvironment, EngineRecord, EngineSection, Manifest


def engine_dir(precision: str) -> str:
    return f"engines/{precision}"


def check_partial_rebuild(existing: Optional[EngineSection], env: EngineEnvironment, precision: str) -> None:
    """Refuse rebuilding some graphs when the others were built for another TensorRT or GPU."""
    if existing is None:
        return
    built = existing.environment
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
    engines = dict(manifest.engines)
    files = dict(manifest.files)
    old = engines.get(precision)
    graphs: dict[str, EngineRecord] = {}
    if old is not None:
        if partial:
            check_partial_rebuild(old, env, precision)
            graphs = dict(old.graphs)
        else:
            for rel in [record.file for record in old.graphs.values()] + [old.log]:
                files.pop(rel, None)
    for record in records:
        graphs[record.graph] = record
        files[record.file] = record.sha256
    log_rel, log_sha = build_log
    files[log_rel] = log_sha
    engines[precision] = EngineSection(env, built_at, dict(builder), log_rel,
                                       {g: graphs[g] for g in sorted(graphs, key=_graph_order)})
    return replace(manifest, engines=engines, files=files)


def _graph_order(graph: str) -> tuple[int, str]:
    return (contract.GRAPHS.index(graph) if graph in contract.GRAPHS else len(contract.GRAPHS), graph)


def layer_precision_lines(manifest: Manifest, precision: str) -> list[str]:
    """Per engine of `precision`, what TensorRT made of the precision plan (Myelin may override layer precisions)."""
    section = manifest.engines.get(precision)
    return [] if section is None else [f"engine {graph}: {describe_layers(record)}" for graph, record in section.graphs.items()]


def describe_layers(record: EngineRecord) -> str:
    """One engine's layers per precision as TensorRT built them, and how many the build pinned to FP32."""
    chosen = record.layer_precisions
    built = ", ".join(f"{count} {precision}" for precision, count in chosen.items()) if chosen else "not recorded"
    pinned = record.pinned_fp32_layers
    return f"layers as built: {built}" + (f" ({pinned} pinned to FP32)" if pinned else "")
