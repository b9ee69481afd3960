"""`rdvla doctor`: the first command on a new robot; is this machine (and a bundle) ready for `rdvla run`?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from rdvla.runtime.doctor import Probe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check this machine (and a bundle) before `rdvla build` and `rdvla run`",
        description="One line per check, each OK, WARN, FAIL or SKIP with the fix on the same line: the L4T release "
        "and its JetPack, TensorRT (10 or newer), numpy (below 2 beside JetPack's TensorRT), cuda-python and the "
        "CUDA driver, the GPU, the power mode and whether the clocks are locked, free memory and disk, pyrealsense2 "
        "and every connected RealSense camera (USB 3 or not; several on a Jetson: the librealsense backend), and the "
        "native preprocessing extension. With BUNDLE: whether it opens (every file's SHA-256), whether this machine "
        "has the memory to build its engines, and whether each precision's engines were built for this GPU and this "
        "TensorRT. Exit status 1 when a FAIL line says `rdvla run` on TensorRT would stop (so wherever TensorRT or "
        "cuda-python is missing), else 0.",
    )
    p.add_argument("bundle", type=Path, nargs="?", metavar="BUNDLE", help="also check this bundle directory")
    p.add_argument("--json", action="store_true", help="print the findings as JSON instead of lines")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, probe: Optional["Probe"] = None) -> int:
    """Print the findings; `probe` replaces this machine (tests describe a Jetson with one)."""
    from rdvla.runtime.doctor import Status, SystemProbe, diagnose, summary

    findings = diagnose(probe if probe is not None else SystemProbe(), args.bundle)
    verdict = summary(findings)
    if args.json:
        print(json.dumps({"status": verdict.status.value, "findings": [f.to_json() for f in [*findings, verdict]]}, indent=2))
    else:
        print("\n".join(f.line() for f in [*findings, verdict]))
    return 1 if verdict.status is Status.FAIL else 0
