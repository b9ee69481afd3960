"""Calibration data: observations from recorded robot runs, pushed through the FP32 bundle.

Sources (`rdvla calibrate --data PATH`):
* an episode directory written by `rdvla run --record` (`episode.json`, a recording per camera,
  `steps.jsonl`), read with `runtime.control.episode.read_episode`: every observed step gives the
  frame number of each camera, the robot's proprio and the instruction;
* bare camera recordings with `--instruction TEXT`: one `.db3`/`.bag` file per camera, joined with
  commas in the policy's camera order (`third.db3,wrist.db3`), or a directory holding them. They
  carry no proprio, so the middle of the dataset's q01..q99 range is used (normalised 0): the
  bundle keeps no median. The data set records which.

The reference is the bundle's FP32 graphs on ONNX Runtime, which `rdvla export` gated against the
PyTorch model at 1e-4. Every query runs the full 32-iteration trace; the core graphs' inputs are
kept at a few iteration indices per query, rotated between queries so the set covers 1..32: the
latent at iteration 1 is the truncated-normal S0, at 20 it is nearly converged, and a quantiser
calibrated on either alone misjudges the other's range.

On disk (`<bundle>/calibration/data/`): `<graph>.npz` holds that graph's inputs keyed by its input
names, stacked on a leading sample axis (ModelOpt's and Polygraphy's `.npz` layout); `queries.npz`
the initial latents and the FP32 trace of every query; `set.json` the sources and which query and
iteration each sample comes from. Prompts of different lengths are padded in `vlm_prelude.npz`
and their lengths kept in `set.json`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from rdvla.runtime import contract
from rdvla.runtime.backends.onnxruntime import OnnxRuntimeBackend
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import sha256_file
from rdvla.runtime.control.episode import EPISODE_FILE, read_episode
from rdvla.runtime.eval.demonstrations import FRAMES_SUFFIX, read_frames
from rdvla.runtime.golden import TRACE_ITERATIONS
from rdvla.runtime.normalization import normalize_proprio
from rdvla.runtime.policy import truncated_normal_latent
from rdvla.runtime.preprocess import to_pixel_values
from rdvla.runtime.prompt import PromptTokenizer

log = logging.getLogger(__name__)

RECORDING_SUFFIXES = (".db3", ".bag")
SET_FILE = "set.json"
QUERIES_FILE = "queries.npz"
READ_TIMEOUT_S = 5.0
# Recordings named after a camera role sort in the policy's order (devices.cameras.base.ROLE_ORDER).
ROLE_ORDER = ("third_person", "wrist")


class CalibrationDataError(ValueError):
    """A calibration source that cannot be read or does not fit the bundle (one-line message)."""


@dataclass(frozen=True)
class Observation:
    """One control step: what the policy saw and was asked."""

    images: tuple[np.ndarray, ...]  # uint8 HxWx3, policy camera order
    proprio: np.ndarray  # raw (8,)
    instruction: str
    source: str
    step: int


@dataclass
class Source:
    """A readable source: its recordings (camera order) and, per step, proprio and instruction."""

    name: str
    recordings: list[Path]
    steps: list[dict[str, Any]]  # at least "proprio" and "instruction"; "frames" (per camera frame numbers) if logged
    proprio_from: str  # "recorded" or how it was filled in


def _recording_order(path: Path) -> tuple[int, str]:
    stem = path.stem.lower()
    for i, role in enumerate(ROLE_ORDER):
        if stem.startswith(role):
            return i, stem
    return len(ROLE_ORDER), stem


def _recordings_in(directory: Path) -> list[Path]:
    return sorted((p for p in directory.iterdir() if p.suffix in RECORDING_SUFFIXES), key=_recording_order)


def episode_steps(directory: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    """The recordings (policy camera order) and, per observed step, proprio, instruction and the
    frame number of each camera, of an episode written by `rdvla run --record`."""
    try:
        episode = read_episode(directory)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CalibrationDataError(f"episode {directory} cannot be read ({type(exc).__name__}: {exc}); record it again "
                                   "with `rdvla run --record`") from None
    steps = [{"step": s.step, "proprio": s.proprio.tolist(), "instruction": s.instruction, "frames": list(s.frame_numbers)}
             for s in episode.steps]
    return list(episode.recordings), steps


def _count_frames(path: Path) -> int:
    from rdvla.devices.cameras.base import CameraError
    from rdvla.devices.cameras.realsense.recording import describe_recording

    try:
        return describe_recording(path).frame_count
    except CameraError as exc:
        raise CalibrationDataError(f"calibration source {path}: {exc}") from None


def open_source(spec: str, bundle: Bundle, instruction: Optional[str]) -> Source:
    """Resolve one `--data` argument into a Source (episode, recording directory, or comma-joined recordings)."""
    num_images = bundle.dims.num_images
    paths = [Path(p) for p in spec.split(",") if p]
    if len(paths) == 1 and paths[0].is_dir() and (paths[0] / EPISODE_FILE).is_file():
        recordings, steps = episode_steps(paths[0])
        proprio_from = "recorded"
        if instruction is not None:
            log.info("%s: --instruction ignored, the episode logs its own", paths[0])
    else:
        recordings = _recordings_in(paths[0]) if len(paths) == 1 and paths[0].is_dir() else paths
        if not recordings:
            raise CalibrationDataError(f"{spec} holds neither an episode ({EPISODE_FILE}) nor camera recordings (.db3/.bag)")
        for path in recordings:
            if not path.is_file():
                raise CalibrationDataError(f"calibration source {path} does not exist")
            if path.suffix not in RECORDING_SUFFIXES:
                raise CalibrationDataError(f"{path} is neither an episode directory nor a camera recording (.db3/.bag)")
        if instruction is None:
            raise CalibrationDataError(f"{spec} is a bare camera recording: give the task with --instruction TEXT")
        count = min(_count_frames(p) for p in recordings)
        middle = (bundle.norm_stats.proprio_q01 + bundle.norm_stats.proprio_q99) / 2
        steps = [{"proprio": middle.tolist(), "instruction": instruction} for _ in range(count)]
        proprio_from = "dataset q01..q99 midpoint (no proprio recorded; the bundle keeps no median)"
    if len(recordings) != num_images:
        raise CalibrationDataError(
            f"{spec}: {len(recordings)} camera recording(s) for a policy that takes {num_images} images; "
            "give one per camera in policy order, e.g. --data third_person.db3,wrist.db3"
        )
    return Source(spec, list(recordings), steps, proprio_from)


def _read_frames(recording: Path, wanted: Sequence[int], numbers: Optional[Sequence[int]]) -> dict[int, np.ndarray]:
    """Colour images of the `wanted` steps: the step's logged frame number when `numbers` is given,
    else the step's position in playback order."""
    from rdvla.devices.cameras.base import CameraEndedError
    from rdvla.devices.cameras.realsense import RealSenseCameraConfig, open_realsense

    if recording.suffix == FRAMES_SUFFIX:  # a simulator episode (rdvla eval --record): frames indexed by frame number
        try:
            frames = read_frames(recording)
        except ValueError as exc:
            raise CalibrationDataError(str(exc)) from None
        keys = {i: (numbers[i] if numbers is not None else i) for i in wanted}
        if max(keys.values(), default=-1) >= len(frames):
            raise CalibrationDataError(f"{recording}: {len(frames)} frames, fewer than the episode's steps name")
        return {i: frames[key] for i, key in keys.items()}
    by_key = {(numbers[i] if numbers is not None else i): i for i in wanted}
    found: dict[int, np.ndarray] = {}
    camera = open_realsense(RealSenseCameraConfig(recording=str(recording), real_time=False))
    with camera:
        position = 0
        while len(found) < len(by_key):
            try:
                frame = camera.read(timeout_s=READ_TIMEOUT_S)
            except CameraEndedError:
                break
            key = frame.frame_number if numbers is not None else position
            if key in by_key:
                found[by_key[key]] = frame.image
            position += 1
    missing = sorted(set(by_key.values()) - set(found))
    if missing:
        raise CalibrationDataError(f"{recording}: no frame for step(s) {missing[:5]}{'...' if len(missing) > 5 else ''}")
    return found


