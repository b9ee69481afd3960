"""`rdvla profile`: per-iteration and end-to-end latency of a bundle on a backend, with plots."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rdvla.cli.arguments import add_backend_options, add_bundle_argument, iteration_counts, open_policy, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="measure per-iteration and end-to-end latency on a backend, with plots",
        description="Measure a bundle on a backend: per-iteration latency (P50/P95/max per iteration index), VLM+Prelude "
        "latency, end-to-end latency against the iteration count, the iteration histogram under adaptive halting over the golden "
        "cases, resident memory against the iteration count, and the environment (on a Jetson: L4T release, power mode, clocks). "
        "Lock the clocks first on a Jetson (sudo nvpmodel -m 0 && sudo jetson_clocks).",
    )
    add_bundle_argument(p)
    add_backend_options(p)
    p.add_argument("--iterations", type=iteration_counts, default=iteration_counts("1,2,4,8,12,16,24,32"),
                   help="iteration counts to measure, comma-separated (default 1,2,4,8,12,16,24,32)")
    p.add_argument("--repeats", type=positive_int, default=10, help="queries per measurement (default 10)")
    p.add_argument("--out", type=Path, default=Path("profile"), help="directory for profile.json and the PNG plots (default ./profile)")
    p.add_argument("--overwrite", action="store_true", help="replace the report files already in --out")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rdvla.runtime.doctor import SystemProbe
    from rdvla.runtime.doctor.jetson import measurement_conditions
    from rdvla.runtime.golden import load_cases
    from rdvla.runtime.profile import profile, write_report

    from rdvla.runtime.outputs import check_new_files
    from rdvla.runtime.profile import REPORT_FILES

    check_new_files(args.out, REPORT_FILES, overwrite=args.overwrite, option="--out")  # before minutes of measuring
    counts = args.iterations
    policy, precision = open_policy(args.bundle, args)
    try:
        cases = load_cases(policy.bundle)
        report = profile(policy, counts, args.repeats, cases, progress=lambda m: print(f"  {m}", flush=True))
    finally:
        policy.close()
    report["precision"] = precision
    conditions = measurement_conditions(SystemProbe())
    if conditions is not None:
        report["environment"]["jetson"] = conditions
    files = write_report(report, args.out)
    step = report["per_iteration_ms"]["core_step"]
    decode = report["per_iteration_ms"]["core_step_decode"]
    print(f"preprocessing p50 {report['stages_ms']['preprocess']['p50']:.2f} ms ({report['environment']['preprocessing']}); "
          f"VLM+Prelude p50 {report['stages_ms']['vlm_prelude']['p50']:.2f} ms; "
          f"iteration p50 {np.median([r['p50'] for r in step]):.3f} ms (latent only), "
          f"{np.median([r['p50'] for r in decode]):.3f} ms (with decode)")
    for count, entry in report["end_to_end_ms"].items():
        print(f"  {count:>3s} iterations: end to end p50 {entry['p50']:.2f} ms, p95 {entry['p95']:.2f} ms, resident {report['resident_mb'][count]:.0f} MB")
    for mode, counts in report["adaptive_iterations"].items():
        print(f"  adaptive {mode}: iterations {dict(sorted(counts.items(), key=lambda kv: int(kv[0])))}")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0

