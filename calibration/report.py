"""The accuracy report of a calibrated bundle: FP16 and INT8 against the FP32 graphs.

* per graph: each graph's outputs on the calibration samples (exactly the FP32 inputs, so the
  error is that graph's own, not inherited);
* per iteration index 1..32: the decoded actions of whole queries (VLM+Prelude and the core at the
  lower precision, from the same S0) against the FP32 trace: how the error grows with the iterations;
* iteration drift: where adaptive halting (the bundle's default rule, or the rule given) stops at
  each precision, as a histogram and as the per-query difference from FP32, also with its delta
  bound 10x looser to 100x tighter;
* the halting rule's delta (MSE, or 1 - cosine, of consecutive actions) by iteration index: the level
  where a lower precision's delta stops falling is the tightest bound that still halts before the cap;
* the bundle's golden cases through `runtime.verify` with the precision's gate.

Gates live in `runtime.gates`; `rdvla verify` prints the stored report's summary (`summary_lines`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from rdvla.calibration.data import CalibrationSet
from rdvla.runtime import contract
from rdvla.runtime.backends.onnxruntime import OnnxRuntimeBackend, graph_file
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import Manifest
from rdvla.runtime.gates import calibration_gate_for, gate_for
from rdvla.runtime.golden import TRACE_ITERATIONS, GoldenCase
from rdvla.runtime.halting import AdjacentMSE, CosineSimilarity, HaltingRule, stop_on_trace
from rdvla.runtime.policy import Policy
from rdvla.runtime.verify import gate_failures, verify_actions, worst

log = logging.getLogger(__name__)


def output_error(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """max |d|, max |d| / max |ref| (runtime.verify's max_rel), and ||d|| / ||ref|| over all samples."""
    nonfinite = int((~np.isfinite(ours)).sum())
    if nonfinite or not np.isfinite(ref).all():  # no gate may pass on NaN or inf
        return {"max_abs": math.inf, "max_rel": math.inf, "rel_l2": math.inf, "nonfinite": nonfinite}
    d = ours.astype(np.float64) - ref
    ref_max, ref_norm = float(np.abs(ref).max()), float(np.linalg.norm(ref))
    return {"max_abs": float(np.abs(d).max()), "max_rel": float(np.abs(d).max()) / max(ref_max, 1e-30),
            "rel_l2": float(np.linalg.norm(d)) / max(ref_norm, 1e-30), "nonfinite": nonfinite}


def graph_errors(bundle: Bundle, precision: str, data: CalibrationSet) -> dict[str, dict[str, dict[str, float]]]:
    """Every graph with a `precision` version, run on its calibration samples beside the FP32 graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    out: dict[str, dict[str, dict[str, float]]] = {}
    for graph in contract.GRAPHS:
        low = graph_file(bundle, graph, precision)
        if low == bundle.graph(graph).file:
            continue
        ref, ours = (_run_all(bundle.path(f), data.samples(graph), options) for f in (bundle.graph(graph).file, low))
        out[graph] = {o: output_error(ours[o], ref[o]) for o in ref}
    return out


def _run_all(path: Path, feeds: Iterable[dict[str, np.ndarray]], options: Any) -> dict[str, np.ndarray]:
    """Every output of the graph at `path` over `feeds`, stacked. One session at a time: two full-size
    VLM sessions side by side would hold two copies of its weights."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    runs = [session.run(outputs, feed) for feed in feeds]
    return {name: np.stack([r[i] for r in runs]) for i, name in enumerate(outputs)}


def trace(bundle: Bundle, precision: str, data: CalibrationSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(actions (Q, 32, 8, 7), mse (Q, 32), cosine (Q, 32)) of every calibration query run at `precision`
    for 32 iterations; the statistics compare each decode with the one before (NaN at k = 1)."""
    backend = OnnxRuntimeBackend(bundle, precision)
    actions, mse, cosine = [], [], []
    try:
        for q, feed in enumerate(data.samples(contract.VLM_PRELUDE)):
            backend.run_context(feed[contract.PIXEL_VALUES], feed[contract.INPUT_IDS], feed[contract.PROPRIO])
            backend.reset_latent(data.queries["init_latent"][q])
            a, m, c = [], [], []
            for k in range(1, TRACE_ITERATIONS + 1):
                stats = backend.step_decode(read=True)
                assert stats is not None
                a.append(backend.actions())
                m.append(stats[0] if k > 1 else np.nan)
                c.append(stats[1] if k > 1 else np.nan)
            actions.append(np.stack(a))
            mse.append(np.asarray(m, np.float32))
            cosine.append(np.asarray(c, np.float32))
    finally:
        backend.close()
    return np.stack(actions), np.stack(mse), np.stack(cosine)


@dataclass(frozen=True)
class Traces:
    """The halting statistics of every calibration query, per iteration index: (Q, 32) each, NaN at k = 1."""

    mse: np.ndarray
    cosine: np.ndarray

    def stops(self, halting: HaltingRule) -> list[int]:
        """Where `halting` stops each query, as a live query would (`runtime.halting.stop_on_trace`)."""
        return [stop_on_trace(halting, m, c).iterations for m, c in zip(self.mse, self.cosine)]

    def delta_medians(self, halting: HaltingRule) -> list[Optional[float]]:
        """Median over queries of the rule's delta at each iteration index; None at k = 1. Where it
        levels off is the tightest bound that can still stop."""
        deltas = np.array([[halting.delta(float(m), float(c)) for m, c in zip(mr[1:], cr[1:])]
                           for mr, cr in zip(self.mse, self.cosine)], np.float64)
        return [None, *np.median(deltas, axis=0).tolist()]


def reference_traces(data: CalibrationSet) -> Traces:
    return Traces(data.queries["trace_mse"], data.queries["trace_cosine"])


AdaptiveRule = Union[AdjacentMSE, CosineSimilarity]

# Multiples of the rule's delta bound (the MSE threshold, or 1 - the cosine threshold) at which the
# drift is also reported: users tune the threshold at run time, and a tighter one stops later, where
# lower-precision errors have compounded.
THRESHOLD_SWEEP = (10.0, 1.0, 0.1, 0.01)


def with_bound_scaled(halting: AdaptiveRule, factor: float) -> AdaptiveRule:
    """The rule with its delta bound multiplied by `factor`."""
    if isinstance(halting, CosineSimilarity):
        return replace(halting, threshold=1.0 - (1.0 - halting.threshold) * factor)
    return replace(halting, threshold=halting.threshold * factor)


def stop_drift(stops: list[int], reference: list[int]) -> dict[str, Any]:
    """Stopping iterations against the FP32 ones, query by query."""
    drift = [a - b for a, b in zip(stops, reference)]
    return {"histogram": _histogram(stops), "stops": stops, "drift": drift,
            "mean_abs_drift": float(np.mean(np.abs(drift))), "max_abs_drift": int(np.max(np.abs(drift))),
            "agreement": float(np.mean([d == 0 for d in drift]))}


def threshold_sweep(halting: AdaptiveRule, traces: Traces, reference: Traces) -> dict[str, dict[str, Any]]:
    """Drift of the stopping iteration at each delta bound of THRESHOLD_SWEEP (the rule otherwise unchanged),
    keyed by the threshold; a bound the rule cannot take (a cosine threshold outside (-1, 1)) is left out."""
    out = {}
    for factor in THRESHOLD_SWEEP:
        try:
            swept = with_bound_scaled(halting, factor)
        except ValueError:
            continue
        fp32 = reference.stops(swept)
        row = stop_drift(traces.stops(swept), fp32)
        out[f"{swept.threshold:g}"] = {**row, "fp32_histogram": _histogram(fp32), "fp32_median_stop": float(np.median(fp32))}
    return out


def iteration_errors(actions: np.ndarray, reference: np.ndarray) -> dict[str, list[float]]:
    """Action error per iteration index (1..32) over all queries: worst and mean absolute difference."""
    d = np.abs(actions.astype(np.float64) - reference)
    axes = tuple(i for i in range(d.ndim) if i != 1)
    return {"max_abs": d.max(axis=axes).tolist(), "mean_abs": d.mean(axis=axes).tolist()}


def precision_section(bundle: Bundle, precision: str, data: CalibrationSet, golden: list[GoldenCase],
                      halting: AdaptiveRule) -> dict[str, Any]:
    """Everything the report says about one lower precision, with its gates applied."""
    actions, mse, cosine = trace(bundle, precision, data)
    traces, reference = Traces(mse, cosine), reference_traces(data)
    section: dict[str, Any] = {
        "graphs": graph_errors(bundle, precision, data),
        "per_iteration": iteration_errors(actions, data.queries["trace_actions"]),
        "iterations": stop_drift(traces.stops(halting), reference.stops(halting)),
        "iterations_by_threshold": threshold_sweep(halting, traces, reference),
        "median_deltas": traces.delta_medians(halting),
    }
    gate = calibration_gate_for(precision)
    failures = []
    for graph, outputs in section["graphs"].items():
        for output, err in outputs.items():
            limit = gate.graph_rel_l2(graph)
            if not err["rel_l2"] <= limit:
                failures.append(f"{graph} output {output}: rel L2 {err['rel_l2']:.3g} > {limit:g}")
    worst_actions = worst(section["per_iteration"]["max_abs"])
    if not worst_actions <= gate.actions_max_abs:
        k = int(np.argmax(section["per_iteration"]["max_abs"])) + 1
        failures.append(f"actions max abs {worst_actions:.3g} > {gate.actions_max_abs:g} (iteration {k})")
    if not section["iterations"]["mean_abs_drift"] <= gate.mean_abs_drift:
        failures.append(f"iteration drift mean |dk| {section['iterations']['mean_abs_drift']:.2f} > {gate.mean_abs_drift:g}")
    if golden:
        policy = Policy(bundle, OnnxRuntimeBackend(bundle, precision))
        try:
            results = verify_actions(policy, golden)
        finally:
            policy.close()
        golden_failures = gate_failures(results, gate_for(precision))
        section["golden"] = {mode: r.to_json() for mode, r in results.items()}
        failures += [f"golden {f}" for f in golden_failures]
    section["gate"] = {**gate.__dict__, "verify": gate_for(precision).__dict__}
    section["failures"] = failures
    section["passed"] = not failures
    return section


def _histogram(stops: list[int]) -> dict[str, int]:
    return {str(k): n for k, n in sorted(Counter(stops).items())}


def accuracy_report(bundle: Bundle, data: CalibrationSet, precisions: list[str], golden: list[GoldenCase],
                    extra: Optional[dict[str, Any]] = None, halting: Optional[AdaptiveRule] = None) -> dict[str, Any]:
    """The report of `precisions` against FP32; iteration drift under `halting` (default: the bundle's rule)."""
    halting = halting or bundle.halting_defaults.adaptive()
    reference = reference_traces(data)
    reference_stops = reference.stops(halting)
    report: dict[str, Any] = {
        "reference": data.meta["reference"],
        "queries": len(reference_stops),
        "golden_cases": len(golden),
        "halting": {"rule": "cosine" if isinstance(halting, CosineSimilarity) else "mse", "threshold": halting.threshold,
                    "min_iterations": halting.min_iterations, "max_iterations": halting.max_iterations},
        "fp32": {"iterations": {"histogram": _histogram(reference_stops), "stops": reference_stops},
                 "median_deltas": reference.delta_medians(halting)},
        "orin_floor": weight_floors(bundle, int(np.median(data.meta["prompt_lengths"]))),
        **(extra or {}),
    }
    for precision in precisions:
        log.info("accuracy report: %s (%d queries, %d golden cases)", precision, len(reference_stops), len(golden))
        report[precision] = precision_section(bundle, precision, data, golden, halting)
    report["passed"] = all(report[p]["passed"] for p in precisions)
    return report


def weight_floors(bundle: Bundle, prompt_len: int) -> dict[str, dict[str, float]]:
    """Bytes one run of each graph streams on a Jetson and the AGX Orin bandwidth floor, at FP16 and INT8.

    FP16: every weight matrix at 2 bytes. INT8: the matrices the Q/DQ graph quantises (INT8
    initializers, or FP32 ones feeding a QuantizeLinear as ModelOpt writes them) at 1 byte, the rest
    at 2. Both add the graph's FP32 inputs and outputs (the context keys/values are read every
    iteration). For the core graphs this is the per-iteration floor no engine can beat.
    """
    import onnx

    from rdvla.export.graph_stats import ORIN_AGX_BANDWIDTH, graph_stats, streamed_matrices

    out: dict[str, dict[str, float]] = {}
    for graph in contract.GRAPHS:
        fp32 = bundle.path(bundle.graph(graph).file)
        stats = graph_stats(fp32, {"prompt_len": prompt_len})
        row: dict[str, float] = {"weight_params": stats.weight_params, "io_bytes": stats.io_bytes,
               "fp16_bytes": stats.weight_params * 2 + stats.io_bytes}
        int8 = graph_file(bundle, graph, "int8") if bundle.manifest.calibrated.get("int8") else None
        if int8 is not None and int8 != bundle.graph(graph).file:
            model = onnx.load(str(bundle.path(int8)), load_external_data=False)
            quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
            matrices = streamed_matrices(model)
            weight_bytes = sum(int(np.prod(i.dims)) * (1 if i.data_type == onnx.TensorProto.INT8 or i.name in quantized else 2)
                               for i in matrices)
            row["int8_bytes"] = weight_bytes + stats.io_bytes
        for key in ("fp16", "int8"):
            if f"{key}_bytes" in row:
                row[f"{key}_floor_ms"] = 1e3 * row[f"{key}_bytes"] / ORIN_AGX_BANDWIDTH
        out[graph] = row
    return out


def with_manifest(bundle: Bundle, manifest: Manifest) -> Bundle:
    """The same bundle seen through another manifest (graphs not yet published)."""
    return replace(bundle, manifest=manifest)


SHOWN_ITERATIONS = (1, 2, 4, 8, 12, 16, 24, 32)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report in a few lines for the console (`rdvla calibrate` and `rdvla verify` print these)."""
    h = report["halting"]
    lines = [
        f"accuracy report (run {report.get('run', '?')}): {report['queries']} calibration queries, "
        f"{report['golden_cases']} golden cases; reference: {report['reference']}",
        f"  adaptive halting {h['rule']} {'>' if h['rule'] == 'cosine' else '<'} {h['threshold']:g} "
        f"(min {h['min_iterations']}, max {h['max_iterations']}): "
        f"FP32 stops at {report['fp32']['iterations']['histogram']}",
    ]
    shown_after_first = [k for k in SHOWN_ITERATIONS if k > 1]
    for precision in ("fp32", "fp16", "int8"):
        medians = report.get(precision, {}).get("median_deltas")
        if medians:
            delta = "1 - cosine" if h["rule"] == "cosine" else "MSE"
            lines.append(f"  {precision} consecutive-action {delta}, median over queries, by iteration: "
                         + ", ".join(f"{k}: {medians[k - 1]:.1e}" for k in shown_after_first if k <= len(medians)))
    floors = report.get("orin_floor", {})
    if floors:
        lines.append("  AGX Orin weight-streaming floor per run (204.8 GB/s): " + "; ".join(
            f"{g} {r['fp16_floor_ms']:.3f} ms FP16" + (f" / {r['int8_floor_ms']:.3f} ms INT8" if "int8_floor_ms" in r else "")
            for g, r in floors.items()))
    for precision in ("fp16", "int8"):
        section = report.get(precision)
        if section is None:
            continue
        how = report.get("calibration", {}).get(precision, {})
        if precision == "int8":
            made = f"{how['quantizer']} {how['method']}" if how else "Q/DQ"
        else:
            made = "norms, softmax, residual stream and overflowing nodes in FP32; measured by FP16 emulation"
        lines.append(f"  {precision} ({made}): {'PASSED' if section['passed'] else 'FAILED'}")
        for graph, found in (how.get("findings") or {}).items():
            above = found["above_limit"]
            worst = f", worst {above[0]['node']} at {above[0]['peak']:.3g}" if above else ""
            naive = found["nonfinite_if_all_fp16"]
            lines.append(f"    {graph:17s} {found['fp32_nodes']} nodes in FP32; {len(above)} above the FP16 limit in FP32{worst}; "
                         f"all-FP16 would overflow at {len(naive)} node(s){' (' + ', '.join(naive[:3]) + ')' if naive else ''}")
        for graph, outputs in section["graphs"].items():
            worst = max(outputs.items(), key=lambda kv: kv[1]["rel_l2"])
            lines.append(f"    {graph:17s} worst output {worst[0]}: rel L2 {worst[1]['rel_l2']:.2e}, max rel {worst[1]['max_rel']:.2e}")
        per_k = section["per_iteration"]["max_abs"]
        mean_k = section["per_iteration"]["mean_abs"]
        shown = [k for k in SHOWN_ITERATIONS if k <= len(per_k)]
        lines.append("    actions vs FP32 by iteration (max abs / mean abs): "
                     + ", ".join(f"{k}: {per_k[k - 1]:.2e}/{mean_k[k - 1]:.1e}" for k in shown))
        it = section["iterations"]
        lines.append(f"    halting stops at {it['histogram']}; drift vs FP32 mean |dk| {it['mean_abs_drift']:.2f}, "
                     f"max {it['max_abs_drift']}, same stop in {it['agreement']:.0%} of queries")
        sweep = section.get("iterations_by_threshold", {})
        if sweep:
            lines.append(f"    drift by {'cosine' if h['rule'] == 'cosine' else 'MSE'} threshold (mean |dk|, FP32 median stop): " + ", ".join(
                f"{t}: {row['mean_abs_drift']:.2f} (k={row['fp32_median_stop']:g})"
                for t, row in sweep.items()))
        if "golden" in section:
            worst_mode = max(section["golden"].items(), key=lambda kv: kv[1]["max_abs"])
            lines.append(f"    golden cases: worst actions max abs {worst_mode[1]['max_abs']:.2e} ({worst_mode[0]})")
        lines += [f"    FAIL {f}" for f in section["failures"]]
    return lines
