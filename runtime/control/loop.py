"""`ControlLoop`: paces the control cycle; the one place where cameras, chunk broker, safety filter and robot meet.

Each cycle runs on the grid of a `CycleTimer`, in four timed sections:

* observe: one observation from the cameras and the robot's state (proprio);
* infer: the chunk broker (`runtime.control.broker`) brings the action queue up to date and hands
  over the slot's action, querying the policy when its mode says so;
* act: the faults decide act, hold or stop; the safety filter limits the action;
* send: the action (or a hold) goes to the robot, unless this is a dry run.

Then the cycle is recorded (a `StepRecord` to the subscribers), the faults it recorded in the run's
`FaultLog` are judged, the robot says whether its episode is done (`Robot.episode_status`: a robot
that simulates a task ends the run with `STOP_EPISODE_DONE` and its success), and the timer sleeps
until the next free slot. Before the first cycle, a query on a fresh observation primes the queue
(and warms the backend up), so the robot starts with a plan instead of a wait. Faults and their
reactions are listed in `runtime.control.faults`.

Time passes only through the ``clock`` and ``sleep`` given: wall-clock on the robot, a
`pacing.SteppedClock` for a simulator stepped once per action (no real-time wait). A loop runs one
episode; a new one per episode around the same policy costs only its priming query.
"""

from __future__ import annotations

import logging
import signal
import time
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

import numpy as np

from rdvla.devices.cameras.base import CameraDisconnectedError, CameraEndedError, CameraError, StaleFrameError
from rdvla.devices.cameras.multi import Observation, SkewError
from rdvla.devices.robots.base import EpisodeStatus, Robot, RobotError, RobotState, RobotTimeoutError
from rdvla.runtime.control.broker import ChunkBroker, PolicyLike, QueryInputs, StartError
from rdvla.runtime.control.config import LoopConfig
from rdvla.runtime.control.faults import STOP_AT_ONCE, Fault, FaultLog, one_line
from rdvla.runtime.control.pacing import Clock, CycleTimer, Sleep
from rdvla.runtime.control.records import (
    STOP_EPISODE_DONE,
    STOP_RECORDING_ENDED,
    STOP_REQUESTED,
    STOP_STEPS,
    Decision,
    FaultRecord,
    FrameRecord,
    PrimeRecord,
    RunSummary,
    StartRecord,
    StepRecord,
    floats,
)
from rdvla.runtime.control.run_stats import RunStats
from rdvla.runtime.control.safety import SafetyFilter
from rdvla.runtime.control.subscriber import Subscriber

log = logging.getLogger(__name__)

PRIME_TIMEOUT_S = 10.0  # a live camera may take seconds to deliver its first frame
CAMERA_WAIT_FRACTION = 0.25  # of the period: how long a skewed observation may wait for a laggard


class ObservationSource(Protocol):
    def connect(self) -> None: ...

    def disconnect(self) -> None: ...

    def read(self, timeout_s: float) -> Observation: ...


