"""Results arithmetic and plans, without the simulator."""

from __future__ import annotations

import argparse

import pytest

from rdvla.cli.eval import index_list
from rdvla.devices.libero.scene import InitState
from rdvla.runtime.eval.results import EpisodeResult, QueryOutcome, summarize, wilson95
from rdvla.runtime.eval.runner import EpisodeSpec, split


@pytest.mark.parametrize("successes, n, expected", [
    (5, 10, (0.2366, 0.7634)),  # p = 0.5: symmetric around 0.5
    (46, 50, (0.8116, 0.9685)),  # the authors' 92 % over 50 episodes
    (0, 20, (0.0, 0.1611)),
    (20, 20, (0.8389, 1.0)),
])
def test_wilson_interval_matches_hand_computed_values(successes, n, expected):
    low, high = wilson95(successes, n)
    assert low == pytest.approx(expected[0], abs=1e-4) and high == pytest.approx(expected[1], abs=1e-4)


def test_summary_counts_per_task_and_mean_iterations_over_queries():
    def episode(task, init, success, iterations):
        queries = [QueryOutcome(5 * i, k, "converged", 10.0, False, 0.2) for i, k in enumerate(iterations)]
        return EpisodeResult("libero_spatial", task, init, success, 100, "fast", queries)

    summary = summarize([episode(0, "fixed:0", True, [4, 6]), episode(0, "fixed:1", False, [8]),
                         episode(2, "fixed:0", True, [2])], {"render": "fast"})
    assert (summary["episodes"], summary["successes"], summary["queries"]) == (3, 2, 4)
    assert summary["mean_iterations"] == pytest.approx(5.0)
    assert summary["tasks"]["0"]["successes"] == 1 and summary["tasks"]["0"]["mean_iterations"] == pytest.approx(6.0)
    assert summary["tasks"]["2"]["success_rate"] == 1.0


def test_index_lists_and_their_errors():
    assert index_list("0-3,7,2") == [0, 1, 2, 3, 7]
    for bad in ("3-1", "-1", "a", "1,,2"):
        with pytest.raises(argparse.ArgumentTypeError):
            index_list(bad)


def test_workers_get_whole_runs_of_a_tasks_episodes():
    specs = [EpisodeSpec("libero_spatial", t, InitState("fixed", i)) for t in (0, 1) for i in range(3)]
    shares = split(specs, 2)
    assert sorted(s.key for share in shares for s in share) == sorted(s.key for s in specs)
    for share in shares:
        assert [s.task for s in share] == sorted(s.task for s in share)
    assert len(split(specs[:1], 4)) == 1