def select_steps(sources: Sequence[Source], queries: int) -> list[list[int]]:
    """Per source, the step indices to query: `queries` in all, spread evenly over every step."""
    total = sum(len(s.steps) for s in sources)
    if total == 0:
        raise CalibrationDataError("the calibration sources hold no steps")
    picks = set(np.unique(np.linspace(0, total - 1, min(queries, total)).round().astype(int)).tolist())
    chosen, offset = [], 0
    for source in sources:
        chosen.append([i - offset for i in range(offset, offset + len(source.steps)) if i in picks])
        offset += len(source.steps)
    return chosen


def observations(sources: Sequence[Source], queries: int) -> Iterator[Observation]:
    for source, steps in zip(sources, select_steps(sources, queries)):
        if not steps:
            continue
        per_camera = []
        for c, recording in enumerate(source.recordings):
            numbers = None
            if all("frames" in source.steps[i] for i in steps):
                numbers = [int(source.steps[i]["frames"][c]) for i in range(len(source.steps))]
            per_camera.append(_read_frames(recording, steps, numbers))
        for i in steps:
            step = source.steps[i]
            yield Observation(tuple(frames[i] for frames in per_camera), np.asarray(step["proprio"], np.float64),
                              str(step["instruction"]), source.name, int(step.get("step", i)))


