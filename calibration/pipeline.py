"""`rdvla calibrate`: calibration data in, INT8 Q/DQ and FP16 graphs plus the accuracy report added to the bundle.

Everything a run writes goes to a new `calibration/<run>/` folder of the bundle (data, graphs,
report); the manifest is then replaced atomically, and only after that are the files of earlier
runs that the new manifest no longer lists deleted. An interrupted run therefore leaves the
bundle as it was (plus an unlisted folder, and maybe hidden `.rdvla-*.onnx` probe graphs beside the
exported graphs, which the next run removes). A precision not asked for keeps
its graphs and the record of the data they came from.

Manifest entries (`Manifest.calibrated[precision][graph]`, written as `graphs_int8` / `graphs_fp16`):
* int8: file, inputs, outputs (as `graphs[graph]`): what `rdvla build --precision int8` reads;
* fp16: the same plus `strongly_typed: true` (types fixed by the conversion) and `fp32_nodes`, the
  nodes the FP16 graph keeps in FP32;
* `calibration`: per precision the run, the data fingerprint and how the graphs were made; `report`.

Stages: capture (1), INT8 (2), FP16 (3), report (4), then publish the manifest.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

from rdvla.calibration.data import CalibrationSet, capture, fingerprint, observations, open_source
from rdvla.calibration.fp16 import FP16_LIMIT, HEADROOM, make_fp16, peak_table
from rdvla.calibration.probe import beside
from rdvla.calibration.quantize import quantize_graph
from rdvla.calibration.report import accuracy_report, summary_lines, with_manifest
from rdvla.runtime import contract
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import sha256_file
from rdvla.runtime.golden import load_cases
from rdvla.runtime.graph_check.onnx_reader import graph_files, graph_io
from rdvla.runtime.graph_check.rules import require_compatible

log = logging.getLogger(__name__)

PRECISIONS = ("int8", "fp16")
ROOT = "calibration"
# The FP16 scan runs every sample three times through a probed graph; more VLM queries than this add time, not findings.
FP16_MAX_SAMPLES = 16


def _run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _entry(bundle: Bundle, graph: str, rel: str, **extra: Any) -> dict[str, Any]:
    """A calibrated graph's manifest entry: the exported graph's I/O, after checking the new graph kept its names and types."""
    def io(path: Path) -> list[tuple[str, str]]:
        inputs, outputs = graph_io(path)
        return [(t.name, t.dtype) for t in (*inputs, *outputs)]

    if io(bundle.path(rel)) != io(bundle.path(bundle.graph(graph).file)):
        raise RuntimeError(f"{rel}: inputs/outputs differ from {bundle.graph(graph).file}")
    return {**bundle.graph(graph).to_json(), "file": rel, **extra}


def _evenly(samples: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    if len(samples) <= count:
        return samples
    step = len(samples) / count
    return [samples[int(i * step)] for i in range(count)]


def _collect_garbage(root: Path, listed: set[str], graph_dirs: set[Path]) -> None:
    """Delete what earlier runs left under calibration/ that the manifest no longer lists, and the
    hidden probe graphs a killed run left beside the exported graphs."""
    for directory in graph_dirs:
        for stale in directory.glob(".rdvla-*.onnx"):
            stale.unlink()
    base = root / ROOT
    for path in sorted(base.rglob("*"), reverse=True):
        rel = str(path.relative_to(root))
        if path.is_file() and rel not in listed:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


@dataclass
class Run:
    """One calibration run: where it writes, the files it has written (bundle-relative -> SHA-256), and the
    files of each calibrated graph it has looked at (graph file -> it and its external-data files)."""

    bundle: Bundle
    id: str
    new_files: dict[str, str] = field(default_factory=dict)
    files_by_graph: dict[str, list[str]] = field(default_factory=dict)

    @property
    def dir(self) -> str:
        return f"{ROOT}/{self.id}"

    def files_of(self, rel: str) -> list[str]:
        """The graph `rel` and its external-data files, bundle-relative; read once per graph (an earlier run's
        graph, kept, is read when the manifest is published)."""
        if rel not in self.files_by_graph:
            self.files_by_graph[rel] = [str(f.relative_to(self.bundle.root)) for f in graph_files(self.bundle.path(rel))]
        return self.files_by_graph[rel]

    def add_graph(self, rel: str) -> None:
        self.new_files.update({f: sha256_file(self.bundle.path(f)) for f in self.files_of(rel)})


def calibrate_bundle(
    root: Path,
    data: Sequence[str],
    precisions: Sequence[str] = ("int8",),
    instruction: Optional[str] = None,
    queries: int = 32,
    latents_per_query: int = 4,
    quantizer: str = "ort",
    method: Optional[str] = None,
    graphs: Optional[Sequence[str]] = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Calibrate the bundle at `root`; returns the accuracy report (also written into the bundle)."""
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise ValueError(f"calibration precisions are {', '.join(PRECISIONS)}; got {', '.join(precisions) or 'none'}")
    bundle = Bundle.open(root)
    selected = list(graphs or contract.GRAPHS)
    bad = [g for g in selected if g not in contract.GRAPHS]
    if bad:
        raise ValueError(f"--graphs names an unknown graph {', '.join(bad)}: choose from {', '.join(contract.GRAPHS)}")
    if queries < 1:
        raise ValueError(f"--queries must be at least 1, got {queries}")

    run = Run(bundle, _run_id())
    shutil.rmtree(bundle.path(run.dir), ignore_errors=True)
    dataset, data_record = capture_stage(run, data, instruction, queries, latents_per_query, seed)
    calibrated = dict(bundle.manifest.calibrated)
    record = {k: v for k, v in bundle.manifest.calibration.items() if k != "report"}
    if "int8" in precisions:
        calibrated["int8"], record["int8"] = int8_stage(run, selected, dataset, data_record, quantizer, method)
    with ExitStack() as emulations:  # the FP16 emulation graphs (what the report measures FP16 with) live for this run
        emulated: dict[str, str] = {}
        if "fp16" in precisions:
            calibrated["fp16"], record["fp16"], emulated = fp16_stage(run, selected, dataset, data_record, emulations)
        require_compatible(bundle.path(entry["file"]) for p in precisions for entry in calibrated[p].values())
        report = report_stage(run, calibrated, emulated, dataset, record)
    publish_stage(run, calibrated, record)
    return report


