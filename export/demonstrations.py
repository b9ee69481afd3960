"""Demonstrations for behaviour cloning: the recorded episode format, the authors' statistics and targets.

An episode is a directory holding `episode.json` (`{"format": "rdvla-episode", "version": 1, "instruction",
"cameras": [{"role", "recording"}, ...], "libero": {"suite", "success", ...}}`), one `.npz` per camera whose
`frames` are uint8 (N, H, W, 3) as the policy receives them (LIBERO's 180 degree rotation already applied), and
`steps.jsonl`, the control loop's step log: each step names the frame number per camera, the 8-d proprio, and the
7-d `proposed` action in the controller's units, the raw convention the authors' LIBERO datasets store (gripper
-1 open / +1 close); `executed` is that action as the robot took it (metres, radians), and marks the steps that
acted. This is what `rdvla eval expert` records (rdvla.runtime.eval.demonstrations).

What the authors' RLDS pipeline does with such data (spec 1.9, 3.5), reproduced here:
- the LIBERO transform maps the gripper to g' = 1 - clip(g, 0, 1) (1 open, 0 close);
- `dataset_statistics.json` holds mean, std, min, max, q01, q99 of actions (after that transform, with the
  mask: first 6 dims normalised, gripper not) and of proprio, plus the transition and trajectory counts;
- BOUNDS_Q99 maps masked dims to clip(2 (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1), and sets every dim whose
  min equals its max to 0 (actions and proprio alike);
- a sample is the observation at step t with the chunk of actions t .. t+7, the last action repeated past the
  episode's end (the RLDS chunking clamps indices to the trajectory).
The datasets are the "_no_noops" regenerations: a step whose first six action values have norm below 1e-4 and
whose gripper equals the previous step's is dropped, as that regeneration does.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rdvla.runtime.control.episode import EPISODE_FILE, EPISODE_FORMAT, EPISODE_VERSION, STEPS_FILE
from rdvla.runtime.control.records import StepRecord
from rdvla.runtime.control.step_log import read_log
from rdvla.runtime.normalization import RANGE_EPS
from rdvla.runtime.preprocess.config import DEFAULT_CONFIG
from rdvla.runtime.preprocess.native import native_extension
from rdvla.runtime.preprocess.pipeline import prepare_image

log = logging.getLogger(__name__)

ACTION_DIM = 7
PROPRIO_DIM = 8
CHUNK = 8
# Which action dims BOUNDS_Q99 normalises for LIBERO: the six deltas, not the gripper (spec 3.5).
ACTION_MASK = (True,) * 6 + (False,)
NOOP_NORM = 1e-4


class DemonstrationError(ValueError):
    """An episode directory that does not hold the recorded episode format."""


@dataclass(frozen=True)
class Episode:
    """One successful demonstration, no-op steps removed; actions in the dataset's raw units."""

    root: Path
    instruction: str
    suite: str | None
    cameras: tuple[str, ...]  # roles in the policy's camera order
    recordings: tuple[Path, ...]  # one .npz per camera
    frame_numbers: np.ndarray  # (N, cameras) int64: which frame of each recording each step saw
    proprio: np.ndarray  # (N, 8) float64
    actions: np.ndarray  # (N, 7) float64, gripper -1 open / +1 close

    def __len__(self) -> int:
        return int(self.actions.shape[0])