def iteration_indices(query: int, per_query: int, iterations: int = TRACE_ITERATIONS) -> list[int]:
    """1-based iteration indices whose core inputs query `query` contributes: `per_query` evenly spaced,
    shifted by one per query, so every `depth / per_query` queries cover 1..depth."""
    stride = iterations / per_query
    return sorted({int(query + j * stride) % iterations + 1 for j in range(per_query)})


@dataclass
class CalibrationSet:
    """Captured inputs per graph, the FP32 traces, and where every sample came from."""

    inputs: dict[str, dict[str, np.ndarray]]  # graph -> input name -> (N, *shape)
    queries: dict[str, np.ndarray]  # init_latent, trace_actions, trace_mse, trace_cosine: (Q, ...)
    meta: dict[str, Any] = field(default_factory=dict)

    def samples(self, graph: str) -> Iterator[dict[str, np.ndarray]]:
        """One feed dict per sample, at the graph's input shapes (prompts cut back to their length)."""
        arrays = self.inputs[graph]
        lengths = self.meta.get("prompt_lengths") if graph == contract.VLM_PRELUDE else None
        count = len(next(iter(arrays.values())))
        for i in range(count):
            feed = {k: v[i] for k, v in arrays.items()}
            if lengths is not None:
                feed[contract.INPUT_IDS] = feed[contract.INPUT_IDS][..., : lengths[i]]
            yield feed

    def count(self, graph: str) -> int:
        return len(next(iter(self.inputs[graph].values())))

    def save(self, directory: Path) -> dict[str, str]:
        """Write the set; returns {file name: sha256}."""
        directory.mkdir(parents=True, exist_ok=True)
        files = {}
        for graph, arrays in self.inputs.items():
            np.savez(directory / f"{graph}.npz", **arrays)
            files[f"{graph}.npz"] = sha256_file(directory / f"{graph}.npz")
        np.savez(directory / QUERIES_FILE, **self.queries)
        files[QUERIES_FILE] = sha256_file(directory / QUERIES_FILE)
        (directory / SET_FILE).write_text(json.dumps(self.meta, indent=2) + "\n")
        files[SET_FILE] = sha256_file(directory / SET_FILE)
        return files

    @classmethod
    def load(cls, directory: Path) -> "CalibrationSet":
        meta = json.loads((directory / SET_FILE).read_text())
        inputs = {}
        for graph in meta["graphs"]:
            with np.load(directory / f"{graph}.npz") as z:
                inputs[graph] = {k: z[k] for k in z.files}
        with np.load(directory / QUERIES_FILE) as z:
            queries = {k: z[k] for k in z.files}
        return cls(inputs, queries, meta)


