"""Synthetic demonstrations in the recorded episode format (what the LIBERO expert recorder writes).

`write_episode` (also as the fixture `episode_writer`): a bright square moves across the agentview image and the wrist image darkens as the gripper closes; the
actions follow the square and the progress, so a policy that reads its inputs can fit them.
"""

from __future__ import annotations

import json
from pathlib import Path

from typing import Callable

import numpy as np
import pytest

from rdvla.runtime.control.records import Decision, FrameRecord, StepRecord
from rdvla.runtime.control.step_log import StepLog

INSTRUCTION = "pick up the black bowl between the plate and the ramekin and place it on the plate"


def step_record(step: int, frame: int, proprio: list[float] | None, action: list[float] | None) -> StepRecord:
    """`action` in the controller's units is the step's `proposed`; `executed` holds it as the robot takes it
    (here scaled, as metres and radians are), which a reader must not train on."""
    frames = [FrameRecord(role, frame, 50.0 * step, 0.0) for role in ("agentview", "wrist")]
    executed = None if action is None else [0.05 * v for v in action[:6]] + action[6:]
    return StepRecord(step=step, slot=step, t=0.05 * step, missed_slots=0, frames=frames, skew_ms=0.0, proprio=proprio,
                      instruction=INSTRUCTION, query=None, submitted=None, queue=0, inflight=False, proposed=action,
                      executed=executed, limits=[], decision=Decision.ACT, faults=[], sections_ms={})


def write_episode(root: Path, seed: int, steps: int = 20, size: int = 256, success: bool = True,
                  instruction: str = INSTRUCTION) -> Path:
    """One episode directory: `steps` usable steps after a settle step without an action, and one no-op."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    start = rng.uniform(0.2, 0.8, 2)
    goal = rng.uniform(0.2, 0.8, 2)
    n_frames = steps + 2
    agent = np.full((n_frames, size, size, 3), 40, np.uint8)
    wrist = np.full((n_frames, size, size, 3), 200, np.uint8)
    records = [step_record(0, 0, None, None)]  # a settle step: no proprio, no executed action
    for i in range(steps):
        frac = i / max(steps - 1, 1)
        position = start + (goal - start) * frac
        y, x = (position * (size - 32)).astype(int)
        agent[i + 1, y : y + 32, x : x + 32] = (250, 60, 30)
        closing = frac > 0.5
        wrist[i + 1] = 90 if closing else 200
        # Every action follows from what the policy sees: the direction from the square's start to its goal,
        # and the progress, which the height (proprio) shows.
        delta = np.concatenate([(goal - start) / steps, [0.02 * (1 - frac)], 0.05 * frac * np.array([1.0, -1.0, 0.5])])
        proprio = np.concatenate([position, [0.9 - 0.2 * frac], [0.1, 0.2, 0.3],
                                  [0.01, -0.01] if closing else [0.04, -0.04]])
        action = np.concatenate([delta, [1.0 if closing else -1.0]])
        records.append(step_record(i + 1, i + 1, proprio.tolist(), action.tolist()))
    # A no-op step (zero motion, gripper unchanged): the "_no_noops" datasets leave it out.
    records.append(step_record(steps + 1, steps + 1, proprio.tolist(), [0.0] * 6 + [action[6]]))
    np.savez_compressed(root / "agentview.npz", frames=agent)
    np.savez_compressed(root / "wrist.npz", frames=wrist)
    log = StepLog(root / "steps.jsonl")
    for record in records:
        log.on_step(record)
    log.close()
    meta = {"format": "rdvla-episode", "version": 1, "instruction": instruction,
            "cameras": [{"role": "agentview", "recording": "agentview.npz"}, {"role": "wrist", "recording": "wrist.npz"}],
            "libero": {"suite": "libero_spatial", "task": 0, "init": {"kind": "random", "seed": seed}, "render": "fast",
                       "success": success},
            "steps": len(records)}
    (root / "episode.json").write_text(json.dumps(meta, indent=2) + "\n")
    return root


@pytest.fixture(scope="session")
def episode_writer() -> Callable[..., Path]:
    return write_episode
