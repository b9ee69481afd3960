"""The chunk broker on its own, under a fake clock: arrival, deadlines, the horizon, starvation, failures."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import numpy as np
import pytest

from rdvla.devices.testing import FakeClock
from rdvla.runtime.control.broker import ChunkBroker, QueryInputs, StartError
from rdvla.runtime.control.config import LoopConfig
from rdvla.runtime.control.faults import Fault, FaultLog
from rdvla.runtime.control.pacing import CycleTimer
from rdvla.runtime.horizon import FixedHorizon

from .conftest import PERIOD, DeferredExecutor, FakePolicy, decode

INPUTS = QueryInputs([np.zeros((8, 8, 3), np.uint8)] * 2, np.zeros(8))


class Bench:
    """A broker wired to a fake policy, a started cycle timer and a fault log."""

    def __init__(self, worker_latency_s: Optional[float] = None, latency_s: float = 0.02, **overrides: Any) -> None:
        self.clock = FakeClock()
        self.policy = FakePolicy(self.clock, latency_s)
        executor = None if worker_latency_s is None else DeferredExecutor(self.clock, worker_latency_s)
        base = LoopConfig(instruction="pick up the cube", rate_hz=1 / PERIOD, mode="sync", horizon=FixedHorizon(5))
        self.timer = CycleTimer(PERIOD, self.clock, self.clock.advance)
        self.faults = FaultLog(base.safety)
        self.broker = ChunkBroker(self.policy, replace(base, **overrides), self.timer, self.faults, executor)
        self.timer.start()

    def next_slot(self) -> None:
        self.faults.end_cycle(self.timer.slot, self.clock())
        self.timer.finish()


def test_a_chunk_arrives_post_processed_and_fills_the_slots_its_horizon_allows() -> None:
    bench = Bench(horizon=FixedHorizon(3))
    first = bench.broker.action_for(0, INPUTS)
    assert first.arrived is not None and first.submitted is None
    assert (first.arrived.id, first.arrived.obs_slot, first.arrived.horizon, first.arrived.queued) == (0, 0, 3, 3)
    assert [row[6] for row in first.arrived.actions] == [-1.0] * 8  # the policy's LIBERO post-processing
    assert bench.policy.calls[0]["gripper"] == "libero"
    assert first.action is not None and decode(list(first.action)) == (0, 0)
    assert bench.broker.queued_after(0) == 2
    taken = []
    for slot in range(1, 4):
        bench.next_slot()
        planned = bench.broker.action_for(slot, INPUTS)
        taken.append((decode(list(planned.action)), planned.arrived is not None))
    # Slots 1 and 2 come from the queue; slot 3 lies beyond the horizon, so the next query runs.
    assert taken == [((0, 1), False), ((0, 2), False), ((1, 0), True)]
    assert bench.faults.current == [] and bench.policy.count == 2


def test_the_broker_asks_the_policy_for_the_configured_gripper() -> None:
    bench = Bench(gripper="raw")
    arrived = bench.broker.action_for(0, INPUTS).arrived
    assert arrived is not None and [row[6] for row in arrived.actions] == [0.9] * 8
    assert bench.policy.calls[0]["gripper"] == "raw"


def test_the_deadline_moves_past_the_fixed_cost_of_a_query() -> None:
    bench = Bench(latency_s=0.15)  # the fixed part alone (total - iterations) takes 1.5 periods
    assert bench.broker.deadline_s(1) == pytest.approx(PERIOD - 0.1 * PERIOD)  # no estimate yet: the period less the reserve
    bench.broker.action_for(0, INPUTS)
    bench.next_slot()  # the query overran slot 1: the cycle starts on slot 2
    assert bench.broker.deadline_s(1) == pytest.approx(2 * PERIOD - 0.1 * PERIOD)  # the first boundary after 0.15 s
    assert Bench(deadline_s=0.05).broker.deadline_s(3) == 0.05  # a configured deadline is taken as given


def test_async_submits_once_the_queue_is_low_and_starves_while_the_worker_is_slow() -> None:
    bench = Bench(worker_latency_s=0.45, latency_s=0.0, mode="async", refill_at=2)  # the worker takes 4.5 periods
    bench.broker.prime(INPUTS)
    actions, submitted = [], []
    for slot in range(8):
        planned = bench.broker.action_for(slot, INPUTS)
        actions.append(None if planned.action is None else decode(list(planned.action)))
        submitted.append(planned.submitted)
        bench.next_slot()
    assert submitted == [None, None, 1, None, None, None, None, 2]  # at most refill_at left; one query in flight
    # Query 1 (from slot 2) arrives at slot 7 with its actions for slots 2..6 all stale: slots 5 to 7 get nothing.
    assert actions == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), None, None, None]
    assert bench.broker.inflight


def test_a_failed_query_and_a_non_finite_chunk_are_faults_of_the_cycle() -> None:
    bench = Bench()
    bench.policy.errors = {0}
    planned = bench.broker.action_for(0, INPUTS)
    assert planned.action is None and [fault for fault, _ in bench.faults.current] == [Fault.INFERENCE_ERROR]
    bench.next_slot()
    bench.policy.nonfinite = {1}
    planned = bench.broker.action_for(1, INPUTS)
    assert planned.action is None and planned.arrived is None
    assert [fault for fault, _ in bench.faults.current] == [Fault.NONFINITE_ACTION]
    assert bench.broker.queued_after(0) == 0


def test_no_inputs_start_no_query() -> None:
    bench = Bench()
    planned = bench.broker.action_for(0, None)
    assert (planned.action, planned.arrived, bench.policy.count) == (None, None, 0)


@pytest.mark.parametrize("fail", ["errors", "nonfinite"])
def test_a_failing_first_query_refuses_to_start(fail: str) -> None:
    bench = Bench()
    getattr(bench.policy, fail).add(0)
    with pytest.raises(StartError, match="the first query failed"):
        bench.broker.prime(INPUTS)


def test_sync_mode_refuses_an_executor() -> None:
    with pytest.raises(ValueError, match="asynchronous"):
        Bench(worker_latency_s=0.1)
