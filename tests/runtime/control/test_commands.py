"""`rdvla run` in real time on recordings with the tiny bundle, ONNX Runtime and SimRobot; `rdvla demo`;
the status line and the printed summary."""

from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path
from typing import Callable, Sequence

import pytest

import rdvla.cli as cli
from rdvla.cli import main
from rdvla.cli.run_display import StatusLine, format_summary
from rdvla.devices.cameras.realsense.synthetic import record_scene
from rdvla.runtime.control.episode import read_episode
from rdvla.runtime.control.records import RunSummary, StartRecord, StepRecord
from rdvla.runtime.control.step_log import read_log
from rdvla.runtime.eval.results import read_episodes

from .conftest import Rig

STEPS = 200
RATE = 10.0

# A hang guard for each test's own work (func_only): the session's tiny bundle, built by whichever test needs
# it first, takes minutes on a shared 2-core machine and is no test's hang.
pytestmark = pytest.mark.timeout(180, func_only=True)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from rdvla.devices.cameras.realsense.sdk import recording_extension, sdk_version

    folder = tmp_path_factory.mktemp("recordings")
    files = [folder / f"{role}{recording_extension(sdk_version())}" for role in ("third_person", "wrist")]
    for path in files:
        assert record_scene(path, path.stem, STEPS + 30) == STEPS + 30
    return files