def fingerprint(files: dict[str, str], meta: dict[str, Any]) -> str:
    """One hash over the data files and the description of how they were made."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}:{files[name]}\n".encode())
    digest.update(json.dumps({k: meta[k] for k in ("sources", "samples", "iterations", "seed")}, sort_keys=True).encode())
    return digest.hexdigest()


def capture(bundle: Bundle, observations_: Sequence[Observation], latents_per_query: int, seed: int = 0,
            sources: Sequence[Source] = ()) -> CalibrationSet:
    """Run every observation through the FP32 graphs for TRACE_ITERATIONS iterations and keep each graph's inputs."""
    if not observations_:
        raise CalibrationDataError("no observations to calibrate with")
    if not 1 <= latents_per_query <= TRACE_ITERATIONS:
        raise CalibrationDataError(f"latents per query must lie in 1..{TRACE_ITERATIONS}, got {latents_per_query}")
    tokenizer = PromptTokenizer(bundle.path("tokenizer.json"))
    backend = OnnxRuntimeBackend(bundle, "fp32")
    core_inputs = [t.name for t in bundle.graph(contract.CORE_STEP).inputs]
    decode_inputs = [t.name for t in bundle.graph(contract.DECODE).inputs]
    step_decode_inputs = [t.name for t in bundle.graph(contract.CORE_STEP_DECODE).inputs]
    rows: dict[str, list[dict[str, np.ndarray]]] = {g: [] for g in contract.GRAPHS}
    origin: dict[str, list[tuple[int, int]]] = {g: [] for g in contract.GRAPHS}
    trace: dict[str, list[np.ndarray]] = {k: [] for k in ("init_latent", "trace_actions", "trace_mse", "trace_cosine")}
    lengths = []
    for q, obs in enumerate(observations_):
        pixels = to_pixel_values(list(obs.images), config=bundle.preprocess)
        ids = np.asarray(tokenizer(obs.instruction))
        bundle.check_prompt(ids)
        proprio = normalize_proprio(obs.proprio, bundle.norm_stats)[None]
        rows[contract.VLM_PRELUDE].append({contract.PIXEL_VALUES: pixels, contract.INPUT_IDS: ids, contract.PROPRIO: proprio})
        origin[contract.VLM_PRELUDE].append((q, 0))
        lengths.append(int(ids.shape[1]))
        backend.run_context(pixels, ids, proprio)
        context = backend.context()
        init = truncated_normal_latent(bundle.dims.latent_shape, bundle.dims.init_sigma, np.random.default_rng([seed, q]))
        backend.reset_latent(init)
        keep = set(iteration_indices(q, latents_per_query))
        actions, mse, cosine = [], [], []
        prev = np.zeros((1, bundle.dims.chunk_len, bundle.dims.action_dim), np.float32)
        for k in range(1, TRACE_ITERATIONS + 1):
            latent = backend.latent()
            values = {**context, contract.LATENT: latent, contract.PREV_ACTIONS: prev}
            if k in keep:
                rows[contract.CORE_STEP].append({n: values[n] for n in core_inputs})
                rows[contract.CORE_STEP_DECODE].append({n: values[n] for n in step_decode_inputs})
                origin[contract.CORE_STEP].append((q, k))
                origin[contract.CORE_STEP_DECODE].append((q, k))
            stats = backend.step_decode(read=True)
            assert stats is not None
            prev = backend.actions()[None]
            actions.append(prev[0])
            mse.append(stats[0] if k > 1 else np.nan)
            cosine.append(stats[1] if k > 1 else np.nan)
            if k in keep:
                rows[contract.DECODE].append({n: {**context, contract.LATENT: backend.latent()}[n] for n in decode_inputs})
                origin[contract.DECODE].append((q, k))
        trace["init_latent"].append(init)
        trace["trace_actions"].append(np.stack(actions))
        trace["trace_mse"].append(np.asarray(mse, np.float32))
        trace["trace_cosine"].append(np.asarray(cosine, np.float32))
        log.info("captured query %d/%d (%s step %d)", q + 1, len(observations_), obs.source, obs.step)
    backend.close()
    inputs = {g: _stack(rows[g], pad_to=max(lengths) if g == contract.VLM_PRELUDE else None) for g in contract.GRAPHS}
    meta = {
        "graphs": list(contract.GRAPHS),
        "sources": [{"name": s.name, "recordings": [str(p) for p in s.recordings], "steps": len(s.steps),
                     "proprio": s.proprio_from} for s in sources],
        "queries": [{"source": o.source, "step": o.step, "instruction": o.instruction} for o in observations_],
        "samples": {g: len(rows[g]) for g in contract.GRAPHS},
        "origin": {g: [list(p) for p in origin[g]] for g in contract.GRAPHS},
        "iterations": sorted({k for q in range(len(observations_)) for k in iteration_indices(q, latents_per_query)}),
        "latents_per_query": latents_per_query,
        "prompt_lengths": lengths,
        "seed": seed,
        "reference": "FP32 graphs on ONNX Runtime (CPU)",
    }
    return CalibrationSet(inputs, {k: np.stack(v) for k, v in trace.items()}, meta)


def _stack(rows: list[dict[str, np.ndarray]], pad_to: Optional[int] = None) -> dict[str, np.ndarray]:
    out = {}
    for name in rows[0]:
        values = [r[name] for r in rows]
        if pad_to is not None and name == contract.INPUT_IDS:
            values = [np.pad(v, ((0, 0), (0, pad_to - v.shape[1]))) for v in values]
        out[name] = np.stack(values)
    return out
