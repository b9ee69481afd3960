"""`rdvla init-checkpoint`: a random-weight checkpoint in the released layout (tests, demos, sizing)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rdvla.cli.inputs import seed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init-checkpoint",
        help="write a random-weight checkpoint in the released layout",
        description="Write a random-weight RD-VLA checkpoint in the released directory layout "
        "(config.json, model.safetensors, action_head--*, proprio_projector--*, dataset_statistics.json, "
        "tokenizer files). 'tiny' is for tests and demos; 'small' is the size scripts/train_policy.py trains on a CPU; "
        "'full' has the released dimensions (about 2.7 GB).",
    )
    p.add_argument("--preset", choices=("tiny", "small", "full"), required=True, help="model size")
    p.add_argument("--out", type=Path, required=True, help="directory to create (must be empty or absent)")
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rdvla.export.presets import init_checkpoint
    from rdvla.runtime.outputs import OutputError, check_new_directory, publish_directory, scratch_directory

    out: Path = args.out
    if out.is_dir() and any(out.iterdir()):
        raise OutputError(f"--out {out} exists and is not empty; choose a new or empty directory")
    if not out.is_dir():
        check_new_directory(out, overwrite=False, option="--out")
    start = time.perf_counter()
    with scratch_directory(out) as work:  # a checkpoint directory is complete or absent, also after Ctrl+C
        init_checkpoint(args.preset, work, seed=args.seed)
        publish_directory(work, out)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote {args.preset} checkpoint to {out} ({size:.1f} MB) in {time.perf_counter() - start:.1f} s")
    return 0
