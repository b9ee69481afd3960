"""The per-query host path of `rdvla run`, numpy against native preprocessing, for BENCHMARKS.md.

    python scripts/bench_host_path.py [--bundle DIR] [--steps 40] [--width 640 --height 480]

Runs `rdvla run` in this process twice on the same two synthetic camera recordings (sync mode,
fixed iterations, simulated arm, dry run), once with each preprocessing implementation, and reads
back from the step logs what each query spent on the host outside the engines: preprocessing
(camera frames -> pixel_values, written into the backend's staging buffer), tokenising, and the
rest of `Policy.act` (normalising proprio, un-normalising actions: `postprocess`), plus the loop's
per-step work outside the query (observe without inference, act, send). Without --bundle it
writes and exports the tiny checkpoint first (about a minute). Prints a markdown table of
medians, both implementations measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
from pathlib import Path

from bench_preprocess import load_average, machine  # a sibling: scripts/ is on sys.path when run as a script
from rdvla.cli import main as rdvla
from rdvla.devices.cameras.realsense.sdk import recording_extension, sdk_version
from rdvla.devices.cameras.realsense.synthetic import record_scene
from rdvla.runtime.control.records import StepRecord
from rdvla.runtime.control.step_log import read_log

HOST_STAGES = ("preprocess", "tokenize", "postprocess")


def recordings(folder: Path, width: int, height: int, count: int) -> list[Path]:
    files = []
    for role in ("third_person", "wrist"):
        path = folder / f"{role}{recording_extension(sdk_version())}"
        record_scene(path, role, count, width=width, height=height)
        files.append(path)
    return files


def run(bundle: Path, files: list[Path], steps: int, preprocessing: str, log: Path) -> dict[str, float]:
    status = rdvla(["run", str(bundle), "--recording", str(files[0]), "--recording", str(files[1]), "--robot", "sim",
                    "--instruction", "put the black bowl on the plate", "--steps", str(steps), "--mode", "sync", "--rate", "2",
                    "--iterations", "4", "--preprocessing", preprocessing, "--log", str(log), "--no-status"])
    if status != 0:
        raise SystemExit(f"rdvla run with {preprocessing} preprocessing exited with {status}")
    steps_run = [r for r in read_log(log) if isinstance(r, StepRecord)]
    queries = [s.query for s in steps_run if s.query is not None]
    medians = {stage: statistics.median(q.timings_ms[stage] for q in queries) for stage in HOST_STAGES}
    medians["host per query"] = sum(medians[stage] for stage in HOST_STAGES)
    for section in ("observe", "act", "send"):
        medians[f"loop {section}"] = statistics.median(s.sections_ms[section] for s in steps_run)
    medians["queries"] = len(queries)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="an exported bundle (default: export the tiny checkpoint)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle = args.bundle
        if bundle is None:
            bundle = work / "bundle"
            assert rdvla(["init-checkpoint", "--preset", "tiny", "--out", str(work / "ckpt")]) == 0
            assert rdvla(["export", str(work / "ckpt"), "--out", str(bundle), "--cases", "1"]) == 0
        files = recordings(work, args.width, args.height, args.steps + 20)
        results = {impl: run(bundle, files, args.steps, impl, work / f"{impl}.jsonl") for impl in ("numpy", "native")}
    print(f"\n{datetime.date.today()}, {machine()}, load average {load_average()}; "
          f"two {args.width}x{args.height} cameras, {results['native']['queries']} queries each")
    print("\n| per query / step, ms (median) | numpy | native | ratio |\n|---|---:|---:|---:|")
    for key in (*HOST_STAGES, "host per query", "loop observe", "loop act", "loop send"):
        numpy_ms, native_ms = results["numpy"][key], results["native"][key]
        ratio = f"{numpy_ms / native_ms:.1f}x" if native_ms > 0 else "-"
        print(f"| {key} | {numpy_ms:.2f} | {native_ms:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