class ControlLoop:
    """Runs one episode: ``run()`` connects the devices, loops until a stop, and returns the summary."""

    def __init__(
        self,
        cameras: ObservationSource,
        policy: PolicyLike,
        robot: Robot,
        config: LoopConfig,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        executor: Optional[Executor] = None,
        subscribers: Sequence[Subscriber] = (),
        run_info: Optional[dict[str, Any]] = None,
    ) -> None:
        self.cameras = cameras
        self.robot = robot
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.run_info = dict(run_info or {})
        self.period = config.period_s
        self.timer = CycleTimer(self.period, clock, sleep)
        self.faults = FaultLog(config.safety)
        self.broker = ChunkBroker(policy, config, self.timer, self.faults, executor)
        self.safety = SafetyFilter(robot.limits, robot.action_scale, self.period, config.safety)
        self.stats = RunStats()
        self.subscribers: list[Subscriber] = [self.stats, *subscribers]
        self.steps = 0
        self.stop_reason: Optional[str] = None
        self.faulted = False  # stopped because of a fault (the robot is halted, not holding)
        self.episode = EpisodeStatus()
        self._missed_before = 0
        self._last_position: Optional[np.ndarray] = None
        self._travel = 0.0
        self._last_t = 0.0
        self._robot_connected = False

    # ----- control from outside (signal handlers, other threads) -----------------------------------

    @property
    def stop_requested(self) -> bool:
        return self.stop_reason is not None

    def request_stop(self, reason: str = STOP_REQUESTED) -> None:
        """Finish the current cycle, then stop in a controlled way (the robot holds, logs are flushed)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    # ----- the run ---------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        error: Optional[BaseException] = None
        try:
            self.cameras.connect()
            self.robot.connect()
            self._robot_connected = True
            start = StartRecord(self.run_info, self._settings(), self._prime())
            for subscriber in self.subscribers:
                subscriber.on_start(start)
            self.timer.start()
            while True:
                self._cycle()
                if self.config.max_steps is not None and self.steps >= self.config.max_steps:
                    self.request_stop(STOP_STEPS)
                if self.stop_requested:
                    break
                self._missed_before = self.timer.finish().missed_slots
        except KeyboardInterrupt as exc:
            self._stop_now("interrupted")
            error = exc
        except Exception as exc:
            self._stop_now(f"error: {one_line(exc)}")
            error = exc
        finally:
            summary = self._shutdown()
        if error is not None:
            raise error
        return summary

    def _settings(self) -> dict[str, Any]:
        return {**self.config.settings(), "action_scale": list(self.robot.action_scale), "safety": self.safety.settings()}

    def _stop_now(self, reason: str) -> None:
        self.stop_reason = reason
        self.faulted = True

    def _prime(self) -> PrimeRecord:
        """A first query from a fresh observation, before the clock starts; fills the queue for slot 0."""
        deadline = self.clock() + PRIME_TIMEOUT_S
        while True:
            try:
                observation = self.cameras.read(self.period * CAMERA_WAIT_FRACTION)
                break
            except CameraEndedError:
                raise
            except CameraError as exc:
                if self.clock() >= deadline:
                    raise StartError(f"no usable observation within {PRIME_TIMEOUT_S:.0f} s: {one_line(exc)}") from exc
                self.sleep(min(0.05, self.period))
        observed_at = self.clock()
        robot_state = self.robot.read_state()
        query = self.broker.prime(QueryInputs(observation.images, robot_state.proprio))
        log.info("queue primed: %d iterations, %.0f ms (includes the backend's warm-up)", query.iterations, query.latency_ms)
        return PrimeRecord(query, self._frames(observation, observed_at), floats(robot_state.proprio, 7))

    def _cycle(self) -> None:
        slot = self.timer.slot
        started = self.clock()
        with self.timer.section("observe"):
            observation = self._observe()
            observed_at = self.clock()
            robot_state = self._read_robot_state()
        with self.timer.section("infer"):
            inputs = None if observation is None or robot_state is None else QueryInputs(observation.images, robot_state.proprio)
            planned = self.broker.action_for(slot, inputs)
        with self.timer.section("act"):
            decision, executed, limits = self._decide(planned.action, robot_state if observation is not None else None)
        with self.timer.section("send"):
            decision = self._send(decision, executed)
        self._last_t = started - self.timer.due(0)
        record = StepRecord(
            step=self.steps, slot=slot, t=round(self._last_t, 6), missed_slots=self._missed_before,
            frames=[] if observation is None else self._frames(observation, observed_at),
            skew_ms=None if observation is None else round(observation.skew_s * 1e3, 3),
            proprio=None if robot_state is None else floats(robot_state.proprio, 7), instruction=self.config.instruction,
            query=planned.arrived, submitted=planned.submitted, queue=self.broker.queued_after(slot),
            inflight=self.broker.inflight, proposed=None if planned.action is None else floats(planned.action),
            executed=None if executed is None else floats(executed), limits=list(limits), decision=decision,
            faults=[FaultRecord(fault, detail) for fault, detail in self.faults.current],
            sections_ms={name: round(seconds * 1e3, 3) for name, seconds in self.timer.current.items()},
        )
        self.steps += 1
        reason = self.faults.end_cycle(self.steps - 1, self.clock())
        if reason is not None:
            self._stop_now(reason)
        self._check_episode()
        for subscriber in self.subscribers:
            subscriber.on_step(record)

    def _check_episode(self) -> None:
        self.episode = self.robot.episode_status()
        if self.episode.done:
            self.request_stop(STOP_EPISODE_DONE)

    # ----- observe ---------------------------------------------------------------------------------

    def _observe(self) -> Optional[Observation]:
        try:
            return self.cameras.read(self.period * CAMERA_WAIT_FRACTION)
        except CameraEndedError:
            self.request_stop(STOP_RECORDING_ENDED)
        except CameraDisconnectedError as exc:
            self.faults.add(Fault.CAMERA_DISCONNECTED, one_line(exc))
        except StaleFrameError as exc:
            self.faults.add(Fault.STALE_OBSERVATION, one_line(exc))
        except SkewError as exc:
            self.faults.add(Fault.SKEWED_OBSERVATION, one_line(exc))
        except CameraError as exc:
            self.faults.add(Fault.CAMERA_ERROR, one_line(exc))
        return None

    def _read_robot_state(self) -> Optional[RobotState]:
        try:
            robot_state = self.robot.read_state()
        except RobotError as exc:
            self._robot_failed(exc)
            return None
        position = robot_state.proprio[:3]
        if self._last_position is not None:
            self._travel += float(np.linalg.norm(position - self._last_position))
        self._last_position = position.copy()
        return robot_state

    # ----- act and send ----------------------------------------------------------------------------

    def _decide(self, proposed: Optional[np.ndarray],
                robot_state: Optional[RobotState]) -> tuple[Decision, Optional[np.ndarray], tuple[str, ...]]:
        if self.faults.has(STOP_AT_ONCE):
            return Decision.STOP, None, ()
        if self.faults or robot_state is None:  # no robot state here also means no observation (a recording that ended)
            return Decision.HOLD, None, ()
        if proposed is None:
            self.faults.add(Fault.STARVED, "no action queued for this slot (inference slower than the queue drains)")
            return Decision.HOLD, None, ()
        filtered = self.safety.apply(proposed, robot_state.proprio[:3])
        if filtered.action is None:
            self.faults.add(Fault.NONFINITE_ACTION, filtered.rejected or "action rejected")
            return Decision.HOLD, None, ()
        if self.timer.late():
            self.faults.add(Fault.OVERRUN, f"cycle at {self.timer.elapsed() * 1e3:.1f} ms of a {self.period * 1e3:.1f} ms period; "
                                           "a late action is not sent")
            return Decision.HOLD, None, ()
        return (Decision.ACT if self.config.execute else Decision.DRY_RUN), filtered.action, filtered.limits

    def _send(self, decision: Decision, action: Optional[np.ndarray]) -> Decision:
        if decision is not Decision.ACT:
            if decision is Decision.HOLD:
                self.safety.at_rest()
                if self.config.execute:
                    return self._command(lambda: self.robot.hold(), Decision.HOLD)
            return decision
        assert action is not None
        return self._command(lambda: self.robot.send_action(action), Decision.ACT)

    def _command(self, command: Callable[[], RobotState], decision: Decision) -> Decision:
        try:
            command()
        except RobotError as exc:
            self._robot_failed(exc)
            self.safety.at_rest()
            return Decision.STOP
        return decision

    def _robot_failed(self, exc: RobotError) -> None:
        self.faults.add(Fault.ROBOT_TIMEOUT if isinstance(exc, RobotTimeoutError) else Fault.ROBOT_ERROR, one_line(exc))

    # ----- bookkeeping -----------------------------------------------------------------------------

    @staticmethod
    def _frames(observation: Observation, observed_at: float) -> list[FrameRecord]:
        """Which recorded frame each camera gave (what replay and calibration look up), and its age."""
        return [FrameRecord(role, frame.frame_number, frame.timestamp_ms, round(frame.age_s(observed_at) * 1e3, 3))
                for role, frame in zip(observation.roles, observation.frames)]

    def _shutdown(self) -> RunSummary:
        self.broker.close()
        if self.config.execute and self._robot_connected:
            self._final_command()
        for close in (self.cameras.disconnect, self.robot.close):
            try:
                close()
            except Exception as exc:  # closing must not hide the summary
                log.warning("while closing: %s", one_line(exc))
        reason = self.stop_reason or STOP_REQUESTED
        # The steps covered the slots from 0 to the last one's end.
        duration = self._last_t + self.period if self.steps else 0.0
        summary = self.stats.summary(self.timer.summary(), self.faults.totals, duration_s=duration,
                                     rate_hz=self.config.rate_hz, stop_reason=reason, faulted=self.faulted,
                                     execute=self.config.execute, robot_travel_m=self._travel,
                                     success=self.episode.success)
        for subscriber in self.subscribers:
            subscriber.on_end(summary)
        return summary

    def _final_command(self) -> None:
        """A normal end leaves the arm holding its pose; a fault stop halts it."""
        try:
            if self.faulted:
                self.robot.stop()
            else:
                self.robot.hold()
        except RobotError as exc:
            log.error("final robot command failed: %s", one_line(exc))


@contextmanager
def stop_on_signals(loop: ControlLoop, signums: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """First SIGINT/SIGTERM: the loop finishes its cycle and stops in a controlled way (the robot
    holds, logs are flushed). A second one: KeyboardInterrupt at once, and the loop halts the robot."""

    def handler(signum: int, _frame: object) -> None:
        if loop.stop_requested:
            raise KeyboardInterrupt
        loop.request_stop(f"signal {signal.Signals(signum).name}")

    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
