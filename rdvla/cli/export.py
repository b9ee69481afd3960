"""`rdvla export`: a checkpoint into a bundle (ONNX graphs, manifest, golden cases, parity report)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rdvla.cli.arguments import int_in

# Each case is a 32-iteration reference query at export and verify time and two images in the bundle.
MAX_CASES = 64


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint into a bundle (ONNX graphs, manifest, golden cases, parity report)",
        description="Split the checkpoint into a VLM+Prelude graph and single-iteration core graphs, export them to "
        "ONNX, check them with ONNX Runtime against the PyTorch reference (1/4/12/32 fixed iterations, adaptive MSE "
        "1e-3/1e-4) and publish the bundle only when every gate passes.",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint directory in the released layout")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    p.add_argument("--unnorm-key", help="dataset key of dataset_statistics.json (default: the only one)")
    p.add_argument("--prompt-len", default="24:128", metavar="MIN:MAX",
                   help="prompt lengths (tokens) the VLM graph accepts (default 24:128)")
    p.add_argument("--cases", type=int_in(1, MAX_CASES), default=3,
                   help=f"golden cases to generate, check and ship in the bundle (default 3, at most {MAX_CASES})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out (once the new one passes)")
    p.set_defaults(run=run)


def parse_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(low), int(high)
    except ValueError:
        raise ValueError(f"--prompt-len must look like MIN:MAX (e.g. 24:128), got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from rdvla.export.bundle_writer import ParityError, export_bundle

    start = time.perf_counter()
    try:
        report = export_bundle(args.checkpoint, args.out, args.unnorm_key, parse_range(args.prompt_len), args.cases,
                               overwrite=args.overwrite)
    except ParityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote bundle {args.out} in {time.perf_counter() - start:.1f} s; parity gates passed ({report['cases']} cases)")
    for mode, entry in report["actions"].items():
        print(f"  {mode:10s} actions max abs {entry['max_abs']:.2e}  iterations {entry['iterations']} (reference {entry['reference_iterations']})")
    worst = max(report["context_outputs"].items(), key=lambda kv: kv[1]["max_rel"])
    print(f"  context outputs: worst max rel {worst[1]['max_rel']:.2e} ({worst[0]})")
    return 0
