"""Calibration sources: episode directories, bare recordings, and what is refused."""

from __future__ import annotations

import json

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from rdvla.calibration.data import CalibrationDataError, iteration_indices, observations, open_source, select_steps
from rdvla.devices.cameras.realsense.sdk import recording_extension, sdk_version
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.golden import TRACE_ITERATIONS

from .conftest import FRAMES, INSTRUCTION, record, scene


def test_iteration_indices_rotate_over_1_to_32() -> None:
    assert iteration_indices(0, 4) == [1, 9, 17, 25]
    assert iteration_indices(1, 4) == [2, 10, 18, 26]
    covered = {k for q in range(8) for k in iteration_indices(q, 4)}
    assert covered == set(range(1, TRACE_ITERATIONS + 1))
    assert iteration_indices(3, 32) == list(range(1, 33))


def test_steps_are_spread_over_all_sources() -> None:
    class S:
        def __init__(self, n: int) -> None:
            self.steps = [{}] * n

    picks = select_steps([S(10), S(30)], 4)  # type: ignore[list-item]
    assert sum(len(p) for p in picks) == 4 and picks[0] == [0] and picks[1][-1] == 29
    assert select_steps([S(3)], 10) == [[0, 1, 2]]  # type: ignore[list-item]


def test_episode_directory_gives_logged_proprio_instruction_and_frames(tiny_bundle: Path, tmp_path: Path) -> None:
    from rdvla.runtime.control.episode import write_episode_header
    from rdvla.runtime.control.records import Decision, FrameRecord, StepRecord

    bundle = Bundle.open(tiny_bundle)
    episode = tmp_path / "episode"
    episode.mkdir()
    ext = recording_extension(sdk_version())
    record(episode / f"wrist{ext}", 1)
    record(episode / f"third_person{ext}", 0)
    write_episode_header(episode, {"instruction": "task 0", "cameras": [
        {"role": "third_person", "recording": f"third_person{ext}"}, {"role": "wrist", "recording": f"wrist{ext}"}]})
    rng = np.random.default_rng(0)
    steps = []
    for i in range(FRAMES // 2):  # one control step every second frame; a fault step observed nothing
        observed = i != 1
        frames = [FrameRecord(r, 2 * i, 0.0, 0.0) for r in ("third_person", "wrist")] if observed else []
        steps.append(StepRecord(step=i, slot=i, t=0.1 * i, missed_slots=0, frames=frames, skew_ms=None,
                                proprio=rng.uniform(-0.5, 0.5, 8).tolist() if observed else None, instruction=f"task {i % 2}",
                                query=None, submitted=None, queue=0, inflight=False, proposed=None, executed=None, limits=[],
                                decision=Decision.HOLD, faults=[], sections_ms={}))
    with open(episode / "steps.jsonl", "w") as log:
        for step in steps:
            log.write(json.dumps(step.to_json()) + "\n")
    source = open_source(str(episode), bundle, instruction="ignored for episodes")
    assert source.proprio_from == "recorded" and [p.stem for p in source.recordings] == ["third_person", "wrist"]
    assert len(source.steps) == FRAMES // 2 - 1
    got = list(observations([source], 3))
    assert len(got) == 3
    for obs in got:
        logged = steps[obs.step]
        assert logged.proprio is not None  # the step without observation is never replayed
        assert obs.instruction == logged.instruction
        np.testing.assert_array_equal(obs.proprio, logged.proprio)
        for camera, image in enumerate(obs.images):
            np.testing.assert_array_equal(image, scene(camera, 2 * logged.step))


def test_bare_recordings_need_an_instruction_and_one_file_per_camera(tiny_bundle: Path, recordings: Path) -> None:
    bundle = Bundle.open(tiny_bundle)
    with pytest.raises(CalibrationDataError, match="--instruction"):
        open_source(str(recordings), bundle, None)
    single = next(recordings.iterdir())
    with pytest.raises(CalibrationDataError, match="1 camera recording"):
        open_source(str(single), bundle, INSTRUCTION)
    with pytest.raises(CalibrationDataError, match="does not exist"):
        open_source(f"{single},{recordings / 'missing.db3'}", bundle, INSTRUCTION)
    joined = ",".join(str(recordings / f"{r}{single.suffix}") for r in ("third_person", "wrist"))
    source = open_source(joined, bundle, INSTRUCTION)
    assert len(source.steps) == FRAMES
    middle = (bundle.norm_stats.proprio_q01 + bundle.norm_stats.proprio_q99) / 2
    np.testing.assert_allclose(source.steps[0]["proprio"], middle)


def test_cli_reports_unusable_sources_in_one_line(tiny_bundle: Path, recordings: Path, cli: Callable[[list[str]], int],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["calibrate", str(tiny_bundle), "--data", str(recordings)]) == 2
    assert "--instruction" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli(["calibrate", str(tiny_bundle), "--data", str(recordings), "--instruction", "x", "--precision", "fp8"])
    assert exc.value.code == 2 and "choose int8, fp16" in capsys.readouterr().err
