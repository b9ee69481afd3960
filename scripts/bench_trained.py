"""The trained policy in closed loop (BENCHMARKS.md section 8): success and iterations on its task's held-out
fixed initial states, for the reference at several depths and for the exported bundle at each precision.

    .venv/bin/python scripts/bench_trained.py [--example examples/trained/libero_spatial_task0_small]
        [--out out/bench_trained] [--workers 2] [--rows ref-fixed12,fp32-fixed12,...]

Each row is one `rdvla eval` into its own directory under OUT, so an interrupted benchmark resumes where it
stopped (rerun the same command). Rows run in the order given (default: the order of ROWS, most telling
first). Before the bundle rows, the checkpoint is exported to OUT/bundle and calibrated to INT8 and FP16 on
expert episodes of the task recorded from random placements (never the fixed states evaluated). The table
printed at the end covers the rows with results: episode counts, on how many states each row's outcome
equals the reference's at 12 iterations, and how the adaptive rows' iterations depend on the scene (gripper
open or closed, distance from the gripper to the object).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from rdvla.cli import main as main_command
from rdvla.runtime.eval.results import EpisodeResult, read_episodes, wilson95
from rdvla.runtime.manifest import CALIBRATED_SECTIONS, MANIFEST

ROOT = Path(__file__).resolve().parents[1]
ADAPTIVE = ("--halting", "mse:1e-3")
CALIBRATION_SEEDS = "900-903"  # random placements: never the fixed initial states the rows evaluate
DISTANCE_BINS_M = (0.05, 0.10, 0.20)


@dataclass(frozen=True)
class Row:
    name: str
    source: str  # "reference" (the checkpoint) or "bundle"
    precision: str | None  # bundle only
    halting: tuple[str, ...]
    episodes: int  # fixed initial states 0..episodes-1


ROWS = (
    Row("ref-fixed12", "reference", None, ("--iterations", "12"), 50),
    Row("fp32-fixed12", "bundle", "fp32", ("--iterations", "12"), 50),
    Row("ref-adaptive", "reference", None, ADAPTIVE, 50),
    Row("fp32-adaptive", "bundle", "fp32", ADAPTIVE, 50),
    Row("fp16-fixed12", "bundle", "fp16", ("--iterations", "12"), 50),
    Row("int8-fixed12", "bundle", "int8", ("--iterations", "12"), 50),
    Row("fp16-adaptive", "bundle", "fp16", ADAPTIVE, 50),
    Row("int8-adaptive", "bundle", "int8", ADAPTIVE, 50),
    *(Row(f"ref-fixed{n}", "reference", None, ("--iterations", str(n)), 20) for n in (1, 2, 4, 8)),
)


def rdvla(*args: str, accept: tuple[int, ...] = (0,)) -> int:
    print("$ rdvla " + " ".join(args), flush=True)
    status = main_command(list(args))
    if status not in accept:
        raise SystemExit(f"`rdvla {args[0]}` exited with status {status}")
    return status


def prepare_bundle(checkpoint: Path, task: dict, out: Path, workers: int) -> Path:
    bundle = out / "bundle"
    if not (bundle / MANIFEST).is_file():
        rdvla("export", str(checkpoint), "--out", str(bundle))
    manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    if not all(section in manifest for section in CALIBRATED_SECTIONS.values()):
        demos = out / "calibration_episodes"
        rdvla("eval", "expert", "--suite", task["suite"], "--tasks", ",".join(map(str, task["tasks"])),
              "--random-inits", CALIBRATION_SEEDS, "--render", task["render"], "--workers", str(workers),
              "--record", str(demos), "--out", str(out / "calibration_expert"))
        # Status 1: a gate of runtime/gates.py failed, the graphs are written; the rows measure what it costs.
        if rdvla("calibrate", str(bundle), "--data", *map(str, sorted(demos.iterdir())), "--precision", "int8,fp16",
                 accept=(0, 1)):
            print("calibration: an accuracy gate failed (above); the FP16 and INT8 rows show what that costs closed loop",
                  flush=True)
    return bundle


def chosen_row(text: str) -> Row:
    """NAME or NAME:EPISODES -> the row, with its episode count replaced when one is given."""
    name, _, episodes = text.partition(":")
    known = {r.name: r for r in ROWS}
    if name not in known:
        raise SystemExit(f"error: --rows: no row {name!r}; rows are {', '.join(known)}")
    return replace(known[name], episodes=int(episodes)) if episodes else known[name]


def run_row(row: Row, checkpoint: Path, bundle: Path | None, task: dict, out: Path, workers: int) -> None:
    source = str(checkpoint) if row.source == "reference" else str(bundle)
    precision = ("--backend", "onnxruntime", "--precision", row.precision) if row.precision else ()
    rdvla("eval", source, "--suite", task["suite"], "--tasks", ",".join(map(str, task["tasks"])),
          "--episodes-per-task", str(row.episodes), "--render", task["render"], *row.halting, *precision,
          "--workers", str(workers), "--video", "1", "--out", str(out / row.name))


def describe(row: Row, episodes: list[EpisodeResult], baseline: list[EpisodeResult]) -> str:
    """One table line; the last column: on how many of the same initial states the outcome (success or not)
    equals the reference's at 12 iterations, the paired comparison a precision or a depth is judged by."""
    n = len(episodes)
    wins = sum(e.success for e in episodes)
    low, high = wilson95(wins, n)
    iterations = [q.iterations for e in episodes for q in e.queries]
    steps = statistics.mean(e.steps for e in episodes)
    reference = {e.init: e.success for e in baseline}
    shared = [e for e in episodes if e.init in reference]
    same = sum(e.success == reference[e.init] for e in shared)
    return (f"| {row.name} | {n} | {wins} | {wins / n:.0%} | {low:.0%}-{high:.0%} | {statistics.mean(iterations):.2f} "
            f"| {steps:.0f} | {same}/{len(shared)} |")