def find_episodes(roots: Sequence[Path]) -> list[Path]:
    """Every episode directory under `roots` (searched recursively), in a stable order."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise DemonstrationError(f"demonstration directory not found: {root}")
        found.update(p.parent.resolve() for p in root.rglob(EPISODE_FILE))
    return sorted(found)


def _read_meta(root: Path) -> dict[str, Any]:
    path = root / EPISODE_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DemonstrationError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != EPISODE_FORMAT:
        raise DemonstrationError(f"{path}: not an {EPISODE_FORMAT} file (field 'format')")
    if meta.get("version") != EPISODE_VERSION:
        raise DemonstrationError(f"{path}: version {meta.get('version')!r}, this reader knows {EPISODE_VERSION}")
    return meta


def succeeded(root: Path) -> bool:
    """Whether the episode reached its goal (`libero.success`); other episodes are not trained on."""
    return bool((_read_meta(root).get("libero") or {}).get("success", False))


def _usable(record: StepRecord) -> bool:
    """A step that acted (an executed action) with its proprio and its action in dataset units (proposed)."""
    if record.proprio is None or record.proposed is None or record.executed is None:
        return False
    values = record.proprio + record.proposed
    return len(record.proprio) == PROPRIO_DIM and len(record.proposed) == ACTION_DIM and all(v is not None for v in values)


def drop_noops(actions: np.ndarray) -> np.ndarray:
    """Indices of the steps the "_no_noops" regeneration keeps: not (||a[:6]|| < 1e-4 and gripper unchanged).

    The first step compares with the gripper before it, which a LIBERO reset leaves open (-1)."""
    previous = np.concatenate([[-1.0], actions[:-1, 6]])
    noop = (np.linalg.norm(actions[:, :6], axis=1) < NOOP_NORM) & (actions[:, 6] == previous)
    return np.flatnonzero(~noop)


def read_episode(root: Path) -> Episode:
    """An episode directory -> its usable steps (acted, with proprio and proposed action; no-ops dropped)."""
    root = Path(root)
    meta = _read_meta(root)
    instruction = meta.get("instruction")
    cameras = meta.get("cameras")
    if not isinstance(instruction, str) or not instruction.strip():
        raise DemonstrationError(f"{root / EPISODE_FILE}: no 'instruction'")
    if not isinstance(cameras, list) or not cameras or not all(isinstance(c, dict) and "role" in c and "recording" in c
                                                              for c in cameras):
        raise DemonstrationError(f"{root / EPISODE_FILE}: 'cameras' must list objects with 'role' and 'recording'")
    roles = tuple(str(c["role"]) for c in cameras)
    try:
        records = [r for r in read_log(root / STEPS_FILE) if isinstance(r, StepRecord)]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DemonstrationError(f"{root / STEPS_FILE}: cannot be read as a step log ({exc})") from None
    rows = []
    for record in records:
        if not _usable(record):
            continue
        by_role = {f.role: f.frame_number for f in record.frames}
        if any(role not in by_role for role in roles):
            raise DemonstrationError(f"{root / STEPS_FILE}: step {record.step} has no frame of camera "
                                     f"{[r for r in roles if r not in by_role]}")
        rows.append(([by_role[role] for role in roles], record.proprio, record.proposed))
    if not rows:
        raise DemonstrationError(f"{root / STEPS_FILE}: no step that acted with its proprio and proposed action")
    frames = np.asarray([r[0] for r in rows], np.int64)
    proprio = np.asarray([r[1] for r in rows], np.float64)
    actions = np.asarray([r[2] for r in rows], np.float64)
    keep = drop_noops(actions)
    return Episode(root=root, instruction=instruction.strip(), suite=(meta.get("libero") or {}).get("suite"),
                   cameras=roles, recordings=tuple(root / str(c["recording"]) for c in cameras),
                   frame_numbers=frames[keep], proprio=proprio[keep], actions=actions[keep])


def libero_gripper_target(actions: np.ndarray) -> np.ndarray:
    """The LIBERO dataset transform of the gripper: g' = 1 - clip(g, 0, 1) (1 open, 0 close)."""
    out = np.array(actions, np.float64, copy=True)
    out[..., 6] = 1.0 - np.clip(out[..., 6], 0.0, 1.0)
    return out


def _block(values: np.ndarray) -> dict[str, list[float]]:
    return {
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "max": values.max(0).tolist(),
        "min": values.min(0).tolist(),
        "q01": np.quantile(values, 0.01, axis=0).tolist(),
        "q99": np.quantile(values, 0.99, axis=0).tolist(),
    }


def dataset_statistics(episodes: Sequence[Episode], key: str) -> dict[str, Any]:
    """The authors' `dataset_statistics.json` content for these episodes under dataset `key`."""
    actions = libero_gripper_target(np.concatenate([e.actions for e in episodes]))
    proprio = np.concatenate([e.proprio for e in episodes])
    return {
        key: {
            "action": _block(actions) | {"mask": list(ACTION_MASK)},
            "proprio": _block(proprio),
            "num_transitions": int(actions.shape[0]),
            "num_trajectories": len(episodes),
        }
    }


def bounds_q99(values: np.ndarray, block: dict[str, Any]) -> np.ndarray:
    """BOUNDS_Q99 as the training pipeline applies it: masked dims to [-1, 1], dims with min == max to 0."""
    q01, q99 = np.asarray(block["q01"], np.float64), np.asarray(block["q99"], np.float64)
    mask = np.asarray(block.get("mask", [True] * len(q01)), bool)
    scaled = np.clip(2.0 * (values - q01) / (q99 - q01 + RANGE_EPS) - 1.0, -1.0, 1.0)
    out = np.where(mask, scaled, values)
    return np.where(np.asarray(block["min"]) == np.asarray(block["max"]), 0.0, out)


