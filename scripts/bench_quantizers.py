"""Which INT8 quantiser and calibration method to use: each one on the same calibration data, measured the same way.

    .venv/bin/python scripts/bench_quantizers.py BUNDLE [--data DIR] [--graphs core_step,core_step_decode,decode]
        [--combos ort:minmax,ort:percentile,ort:entropy,modelopt:max,modelopt:entropy]

BUNDLE must have been through `rdvla calibrate` (its newest calibration data is used unless
`--data` names a data directory written by it). For each quantiser:method the script quantises
the chosen graphs into a temporary folder, then reports what `rdvla calibrate` reports: each
graph's worst output error against FP32 on its own inputs, the decoded actions' error at each
iteration index 1..32 over whole queries (graphs not chosen run in FP32), and the drift of the
stopping iteration under the bundle's halting rule and the threshold sweep. Prints one JSON report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rdvla.calibration.data import CalibrationSet
from rdvla.calibration.methods import METHODS
from rdvla.calibration.quantize import quantize_graph
from rdvla.calibration.report import (Traces, iteration_errors, graph_errors, reference_traces, stop_drift,
                                      threshold_sweep, trace, with_manifest)
from rdvla.runtime import contract
from rdvla.runtime.bundle import Bundle

CORE_GRAPHS = f"{contract.CORE_STEP},{contract.CORE_STEP_DECODE},{contract.DECODE}"
ALL_COMBOS = ",".join(f"{q}:{m}" for q, methods in METHODS.items() for m in methods)


def _combos(text: str) -> list[tuple[str, str]]:
    pairs = [tuple(c.split(":", 1)) for c in text.split(",") if c.strip()]
    bad = [":".join(p) for p in pairs if len(p) != 2 or p[0] not in METHODS or p[1] not in METHODS[p[0]]]
    if bad or not pairs:
        raise argparse.ArgumentTypeError(f"combos are quantizer:method from {ALL_COMBOS} (got {text!r})")
    return pairs  # type: ignore[return-value]


def _newest_data(bundle: Bundle) -> Path:
    record = bundle.manifest.calibration
    dirs = [r["data"]["dir"] for r in record.values() if isinstance(r, dict) and "data" in r]
    if not dirs:
        raise SystemExit(f"{bundle.root}: no calibration data; run `rdvla calibrate` first or pass --data")
    return bundle.path(max(dirs))


def measure(bundle: Bundle, data: CalibrationSet, graphs: list[str], quantizer: str, method: str, out: Path) -> dict[str, Any]:
    section = {}
    start = time.perf_counter()
    for graph in graphs:
        target = out / f"{quantizer}_{method}" / f"{graph}.onnx"
        quantize_graph(bundle.path(bundle.graph(graph).file), target, data.samples(graph), quantizer, method)
        section[graph] = {**bundle.graph(graph).to_json(), "file": str(target)}
    seconds = time.perf_counter() - start
    staged = with_manifest(bundle, replace(bundle.manifest, calibrated={**bundle.manifest.calibrated, "int8": section}))
    halting = bundle.halting_defaults.adaptive()
    reference = reference_traces(data)
    actions, mse, cosine = trace(staged, "int8", data)
    traces = Traces(mse, cosine)
    per_k = iteration_errors(actions, data.queries["trace_actions"])
    return {
        "quantize_s": round(seconds, 1),
        "graphs": {g: {o: round(e["rel_l2"], 5) for o, e in outputs.items()} for g, outputs in graph_errors(staged, "int8", data).items()},
        "actions_max_abs_worst": max(per_k["max_abs"]),
        "actions_mean_abs_mean": sum(per_k["mean_abs"]) / len(per_k["mean_abs"]),
        "per_iteration": per_k,
        "iterations": stop_drift(traces.stops(halting), reference.stops(halting)),
        "iterations_by_threshold": {t: {"mean_abs_drift": r["mean_abs_drift"], "agreement": r["agreement"]}
                                    for t, r in threshold_sweep(halting, traces, reference).items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", type=Path, help="calibration data directory (default: the bundle's newest)")
    parser.add_argument("--graphs", default=CORE_GRAPHS, help=f"graphs to quantise (default {CORE_GRAPHS})")
    parser.add_argument("--combos", type=_combos, default=_combos(ALL_COMBOS), help=f"default {ALL_COMBOS}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")
    bundle = Bundle.open(args.bundle)
    graphs = [g.strip() for g in args.graphs.split(",") if g.strip()]
    unknown = [g for g in graphs if g not in contract.GRAPHS]
    if unknown:
        raise SystemExit(f"unknown graph {', '.join(unknown)}: choose from {', '.join(contract.GRAPHS)}")
    data_dir = args.data or _newest_data(bundle)
    data = CalibrationSet.load(data_dir)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rdvla-bench-quantizers-") as tmp:
        for quantizer, method in args.combos:
            logging.getLogger("bench").warning("quantising %s with %s:%s", ",".join(graphs), quantizer, method)
            with contextlib.redirect_stdout(sys.stderr):  # ONNX Runtime's histogram calibrators print progress
                results[f"{quantizer}:{method}"] = measure(bundle, data, graphs, quantizer, method, Path(tmp))
    print(json.dumps({
        "bundle": str(args.bundle), "data": str(data_dir), "graphs": graphs, "queries": len(data.meta["queries"]),
        "machine": platform.platform(), "processor": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"), "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
