"""Train a small RD-VLA by behaviour cloning on recorded demonstrations (a development tool, not a robot command).

    .venv/bin/python scripts/train_policy.py --data DEMOS --out out/train_spatial0 --steps 2500

DEMOS holds episode directories as `rdvla eval expert` records them (episode.json, one .npz of frames per camera,
steps.jsonl whose `proposed` actions are the targets), searched recursively; only successful episodes are used. The recipe is the authors' (loss,
depth sampling, truncated backprop, normalisation; see the docstring of rdvla.export.training, which also lists
where and why this run deviates from it). OUT receives:

    checkpoint/               the latest checkpoint in the released layout: `rdvla export OUT/checkpoint --out B`
    dataset_statistics.json   the authors' BOUNDS_Q99 statistics of the demonstrations (also inside checkpoint/)
    learning_curve.csv        step, loss, lr, iterations, seconds per step
    train_state.pt            model, optimiser and curve for --resume
    frames.npy, frames.json   every frame after the policy's preprocessing, computed once (reused on resume)
    tokenizer/                the checkpoint's tokenizer files

Checkpoints are written every --save-every steps and at the end, each replacing the last whole. After an
interruption, the same command with --resume continues from the last save and gives the same result as an
uninterrupted run (the data order, each step's depth and initial latent are seeded by (seed, step)).
"""

from __future__ import annotations

import os

# OpenMP's default busy-waiting makes small kernels ~30x slower when other processes share the cores; must be
# set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from rdvla.export.demonstrations import DemonstrationError  # noqa: E402
from rdvla.export.presets import PRESETS  # noqa: E402
from rdvla.export.training import STATE_FILE, TrainingError, TrainSettings, open_run, train  # noqa: E402

DEFAULTS = TrainSettings()


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, nargs="+", required=True, metavar="DIR",
                   help="directories of recorded episodes (searched recursively for episode.json)")
    p.add_argument("--out", type=Path, required=True, help="run directory (new or empty, unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out (same settings and data; "
                   "--steps and --decay-steps may change while the run has not reached the decay)")
    p.add_argument("--preset", choices=PRESETS, default=DEFAULTS.preset,
                   help=f"model size (default {DEFAULTS.preset}; see rdvla.export.presets)")
    p.add_argument("--steps", type=positive, default=DEFAULTS.steps, help=f"optimiser steps (default {DEFAULTS.steps})")
    p.add_argument("--batch-size", type=positive, default=DEFAULTS.batch_size,
                   help=f"samples per step (default {DEFAULTS.batch_size}, the authors')")
    p.add_argument("--lr", type=positive_float, default=DEFAULTS.lr, help=f"peak learning rate (default {DEFAULTS.lr})")
    p.add_argument("--warmup-steps", type=positive, default=DEFAULTS.warmup_steps,
                   help=f"linear warm-up from 0.1 lr (default {DEFAULTS.warmup_steps})")
    p.add_argument("--decay-steps", type=non_negative, default=DEFAULTS.decay_steps, metavar="N",
                   help="the last N steps lower the learning rate linearly to 0.1 lr (default 0: constant to the end); "
                   "--resume may change it and --steps while the run has not reached the decay")
    p.add_argument("--mean-recurrence", type=positive, default=DEFAULTS.mean_recurrence,
                   help=f"mean of the sampled iteration count r (default {DEFAULTS.mean_recurrence}; released 32)")
    p.add_argument("--backprop-depth", type=positive, default=DEFAULTS.backprop_depth,
                   help=f"iterations with gradient, k (default {DEFAULTS.backprop_depth}; released 8)")
    p.add_argument("--shift", type=non_negative, default=DEFAULTS.shift_px, metavar="PX",
                   help=f"augmentation: each image shifted by up to PX pixels (default {DEFAULTS.shift_px}; 0: none)")
    p.add_argument("--dataset-key", default=DEFAULTS.dataset_key,
                   help="key of dataset_statistics.json, the bundle's --unnorm-key (default: <suite>_no_noops of the "
                   "episodes' LIBERO suite, e.g. libero_spatial_no_noops)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help=f"random seed (default {DEFAULTS.seed})")
    p.add_argument("--save-every", type=positive, default=250, help="steps between checkpoints (default 250)")
    p.add_argument("--log-every", type=positive, default=10, help="steps between progress lines (default 10)")
    p.add_argument("--threads", type=positive, default=2, help="torch CPU threads (default 2)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out: Path = args.out
    if args.resume and not (out / STATE_FILE).is_file():
        print(f"error: --resume: {out} holds no {STATE_FILE}; start the run without --resume", file=sys.stderr)
        return 2
    if not args.resume and out.is_dir() and any(out.iterdir()):
        print(f"error: --out {out} exists and is not empty; add --resume to continue it, or choose a new directory",
              file=sys.stderr)
        return 2
    if args.decay_steps > max(0, args.steps - args.warmup_steps):
        print(f"error: --decay-steps {args.decay_steps}: give 0 (no decay) or at most --steps minus --warmup-steps "
              f"({max(0, args.steps - args.warmup_steps)})", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    settings = TrainSettings(preset=args.preset, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                             warmup_steps=args.warmup_steps, decay_steps=args.decay_steps, mean_recurrence=args.mean_recurrence,
                             backprop_depth=args.backprop_depth, seed=args.seed, shift_px=args.shift, dataset_key=args.dataset_key)
    try:
        run = open_run(out, args.data, settings, resume=args.resume)
    except (DemonstrationError, TrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trained = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    print(f"{len(run.samples.targets)} samples, {len(run.samples.instructions)} instruction(s); {settings.preset} model, "
          f"{trained / 1e6:.2f} M trained parameters; from step {run.step} to {settings.steps}", flush=True)
    recent: list[float] = []
    start = time.perf_counter()
    first = run.step

    def progress(row: dict[str, float]) -> None:
        recent.append(row["loss"])
        if row["step"] % args.log_every and row["step"] != settings.steps:
            return
        per_step = (time.perf_counter() - start) / (row["step"] - first)
        eta = per_step * (settings.steps - row["step"]) / 60
        print(f"step {row['step']}/{settings.steps}  loss {statistics.mean(recent):.4f}  lr {row['lr']:.1e}  "
              f"n {row['iterations']}  {per_step:.2f} s/step  eta {eta:.0f} min", flush=True)
        recent.clear()

    try:
        train(run, args.save_every, progress)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted at step {run.step}: the same command with --resume continues from the last save "
              f"(every {args.save_every} steps)", file=sys.stderr)
        return 130
    print(f"wrote {out / 'checkpoint'} (step {run.step}) in {(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
