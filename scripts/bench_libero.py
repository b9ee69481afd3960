"""LIBERO in this machine's simulator: control steps per second with both cameras rendered at 256 px, per
render mode, and how far `fast` images are from `default` ones (BENCHMARKS.md section 7).

    .venv/bin/python scripts/bench_libero.py [--steps 100] [--states 5]

Steps run the scripted expert of libero_spatial task 0 from fixed initial states, rendering both cameras
every step (what an evaluation pays per control step without the policy). Pixel differences compare the
two modes on the same states after the same actions.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

from rdvla.devices.libero.experts import PickAndPlaceExpert
from rdvla.devices.libero.scene import InitState, LiberoScene
from rdvla.devices.libero.suites import load_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="control steps per initial state")
    parser.add_argument("--states", type=int, default=3, help="fixed initial states")
    args = parser.parse_args()
    task = load_task("libero_spatial", 0)
    rates: dict[str, list[float]] = {}
    images: dict[str, list[np.ndarray]] = {}
    for mode in ("fast", "default"):
        scene = LiberoScene(task, mode)
        rates[mode], images[mode] = [], []
        for state in range(args.states):
            scene.reset(InitState("fixed", state))
            expert = PickAndPlaceExpert("libero_spatial", 0)
            start = time.perf_counter()
            steps = 0
            while steps < args.steps and not scene.done:
                scene.step(expert.act(scene.observation()))
                frames = scene.images()
                steps += 1
                if steps % 25 == 0:
                    images[mode].append(np.stack(frames).astype(np.int16))
            rates[mode].append(steps / (time.perf_counter() - start))
        scene.close()
    difference = [np.abs(f - d) for f, d in zip(images["fast"], images["default"])]
    result = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "steps_per_s": {mode: round(statistics.median(r), 2) for mode, r in rates.items()},
        "fast_vs_default": {
            camera: {"mean_abs": round(float(np.mean([d[i].mean() for d in difference])), 3),
                     "max_abs": int(max(d[i].max() for d in difference))}
            for i, camera in enumerate(("agentview", "wrist"))
        },
        "compared_frames": len(difference),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