def by_scene(name: str, episodes: list[EpisodeResult]) -> list[str]:
    """Mean iterations per query grouped by the scene's state when the query was asked."""
    queries = [q for e in episodes for q in e.queries]
    groups: dict[str, list[int]] = {}
    for q in queries:
        grip = "closed" if q.gripper_closed else "open"
        d = q.object_distance_m
        if d is None:
            where = "?"
        else:
            where = next((f"< {b * 100:.0f} cm" for b in DISTANCE_BINS_M if d < b), f">= {DISTANCE_BINS_M[-1] * 100:.0f} cm")
        groups.setdefault(f"gripper {grip}, object {where}", []).append(q.iterations)
    return [f"| {name} | {key} | {len(v)} | {statistics.mean(v):.2f} |" for key, v in sorted(groups.items())]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--example", type=Path, default=ROOT / "examples" / "trained" / "libero_spatial_task0_small",
                   help="the trained example: its checkpoint/ and task.json")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench_trained")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rows", help="comma-separated rows, each NAME or NAME:EPISODES to run fewer (or more) episodes "
                   "than the row's own count; a later run with more extends a row (default: all, in this order): "
                   + ", ".join(f"{r.name}:{r.episodes}" for r in ROWS))
    args = p.parse_args()
    task = json.loads((args.example / "task.json").read_text(encoding="utf-8"))
    checkpoint = args.example / "checkpoint"
    chosen = list(ROWS) if not args.rows else [chosen_row(text) for text in args.rows.split(",")]
    bundle = None
    for row in chosen:
        if row.source == "bundle" and bundle is None:
            bundle = prepare_bundle(checkpoint, task, args.out, args.workers)
        run_row(row, checkpoint, bundle, task, args.out, args.workers)
    print("| row | episodes | successes | success | Wilson 95 % | mean iterations | mean steps | same outcome as ref-fixed12 |")
    print("|---|---|---|---|---|---|---|---|")
    scene_lines = []
    baseline = read_episodes(args.out / ROWS[0].name)
    for row in ROWS:
        episodes = read_episodes(args.out / row.name)
        if episodes:
            print(describe(row, episodes, baseline))
            if row.halting == ADAPTIVE:
                scene_lines += by_scene(row.name, episodes)
    if scene_lines:
        print("\n| row | scene when asked | queries | mean iterations |\n|---|---|---|---|")
        print("\n".join(scene_lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
