"""CLI of the runtime room: `rdvla verify`, `rdvla profile`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from runtime.backends import BACKENDS


def add_backend_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory (holds manifest.json)")
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                   help="onnxruntime (CPU stand-in, default), tensorrt (Jetson, after `rdvla build`) or torch (GPU workstation)")
    p.add_argument("--precision", default=None, help="fp32, fp16 or int8 (default: fp16 for tensorrt, fp32 otherwise)")
    p.add_argument("--checkpoint", type=Path, help="torch backend: the source checkpoint (default: the path the manifest records)")


def open_policy(args: argparse.Namespace, check_every: int = 1):  # type: ignore[no-untyped-def]
    from runtime.policy import Policy

    precision = args.precision or ("fp16" if args.backend == "tensorrt" else "fp32")
    options = {"checkpoint": args.checkpoint} if args.backend == "torch" and args.checkpoint else {}
    if args.checkpoint and args.backend != "torch":
        raise ValueError("--checkpoint applies to the torch backend only")
    return Policy.load(args.bundle, backend=args.backend, precision=precision, check_every=check_every, **options), precision


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check a bundle's backend against its golden cases",
        description="Run the bundle's golden cases (fixed depths 1/4/12/32, adaptive MSE 1e-3/1e-4) on a backend and "
        "compare the actions and stopping iterations with the reference outputs stored in the bundle, against the "
        "accuracy gates of the precision. Exit status 1 when a gate fails.",
    )
    add_backend_options(p)
    p.set_defaults(run=_verify)

    p = sub.add_parser(
        "profile",
        help="measure per-iteration and end-to-end latency on a backend, with plots",
        description="Measure a bundle on a backend: per-iteration latency (P50/P95/max per iteration index), VLM+Prelude "
        "latency, end-to-end latency against depth, the iteration histogram under adaptive halting over the golden "
        "cases, resident memory against depth, and the environment (on a Jetson: L4T release, power mode, clocks). "
        "Lock the clocks first on a Jetson (sudo nvpmodel -m 0 && sudo jetson_clocks).",
    )
    add_backend_options(p)
    p.add_argument("--iterations", default="1,2,4,8,12,16,24,32", help="depths to measure, comma-separated (default 1,2,4,8,12,16,24,32)")
    p.add_argument("--repeats", type=int, default=10, help="queries per measurement (default 10)")
    p.add_argument("--out", type=Path, default=Path("profile"), help="directory for profile.json and the PNG plots (default ./profile)")
    p.set_defaults(run=_profile)


def _golden(bundle_root: Path, files: list[str]):  # type: ignore[no-untyped-def]
    from runtime.golden import GoldenCase

    return [GoldenCase.load(bundle_root / rel) for rel in files]


def _verify(args: argparse.Namespace) -> int:
    from runtime.gates import gate_for
    from runtime.verify import gate_failures, verify_actions

    policy, precision = open_policy(args)
    try:
        gate = gate_for(precision)
        cases = _golden(policy.bundle.root, policy.bundle.manifest.get("golden", []))
        if not cases:
            raise ValueError(f"{args.bundle} holds no golden cases")
        start = time.perf_counter()
        results = verify_actions(policy, cases)
    finally:
        policy.close()
    failures = gate_failures(results, gate)
    report = (policy.bundle.manifest.get("calibration") or {}).get("report")
    if report:  # written by `rdvla calibrate`: FP16/INT8 against FP32 on the calibration data
        print("\n".join(json.loads(policy.bundle.path(report).read_text())["summary"]))
    print(f"bundle {args.bundle}: {len(cases)} golden cases on {args.backend} {precision} in {time.perf_counter() - start:.1f} s")
    print(f"gate ({precision}): actions max abs <= {gate.actions_max_abs:g}, iteration agreement >= {gate.iteration_agreement:g}")
    print(f"  {'mode':11s} {'max abs':>9s} {'max rel':>9s}  iterations (reference)")
    for mode, r in results.items():
        ok = r.max_abs <= gate.actions_max_abs and r.iteration_agreement >= gate.iteration_agreement
        print(f"  {mode:11s} {r.max_abs:9.2e} {r.max_rel:9.2e}  {r.iterations} ({r.reference_iterations})  {'ok' if ok else 'FAIL'}")
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print("all gates passed")
    return 0


def _profile(args: argparse.Namespace) -> int:
    from runtime.profile import profile, write_report

    try:
        depths = sorted({int(v) for v in args.iterations.split(",")})
    except ValueError:
        raise ValueError(f"--iterations must be comma-separated integers, got {args.iterations!r}") from None
    policy, precision = open_policy(args)
    try:
        cases = _golden(policy.bundle.root, policy.bundle.manifest.get("golden", []))
        report = profile(policy, depths, args.repeats, cases, progress=lambda m: print(f"  {m}", flush=True))
    finally:
        policy.close()
    report["precision"] = precision
    files = write_report(report, args.out)
    step = report["per_iteration_ms"]["core_step"]
    decode = report["per_iteration_ms"]["core_step_decode"]
    print(f"VLM+Prelude p50 {report['stages_ms']['vlm_prelude']['p50']:.2f} ms; "
          f"iteration p50 {np.median([r['p50'] for r in step]):.3f} ms (state only), "
          f"{np.median([r['p50'] for r in decode]):.3f} ms (with decode)")
    for depth, entry in report["end_to_end_ms"].items():
        print(f"  depth {depth:>3s}: end to end p50 {entry['p50']:.2f} ms, p95 {entry['p95']:.2f} ms, resident {report['resident_mb'][depth]:.0f} MB")
    for mode, counts in report["adaptive_iterations"].items():
        print(f"  adaptive {mode}: iterations {dict(sorted(counts.items(), key=lambda kv: int(kv[0])))}")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0

