"""The RD-VLA trained here (examples/trained/) exports through the unchanged pipeline, passes its gates, and
solves its LIBERO task closed loop from held-out initial states: the guard that a bundle still does its task."""

from __future__ import annotations

import json
from pathlib import Path

from rdvla.cli import main
from rdvla.runtime.eval.results import read_episodes

TRAINED = Path(__file__).resolve().parents[3] / "examples" / "trained" / "libero_spatial_task0_small"
HELD_OUT = "0-1"  # fixed initial states: the demonstrations started from random placements


def test_the_shipped_checkpoint_is_small_and_says_what_it_was_trained_for() -> None:
    task = json.loads((TRAINED / "task.json").read_text())
    assert task == {"suite": "libero_spatial", "tasks": [0], "render": "fast"}
    weights = sum(p.stat().st_size for p in (TRAINED / "checkpoint").iterdir())
    assert weights < 50e6
    statistics = json.loads((TRAINED / "checkpoint" / "dataset_statistics.json").read_text())
    assert list(statistics) == ["libero_spatial_no_noops"]
    assert "scripts/train_policy.py" in (TRAINED / "TRAINING.md").read_text()


def test_its_bundle_verifies_and_solves_held_out_states(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    assert main(["export", str(TRAINED / "checkpoint"), "--out", str(bundle), "--cases", "2"]) == 0
    assert main(["verify", str(bundle)]) == 0
    out = tmp_path / "eval"
    assert main(["eval", str(bundle), "--suite", "libero_spatial", "--tasks", "0", "--init-states", HELD_OUT,
                 "--render", "fast", "--out", str(out)]) == 0
    episodes = read_episodes(out)
    assert len(episodes) == 2 and sum(e.success for e in episodes) >= 1, [(e.init, e.success, e.steps) for e in episodes]
    assert all(q.iterations == 12 for e in episodes for q in e.queries)  # the authors' default depth
