"""`rdvla calibrate`: calibration data in, INT8 Q/DQ and FP16 graphs plus the accuracy report added to the bundle.

Everything a run writes goes to a new `calibration/<run>/` folder of the bundle (data, graphs,
report); the manifest is then replaced atomically, and only after that are the files of earlier
runs that the new manifest no longer lists deleted. An interrupted run therefore leaves the
bundle as it was (plus an unlisted folder, and maybe hidden `.rdvla-*.onnx` probe graphs beside the
exported graphs, which the next run removes). A precision not asked for keeps
its graphs and the record of the data they came from.

Manifest entries:
* `graphs_int8[graph]`: file, inputs, outputs (as `graphs[graph]`): what `rdvla build --precision int8` reads;
* `graphs_fp16[graph]`: the same plus `strongly_typed: true` (types fixed by the conversion) and
  `fp32_nodes`, the nodes the FP16 graph keeps in FP32;
* `calibration`: per precision the run, the data fingerprint and how the graphs were made; `report`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import ExitStack
from copy import deepcopy
from pathlib import Path
from typing import Any, Optional, Sequence

import onnx

from rdvla.calibration.data import capture, fingerprint, observations, open_source
from rdvla.calibration.fp16 import FP16_LIMIT, HEADROOM, make_fp16, peak_table
from rdvla.calibration.probe import beside
from rdvla.calibration.quantize import quantize_graph
from rdvla.calibration.report import accuracy_report, summary_lines, with_manifest
from rdvla.runtime.backends import base as names
from rdvla.runtime.backends.onnxruntime import GRAPH_SECTIONS
from rdvla.runtime.bundle import MANIFEST, Bundle, sha256_file
from rdvla.runtime.golden import load_cases
from rdvla.runtime.graph_check.rules import require_compatible

log = logging.getLogger(__name__)

PRECISIONS = ("int8", "fp16")
ROOT = "calibration"
# The FP16 scan runs every sample three times through a probed graph; more VLM queries than this add time, not findings.
FP16_MAX_SAMPLES = 16


def _run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _graph_files(root: Path, rel: str) -> list[str]:
    """`rel` and the external-data files next to it that it references."""
    path = root / rel
    model = onnx.load(str(path), load_external_data=False)
    locations = {e.value for i in model.graph.initializer for e in i.external_data if e.key == "location"}
    return [rel, *(str(Path(rel).parent / loc) for loc in sorted(locations))]


def _entry(bundle: Bundle, graph: str, rel: str, **extra: Any) -> dict[str, Any]:
    """A graphs_* entry: the exported graph's I/O, after checking the new graph kept its names and types."""
    model = onnx.load(str(bundle.path(rel)), load_external_data=False)
    original = onnx.load(str(bundle.path(bundle.graph(graph).file)), load_external_data=False)

    def io(m: onnx.ModelProto) -> list[tuple[str, int]]:
        return [(v.name, v.type.tensor_type.elem_type) for v in [*m.graph.input, *m.graph.output]]

    if io(model) != io(original):
        raise RuntimeError(f"{rel}: inputs/outputs differ from {bundle.graph(graph).file}")
    spec = bundle.manifest["graphs"][graph]
    return {"file": rel, "inputs": spec["inputs"], "outputs": spec["outputs"], **extra}