def test_run_on_recordings_in_real_time_records_the_episode(tiny_bundle: Path, recordings: list[Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    episode = tmp_path / "episode"
    # Real time on a shared machine: a query slower than the queue drains is a fault the loop holds through
    # (starved, overrun). Allowing a fault in every step keeps the run to its --steps however loaded the cores
    # are; what is asserted is the loop's behaviour, not the machine's speed.
    status = main(["run", str(tiny_bundle), "--recording", str(recordings[0]), "--recording", str(recordings[1]),
                   "--robot", "sim", "--execute", "--instruction", "put the bowl on the plate", "--steps", str(STEPS),
                   "--rate", str(RATE), "--record", str(episode), "--no-status", "--max-faults", str(STEPS + 1)])
    out = capsys.readouterr().out
    assert status == 0, out
    records = read_log(episode / "steps.jsonl")
    start, steps, summary = records[0], [r for r in records if isinstance(r, StepRecord)], records[-1]
    assert isinstance(start, StartRecord) and start.info["backend"] == "onnxruntime" and start.prime.query.iterations >= 1
    assert len(steps) == STEPS and isinstance(summary, RunSummary) and summary.stop_reason == "steps"
    queries = [s.query for s in steps if s.query is not None]
    assert len(queries) >= 10
    for query in queries:
        assert 1 <= query.iterations <= 32 and query.stopped_by in ("converged", "deadline", "max_iterations")
        assert query.deadline_ms > 0 and query.timings_ms["vlm_prelude"] > 0 and len(query.actions) == 8
    for step in steps:
        assert set(step.sections_ms) == {"observe", "infer", "act", "send"}
        assert len(step.frames) == 2 and len(step.proprio) == 8
        # Paced on the grid: a cycle never starts before its slot is due.
        assert step.t >= step.slot / RATE - 1e-6
    # Overrun accounting agrees with the slots the steps landed on.
    assert steps[-1].slot == STEPS - 1 + summary.missed_slots
    # The steps covered their slots up to the last one's end, so the rate achieved is never above the grid's
    # (late starts, however many the load caused, only lower it).
    assert summary.duration_s == pytest.approx(steps[-1].t + 1 / RATE, abs=1e-3)
    assert 0 < summary.achieved_rate_hz <= RATE * STEPS / (STEPS + summary.missed_slots) + 1e-3
    assert summary.acted > 0 and summary.robot_travel_m > 0
    assert summary.iterations.n == len(queries)
    # The episode: recordings copied beside the log, described in episode.json.
    header = json.loads((episode / "episode.json").read_text())
    assert header["format"] == "rdvla-episode" and header["instruction"] == "put the bowl on the plate"
    assert [c["role"] for c in header["cameras"]] == ["third_person", "wrist"]
    assert all((episode / c["recording"]).stat().st_size == recordings[i].stat().st_size for i, c in enumerate(header["cameras"]))
    assert header["summary"]["steps"] == STEPS
    replay = read_episode(episode)  # what replay and calibration read back
    assert replay.recordings == tuple(episode / f"{role}{recordings[0].suffix}" for role in ("third_person", "wrist"))
    assert len(replay.steps) == STEPS and replay.steps[0].frame_numbers == tuple(f.frame_number for f in steps[0].frames)
    assert replay.steps[-1].proprio.shape == (8,) and replay.steps[0].instruction == "put the bowl on the plate"
    assert f"steps {STEPS} in" in out and "iterations per query" in out


@pytest.mark.parametrize("argv, message", [
    (["--instruction", "x"], "--config SETUP.yaml, or --recording FILE and --robot sim"),
    (["--instruction", "x", "--recording", "a.db3", "--robot", "sim", "--record", "d", "--log", "l"], "leave out --log"),
    (["--instruction", "x", "--recording", "a.db3", "--robot", "sim", "--horizon", "fixed:x"], "integers"),
])
def test_run_refuses_incomplete_or_conflicting_options(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       argv: list[str], message: str) -> None:
    assert main(["run", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_status_line_and_summary_text(rig: Rig) -> None:
    stream = io.StringIO()
    summary = rig.loop(subscribers=[StatusLine(stream, total=20, execute=True)]).run()
    lines = stream.getvalue().split("\r")
    assert lines[-1].startswith("EXECUTING step 20/20") and "query 20 ms, k=4" in lines[-1] and stream.getvalue().endswith("\n")
    text = "\n".join(format_summary(summary))
    assert "steps 20 in 2.0 s: 10.00 Hz (target 10)" in text and "faults: none" in text
    assert "iterations per query: mean 4.00" in text


def test_demo_runs_its_stages_as_the_documented_commands(tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    real = cli._dispatcher
    seen: list[str] = []

    def offline_stages_from_the_fixture(parser: argparse.ArgumentParser) -> Callable[[Sequence[str]], int]:
        dispatch = real(parser)

        def stage(argv: Sequence[str]) -> int:
            seen.append(argv[0])
            if argv[0] == "init-checkpoint":  # the tiny checkpoint and its export have their own tests
                return 0
            if argv[0] == "export":
                shutil.copytree(tiny_bundle, argv[argv.index("--out") + 1])
                return 0
            if argv[0] == "run":  # real time on a shared machine: faults held through, as in the test above
                return dispatch([*argv, "--max-faults", "1000"])
            if argv[0] == "eval":  # the trained policy's own test runs whole episodes (tests/runtime/eval)
                return dispatch([*argv, "--max-steps", "5"])
            if argv[0] == "calibrate":
                return dispatch([*argv, "--queries", "2"])
            return dispatch(argv)

        return stage

    monkeypatch.setattr(cli, "_dispatcher", offline_stages_from_the_fixture)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--steps", "20"]) == 0
    printed = capsys.readouterr().out
    assert seen == ["init-checkpoint", "export", "run", "profile", "export", "eval", "calibrate", "eval"]
    assert all(f"stage {n} of 8" in printed for n in range(1, 9)) and "--instruction 'put the black bowl" in printed
    assert "examples/trained/libero_spatial_task0_small/checkpoint" in printed
    assert "--random-inits 0-1 --record" in printed and "--init-states 0 --precision int8" in printed
    assert "stopped: steps" in printed and "demo finished" in printed
    steps = [r for r in read_log(out / "run" / "steps.jsonl") if isinstance(r, StepRecord)]
    assert len(steps) == 20
    for png in (out / "run" / "control_loop.png", out / "profile" / "latency_vs_iterations.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "profile" / "profile.json").read_text())["repeats"] == 2
    (episode,) = read_episodes(out / "eval")  # the INT8 graphs the calibration stage wrote ran the held-out state
    assert episode.init == "fixed:0" and episode.steps == 5 and episode.queries
    assert json.loads((out / "eval" / "eval.json").read_text())["precision"] == "int8"
