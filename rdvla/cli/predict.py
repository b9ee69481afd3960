"""`rdvla predict SOURCE`: one policy query from files, comparable call for call across implementations.

SOURCE is a checkpoint directory (the PyTorch reference runs it) or a bundle directory (its graphs
run through `runtime.Policy` on the chosen backend). The output `.npz` holds
`normalized_actions` (8, 7), `actions` (8, 7, un-normalised, no gripper post-processing),
`iterations` and `deltas` (the halting statistic per iteration, NaN where undefined: at the
first iteration, and everywhere under fixed iterations, which decode only once).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rdvla.runtime.manifest import MANIFEST
from rdvla.runtime.halting import HaltingRule, parse_halting
from rdvla.cli.arguments import add_backend_options, add_halting_options, open_policy
from rdvla.cli.inputs import check_proprio_range, instruction, load_images, load_npy, parse_proprio, seed
from rdvla.runtime.outputs import atomic_write, check_apart, check_new_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="run one policy query from files",
        description="Run one RD-VLA policy query on a checkpoint directory and write the action chunk.",
        epilog="example: rdvla predict ckpt/ --image agent.png --image wrist.png "
        "--instruction 'put the bowl on the plate' --proprio 0,0,0,0,0,0,0.04,-0.04 --halting mse:1e-3 --out a.npz",
    )
    p.add_argument("source", type=Path, help="checkpoint directory in the released layout, or a bundle directory")
    images = p.add_mutually_exclusive_group(required=True)
    images.add_argument("--image", type=Path, action="append", help="camera image, repeated in camera order (third-person, then wrist)")
    images.add_argument("--pixel-values", type=Path, help="(1,12,224,224) float32 .npy; preprocessing is skipped")
    p.add_argument("--instruction", type=instruction, required=True, help="task instruction")
    p.add_argument("--proprio", required=True, help="raw proprio state: 8 comma-separated numbers (eef pos 3, axis-angle 3, gripper 2)")
    latent = p.add_mutually_exclusive_group()
    latent.add_argument("--init-latent", type=Path, help="(1,8,D) float32 .npy initial latent S0")
    latent.add_argument("--seed", type=seed, default=0, help="seed of the truncated-normal initial latent (default 0)")
    add_halting_options(p, "12 iterations")
    p.add_argument("--unnorm-key", help="dataset key of dataset_statistics.json (default: the only one)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"),
                   help="checkpoint only: reference precision, float32 (default; what bundles are compared against) or bfloat16 (the authors' run)")
    add_backend_options(p.add_argument_group("running a bundle", "--backend, --precision and --checkpoint apply to a "
                                              "bundle SOURCE only; --preprocessing to a checkpoint as well"))
    p.add_argument("--out", type=Path, help="write the result to this file (an .npz archive, under exactly this name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(run=run)


@dataclass
class Prediction:
    normalized_actions: np.ndarray  # (8, 7) float32
    actions: np.ndarray  # (8, 7) float32
    iterations: int
    deltas: np.ndarray  # (iterations,) float32
    seconds: float

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as temporary, open(temporary, "wb") as f:  # np.savez would append ".npz" to a name without it
            np.savez(
                f,
                normalized_actions=self.normalized_actions.astype(np.float32),
                actions=self.actions.astype(np.float32),
                iterations=np.int64(self.iterations),
                deltas=self.deltas.astype(np.float32),
            )


def predict_checkpoint(args: argparse.Namespace, halting: HaltingRule, proprio: np.ndarray) -> Prediction:
    from rdvla.export.reference_policy import ReferencePolicy

    policy = ReferencePolicy(args.source, args.unnorm_key, args.dtype or "float32", args.preprocessing)
    check_proprio_range(proprio, policy.stats)
    pixels = images = None
    if args.pixel_values is not None:
        pixels = load_npy(args.pixel_values, (1, 6 * policy.num_images, 224, 224), "pixel values")
    else:
        images = load_images(args.image, policy.num_images)
    init_latent = load_npy(args.init_latent, policy.latent_shape, "initial latent") if args.init_latent is not None else None
    result = policy.act(args.instruction, proprio, images=images, pixel_values=pixels, halting=halting,
                        init_latent=init_latent, seed=args.seed)
    deltas = halting_deltas(halting, result.iterations, result.mse, result.cosine)
    return Prediction(result.normalized_actions, result.actions, result.iterations, deltas, result.timings_ms["total"] / 1e3)


def halting_deltas(halting: HaltingRule, iterations: int, mse: list[float], cosine: list[float]) -> np.ndarray:
    """The halting statistic per iteration; all NaN under fixed iterations, which decode only once."""
    if not halting.needs_decode:
        return np.full(iterations, np.nan, np.float32)
    return np.asarray([halting.delta(m, c) for m, c in zip(mse, cosine)], np.float32)


def predict_bundle(args: argparse.Namespace, halting: HaltingRule, proprio: np.ndarray) -> tuple[Prediction, str]:
    """The prediction, and what ran it: backend and precision."""
    policy, precision = open_policy(args.source, args)
    ran = f"{policy.backend.name} {precision}"
    exported_key = policy.bundle.norm_stats.key
    if args.unnorm_key is not None and args.unnorm_key != exported_key:
        policy.close()
        raise ValueError(f"--unnorm-key {args.unnorm_key}: this bundle was exported with the statistics of {exported_key!r}; "
                         f"re-export the checkpoint with --unnorm-key {args.unnorm_key} for another dataset")
    try:
        check_proprio_range(proprio, policy.bundle.norm_stats)
        dims = policy.bundle.dims
        pixels = images = None
        if args.pixel_values is not None:
            pixels = load_npy(args.pixel_values, (1, 6 * dims.num_images, 224, 224), "pixel values")
        else:
            images = load_images(args.image, dims.num_images)
        init_latent = load_npy(args.init_latent, dims.latent_shape, "initial latent") if args.init_latent is not None else None
        result = policy.act(args.instruction, proprio, images=images, pixel_values=pixels,
                            halting=halting, init_latent=init_latent, seed=args.seed)
    finally:
        policy.close()
    deltas = halting_deltas(halting, result.iterations, result.mse, result.cosine)
    prediction = Prediction(result.normalized_actions, result.actions, result.iterations, deltas, result.timings_ms["total"] / 1e3)
    return prediction, ran


def run(args: argparse.Namespace) -> int:
    # The inputs typed on the command line are checked before the model or bundle loads (minutes for TensorRT engines).
    halting = parse_halting(args.halting, args.iterations, args.min_iterations, args.max_iterations)
    proprio = parse_proprio(args.proprio)
    if not args.source.exists():
        raise FileNotFoundError(f"{args.source} not found: give a checkpoint directory or a bundle directory")
    is_bundle = (args.source / MANIFEST).is_file()
    if is_bundle and args.dtype is not None:
        raise ValueError("--dtype applies to checkpoints; for a bundle choose --precision")
    if not is_bundle and (args.backend is not None or args.precision is not None or args.checkpoint is not None):
        raise ValueError(f"--backend/--precision/--checkpoint apply to bundles; {args.source} is a checkpoint (no {MANIFEST})")
    if args.out is not None:
        check_new_file(args.out, overwrite=args.overwrite, option="--out")
        check_apart(args.out, args.source, option="--out", what="bundle" if is_bundle else "checkpoint")
    if is_bundle:
        result, ran = predict_bundle(args, halting, proprio)
        what = f"bundle, {ran}"
    else:
        result = predict_checkpoint(args, halting, proprio)
        what = f"reference, {args.dtype or 'float32'}"
    if not (np.isfinite(result.actions).all() and np.isfinite(result.normalized_actions).all()):
        raise ValueError(f"{args.source} produced non-finite actions (NaN or inf): its weights or normalisation "
                         "statistics are broken; nothing was written")
    if args.out is not None:
        result.save(args.out)
    print(f"source      {args.source} ({what})")
    print(f"halting     {halting}")
    print(f"iterations  {result.iterations}    query time {result.seconds:.3f} s")
    print("deltas      " + " ".join(f"{d:.3g}" for d in result.deltas))
    print("actions (un-normalised; rows are time steps, columns dx dy dz drx dry drz gripper):")
    for row in result.actions:
        print("  " + " ".join(f"{v:+.4f}" for v in row))
    if args.out is not None:
        print(f"wrote {args.out}")
    return 0