def _evenly(samples: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    if len(samples) <= count:
        return samples
    step = len(samples) / count
    return [samples[int(i * step)] for i in range(count)]


def save_manifest(root: Path, manifest: dict[str, Any]) -> None:
    tmp = root / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, root / MANIFEST)


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
    selected = list(graphs or names.GRAPHS)
    bad = [g for g in selected if g not in names.GRAPHS]
    if bad:
        raise ValueError(f"unknown graph {', '.join(bad)}: choose from {', '.join(names.GRAPHS)}")
    if queries < 1:
        raise ValueError(f"--queries must be at least 1, got {queries}")

    run = _run_id()
    run_dir = f"{ROOT}/{run}"
    shutil.rmtree(bundle.path(run_dir), ignore_errors=True)
    sources = [open_source(spec, bundle, instruction) for spec in data]
    log.info("[1/4] capturing: %d queries from %d source(s), %d latents per query", queries, len(sources), latents_per_query)
    dataset = capture(bundle, list(observations(sources, queries)), latents_per_query, seed, sources)
    data_files = dataset.save(bundle.path(f"{run_dir}/data"))
    data_record = {
        "dir": f"{run_dir}/data",
        "fingerprint": fingerprint(data_files, dataset.meta),
        "queries": len(dataset.meta["queries"]),
        "samples": dataset.meta["samples"],
        "iterations": dataset.meta["iterations"],
        "latents_per_query": latents_per_query,
        "sources": dataset.meta["sources"],
        "reference": dataset.meta["reference"],
        "files": sorted(data_files),
    }
    manifest = deepcopy(bundle.manifest)
    files: dict[str, str] = manifest.setdefault("files", {})
    new_files = {f"{run_dir}/data/{name}": digest for name, digest in data_files.items()}
    record: dict[str, Any] = dict(manifest.get("calibration") or {})
    record.pop("report", None)

    if "int8" in precisions:
        log.info("[2/4] INT8: quantising %s with %s", ", ".join(selected), quantizer)
        section: dict[str, Any] = {}
        used_method = None
        for graph in selected:
            rel = f"{run_dir}/int8/{graph}.onnx"
            result = quantize_graph(bundle.path(bundle.graph(graph).file), bundle.path(rel), dataset.samples(graph), quantizer, method)
            used_method = result.method
            section[graph] = _entry(bundle, graph, rel)
            new_files.update({f: sha256_file(bundle.path(f)) for f in _graph_files(bundle.root, rel)})
        manifest[GRAPH_SECTIONS["int8"]] = section
        record["int8"] = {"run": run, "data": data_record, "quantizer": quantizer, "method": used_method,
                          "graphs": selected, "scheme": "weight MatMul/Gemm: INT8 per output channel; their input: INT8 per tensor; symmetric"}
    # The FP16 emulation graphs (what the report measures FP16 with) live only for this run.
    with ExitStack() as emulations:
        emulated: dict[str, str] = {}
        if "fp16" in precisions:
            log.info("[3/4] FP16: scanning and converting %s", ", ".join(selected))
            section = {}
            findings: dict[str, Any] = {}
            for graph in selected:
                rel = f"{run_dir}/fp16/{graph}.onnx"
                source = bundle.path(bundle.graph(graph).file)
                half = make_fp16(source, bundle.path(rel), _evenly(list(dataset.samples(graph)), FP16_MAX_SAMPLES))
                emulated[graph] = str(emulations.enter_context(beside(half.emulation, source, "fp16-emulation")))
                section[graph] = _entry(bundle, graph, rel, strongly_typed=True, fp32_nodes=sorted(half.fp32_nodes))
                new_files.update({f: sha256_file(bundle.path(f)) for f in _graph_files(bundle.root, rel)})
                reasons: dict[str, int] = {}
                for why in half.fp32_nodes.values():
                    key = why if not why.startswith("FP32 peak") else "FP32 peak above the limit"
                    reasons[key] = reasons.get(key, 0) + 1
                findings[graph] = {"fp32_nodes": len(half.fp32_nodes), "reasons": reasons,
                                   "above_limit": peak_table(half.overflow, top=None), "mask_nodes": len(half.masks),
                                   "nonfinite_if_all_fp16": half.naive_nonfinite, "rounds": half.rounds}
            manifest[GRAPH_SECTIONS["fp16"]] = section
            record["fp16"] = {"run": run, "data": data_record, "graphs": selected, "limit": FP16_LIMIT, "headroom": HEADROOM,
                              "measured_with": "emulation: the FP32 graph rounding every tensor the FP16 graph stores in FP16",
                              "findings": findings}

        require_compatible(bundle.path(entry["file"]) for p in precisions for entry in manifest[GRAPH_SECTIONS[p]].values())
        log.info("[4/4] accuracy report")
        staged = deepcopy(manifest)
        for graph, path in emulated.items():  # measure what FP16 stores, not ONNX Runtime's FP32-between-casts run of it
            staged[GRAPH_SECTIONS["fp16"]][graph] = {**staged[GRAPH_SECTIONS["fp16"]][graph], "file": path}
        present = [p for p in PRECISIONS if staged.get(GRAPH_SECTIONS[p])]
        golden = load_cases(bundle)
        report = accuracy_report(with_manifest(bundle, staged), dataset, present, golden, extra={"run": run, "calibration": record})
    report["summary"] = summary_lines(report)
    report_rel = f"{run_dir}/report.json"
    bundle.path(report_rel).write_text(json.dumps(report, indent=2) + "\n")
    new_files[report_rel] = sha256_file(bundle.path(report_rel))
    record["report"] = report_rel

    # Replace the calibration's files in the listing: drop earlier runs' entries no precision still uses.
    kept_sections = [manifest.get(GRAPH_SECTIONS[p]) or {} for p in PRECISIONS]
    in_use = {rel for section in kept_sections for entry in section.values() for rel in _graph_files(bundle.root, entry["file"])}
    in_use |= {f"{r['data']['dir']}/{name}" for p, r in record.items() if p in PRECISIONS for name in r["data"]["files"]}
    for rel in [f for f in files if f.startswith(f"{ROOT}/")]:
        if rel not in in_use:
            del files[rel]
    files.update({rel: digest for rel, digest in new_files.items() if rel in in_use or rel == report_rel})
    manifest["files"] = files
    manifest["calibration"] = record
    save_manifest(bundle.root, manifest)
    _collect_garbage(bundle.root, set(files), {bundle.path(g.file).parent for g in bundle.graphs.values()})
    Bundle.open(bundle.root)  # the published bundle must verify as a whole
    return report
