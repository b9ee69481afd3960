"""`rdvla build`: TensorRT engines for a bundle, built on the device that will run them."""

from __future__ import annotations

import argparse
from pathlib import Path

from rdvla.cli.arguments import add_bundle_argument, graph_list, positive_int
from rdvla.runtime import contract
from rdvla.runtime.backends.tensorrt.builder import build_engines, open_for_build
from rdvla.runtime.backends.tensorrt.precision import check_precision
from rdvla.runtime.backends.tensorrt.build_record import describe_layers, engine_dir
from rdvla.runtime.manifest import MANIFEST


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "build",
        help="build TensorRT engines for a bundle (run it on the device that will use them)",
        description=(
            "Build TensorRT engines from a bundle's ONNX graphs into BUNDLE/engines/PRECISION/ and record them "
            "(hashes, I/O, TensorRT/CUDA versions, GPU) in the bundle's manifest. An engine runs only with the "
            "TensorRT version and on the GPU model it was built with, so run this on the Jetson itself; it needs "
            "TensorRT 10 or newer (JetPack 6.1+). fp16 builds the calibrated FP16 graphs of a calibrated bundle as "
            "typed, else keeps normalisations, softmax, reductions, the halting statistics and the FP32 latent/action "
            "outputs in FP32; int8 needs the explicit Q/DQ graphs of a calibrated bundle; fp8/fp4 are refused (Orin, "
            "SM 8.7, has no FP8/FP4 tensor cores). Building the VLM graph takes many minutes on Orin."
        ),
    )
    add_bundle_argument(p)
    p.add_argument(
        "--precision", required=True, metavar="{fp16,int8,fp32}", help="engine precision (fp16 for deployment, fp32 as reference)"
    )
    p.add_argument(
        "--workspace",
        type=positive_int,
        metavar="MB",
        help="cap TensorRT's tactic workspace at MB MiB (default: no cap); lower it, e.g. 1024, if an 8/16 GB board runs out of memory",
    )
    p.add_argument(
        "--timing-cache",
        type=Path,
        metavar="PATH",
        help="read and update a TensorRT timing cache at PATH: rebuilds on the same device and TensorRT are much faster",
    )
    p.add_argument(
        "--graphs",
        type=graph_list,
        metavar="NAME,...",
        help=f"build only these graphs (default: all of {', '.join(contract.GRAPHS)})",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    precision = check_precision(args.precision)  # before open_for_build hashes every file of the bundle
    bundle = open_for_build(args.bundle)
    records = build_engines(bundle, precision, args.workspace, args.timing_cache, args.graphs)
    width = max(len(r.graph) for r in records)
    print(f"built {len(records)} {precision} engines in {bundle.root / engine_dir(precision)}:")
    for r in records:
        print(f"  {r.graph:<{width}}  {r.bytes / 1e6:8.1f} MB  {r.build_seconds:6.0f} s  {describe_layers(r.to_json())}")
    print(f"recorded in {bundle.root / MANIFEST} (engines.{precision}); log: {engine_dir(precision)}/build.log")
    return 0