def capture_stage(run: Run, data: Sequence[str], instruction: Optional[str], queries: int, latents_per_query: int,
                  seed: int) -> tuple[CalibrationSet, dict[str, Any]]:
    """Stage 1: the core's inputs at iteration indices spread over 1..32, from the recorded observations."""
    sources = [open_source(spec, run.bundle, instruction) for spec in data]
    log.info("[1/4] capturing: %d queries from %d source(s), %d latents per query", queries, len(sources), latents_per_query)
    dataset = capture(run.bundle, list(observations(sources, queries)), latents_per_query, seed, sources)
    data_files = dataset.save(run.bundle.path(f"{run.dir}/data"))
    run.new_files.update({f"{run.dir}/data/{name}": digest for name, digest in data_files.items()})
    return dataset, {
        "dir": f"{run.dir}/data",
        "fingerprint": fingerprint(data_files, dataset.meta),
        "queries": len(dataset.meta["queries"]),
        "samples": dataset.meta["samples"],
        "iterations": dataset.meta["iterations"],
        "latents_per_query": latents_per_query,
        "sources": dataset.meta["sources"],
        "reference": dataset.meta["reference"],
        "files": sorted(data_files),
    }


def int8_stage(run: Run, selected: Sequence[str], dataset: CalibrationSet, data_record: dict[str, Any], quantizer: str,
               method: Optional[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stage 2: INT8 Q/DQ graphs; returns their manifest entries and the calibration record."""
    log.info("[2/4] INT8: quantising %s with %s", ", ".join(selected), quantizer)
    section: dict[str, Any] = {}
    used_method = None
    for graph in selected:
        rel = f"{run.dir}/int8/{graph}.onnx"
        source = run.bundle.path(run.bundle.graph(graph).file)
        result = quantize_graph(source, run.bundle.path(rel), dataset.samples(graph), quantizer, method)
        used_method = result.method
        section[graph] = _entry(run.bundle, graph, rel)
        run.add_graph(rel)
    return section, {"run": run.id, "data": data_record, "quantizer": quantizer, "method": used_method, "graphs": list(selected),
                     "scheme": "weight MatMul/Gemm: INT8 per output channel; their input: INT8 per tensor; symmetric"}


def fp16_stage(run: Run, selected: Sequence[str], dataset: CalibrationSet, data_record: dict[str, Any],
               emulations: ExitStack) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Stage 3: FP16 graphs with what overflows kept FP32; returns their entries, the record and the emulation graphs."""
    log.info("[3/4] FP16: scanning and converting %s", ", ".join(selected))
    section: dict[str, Any] = {}
    findings: dict[str, Any] = {}
    emulated: dict[str, str] = {}
    for graph in selected:
        rel = f"{run.dir}/fp16/{graph}.onnx"
        source = run.bundle.path(run.bundle.graph(graph).file)
        half = make_fp16(source, run.bundle.path(rel), _evenly(list(dataset.samples(graph)), FP16_MAX_SAMPLES))
        emulated[graph] = str(emulations.enter_context(beside(half.emulation, source, "fp16-emulation")))
        section[graph] = _entry(run.bundle, graph, rel, strongly_typed=True, fp32_nodes=sorted(half.fp32_nodes))
        run.add_graph(rel)
        reasons: dict[str, int] = {}
        for why in half.fp32_nodes.values():
            key = why if not why.startswith("FP32 peak") else "FP32 peak above the limit"
            reasons[key] = reasons.get(key, 0) + 1
        findings[graph] = {"fp32_nodes": len(half.fp32_nodes), "reasons": reasons,
                           "above_limit": peak_table(half.overflow, top=None), "mask_nodes": len(half.masks),
                           "nonfinite_if_all_fp16": half.naive_nonfinite, "rounds": half.rounds}
    record = {"run": run.id, "data": data_record, "graphs": list(selected), "limit": FP16_LIMIT, "headroom": HEADROOM,
              "measured_with": "emulation: the FP32 graph rounding every tensor the FP16 graph stores in FP16",
              "findings": findings}
    return section, record, emulated


def report_stage(run: Run, calibrated: dict[str, dict[str, Any]], emulated: dict[str, str], dataset: CalibrationSet,
                 record: dict[str, Any]) -> dict[str, Any]:
    """Stage 4: the accuracy report against FP32, written into the run's folder."""
    log.info("[4/4] accuracy report")
    staged = {precision: dict(entries) for precision, entries in calibrated.items()}
    for graph, path in emulated.items():  # measure what FP16 stores, not ONNX Runtime's FP32-between-casts run of it
        staged["fp16"][graph] = {**staged["fp16"][graph], "file": path}
    present = [p for p in PRECISIONS if staged.get(p)]
    seen = with_manifest(run.bundle, replace(run.bundle.manifest, calibrated=staged))
    report = accuracy_report(seen, dataset, present, load_cases(run.bundle), extra={"run": run.id, "calibration": record})
    report["summary"] = summary_lines(report)
    report_rel = f"{run.dir}/report.json"
    run.bundle.path(report_rel).write_text(json.dumps(report, indent=2) + "\n")
    run.new_files[report_rel] = sha256_file(run.bundle.path(report_rel))
    record["report"] = report_rel
    return report


def publish_stage(run: Run, calibrated: dict[str, dict[str, Any]], record: dict[str, Any]) -> None:
    """Replace the manifest (the calibration's files listed, earlier runs' entries no precision still uses dropped),
    then delete what it no longer lists, and check the published bundle."""
    bundle = run.bundle
    in_use = {rel for section in calibrated.values() for entry in section.values() for rel in run.files_of(entry["file"])}
    in_use |= {f"{r['data']['dir']}/{name}" for p, r in record.items() if p in PRECISIONS for name in r["data"]["files"]}
    in_use.add(record["report"])
    files = {rel: digest for rel, digest in bundle.manifest.files.items() if not rel.startswith(f"{ROOT}/") or rel in in_use}
    files.update({rel: digest for rel, digest in run.new_files.items() if rel in in_use})
    replace(bundle.manifest, calibrated=calibrated, calibration=record, files=files).save(bundle.root)
    _collect_garbage(bundle.root, set(files), {bundle.path(g.file).parent for g in bundle.graphs.values()})
    # The published bundle must open: its manifest reads and lists every file it points at, and the files this run
    # wrote match it. The others were verified when the run opened the bundle and are unchanged (re-hashing them
    # all would read gigabytes again).
    Bundle.open(bundle.root, verify_hashes=False).verify_files(sorted(set(run.new_files) & set(files)))
