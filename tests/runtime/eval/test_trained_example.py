"""The RD-VLA trained here (examples/trained/) exports through the unchanged pipeline, passes its gates, and
solves its LIBERO task closed loop from held-out initial states: the guard that a bundle still does its task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rdvla.cli import main
from rdvla.runtime.eval.results import EpisodeResult, read_episodes

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
TRAINED = EXAMPLES / "trained" / "libero_spatial_task0_small"
HELD_OUT = "0-1"  # fixed initial states: the demonstrations started from random placements


def test_the_shipped_checkpoint_is_small_and_says_what_it_was_trained_for() -> None:
    task = json.loads((TRAINED / "task.json").read_text())
    assert task == {"suite": "libero_spatial", "tasks": [0], "render": "fast"}
    weights = sum(p.stat().st_size for p in (TRAINED / "checkpoint").iterdir())
    assert weights < 50e6
    statistics = json.loads((TRAINED / "checkpoint" / "dataset_statistics.json").read_text())
    assert list(statistics) == ["libero_spatial_no_noops"]
    assert "scripts/train_policy.py" in (TRAINED / "TRAINING.md").read_text()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = tmp_path_factory.mktemp("trained") / "bundle"
    assert main(["export", str(TRAINED / "checkpoint"), "--out", str(bundle), "--cases", "2"]) == 0
    return bundle


@pytest.fixture(scope="module")
def evaluated(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> list[EpisodeResult]:
    out = tmp_path_factory.mktemp("trained") / "eval"
    assert main(["eval", str(bundle), "--suite", "libero_spatial", "--tasks", "0", "--init-states", HELD_OUT,
                 "--render", "fast", "--out", str(out)]) == 0
    return read_episodes(out)


def test_its_bundle_verifies_and_solves_held_out_states(bundle: Path, evaluated: list[EpisodeResult]) -> None:
    assert main(["verify", str(bundle)]) == 0
    episodes = evaluated
    assert len(episodes) == 2 and sum(e.success for e in episodes) >= 1, [(e.init, e.success, e.steps) for e in episodes]
    assert all(q.iterations == 12 for e in episodes for q in e.queries)  # the authors' default depth


def test_rdvla_run_on_the_simulator_setup_is_the_eval_episode(bundle: Path, evaluated: list[EpisodeResult],
                                                              tmp_path: Path) -> None:
    """`rdvla run --config` with a LIBERO scene drives the same loop as `rdvla eval`: with eval's depth, latent seed
    and safety settings (no acceleration limit) the episode from the same initial state ends the same way."""
    setup = tmp_path / "libero.yaml"
    setup.write_text((EXAMPLES / "libero.yaml").read_text().replace("init: fixed:0", f"init: {evaluated[0].init}"))
    log = tmp_path / "run.jsonl"
    assert main(["run", str(bundle), "--config", str(setup), "--execute", "--iterations", "12", "--seed", "7", "--max-linear-accel", "1e9",
                 "--max-angular-accel", "1e9", "--no-status", "--log", str(log)]) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    summary = records[-1]
    assert summary["type"] == "summary" and summary["stop_reason"] == "episode_done"
    assert (summary["success"], summary["steps"]) == (evaluated[0].success, evaluated[0].steps)
    assert records[0]["settings"]["instruction"] == "pick up the black bowl between the plate and the ramekin and place it on the plate"
