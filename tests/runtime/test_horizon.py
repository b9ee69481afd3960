"""Execution-horizon rules of spec 3.4 on crafted iteration counts."""

from __future__ import annotations

import pytest

from rdvla.runtime.horizon import (
    BinaryHorizon, CodeLinearDecayHorizon, DynamicHorizon, FixedHorizon, LinearDecayHorizon, parse_horizon,
)


def test_fixed_defaults_to_five_and_never_exceeds_the_chunk() -> None:
    assert FixedHorizon().actions_to_execute(3, 8) == 5
    assert FixedHorizon(12).actions_to_execute(3, 8) == 8


def test_binary_threshold() -> None:
    rule = BinaryHorizon()
    assert [rule.actions_to_execute(k, 8) for k in (1, 4, 5, 32)] == [4, 4, 8, 8]


def test_dynamic_buckets_after_warmup() -> None:
    rule = DynamicHorizon()
    # Warm-up: fewer than 5 counts (this one included) -> the default 5.
    assert [rule.actions_to_execute(k, 8) for k in (4, 8, 4, 8)] == [5, 5, 5, 5]
    # Worked by hand, population std over the history including the new count:
    # [4,8,4,8,6]: mu 6, sigma 1.79 -> 6 in [mu, mu+sigma) -> 6
    # [..,2]: mu 5.33, sigma 2.21 -> 2 < mu-sigma (3.12) -> 2
    # [..,5]: mu 5.29, sigma 2.05 -> 5 in [3.24, 5.29) -> 4
    # [..,12]: 12 >= mu+sigma -> 8
    assert [rule.actions_to_execute(k, 8) for k in (6, 2, 5, 12)] == [6, 2, 4, 8]
    rule.new_task()
    assert rule.actions_to_execute(30, 8) == 5 and rule.history == [30]


def test_dynamic_last_bucket_and_chunk_clip() -> None:
    rule = DynamicHorizon(warmup=1)
    for k in (5, 5, 5, 5):
        rule.actions_to_execute(k, 8)
    assert rule.actions_to_execute(20, 8) == 8
    assert rule.actions_to_execute(20, 6) == 6


def test_linear_decay_paper_formula() -> None:
    rule = LinearDecayHorizon()
    assert [rule.actions_to_execute(k, 8) for k in (1, 6, 7, 8, 9, 12, 32)] == [8, 8, 7, 6, 5, 2, 2]


def test_linear_decay_code_variant() -> None:
    rule = CodeLinearDecayHorizon()
    assert [rule.actions_to_execute(k, 8) for k in (1, 6, 7, 8, 9, 10, 12, 32)] == [8, 8, 7, 7, 6, 5, 3, 2]


def test_rules_are_monotone_in_opposite_directions() -> None:
    ks = range(1, 33)
    binary = [BinaryHorizon().actions_to_execute(k, 8) for k in ks]
    decay = [LinearDecayHorizon().actions_to_execute(k, 8) for k in ks]
    assert binary == sorted(binary) and decay == sorted(decay, reverse=True)


@pytest.mark.parametrize(("spec", "expected"), [
    ("fixed", FixedHorizon()), ("fixed:3", FixedHorizon(3)), ("binary:6", BinaryHorizon(tau=6)),
    ("linear:3:8:5", LinearDecayHorizon(3, 8, 5)), ("linear-code", CodeLinearDecayHorizon()),
])
def test_parse(spec, expected) -> None:
    assert parse_horizon(spec) == expected


@pytest.mark.parametrize(("spec", "message"), [
    ("sometimes", "unknown horizon rule"), ("fixed:0", "at least 1"), ("fixed:a", "integers"),
    ("linear:1:2", "wrong number"), ("binary:3:4:5", "wrong number"), ("linear:5:3:6", "h_min <= h_max"),
])
def test_parse_refuses(spec, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_horizon(spec)
