"""Time and peak memory of the PyTorch reference at a preset's size, for BENCHMARKS.md.

    .venv/bin/python scripts/bench_reference.py --preset full --work out/bench_full

Runs `rdvla init-checkpoint` and then `rdvla predict` (12 fixed iterations, and adaptive MSE 1e-3)
as child processes, each measured by wall clock and peak resident memory (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def child(cmd: list[str]) -> dict[str, float]:
    """Run one command alone in a fresh process; return its wall time and peak RSS."""
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter(); rc = subprocess.call(sys.argv[1:]); dt = time.perf_counter() - t\n"
        "print(json.dumps({'rc': rc, 'seconds': dt, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    query = re.search(r"query time ([0-9.]+) s", out.stdout)
    if query:
        result["query_seconds"] = float(query.group(1))
    if result["rc"] != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("tiny", "full"), default="full")
    parser.add_argument("--work", type=Path, default=Path("out/bench_reference"))
    parser.add_argument("--checkpoint", type=Path, help="use this checkpoint instead of writing one")
    args = parser.parse_args()
    rdvla = str(Path(sys.executable).with_name("rdvla"))
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    ckpt = args.work / "checkpoint"
    pixels = args.work / "pixels.npy"
    np.save(pixels, np.random.default_rng(0).standard_normal((1, 12, 224, 224)).astype(np.float32))
    report = {"preset": args.preset, "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
              f"{len(__import__('os').sched_getaffinity(0))} cores", "date": time.strftime("%Y-%m-%d")}
    if args.checkpoint is not None:
        ckpt = args.checkpoint
    else:
        report["init_checkpoint"] = child([rdvla, "init-checkpoint", "--preset", args.preset, "--out", str(ckpt)])
    report["checkpoint_mb"] = sum(f.stat().st_size for f in ckpt.iterdir()) / 1e6
    base = [rdvla, "predict", str(ckpt), "--pixel-values", str(pixels), "--instruction",
            "pick up the black bowl between the plate and the ramekin and place it on the plate",
            "--proprio", "0.1,0.0,0.2,0.0,3.1,0.0,0.04,-0.04"]
    for name, extra in (("predict_fixed12", ["--iterations", "12"]), ("predict_mse1e-3", ["--halting", "mse:1e-3"])):
        report[name] = child(base + extra + ["--out", str(args.work / f"{name}.npz")])
        report[name]["iterations"] = int(np.load(args.work / f"{name}.npz")["iterations"])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
