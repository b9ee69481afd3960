"""The control loop under a fake clock: pacing, alignment, deadlines, and every fault with its reaction."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from typing import Any, Optional

import pytest

from rdvla.devices.cameras.base import CameraDisconnectedError, CameraEndedError, StaleFrameError
from rdvla.devices.cameras.multi import SkewError
from rdvla.devices.robots.base import EpisodeStatus, RobotConnectionError, RobotStatus, RobotTimeoutError
from rdvla.devices.testing import FakeClock
from rdvla.runtime.control.broker import StartError
from rdvla.runtime.control.loop import ControlLoop, stop_on_signals
from rdvla.runtime.control.pacing import SteppedClock
from rdvla.runtime.control.records import STOP_EPISODE_DONE, RunSummary, StartRecord, StepRecord
from rdvla.runtime.control.subscriber import Subscriber
from rdvla.runtime.policy import PolicyResult

from .conftest import PERIOD, DeferredExecutor, Rig, ScriptedRobot, chunk_for, decode


def kinds(step: StepRecord) -> list[str]:
    return [fault.kind.value for fault in step.faults]


def summary_of(rig: Rig) -> RunSummary:
    last = rig.records()[-1]
    assert isinstance(last, RunSummary)
    return last


def obs_slots(rig: Rig) -> dict[int, int]:
    """Query id -> slot of the observation it was computed from."""
    records = rig.records()
    assert isinstance(records[0], StartRecord)
    prime = records[0].prime
    assert prime.frames and len(prime.proprio) == 8
    slots = {prime.query.id: prime.query.obs_slot}
    slots.update({r.query.id: r.query.obs_slot for r in records if isinstance(r, StepRecord) and r.query})
    return slots


def test_sync_run_executes_each_chunk_on_its_slots_and_logs_every_step(rig: Rig) -> None:
    summary = rig.loop().run()
    steps = rig.steps()
    assert [s.slot for s in steps] == list(range(20))
    assert [decode(s.proposed) for s in steps] == [(slot // 5, slot % 5) for slot in range(20)]
    assert all(s.decision == "act" and s.faults == [] for s in steps)
    assert [s.query.iterations for s in steps if s.query] == [4, 4, 4]
    assert all(set(s.sections_ms) == {"observe", "infer", "act", "send"} for s in steps)
    assert [c["deadline_s"] for c in rig.policy.calls] == pytest.approx([None, 0.09, 0.09, 0.09])  # period - 10 % reserve
    assert [c["seed"] for c in rig.policy.calls] == [0, 1, 2, 3]
    assert rig.robot.sends == 20 and rig.robot.snapshot().status == RobotStatus.HOLDING  # a normal end holds
    assert summary == summary_of(rig)
    assert (summary.steps, summary.queries, summary.overruns, summary.stop_reason) == (20, 3, 0, "steps")
    assert summary.achieved_rate_hz == pytest.approx(10.0) and not summary.stopped_on_fault
    assert summary.robot_travel_m > 0
    assert not rig.cameras.connected


@pytest.mark.parametrize("latency, stale, starved_slots", [(0.15, 2, []), (0.25, 3, [7, 10, 13, 16, 19])])
def test_async_chunks_stay_time_aligned_and_a_slow_worker_starves_the_queue(
        rig: Rig, latency: float, stale: int, starved_slots: list[int]) -> None:
    rig.policy.latency_s = 0.0
    executor = DeferredExecutor(rig.clock, latency)
    summary = rig.loop(executor=executor, mode="async", refill_at=2).run()
    steps = rig.steps()
    origin = obs_slots(rig)
    for step in steps:
        if step.proposed is not None:
            query, index = decode(step.proposed)
            assert index == step.slot - origin[query]  # action i of a chunk runs in slot obs_slot + i
    assert [s.slot for s in steps if "starved" in kinds(s)] == starved_slots
    assert all(s.decision == "hold" for s in steps if "starved" in kinds(s))
    assert all(s.query.stale == stale for s in steps if s.query)
    assert rig.policy.calls[1]["deadline_s"] == pytest.approx(3 * PERIOD - 0.1 * PERIOD)  # until the queue runs dry
    assert summary.faults == ({"starved": len(starved_slots)} if starved_slots else {})
    assert summary.overruns == 0 and summary.steps == 20


def test_dry_run_computes_filters_and_logs_but_sends_nothing(rig: Rig) -> None:
    start = rig.robot.snapshot().proprio.copy()
    summary = rig.loop(execute=False).run()
    steps = rig.steps()
    assert all(s.decision == "dry_run" and s.executed is not None for s in steps)
    assert (rig.robot.sends, rig.robot.holds, rig.robot.stops) == (0, 0, 0)
    assert (rig.robot.snapshot().proprio == start).all()
    start = rig.records()[0]
    assert isinstance(start, StartRecord) and not start.settings["execute"]
    assert not summary.execute and summary.acted == 20


def test_sync_queries_longer_than_the_period_overrun_and_their_chunks_stay_aligned(rig: Rig) -> None:
    rig.policy.latency_s = 0.15  # VLM+Prelude alone exceeds the 100 ms period
    summary = rig.loop().run()
    steps = rig.steps()
    query_steps = [s for s in steps if s.query]
    # The deadline moves to the first slot boundary the query's fixed part can meet, instead of
    # cutting the iterations of a query that is late anyway.
    assert [c["deadline_s"] for c in rig.policy.calls][1:] == pytest.approx([0.19] * len(query_steps))
    assert all(kinds(s) == ["overrun"] and s.decision == "hold" for s in query_steps)
    origin = obs_slots(rig)
    acted = [s for s in steps if s.decision == "act"]
    assert acted and all(decode(s.proposed)[1] == s.slot - origin[decode(s.proposed)[0]] for s in acted)
    assert summary.overruns == summary.missed_slots == len(query_steps)


def test_query_deadline_can_be_set_instead_of_derived(rig: Rig) -> None:
    rig.loop(deadline_s=0.05).run()
    assert [c["deadline_s"] for c in rig.policy.calls][1:] == [0.05, 0.05, 0.05]


def test_stale_or_skewed_observation_holds_the_arm(rig: Rig) -> None:
    rig.cameras.faults = {3: StaleFrameError("camera wrist: newest frame is 180 ms old"),
                          4: SkewError("cameras 60 ms apart", 0.06)}  # read 0 primes: reads 3, 4 are steps 2, 3
    summary = rig.loop().run()
    steps = rig.steps()
    assert kinds(steps[2]) == ["stale_observation"] and kinds(steps[3]) == ["skewed_observation"]
    assert steps[2].decision == steps[3].decision == "hold" and steps[2].executed is None
    assert steps[2].proprio == steps[4].proprio  # held: the arm did not move
    assert decode(steps[4].proposed) == (0, 4)  # the plan resumes on its own slots
    assert rig.robot.sends == 18 and rig.robot.holds == 2 + 1  # + the final hold
    assert summary.faults == {"skewed_observation": 1, "stale_observation": 1} and summary.holds == 2


def test_a_stale_stream_stops_after_the_configured_count(rig: Rig) -> None:
    rig.cameras.faults = {i: StaleFrameError("no fresh frame") for i in range(3, 100)}
    summary = rig.loop(safety=rig.config().safety.__class__(max_consecutive_faults=4)).run()
    assert summary.stop_reason == "stale_observation in 4 consecutive steps" and summary.stopped_on_fault
    assert summary.steps == 2 + 4 and rig.robot.stops == 1  # a fault stop halts the robot


def test_camera_disconnect_holds_while_reconnecting_then_resumes(rig: Rig) -> None:
    rig.cameras.faults = {i: CameraDisconnectedError("camera wrist is disconnected, reconnecting") for i in range(3, 9)}
    summary = rig.loop(safety=rig.config().safety.__class__(max_consecutive_faults=3)).run()
    steps = rig.steps()
    assert [s.decision for s in steps[2:8]] == ["hold"] * 6  # longer than max_faults: reconnection has its own limit
    assert all(kinds(s) == ["camera_disconnected"] for s in steps[2:8])
    assert steps[8].decision == "act" and summary.stop_reason == "steps"


def test_a_camera_that_does_not_come_back_stops_the_run(rig: Rig) -> None:
    rig.cameras.faults = {i: CameraDisconnectedError("camera wrist is disconnected") for i in range(3, 100)}
    summary = rig.loop(safety=rig.config().safety.__class__(max_reconnect_s=1.0), max_steps=None).run()
    assert summary.stop_reason == "camera disconnected for 1.0 s" and summary.stopped_on_fault
    assert summary.steps == 2 + 11 and rig.robot.stops == 1


def test_end_of_recording_ends_the_run_normally(rig: Rig) -> None:
    rig.cameras.faults = {7: CameraEndedError("the recording has no more frames")}
    summary = rig.loop().run()
    assert summary.stop_reason == "recording ended" and not summary.stopped_on_fault
    assert summary.steps == 7 and rig.steps()[-1].decision == "hold" and rig.robot.stops == 0


def test_inference_error_holds_and_the_next_query_recovers(rig: Rig) -> None:
    rig.policy.errors = {1}  # the query at slot 5
    summary = rig.loop().run()
    steps = rig.steps()
    assert kinds(steps[5]) == ["inference_error"] and "engine failure" in steps[5].faults[0].detail
    assert steps[5].decision == "hold"
    assert decode(steps[6].proposed) == (2, 0)  # the query at slot 6 starts a fresh chunk
    assert summary.faults == {"inference_error": 1} and summary.stop_reason == "steps"


def test_repeated_inference_errors_stop_the_run(rig: Rig) -> None:
    rig.policy.errors = {1, 2, 3}
    summary = rig.loop(safety=rig.config().safety.__class__(max_consecutive_faults=3)).run()
    assert summary.stop_reason == "inference_error in 3 consecutive steps"
    assert summary.steps == 8 and rig.robot.stops == 1


def test_inference_error_on_the_worker_is_collected_as_a_fault(rig: Rig) -> None:
    rig.policy.latency_s = 0.0
    rig.policy.errors = {1}
    summary = rig.loop(executor=DeferredExecutor(rig.clock, 0.15), mode="async").run()
    failed = [s for s in rig.steps() if "inference_error" in kinds(s)]
    assert len(failed) == 1 and failed[0].decision == "hold"
    assert failed[0].submitted is not None  # the next query starts from the same cycle's observation
    assert summary.stop_reason == "steps" and summary.acted > 10


def test_a_chunk_with_non_finite_actions_is_rejected(rig: Rig) -> None:
    rig.policy.nonfinite = {1}
    summary = rig.loop().run()
    step = rig.steps()[5]
    assert kinds(step) == ["nonfinite_action"] and step.decision == "hold" and step.query is None
    assert summary.faults == {"nonfinite_action": 1}


def test_overrun_holds_instead_of_sending_late_and_skips_the_slot(rig: Rig) -> None:
    rig.robot.slow_reads = {4: 0.15}  # step 3's state read takes 1.5 periods
    summary = rig.loop().run()
    steps = rig.steps()
    assert kinds(steps[3]) == ["overrun"] and steps[3].decision == "hold"
    assert (steps[4].slot, steps[4].missed_slots) == (5, 1)
    assert (summary.overruns, summary.missed_slots, summary.max_overrun_ms) == (1, 1, pytest.approx(50.0))
    assert rig.robot.sends == 19 and summary.faults == {"overrun": 1}


@pytest.mark.parametrize("error, kind", [(RobotTimeoutError("no reply within 50 ms"), "robot_timeout"),
                                         (RobotConnectionError("controller silent for 0.5 s"), "robot_error")])
def test_robot_failure_stops_at_once(rig: Rig, error: Exception, kind: str) -> None:
    rig.robot.send_faults = {4: error}
    summary = rig.loop().run()
    last = rig.steps()[-1]
    assert (last.step, last.decision, kinds(last)) == (4, "stop", [kind])
    assert summary.stop_reason == kind and summary.stopped_on_fault and rig.robot.stops == 1


def test_sigint_stops_after_the_cycle_with_the_arm_holding_and_the_log_complete(rig: Rig) -> None:
    loop = rig.loop(max_steps=None)
    rig.robot.on_send = lambda i: os.kill(os.getpid(), signal.SIGINT) if i == 5 else None
    before = signal.getsignal(signal.SIGINT)
    with stop_on_signals(loop):
        summary = loop.run()
    assert signal.getsignal(signal.SIGINT) is before
    assert summary.stop_reason == "signal SIGINT" and not summary.stopped_on_fault
    assert summary.steps == 6 and rig.robot.sends == 6
    assert rig.robot.snapshot().status == RobotStatus.HOLDING and rig.robot.stops == 0
    assert summary_of(rig).steps == 6


def test_a_second_signal_interrupts_at_once_and_halts_the_robot(rig: Rig) -> None:
    loop = rig.loop(max_steps=None)

    def twice(i: int) -> None:
        if i == 5:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    rig.robot.on_send = twice
    with pytest.raises(KeyboardInterrupt), stop_on_signals(loop):
        loop.run()
    summary = summary_of(rig)
    assert summary.stop_reason == "interrupted" and summary.stopped_on_fault
    assert rig.robot.stops == 1 and not rig.cameras.connected


def test_ten_thousand_steps_in_constant_memory_with_exact_overrun_accounting(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="rdvla.runtime.control.faults")  # captured warnings would be memory the test keeps
    rig.robot.slow_reads = {read: 0.15 for read in range(51, 10_001, 100)}  # steps 50, 150, ...: 100 overruns
    blocks: dict[int, int] = {}

    class Measure(Subscriber):
        def on_step(self, record: StepRecord) -> None:
            if record.step in (1_000, 9_999):
                gc.collect()
                blocks[record.step] = sys.getallocatedblocks()  # every live Python object; a per-step leak shows

    loop = rig.loop(max_steps=10_000, subscribers=[Measure()])
    summary = loop.run()
    # Interpreter free lists account for a few hundred blocks; one object kept per step would be 9,000.
    assert blocks[9_999] - blocks[1_000] < 1_000, blocks
    assert (summary.steps, summary.overruns, summary.missed_slots) == (10_000, 100, 100)
    assert summary.faults == {"overrun": 100} and summary.holds == 100
    assert loop.timer.slot == 9_999 + 100
    assert summary.step_ms.n == 9_999  # the last cycle stops before its accounting
    assert len(rig.steps()) == 10_000


def test_a_failing_first_query_refuses_to_start_and_still_closes_the_log(rig: Rig) -> None:
    rig.policy.errors = {0}
    with pytest.raises(StartError, match="first query failed: RuntimeError: engine failure"):
        rig.loop().run()
    records = rig.records()
    assert len(records) == 1 and isinstance(records[0], RunSummary) and records[0].steps == 0
    assert rig.robot.sends == 0 and rig.robot.stops == 1 and not rig.cameras.connected  # an error halts the arm


def test_sync_mode_refuses_an_executor(rig: Rig) -> None:
    with pytest.raises(ValueError, match="asynchronous"):
        ControlLoop(rig.cameras, rig.policy, rig.robot, rig.config(), executor=DeferredExecutor(rig.clock, 0.1))


class EpisodeRobot(ScriptedRobot):
    """A robot that simulates a task: its episode is done after ``limit`` commands, succeeded or not."""

    def __init__(self, clock: FakeClock, limit: int, success: bool) -> None:
        super().__init__(clock)
        self.limit, self.success = limit, success

    def episode_status(self) -> EpisodeStatus:
        done = self.sends + self.holds >= self.limit
        return EpisodeStatus(done=done, success=self.success if done else None)


@pytest.mark.parametrize("success", [True, False])
def test_a_done_episode_ends_the_run_with_its_success(rig: Rig, success: bool) -> None:
    rig.robot = EpisodeRobot(rig.clock, limit=7, success=success)
    summary = rig.loop(max_steps=None).run()
    assert (summary.stop_reason, summary.success, summary.steps) == (STOP_EPISODE_DONE, success, 7)
    assert not summary.stopped_on_fault and summary_of(rig).success is success  # the step log carries it


def test_a_robot_without_episodes_reports_no_success_and_old_logs_still_read(rig: Rig) -> None:
    summary = rig.loop().run()
    assert summary.success is None and summary.stop_reason == "steps"
    old = summary.to_json()
    del old["success"]  # a log written before episodes
    assert RunSummary.from_json(old) == summary


class InstantPolicy:
    """Chunks that cost no simulated time (the policy's own compute never moves a stepped clock)."""

    def __init__(self) -> None:
        self.seeds: list[Optional[int]] = []

    def act(self, instruction: str, proprio: Any, images: Any = None, pixel_values: Any = None, halting: Any = None,
            init_latent: Any = None, seed: Optional[int] = None, deadline_s: Optional[float] = None,
            gripper: str = "raw") -> PolicyResult:
        self.seeds.append(seed)
        actions = chunk_for(len(self.seeds) - 1)
        return PolicyResult(actions, actions, 2, timings_ms={"total": 1.0, "iterations": 1.0}, stopped_by="fixed")


def test_a_stepped_clock_runs_episodes_back_to_back_without_waiting(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_wall_clock(seconds: float) -> None:
        raise AssertionError(f"the loop waited {seconds} s in real time")

    monkeypatch.setattr(time, "sleep", no_wall_clock)
    policy = InstantPolicy()
    summaries = []
    for episode in range(2):  # a new loop per episode around the same policy
        stepped = SteppedClock(start=100.0 * episode)
        robot = EpisodeRobot(rig.clock, limit=12, success=True)
        loop = ControlLoop(rig.cameras, policy, robot, rig.config(max_steps=None), clock=stepped.now, sleep=stepped.sleep)
        summaries.append(loop.run())
        assert stepped.now() == pytest.approx(100.0 * episode + 11 * PERIOD)  # slot 11 of the grid, no more
    assert [(s.stop_reason, s.steps, s.overruns, s.faults) for s in summaries] == [(STOP_EPISODE_DONE, 12, 0, {})] * 2
    assert policy.seeds == [0, 1, 2] * 2  # each episode queries from its own seed 0 on


def test_the_robot_moves_by_the_filtered_action_in_metres(rig: Rig) -> None:
    rig.robot.action_scale = (0.5, 0.5)  # one policy unit is half a metre: converted once, by the safety filter
    rig.loop(max_steps=4).run()
    steps = rig.steps()
    for before, after in zip(steps, steps[1:]):
        assert before.executed[:6] == pytest.approx([0.5 * v for v in before.proposed[:6]])
        moved = [a - b for a, b in zip(after.proprio[:3], before.proprio[:3])]
        assert moved == pytest.approx(before.executed[:3], abs=1e-6)
    assert any(step.executed[1] > 0 for step in steps)  # the check saw motion
