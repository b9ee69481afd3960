"""`rdvla calibrate`: INT8 (Q/DQ) and FP16 graphs and an accuracy report, from recorded robot data."""

from __future__ import annotations

import argparse
import time

from rdvla.calibration.methods import METHODS, QUANTIZERS
from rdvla.cli.arguments import add_bundle_argument, graph_list, int_in, positive_int
from rdvla.cli.inputs import instruction, seed
from rdvla.runtime import contract
from rdvla.runtime.golden import TRACE_ITERATIONS


def _precisions(text: str) -> list[str]:
    wanted = list(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    bad = [p for p in wanted if p not in ("int8", "fp16")]
    if bad or not wanted:
        raise argparse.ArgumentTypeError(f"choose int8, fp16 or int8,fp16 (got {text!r})")
    return wanted


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="add INT8 (Q/DQ) and FP16 graphs and an accuracy report to a bundle, from recorded robot data",
        description=(
            "Run recorded observations through the bundle's FP32 graphs (32 iterations each, keeping the core's "
            "inputs at iteration indices spread over 1..32), then write INT8 Q/DQ graphs (weight MatMuls, per-channel "
            "weights) and/or FP16 graphs (norms, softmax, residual stream and any overflowing node kept in FP32) into "
            "the bundle with the calibration data, its fingerprint and an accuracy report against FP32: per graph, "
            "per iteration index, and the stopping iteration under adaptive halting. Exit status 1 when a gate of "
            "runtime/gates.py fails (the graphs are still written; `rdvla verify --precision P` checks them again)."
        ),
    )
    add_bundle_argument(p)
    p.add_argument(
        "--data", required=True, nargs="+", metavar="PATH",
        help="episode directories written by `rdvla run --record`, or bare camera recordings: one file per camera "
        "joined with commas in policy order (third.db3,wrist.db3) or a directory of them (needs --instruction)",
    )
    p.add_argument("--precision", type=_precisions, default=["int8"], metavar="int8|fp16|int8,fp16", help="default int8")
    p.add_argument("--instruction", type=instruction, help="the task of bare recordings (episodes log their own); their proprio is "
                   "taken as the middle of the dataset's q01..q99 range, and the report says so")
    p.add_argument("--queries", type=positive_int, default=32, help="observations to run, spread evenly over all steps (default 32)")
    p.add_argument("--latents-per-query", type=int_in(1, TRACE_ITERATIONS), default=4,
                   help="iteration indices per query whose core inputs are kept, rotated across queries (default 4)")
    p.add_argument("--quantizer", choices=QUANTIZERS, default="ort",
                   help="ort (ONNX Runtime static quantisation, default) or modelopt (NVIDIA ModelOpt, pip install 'rdvla[calibration]')")
    p.add_argument("--method", help="calibration method: " + "; ".join(f"{q}: {', '.join(m)}" for q, m in METHODS.items())
                   + " (default minmax / max)")
    p.add_argument("--graphs", type=graph_list, metavar="NAME,...", help=f"graphs to convert (default all: {','.join(contract.GRAPHS)})")
    p.add_argument("--seed", type=seed, default=0, help="seed of the initial latents S0 (default 0)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rdvla.calibration.pipeline import calibrate_bundle

    if args.method is not None and args.method not in METHODS[args.quantizer]:  # before minutes of capture
        raise ValueError(f"--method {args.method}: the {args.quantizer} quantizer calibrates with "
                         f"{', '.join(METHODS[args.quantizer])}")
    start = time.perf_counter()
    report = calibrate_bundle(args.bundle, args.data, args.precision, args.instruction, args.queries,
                              args.latents_per_query, args.quantizer, args.method, args.graphs, args.seed)
    print("\n".join(report["summary"]))
    record = report["calibration"]
    for precision in args.precision:
        print(f"{precision}: graphs in {args.bundle}/{record['report'].rsplit('/', 1)[0]}/{precision}/, "
              f"data fingerprint {record[precision]['data']['fingerprint'][:16]}")
    print(f"report: {args.bundle}/{record['report']} ({time.perf_counter() - start:.0f} s)")
    if not report["passed"]:
        print("FAILED: accuracy gates (see above)")
        return 1
    print("all accuracy gates passed")
    return 0
