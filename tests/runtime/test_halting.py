"""The one stop rule (`run_iterations`), live and on recorded traces, for every halting rule, and the
parser of the halting options."""

from __future__ import annotations

import math
from typing import Optional

import pytest

from rdvla.runtime.halting import (
    AdjacentMSE,
    CosineSimilarity,
    FixedIterations,
    HaltingRule,
    parse_halting,
    run_iterations,
    stop_on_trace,
)

NAN = math.nan


def deltas_then(values: list[Optional[float]]):
    """An `iterate` returning values[k - 1]; the iterations it ran are in `.ran`."""

    def iterate(k: int) -> Optional[float]:
        iterate.ran.append(k)
        return values[k - 1]

    iterate.ran = []
    return iterate


@pytest.mark.parametrize("rule", [FixedIterations(3), AdjacentMSE(), CosineSimilarity()])
def test_every_rule_implements_the_protocol(rule: HaltingRule) -> None:
    assert isinstance(rule, HaltingRule)


def test_fixed_iterations_run_exactly_their_count_and_ignore_deltas() -> None:
    iterate = deltas_then([0.0] * 10)
    stop = run_iterations(FixedIterations(4), iterate)
    assert (stop.iterations, stop.stopped_by, iterate.ran) == (4, "fixed", [1, 2, 3, 4])


def test_an_adaptive_rule_stops_when_converged_never_before_its_minimum() -> None:
    rule = AdjacentMSE(1e-3, min_iterations=3, max_iterations=10)
    assert run_iterations(rule, deltas_then([None, 1e-4, 5e-2, 1e-4] + [1.0] * 6)) == \
        run_iterations(rule, deltas_then([None, 1.0, 1.0, 1e-4] + [1.0] * 6))
    stop = run_iterations(rule, deltas_then([None, 1e-4, 1e-4] + [1.0] * 7))
    assert (stop.iterations, stop.stopped_by) == (3, "converged")


def test_an_adaptive_rule_stops_at_its_maximum_unless_the_last_delta_converged() -> None:
    rule = AdjacentMSE(1e-3, max_iterations=5)
    assert run_iterations(rule, deltas_then([None, 1.0, 1.0, 1.0, 1.0])).stopped_by == "max_iterations"
    assert run_iterations(rule, deltas_then([None, 1.0, 1.0, 1.0, 1e-4])).stopped_by == "converged"
    assert run_iterations(rule, deltas_then([None, None, None, None, None])).stopped_by == "max_iterations"  # nothing read


def test_out_of_time_stops_after_the_iterations_done_but_never_before_the_first() -> None:
    iterate = deltas_then([1.0] * 12)
    stop = run_iterations(FixedIterations(12), iterate, out_of_time=lambda: len(iterate.ran) >= 3)
    assert (stop.iterations, stop.stopped_by, iterate.ran) == (3, "deadline", [1, 2, 3])
    first = deltas_then([1.0] * 12)
    assert run_iterations(FixedIterations(12), first, out_of_time=lambda: True).iterations == 1


def test_a_trace_stops_where_the_rule_reads_it_mse_or_cosine() -> None:
    # Consecutive actions keep a large MSE (a growing scale) but stop turning from iteration 4 on.
    mse = [NAN, 0.5, 0.2, 0.1] + [0.1] * 28
    cosine = [NAN, 0.5, 0.9, 0.9999] + [0.9999] * 28
    assert stop_on_trace(CosineSimilarity(0.999), mse, cosine).iterations == 4
    assert stop_on_trace(AdjacentMSE(1e-3), mse, cosine).iterations == 32
    assert stop_on_trace(FixedIterations(7), mse, cosine).iterations == 7


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ((None, None, None, None), FixedIterations(12)),
        ((None, 4, None, None), FixedIterations(4)),
        (("mse:1e-4", None, None, None), AdjacentMSE(1e-4)),
        (("mse", None, 3, 16), AdjacentMSE(1e-3, 3, 16)),
        (("cosine:0.99", None, None, None), CosineSimilarity(0.99)),
    ],
)
def test_parse_halting(words, expected) -> None:
    assert parse_halting(*words) == expected


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (("kl:1e-3", None, None, None), "unknown halting rule"),
        (("mse:abc", None, None, None), "not a number"),
        (("mse:", None, None, None), "no threshold after the colon"),
        (("cosine: ", None, None, None), "no threshold after the colon"),
        (("mse:-1", None, None, None), "positive"),
        (("cosine:1.5", None, None, None), r"\(-1, 1\)"),
        (("mse:1e-3", None, 10, 5), "exceeds"),
        (("mse:1e-3", 4, None, None), "not both"),
        ((None, 0, None, None), "iterations must be an integer"),
        ((None, None, 2, None), "adaptive halting"),
    ],
)
def test_parse_halting_refuses(words, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_halting(*words)
