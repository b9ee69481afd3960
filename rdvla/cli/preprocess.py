"""`rdvla preprocess`: what the policy sees of camera images, and how long the host takes to make it."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from rdvla.cli.arguments import add_preprocessing_option, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preprocess",
        help="run the policy's image preprocessing on camera images: the input array, the pictures it sees, timings",
        description="Run camera images through the policy's preprocessing (JPEG round trip, Lanczos3 resize to 224, "
        "centre crop, normalisation) and write DIR/pixel_values.npy and, per camera, DIR/cameraN.png: what the policy "
        "sees after preprocessing, to check framing and crop before running a robot. With --repeat N, time the "
        "preprocessing alone over N runs and print the median and p95.",
        epilog="example: rdvla preprocess --image agent.png --image wrist.png --out check/ --repeat 50",
    )
    p.add_argument("--image", type=Path, action="append", required=True, metavar="FILE",
                   help="camera image, repeated in camera order (third-person, then wrist)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory for pixel_values.npy and the PNGs")
    p.add_argument("--bundle", type=Path, help="use this bundle's preprocessing constants (default: the released ones)")
    add_preprocessing_option(p)
    p.add_argument("--repeat", type=positive_int, metavar="N", help="time the preprocessing over N runs")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--overwrite", action="store_true", help="replace pixel_values.npy and the PNGs already in --out")
    p.set_defaults(run=run)


def seen_images(pixel_values: np.ndarray, config: object) -> list[np.ndarray]:
    """Each camera's DINOv2 channels un-normalised back to uint8 RGB: the picture the policy sees."""
    mean = np.asarray(config.dino_mean, np.float32).reshape(3, 1, 1)  # type: ignore[attr-defined]
    std = np.asarray(config.dino_std, np.float32).reshape(3, 1, 1)  # type: ignore[attr-defined]
    images = []
    for camera in range(pixel_values.shape[1] // 6):
        unit = pixel_values[0, 6 * camera: 6 * camera + 3] * std + mean
        images.append(np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0))
    return images


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from rdvla.cli.inputs import load_images
    from rdvla.runtime.bundle import Bundle
    from rdvla.runtime.preprocess import DEFAULT_CONFIG, to_pixel_values
    from rdvla.runtime.preprocess.native import resolve_implementation

    from rdvla.runtime.outputs import atomic_write, check_new_files

    names = ["pixel_values.npy", *(f"camera{camera}.png" for camera in range(len(args.image)))]
    check_new_files(args.out, names, overwrite=args.overwrite, option="--out")
    # The manifest (its digest checked) holds the constants: no need to hash the bundle's graphs.
    config = Bundle.open(args.bundle, verify_hashes=False).preprocess if args.bundle is not None else DEFAULT_CONFIG
    implementation = resolve_implementation(args.preprocessing)
    images = load_images(args.image, len(args.image))
    pixel_values = to_pixel_values(images, config=config, implementation=implementation)
    args.out.mkdir(parents=True, exist_ok=True)
    written = [args.out / "pixel_values.npy"]
    with atomic_write(written[0]) as temporary:
        np.save(temporary, pixel_values)
    for camera, seen in enumerate(seen_images(pixel_values, config)):
        written.append(args.out / f"camera{camera}.png")
        with atomic_write(written[-1]) as temporary:
            Image.fromarray(seen).save(temporary)
    timing = {}
    if args.repeat is not None:
        seconds = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            to_pixel_values(images, config=config, implementation=implementation, out=pixel_values)
            seconds.append(time.perf_counter() - start)
        timing = {"median_ms": round(1e3 * float(np.median(seconds)), 3), "p95_ms": round(1e3 * float(np.percentile(seconds, 95)), 3)}
    height, width = images[0].shape[:2]
    if args.json:
        print(json.dumps({"implementation": implementation, **timing, "frames": len(images), "height": height, "width": width,
                          "files": [str(f) for f in written]}))
        return 0
    print(f"{len(images)} camera image(s) of {width}x{height} -> pixel_values {tuple(pixel_values.shape)} ({implementation})")
    if timing:
        print(f"preprocessing over {args.repeat} runs: median {timing['median_ms']:.2f} ms, p95 {timing['p95_ms']:.2f} ms")
    print("wrote " + ", ".join(str(f) for f in written))
    return 0