def action_chunks(actions: np.ndarray) -> np.ndarray:
    """(N, 7) -> (N, 8, 7): the actions t .. t+7 of each step, the last one repeated past the end."""
    n = actions.shape[0]
    index = np.minimum(np.arange(n)[:, None] + np.arange(CHUNK)[None], n - 1)
    return actions[index]


@dataclass(frozen=True)
class TrainingSamples:
    """Every sample of a demonstration set, flattened: sample i is step i of the concatenated episodes."""

    instructions: tuple[str, ...]  # distinct instructions
    instruction_index: np.ndarray  # (S,) int64 into `instructions`
    proprio: np.ndarray  # (S, 8) float32, normalised
    targets: np.ndarray  # (S, 8, 7) float32, normalised action chunks
    statistics: dict[str, Any]


def training_samples(episodes: Sequence[Episode], key: str) -> TrainingSamples:
    """Normalised proprio and action-chunk targets of every step, with the statistics they were made with."""
    statistics = dataset_statistics(episodes, key)
    entry = statistics[key]
    instructions = tuple(sorted({e.instruction for e in episodes}))
    chunks = np.concatenate([action_chunks(libero_gripper_target(e.actions)) for e in episodes])
    proprio = np.concatenate([e.proprio for e in episodes])
    index = np.concatenate([np.full(len(e), instructions.index(e.instruction)) for e in episodes])
    return TrainingSamples(
        instructions=instructions,
        instruction_index=index.astype(np.int64),
        proprio=bounds_q99(proprio, entry["proprio"]).astype(np.float32),
        targets=bounds_q99(chunks, entry["action"]).astype(np.float32),
        statistics=statistics,
    )


def fingerprint(episodes: Sequence[Episode]) -> str:
    """A digest of which frames and steps a set of episodes holds: a frame cache is reused only for the same one."""
    digest = hashlib.sha256()
    for e in episodes:
        digest.update(str(e.root).encode())
        for path in e.recordings:
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        digest.update(e.frame_numbers.tobytes())
    return digest.hexdigest()


def prepared_image(image: np.ndarray) -> np.ndarray:
    """`prepare_image` (resize with its JPEG round trip, centre crop) through the C++ port where it is built:
    the same bits (tests/export/test_demonstrations.py), ten times faster, which matters for 10^5 frames."""
    extension = native_extension()
    size = DEFAULT_CONFIG.image_size
    if extension is None or image.shape[:2] == (size, size):
        return prepare_image(image)
    resized = extension.resize_for_policy(np.ascontiguousarray(image), size)
    return extension.center_crop(resized, DEFAULT_CONFIG.crop_scale, size)


def write_frame_cache(episodes: Sequence[Episode], path: Path) -> None:
    """Every step's camera images after the policy's resize and centre crop, uint8 (S, cameras, 224, 224, 3).

    These are the exact images the deployed policy's preprocessing feeds its normalisation (the same functions,
    bit-exact with TF); the pipeline is deterministic, so it runs once per frame, not once per epoch."""
    total = sum(len(e) for e in episodes)
    cameras = len(episodes[0].cameras)
    cache = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(total, cameras, 224, 224, 3))
    row = 0
    for number, e in enumerate(episodes, start=1):
        for c, recording in enumerate(e.recordings):
            try:
                with np.load(recording) as data:
                    frames = data["frames"]
            except (OSError, KeyError, ValueError) as exc:
                raise DemonstrationError(f"{recording}: no uint8 'frames' array ({exc})") from None
            if frames.ndim != 4 or frames.dtype != np.uint8 or frames.shape[-1] != 3:
                raise DemonstrationError(f"{recording}: 'frames' is {frames.dtype} {frames.shape}, expected uint8 (N, H, W, 3)")
            if e.frame_numbers[:, c].max() >= len(frames):
                raise DemonstrationError(f"{e.root / STEPS_FILE}: a step names frame {e.frame_numbers[:, c].max()} of "
                                         f"{recording.name}, which holds {len(frames)}")
            for i, frame in enumerate(e.frame_numbers[:, c]):
                cache[row + i, c] = prepared_image(frames[frame])
        row += len(e)
        log.info("preprocessed episode %d/%d (%d steps)", number, len(episodes), len(e))
    cache.flush()
    del cache
