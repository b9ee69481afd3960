"""Pictures of an evaluation: a GIF per recorded episode, success per task, iterations against the scene."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from rdvla.runtime.eval.results import EpisodeResult
from rdvla.runtime.outputs import atomic_write

VIDEO_DIR = "videos"
GIF_FRAME_MS = 50  # LIBERO's 20 Hz control rate: the GIF plays in real time


def video_name(result: EpisodeResult) -> str:
    return f"{result.suite}_task{result.task}_{result.init.replace(':', '')}.gif"


def write_video(out: Path, result: EpisodeResult, frames: Sequence[tuple[tuple[np.ndarray, ...], Optional[int]]]) -> Path:
    """Both cameras side by side as the policy receives them, with the iterations of the chunk being executed."""
    from PIL import Image, ImageDraw

    pictures = []
    for images, iterations in frames:
        picture = Image.fromarray(np.concatenate(images, axis=1))
        draw = ImageDraw.Draw(picture)
        label = f"iterations {iterations}" if iterations is not None else ""
        draw.rectangle((0, 0, 8 + 7 * len(label), 14), fill=(0, 0, 0))
        draw.text((4, 2), label, fill=(255, 255, 255))
        pictures.append(picture)
    (out / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    path = out / VIDEO_DIR / video_name(result)
    with atomic_write(path) as temporary:
        pictures[0].save(temporary, format="GIF", save_all=True, append_images=pictures[1:], duration=GIF_FRAME_MS, loop=0)
    return path


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_write(path) as temporary:
        fig.savefig(temporary)
    plt.close(fig)
    return path


def write_plots(out: Path, results: Sequence[EpisodeResult]) -> list[Path]:
    """success_per_task.png, and iterations.png: iterations per query against the end effector's distance
    to the object of interest, gripper open and closed apart (does the policy think longer near contact?)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    tasks = sorted({r.task for r in results})
    rates = [np.mean([r.success for r in results if r.task == t]) for t in tasks]
    counts = [sum(r.task == t for r in results) for t in tasks]
    fig, ax = plt.subplots(figsize=(max(4, len(tasks) * 0.8), 3))
    ax.bar([str(t) for t in tasks], rates)
    for x, (rate, n) in enumerate(zip(rates, counts)):
        ax.text(x, rate, f"{rate:.0%}\nn={n}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.2)
    ax.set_xlabel("task")
    ax.set_ylabel("success rate")
    written.append(_save(fig, out / "success_per_task.png"))

    queries = [q for r in results for q in r.queries if q.object_distance_m is not None]
    if queries:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for closed, colour in ((False, "tab:blue"), (True, "tab:red")):
            chosen = [q for q in queries if q.gripper_closed == closed]
            ax.scatter([q.object_distance_m for q in chosen], [q.iterations for q in chosen], s=6, alpha=0.5, c=colour,
                       label=f"gripper {'closed' if closed else 'open'} ({len(chosen)} queries)")
        ax.set_xlabel("end effector to object of interest (m)")
        ax.set_ylabel("iterations")
        ax.legend(fontsize=8)
        written.append(_save(fig, out / "iterations.png"))
    return written
