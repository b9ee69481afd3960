"""`rdvla demo`: the whole path on a machine with no GPU and no camera, in a few minutes.

A tiny random-weight checkpoint is written and exported to a bundle; two synthetic RealSense
recordings (third-person and wrist) are made through the SDK's software device; `rdvla run`
replays them as the cameras and drives the simulated arm with ONNX Runtime; `rdvla profile`
measures the bundle. Then the policy trained here on a LIBERO task (examples/trained/) is exported,
calibrated to INT8 on episodes of its task recorded by the scripted expert, and evaluated closed
loop in the simulator on held-out initial states. Each stage is the documented command, printed
before it runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import time
from pathlib import Path
from typing import Callable

from rdvla.cli.arguments import positive_int

DEMO_INSTRUCTION = "put the black bowl on the plate"
EXTRA_FRAMES = 20  # frames beyond one per step: the priming read, and any frame the SDK drops at the start
OUTPUTS = ("checkpoint", "bundle", "recordings", "run", "profile", "trained_bundle", "task_episodes", "eval")
# The small RD-VLA trained here on a LIBERO task: the demo shows it solving initial states it never saw.
TRAINED = Path(__file__).resolve().parents[2] / "examples" / "trained" / "libero_spatial_task0_small"
CALIBRATION_SEEDS = "0-1"  # random placements, recorded by the expert: the calibration data
HELD_OUT = {False: "0-2", True: "0"}  # fixed initial states evaluated (--quick: one); never trained or calibrated on


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole path on a desk: tiny checkpoint -> bundle -> synthetic recordings -> control loop -> profile",
        description="Write a tiny random-weight checkpoint, export it to a bundle, record a synthetic RealSense episode "
        "with the SDK's software device, replay it as the cameras through the control loop with ONNX Runtime against a "
        "simulated arm, print the run's summary, and write the profile report with its plots. Needs no GPU and no camera.",
    )
    p.add_argument("--out", type=Path, default=Path("out/demo"),
                   help=f"output directory (default out/demo) for its {', '.join(OUTPUTS)}")
    p.add_argument("--overwrite", action="store_true", help=f"replace the {', '.join(OUTPUTS)} of an earlier demo in --out")
    p.add_argument("--steps", type=positive_int, metavar="N", help="control steps at 10 Hz (default 300; 60 with --quick)")
    p.add_argument("--quick", action="store_true", help="fewer steps and profile repeats (CI)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rdvla.runtime.outputs import check_new_files

    steps = args.steps if args.steps is not None else (60 if args.quick else 300)
    out: Path = check_new_files(args.out, OUTPUTS, overwrite=args.overwrite, option="--out")
    for name in OUTPUTS:  # only with --overwrite: check_new_files refused them otherwise
        shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    total = 8

    def stage(number: int, text: str, work: Callable[[], object]) -> None:
        print(f"==> stage {number} of {total}: {text}", flush=True)
        start = time.perf_counter()
        work()
        print(f"    done in {time.perf_counter() - start:.1f} s", flush=True)

    def command(*argv: str, accept: tuple[int, ...] = (0,)) -> int:
        print("    $ " + shlex.join(["rdvla", *argv]), flush=True)
        status = args.dispatch(argv)
        if status not in accept:
            raise RuntimeError(f"`rdvla {argv[0]}` exited with status {status}")
        return status

    checkpoint, bundle, recordings = out / "checkpoint", out / "bundle", out / "recordings"
    stage(1, "writing a tiny random-weight checkpoint in the released layout",
          lambda: command("init-checkpoint", "--preset", "tiny", "--out", str(checkpoint), "--seed", "0"))
    stage(2, "exporting the bundle: ONNX graphs, golden cases, parity against the reference (about a minute on 2 cores)",
          lambda: command("export", str(checkpoint), "--out", str(bundle), "--cases", "2"))

    from rdvla.devices.cameras.realsense.sdk import recording_extension, sdk_version
    from rdvla.devices.cameras.realsense.synthetic import SCENE_HEIGHT, SCENE_WIDTH, record_scene

    files = [recordings / f"{role}{recording_extension(sdk_version())}" for role in ("third_person", "wrist")]

    def record() -> None:
        recordings.mkdir(parents=True)
        for path in files:
            count = record_scene(path, path.stem, steps + EXTRA_FRAMES)
            print(f"    {path}: {count} frames {SCENE_WIDTH}x{SCENE_HEIGHT}", flush=True)

    stage(3, "recording a synthetic RealSense episode with the SDK's software device (third-person and wrist)", record)
    log_path = out / "run" / "steps.jsonl"

    def control() -> None:
        from rdvla.runtime.control.plots import plot_run
        from rdvla.runtime.control.step_log import read_log

        command("run", str(bundle), "--recording", str(files[0]), "--recording", str(files[1]), "--robot", "sim",
                "--execute", "--instruction", DEMO_INSTRUCTION, "--steps", str(steps), "--rate", "10",
                "--mode", "async", "--horizon", "fixed:5", "--log", str(log_path))
        written = plot_run(read_log(log_path), out / "run" / "control_loop.png")
        if written is not None:
            print(f"    plot: {written}", flush=True)

    stage(4, f"running the control loop for {steps} steps at 10 Hz: recordings as cameras, ONNX Runtime, simulated arm",
          control)
    repeats, counts = ("2", "1,4,12") if args.quick else ("5", "1,2,4,8,12,16,24,32")
    stage(5, "profiling the bundle on ONNX Runtime (per-iteration and end-to-end latency, with plots)",
          lambda: command("profile", str(bundle), "--out", str(out / "profile"), "--repeats", repeats, "--iterations", counts))
    trained_bundle, episodes = out / "trained_bundle", out / "task_episodes"
    task = json.loads((TRAINED / "task.json").read_text(encoding="utf-8"))
    on_task = ["--suite", task["suite"], "--tasks", ",".join(map(str, task["tasks"])), "--render", task["render"]]
    stage(6, f"exporting the policy trained here on a LIBERO task ({TRAINED.relative_to(TRAINED.parents[2])})",
          lambda: command("export", str(TRAINED / "checkpoint"), "--out", str(trained_bundle), "--cases", "2"))

    def calibrate() -> None:
        command("eval", "expert", *on_task, "--random-inits", CALIBRATION_SEEDS, "--record", str(episodes),
                "--out", str(out / "task_episodes" / "expert"))
        # Status 1: an accuracy gate failed and the graphs are written; the next stage shows what it costs closed loop.
        if command("calibrate", str(trained_bundle), "--data", *map(str, sorted(episodes.glob("*_random*"))), accept=(0, 1)):
            print("    an accuracy gate failed (above): the INT8 graphs are written, and the next stage runs them closed loop",
                  flush=True)

    stage(7, "calibrating it to INT8 on episodes of its task the scripted expert records from random placements", calibrate)
    stage(8, f"evaluating the INT8 bundle closed loop in the LIBERO simulator on held-out initial states {HELD_OUT[args.quick]} "
          "(adaptive halting; a GIF of the first episode)",
          lambda: command("eval", str(trained_bundle), *on_task, "--init-states", HELD_OUT[args.quick], "--precision", "int8",
                          "--halting", "mse:1e-3", "--video", "1", "--out", str(out / "eval")))
    print(f"demo finished in {time.perf_counter() - begin:.0f} s; outputs in {out}/: {', '.join(OUTPUTS)}")
    return 0
