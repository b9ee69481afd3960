"""`rdvla eval` end to end: the scripted expert solves its task through the control loop, results resume,
a bundle runs through the same loop, demonstrations come out in the episode format, bad input is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rdvla.cli import main
from rdvla.runtime.control.records import StepRecord
from rdvla.runtime.control.step_log import read_log
from rdvla.runtime.eval.results import read_episodes

FAST = ["--suite", "libero_spatial", "--tasks", "0", "--render", "fast"]


def test_expert_solves_spatial_task_0_through_the_loop_and_records_demonstrations(tmp_path, capsys) -> None:
    out, demos = tmp_path / "eval", tmp_path / "demos"
    assert main(["eval", "expert", *FAST, "--episodes-per-task", "2", "--video", "1", "--record", str(demos),
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["episodes"], summary["successes"], summary["success_rate"]) == (2, 2, 1.0)
    low, high = summary["wilson95"]
    assert 0.3 < low < 0.35 and high == 1.0  # Wilson at 2 of 2: [0.342, 1]
    assert summary["tasks"]["0"]["successes"] == 2 and summary["settings"]["render"] == "fast"
    episodes = read_episodes(out)
    assert sorted(e.init for e in episodes) == ["fixed:0", "fixed:1"]
    for episode in episodes:
        assert episode.success and 60 < episode.steps < 220
        assert len(episode.queries) >= episode.steps  # the expert answers every step
        assert {q.stopped_by for q in episode.queries} == {"expert"}
        distances = [q.object_distance_m for q in episode.queries]
        assert all(d is not None and d >= 0 for d in distances) and min(distances) < 0.1 < max(distances)
        assert any(q.gripper_closed for q in episode.queries) and not episode.queries[0].gripper_closed
    assert (out / "success_per_task.png").stat().st_size > 0 and (out / "iterations.png").stat().st_size > 0
    gifs = list((out / "videos").glob("*.gif"))
    assert [g.name for g in gifs] == ["libero_spatial_task0_fixed0.gif"]
    assert "success 2/2" in capsys.readouterr().out

    demo = demos / "libero_spatial_task0_fixed0"
    header = json.loads((demo / "episode.json").read_text())
    assert header["format"] == "rdvla-episode" and header["libero"]["success"] is True
    assert header["instruction"].startswith("pick up the black bowl")
    steps = [r for r in read_log(demo / "steps.jsonl") if isinstance(r, StepRecord)]
    frames = [np.load(demo / camera["recording"])["frames"] for camera in header["cameras"]]
    assert frames[0].shape == (len(steps) + 1, 256, 256, 3) and frames[0].dtype == np.uint8
    assert all(len(s.proposed) == 7 and len(s.proprio) == 8 for s in steps)
    assert {s.proposed[6] for s in steps} == {-1.0, 1.0}  # the raw convention: -1 open, +1 close
    assert max(abs(v) for s in steps for v in s.proposed[:6]) == 1.0  # controller units, not metres
    assert [s.frames[0].frame_number for s in steps] == list(range(len(steps)))
    assert not np.array_equal(frames[0][0], frames[0][-1])  # the scene changed


def test_a_recorded_episode_is_calibration_data(tiny_bundle, tmp_path):
    from rdvla.calibration.data import observations, open_source
    from rdvla.runtime.bundle import Bundle

    demos = tmp_path / "demos"
    assert main(["eval", "expert", *FAST, "--init-states", "5", "--max-steps", "8", "--record", str(demos),
                 "--out", str(tmp_path / "eval")]) == 0
    demo = demos / "libero_spatial_task0_fixed5"
    source = open_source(str(demo), Bundle.open(tiny_bundle), None)
    assert source.proprio_from == "recorded" and len(source.steps) == 8
    seen = list(observations([source], queries=8))
    third = np.load(demo / "third_person.npz")["frames"]
    steps = [r for r in read_log(demo / "steps.jsonl") if isinstance(r, StepRecord)]
    for observation in seen:
        record = steps[observation.step]
        np.testing.assert_array_equal(observation.images[0], third[record.frames[0].frame_number])
        np.testing.assert_allclose(observation.proprio, record.proprio)
        assert observation.instruction.startswith("pick up the black bowl")


def test_an_interrupted_or_extended_eval_runs_only_missing_episodes(tmp_path, capsys):
    out = tmp_path / "eval"
    quick = ["eval", "expert", *FAST, "--max-steps", "3", "--out", str(out)]
    assert main([*quick, "--init-states", "0"]) == 0
    first = (out / "episodes.jsonl").read_text()
    assert main([*quick, "--init-states", "0-1"]) == 0
    assert "1 of 2 episodes already" in capsys.readouterr().out
    lines = (out / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 2 and lines[0] + "\n" == first
    # an episode cut short while being written is run again, not half-read
    with open(out / "episodes.jsonl", "a") as f:
        f.write('{"suite":"libero_spatial","task":0,"ini')
    assert main([*quick, "--init-states", "0-1"]) == 0
    assert "2 of 2 episodes already" in capsys.readouterr().out


def test_other_settings_into_an_existing_directory_are_refused(tmp_path, capsys):
    out = tmp_path / "eval"
    quick = ["eval", "expert", *FAST, "--max-steps", "2", "--init-states", "0", "--out", str(out)]
    assert main(quick) == 0
    capsys.readouterr()
    assert main([*quick, "--horizon", "fixed:2"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main([*quick, "--horizon", "fixed:2", "--overwrite"]) == 0
    assert len(read_episodes(out)) == 1


def test_action_noise_moves_the_arm_off_the_logged_actions_and_is_part_of_the_settings(tmp_path):
    runs = {}
    for sigma in ("0", "0.3"):
        demos = tmp_path / f"demos{sigma}"
        assert main(["eval", "expert", *FAST, "--init-states", "0", "--max-steps", "30", "--action-noise", sigma,
                     "--record", str(demos), "--out", str(tmp_path / f"eval{sigma}")]) == 0
        demo = demos / "libero_spatial_task0_fixed0"
        assert json.loads((demo / "episode.json").read_text())["libero"]["action_noise"] == float(sigma)
        assert json.loads((tmp_path / f"eval{sigma}" / "eval.json").read_text())["action_noise"] == float(sigma)
        runs[sigma] = [r for r in read_log(demo / "steps.jsonl") if isinstance(r, StepRecord)]
    clean, noisy = runs["0"], runs["0.3"]
    assert clean[0].proposed == noisy[0].proposed  # the same state, the same expert action logged
    # The arm did not go where the logged actions sent it: its path differs, and the expert answered the difference.
    drift = [np.linalg.norm(np.subtract(a.proprio[:3], b.proprio[:3])) for a, b in zip(clean, noisy)]
    assert max(drift) > 0.01
    assert any(a.proposed != b.proposed for a, b in zip(clean[1:], noisy[1:]))


def test_a_bundle_runs_through_the_loop_with_the_protocols_conventions(tiny_bundle, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", str(tiny_bundle), *FAST, "--init-states", "0", "--max-steps", "12", "--halting", "mse:1e-3",
                 "--out", str(out)]) == 0
    (episode,) = read_episodes(out)
    assert episode.steps == 12 and not episode.success  # random weights: the loop runs, nothing is solved
    assert len(episode.queries) == 3  # a chunk of 8, 5 executed per query: steps 0, 5, 10
    assert all(2 <= q.iterations <= 32 and q.latency_ms > 0 for q in episode.queries)
    assert all(q.stopped_by in ("converged", "max_iterations") for q in episode.queries)
    settings = json.loads((out / "eval.json").read_text())
    assert (settings["kind"], settings["backend"], settings["precision"]) == ("bundle", "onnxruntime", "fp32")


@pytest.mark.parametrize("arguments, message", [
    (["expert", "--suite", "libero_spatial", "--tasks", "10"], "has tasks 0..9"),
    (["expert", "--suite", "libero_spatial", "--tasks", "3"], "no scripted expert for libero_spatial task 3"),
    (["expert", "--suite", "libero_spatial", "--tasks", "0", "--init-states", "50"], "initial states 0..49"),
    (["expert", "--suite", "libero_spatial", "--workers", "0"], "--workers"),
    (["expert", "--suite", "libero_spatial", "--backend", "onnxruntime"], "apply to bundles"),
    (["no/such/bundle", "--suite", "libero_spatial"], "not found"),
    (["expert", "--suite", "libero_spatial", "--tasks", "0", "--action-noise", "2"], "--action-noise 2.0"),
])
def test_bad_input_is_one_line_and_exit_2(arguments, message, tmp_path, capsys):
    try:
        code = main(["eval", *arguments, "--render", "fast", "--max-steps", "1", "--out", str(tmp_path / "out")])
    except SystemExit as exc:  # argparse's own errors: its usage, then the one error line
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert message in err.splitlines()[-1] and "error" in err.splitlines()[-1]


def test_a_bundle_of_another_dataset_is_refused(tiny_bundle, tmp_path, capsys):
    assert main(["eval", str(tiny_bundle), "--suite", "libero_object", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "libero_spatial_no_noops" in err and "--unnorm-key libero_object_no_noops" in err


def test_a_missing_simulator_is_one_line(monkeypatch, tmp_path, capsys):
    import importlib

    real = importlib.import_module

    def without_libero(name, *args, **kwargs):
        if name.startswith("libero"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", without_libero)
    assert main(["eval", "expert", "--suite", "libero_spatial", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pip install -e '.[libero]'" in err and len(err.strip().splitlines()) == 1
