"""`ControlLoop`: the one place where cameras, policy, action queue, safety filter and robot meet.

Each cycle runs on the grid of a `CycleTimer`, in four timed sections:

* observe: one observation from the cameras and the robot's state (proprio);
* infer: synchronous mode queries the policy inside the cycle when no action is queued for the
  slot, with the end of the period as its deadline; asynchronous mode collects a finished query
  from the worker, and starts the next one from this cycle's observation once at most
  ``refill_at`` actions remain queued, with the slot where the queue runs dry as its deadline
  (either deadline moves to a later slot boundary when the query's fixed part, VLM+Prelude,
  cannot meet it: see ``_query_deadline_s``);
* act: this slot's action leaves the queue; the faults decide act, hold or stop; the safety filter
  limits the action;
* send: the action (or a hold) goes to the robot, unless this is a dry run.

Then the step is logged and the timer sleeps until the next free slot. Before the first cycle, a
query on a fresh observation primes the queue (and warms the backend up), so the robot starts with
a plan instead of a wait. Faults and their reactions are listed in `runtime.control.safety`.

Threads: the policy runs on the caller's thread (synchronous mode) or on the executor's single
worker (asynchronous mode). A backend bound to the thread that created it (TensorRT) must then be
created through that same executor (see `load_on`). Tests pass an executor that runs queries
synchronously, finishing them at a chosen fake time.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence, TypeVar

import numpy as np

from rdvla.devices.cameras.base import (
    CameraDisconnectedError,
    CameraEndedError,
    CameraError,
    StaleFrameError,
)
from rdvla.devices.cameras.multi import Observation, SkewError
from rdvla.devices.robots.base import Robot, RobotError, RobotState, RobotTimeoutError
from rdvla.runtime.control.action_queue import BLENDS, ActionQueue, Chunk
from rdvla.runtime.control.records import (
    Decision,
    FaultRecord,
    FrameRecord,
    PrimeRecord,
    QueryRecord,
    RunSummary,
    StartRecord,
    StepRecord,
    floats,
    matrix,
)
from rdvla.runtime.control.run_stats import RunStats
from rdvla.runtime.control.subscriber import Subscriber
from rdvla.runtime.control.pacing import Clock, CycleTimer, Sleep
from rdvla.runtime.control.safety import Fault, FaultMonitor, SafetyConfig, SafetyFilter
from rdvla.runtime.halting import HaltingRule
from rdvla.runtime.horizon import AnyHorizon, FixedHorizon
from rdvla.runtime.normalization import libero_gripper
from rdvla.runtime.policy import PolicyResult

log = logging.getLogger(__name__)

MODES = ("sync", "async")
GRIPPERS = ("libero", "raw")
# Kept free at the end of a period for the safety filter, the robot command and the log line.
RESERVE_FRACTION = 0.1
FIXED_COST_SMOOTHING = 0.3  # weight of the newest query in the running estimate of a query's fixed cost
PRIME_TIMEOUT_S = 10.0  # a live camera may take seconds to deliver its first frame
CAMERA_WAIT_FRACTION = 0.25  # of the period: how long a skewed observation may wait for a laggard
FAULT_LOG_INTERVAL_S = 5.0  # a recurring fault is logged at most this often (with a count), not every step

T = TypeVar("T")


class PolicyLike(Protocol):
    def act(self, instruction: str, proprio: Sequence[float] | np.ndarray, images: Optional[Sequence[np.ndarray]] = None,
            pixel_values: Optional[np.ndarray] = None, halting: Optional[HaltingRule] = None,
            init_latent: Optional[np.ndarray] = None, seed: Optional[int] = None,
            deadline_s: Optional[float] = None) -> PolicyResult: ...


class ObservationSource(Protocol):
    def connect(self) -> None: ...

    def disconnect(self) -> None: ...

    def read(self, timeout_s: float) -> Observation: ...


@dataclass(frozen=True)
class LoopConfig:
    instruction: str
    rate_hz: float = 10.0
    mode: str = "async"
    refill_at: int = 2  # async: start the next query once at most this many actions remain queued
    blend: str = "replace"
    horizon: AnyHorizon = field(default_factory=lambda: FixedHorizon(5))
    halting: Optional[HaltingRule] = None  # None: the bundle's default
    deadline_s: Optional[float] = None  # query deadline; None: derived from the period
    execute: bool = False  # False: a dry run, nothing is sent to the robot
    max_steps: Optional[int] = None
    gripper: str = "libero"  # libero: binarise and invert the gripper dimension (spec 3.6); raw: as predicted
    seed: int = 0  # query n starts from the initial latent of seed + n
    safety: SafetyConfig = field(default_factory=SafetyConfig)

    def __post_init__(self) -> None:
        if not self.instruction.strip():
            raise ValueError("the instruction must not be empty")
        if not (0 < self.rate_hz <= 1000 and math.isfinite(self.rate_hz)):
            raise ValueError(f"the control rate must lie in (0, 1000] Hz, got {self.rate_hz}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose sync or async")
        if self.refill_at < 0:
            raise ValueError(f"refill_at must be >= 0, got {self.refill_at}")
        if self.blend not in BLENDS:
            raise ValueError(f"unknown blend {self.blend!r}; choose one of {', '.join(BLENDS)}")
        if self.gripper not in GRIPPERS:
            raise ValueError(f"unknown gripper post-processing {self.gripper!r}; choose libero or raw")
        if self.deadline_s is not None and not (self.deadline_s > 0 and math.isfinite(self.deadline_s)):
            raise ValueError(f"the query deadline must be a positive number of seconds, got {self.deadline_s}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz


@dataclass
class _Inflight:
    future: "Future[PolicyResult]"
    query_id: int
    obs_slot: int
    submitted: float
    deadline_s: Optional[float]


Faults = list[tuple[Fault, str]]


class StartError(RuntimeError):
    """The loop could not start: no usable first observation, or the first query failed."""


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (CameraError, RobotError)) else f"{type(exc).__name__}: {text}"


def single_worker() -> ThreadPoolExecutor:
    """The inference worker of the asynchronous mode: one thread, so a backend stays on one thread."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="rdvla-inference")


def load_on(executor: Optional[Executor], load: Callable[[], T]) -> T:
    """Run ``load`` on the executor's worker (or here, without one): where the policy will run."""
    return load() if executor is None else executor.submit(load).result()


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
        self.policy = policy
        self.robot = robot
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self._owns_executor = config.mode == "async" and executor is None
        self.executor: Optional[Executor] = single_worker() if self._owns_executor else executor
        if config.mode == "sync" and executor is not None:
            raise ValueError("an executor serves the asynchronous mode only")
        self.run_info = dict(run_info or {})
        self.period = config.period_s
        self.timer = CycleTimer(self.period, clock, sleep)
        self.queue = ActionQueue(config.blend)
        self.safety = SafetyFilter(robot.limits, robot.action_scale, self.period, config.safety)
        self.monitor = FaultMonitor(config.safety)
        self.stats = RunStats()
        self.subscribers: list[Subscriber] = [self.stats, *subscribers]
        self.steps = 0
        self.stop_reason: Optional[str] = None
        self.faulted = False  # stopped because of a fault (the robot is halted, not holding)
        self._next_query = 0
        self._inflight: Optional[_Inflight] = None
        self._missed_before = 0
        self._last_position: Optional[np.ndarray] = None
        self._travel = 0.0
        self._last_t = 0.0
        self._fault_log: dict[Fault, tuple[float, int]] = {}  # last report time, occurrences not reported since
        self._robot_connected = False
        self._fixed_cost_s: Optional[float] = None  # running estimate of a query's time outside the iterations

    # ----- control from outside (signal handlers, other threads) -----------------------------------

    @property
    def stop_requested(self) -> bool:
        return self.stop_reason is not None

    def request_stop(self, reason: str = "stop requested") -> None:
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
                    self.request_stop("steps")
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
        c = self.config
        return {
            "instruction": c.instruction, "rate_hz": c.rate_hz, "mode": c.mode, "refill_at": c.refill_at,
            "blend": c.blend, "horizon": repr(c.horizon), "halting": repr(c.halting) if c.halting else "bundle default",
            "deadline_ms": None if c.deadline_s is None else c.deadline_s * 1e3, "execute": c.execute,
            "gripper": c.gripper, "seed": c.seed, "action_scale": list(self.robot.action_scale),
            "safety": {
                "max_translation_m": self.safety.max_translation, "max_rotation_rad": self.safety.max_rotation,
                "max_linear_accel_mps2": c.safety.max_linear_accel_mps2,
                "max_angular_accel_radps2": c.safety.max_angular_accel_radps2,
                "max_consecutive_faults": c.safety.max_consecutive_faults, "max_reconnect_s": c.safety.max_reconnect_s,
                "workspace_min": list(self.robot.limits.workspace_min), "workspace_max": list(self.robot.limits.workspace_max),
            },
        }

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
        query_id = self._take_query_id()
        start = self.clock()
        try:
            result = load_on(self.executor, lambda: self._infer(observation.images, robot_state.proprio, None, query_id))
        except Exception as exc:
            raise StartError(f"the first query failed: {one_line(exc)}") from exc
        query, faults = self._arrive(result, query_id, 0, 0, start, None)
        if query is None:
            raise StartError(f"the first query failed: {faults[0][1]}")
        log.info("queue primed: %d iterations, %.0f ms (includes the backend's warm-up)", query.iterations, query.latency_ms)
        return PrimeRecord(query, self._frames(observation, observed_at), floats(robot_state.proprio, 7))

    def _cycle(self) -> None:
        slot = self.timer.slot
        started = self.clock()
        faults: Faults = []
        with self.timer.section("observe"):
            observation = self._observe(faults)
            observed_at = self.clock()
            robot_state = self._read_robot_state(faults)
        with self.timer.section("infer"):
            query, proposed, submitted = self._plan(slot, observation, robot_state, faults)
        with self.timer.section("act"):
            decision, executed, limits = self._decide(proposed, robot_state if observation is not None else None, faults)
        with self.timer.section("send"):
            decision = self._send(decision, executed, faults)
        record = self._record(slot, started, observation, observed_at, robot_state, query, submitted, proposed, executed,
                              limits, decision, faults)
        self.steps += 1
        self._judge(faults)
        for subscriber in self.subscribers:
            subscriber.on_step(record)

    # ----- observe ---------------------------------------------------------------------------------

    def _observe(self, faults: Faults) -> Optional[Observation]:
        try:
            return self.cameras.read(self.period * CAMERA_WAIT_FRACTION)
        except CameraEndedError:
            self.request_stop("recording ended")
        except CameraDisconnectedError as exc:
            faults.append((Fault.CAMERA_DISCONNECTED, one_line(exc)))
        except StaleFrameError as exc:
            faults.append((Fault.STALE_OBSERVATION, one_line(exc)))
        except SkewError as exc:
            faults.append((Fault.SKEWED_OBSERVATION, one_line(exc)))
        except CameraError as exc:
            faults.append((Fault.CAMERA_ERROR, one_line(exc)))
        return None

    def _read_robot_state(self, faults: Faults) -> Optional[RobotState]:
        try:
            robot_state = self.robot.read_state()
        except RobotError as exc:
            faults.append((Fault.ROBOT_TIMEOUT if isinstance(exc, RobotTimeoutError) else Fault.ROBOT_ERROR, one_line(exc)))
            return None
        position = robot_state.proprio[:3]
        if self._last_position is not None:
            self._travel += float(np.linalg.norm(position - self._last_position))
        self._last_position = position.copy()
        return robot_state

    # ----- infer -----------------------------------------------------------------------------------

    def _plan(self, slot: int, observation: Optional[Observation], robot_state: Optional[RobotState],
              faults: Faults) -> tuple[Optional[QueryRecord], Optional[np.ndarray], Optional[int]]:
        """Bring the queue up to date for this slot and take the slot's action.

        Returns the query whose chunk arrived in this cycle, the action, and the id of a query
        started from this cycle's observation (asynchronous mode).
        """
        if self.config.mode == "sync":
            query = None
            if observation is not None and robot_state is not None and not self.queue.has(slot):
                query = self._query_now(observation, robot_state, slot, faults)
            return query, self.queue.pop(slot), None
        query = self._collect(slot, faults)
        proposed = self.queue.pop(slot)
        submitted = None
        if observation is not None and robot_state is not None and self._inflight is None \
                and self.queue.remaining(slot) <= self.config.refill_at:
            submitted = self._submit(observation, robot_state, slot)
        return query, proposed, submitted

    def _take_query_id(self) -> int:
        query_id = self._next_query
        self._next_query += 1
        return query_id

    def _infer(self, images: list[np.ndarray], proprio: np.ndarray, deadline_s: Optional[float], query_id: int) -> PolicyResult:
        return self.policy.act(self.config.instruction, proprio, images=images, halting=self.config.halting,
                               seed=self.config.seed + query_id, deadline_s=deadline_s)

    def _query_deadline_s(self, slots_ahead: int) -> float:
        """The query's deadline: the end of the slot ``slots_ahead`` from this one, less a reserve.

        A chunk is only collected at a slot boundary, so a deadline the query's fixed part
        (preprocessing, VLM+Prelude) cannot meet anyway would cut the recurrent iterations for
        nothing: the deadline then moves to the first boundary the fixed part can meet.
        """
        if self.config.deadline_s is not None:
            return self.config.deadline_s
        base = self.timer.elapsed() + RESERVE_FRACTION * self.period
        slots = max(1, slots_ahead)
        while slots * self.period - base <= (self._fixed_cost_s or 0.0):
            slots += 1
        return slots * self.period - base

    def _query_now(self, observation: Observation, robot_state: RobotState, slot: int, faults: Faults) -> Optional[QueryRecord]:
        query_id = self._take_query_id()
        deadline = self._query_deadline_s(1)
        start = self.clock()
        try:
            result = self._infer(observation.images, robot_state.proprio, deadline, query_id)
        except Exception as exc:  # any failure of a query is a fault of this step, not of the loop
            faults.append((Fault.INFERENCE_ERROR, f"query {query_id}: {one_line(exc)}"))
            return None
        query, arrival_faults = self._arrive(result, query_id, slot, slot, start, deadline)
        faults.extend(arrival_faults)
        return query

    def _submit(self, observation: Observation, robot_state: RobotState, slot: int) -> int:
        assert self.executor is not None
        query_id = self._take_query_id()
        deadline = self._query_deadline_s(self.queue.remaining(slot) + 1)
        future = self.executor.submit(self._infer, observation.images, robot_state.proprio.copy(), deadline, query_id)
        self._inflight = _Inflight(future, query_id, slot, self.clock(), deadline)
        return query_id

    def _collect(self, slot: int, faults: Faults) -> Optional[QueryRecord]:
        inflight = self._inflight
        if inflight is None or not inflight.future.done():
            return None
        self._inflight = None
        try:
            result = inflight.future.result()
        except Exception as exc:
            faults.append((Fault.INFERENCE_ERROR, f"query {inflight.query_id}: {one_line(exc)}"))
            return None
        query, arrival_faults = self._arrive(result, inflight.query_id, inflight.obs_slot, slot, inflight.submitted,
                                             inflight.deadline_s)
        faults.extend(arrival_faults)
        return query

    def _arrive(self, result: PolicyResult, query_id: int, obs_slot: int, slot: int, submitted: float,
                deadline_s: Optional[float]) -> tuple[Optional[QueryRecord], Faults]:
        """Queue a finished query's chunk; the query's log entry, or the fault that kept it out."""
        latency_ms = (self.clock() - submitted) * 1e3
        actions = np.asarray(result.actions, np.float64)
        if self.config.gripper == "libero":
            actions = libero_gripper(actions).astype(np.float64)
        if not np.all(np.isfinite(actions)):
            return None, [(Fault.NONFINITE_ACTION, f"query {query_id} returned non-finite actions; chunk rejected")]
        fixed = (result.timings_ms.get("total", 0.0) - result.timings_ms.get("iterations", 0.0)) / 1e3
        previous = self._fixed_cost_s
        self._fixed_cost_s = fixed if previous is None else previous + FIXED_COST_SMOOTHING * (fixed - previous)
        horizon = self.config.horizon.actions_to_execute(result.iterations, actions.shape[0])
        pushed = self.queue.push(Chunk(actions, obs_slot, horizon), slot)
        return QueryRecord(
            id=query_id, obs_slot=obs_slot, iterations=result.iterations, stopped_by=result.stopped_by,
            deadline_ms=None if deadline_s is None else round(deadline_s * 1e3, 3),
            deltas=floats(result.deltas, 8), timings_ms={k: round(v, 3) for k, v in result.timings_ms.items()},
            latency_ms=round(latency_ms, 3), horizon=horizon, queued=pushed.queued, stale=pushed.stale,
            blended=pushed.blended, actions=matrix(actions),
        ), []

    # ----- act and send ----------------------------------------------------------------------------

    def _decide(self, proposed: Optional[np.ndarray], robot_state: Optional[RobotState],
                faults: Faults) -> tuple[Decision, Optional[np.ndarray], tuple[str, ...]]:
        if any(fault in (Fault.ROBOT_TIMEOUT, Fault.ROBOT_ERROR) for fault, _ in faults):
            return Decision.STOP, None, ()
        if faults or robot_state is None:  # no robot state here also means no observation (a recording that ended)
            return Decision.HOLD, None, ()
        if proposed is None:
            faults.append((Fault.STARVED, "no action queued for this slot (inference slower than the queue drains)"))
            return Decision.HOLD, None, ()
        filtered = self.safety.apply(proposed, robot_state.proprio[:3])
        if filtered.action is None:
            faults.append((Fault.NONFINITE_ACTION, filtered.rejected or "action rejected"))
            return Decision.HOLD, None, ()
        if self.timer.late():
            faults.append((Fault.OVERRUN, f"cycle at {self.timer.elapsed() * 1e3:.1f} ms of a {self.period * 1e3:.1f} ms period; "
                                          "a late action is not sent"))
            return Decision.HOLD, None, ()
        return (Decision.ACT if self.config.execute else Decision.DRY_RUN), filtered.action, filtered.limits

    def _send(self, decision: Decision, action: Optional[np.ndarray], faults: Faults) -> Decision:
        if decision is not Decision.ACT:
            if decision is Decision.HOLD:
                self.safety.at_rest()
                if self.config.execute:
                    return self._command(lambda: self.robot.hold(), Decision.HOLD, faults)
            return decision
        assert action is not None
        return self._command(lambda: self.robot.send_action(action), Decision.ACT, faults)

    def _command(self, command: Callable[[], RobotState], decision: Decision, faults: Faults) -> Decision:
        try:
            command()
        except RobotError as exc:
            faults.append((Fault.ROBOT_TIMEOUT if isinstance(exc, RobotTimeoutError) else Fault.ROBOT_ERROR, one_line(exc)))
            self.safety.at_rest()
            return Decision.STOP
        return decision

    # ----- bookkeeping -----------------------------------------------------------------------------

    def _judge(self, faults: Faults) -> None:
        now = self.clock()
        reason = self.monitor.update({fault for fault, _ in faults}, now)
        for fault, detail in faults:
            last, unreported = self._fault_log.get(fault, (-math.inf, 0))
            if now - last >= FAULT_LOG_INTERVAL_S:
                since = f" (and {unreported} more in the last {now - last:.0f} s)" if unreported else ""
                log.warning("step %d: %s: %s%s", self.steps - 1, fault.value, detail, since)
                self._fault_log[fault] = (now, 0)
            else:
                self._fault_log[fault] = (last, unreported + 1)
        if reason is not None:
            log.error("stopping: %s", reason)
            self.stop_reason = reason
            self.faulted = True

    def _record(self, slot: int, started: float, observation: Optional[Observation], observed_at: float,
                robot_state: Optional[RobotState], query: Optional[QueryRecord], submitted: Optional[int], proposed: Optional[np.ndarray],
                executed: Optional[np.ndarray], limits: tuple[str, ...], decision: Decision, faults: Faults) -> StepRecord:
        self._last_t = started - self.timer.due(0)
        return StepRecord(
            step=self.steps, slot=slot, t=round(self._last_t, 6), missed_slots=self._missed_before,
            frames=[] if observation is None else self._frames(observation, observed_at),
            skew_ms=None if observation is None else round(observation.skew_s * 1e3, 3),
            proprio=None if robot_state is None else floats(robot_state.proprio, 7), instruction=self.config.instruction,
            query=query, submitted=submitted, queue=self.queue.remaining(slot), inflight=self._inflight is not None,
            proposed=None if proposed is None else floats(proposed), executed=None if executed is None else floats(executed),
            limits=list(limits), decision=decision, faults=[FaultRecord(fault, detail) for fault, detail in faults],
            sections_ms={name: round(seconds * 1e3, 3) for name, seconds in self.timer.current.items()},
        )

    @staticmethod
    def _frames(observation: Observation, observed_at: float) -> list[FrameRecord]:
        """Which recorded frame each camera gave (what replay and calibration look up), and its age."""
        return [FrameRecord(role, frame.frame_number, frame.timestamp_ms, round(frame.age_s(observed_at) * 1e3, 3))
                for role, frame in zip(observation.roles, observation.frames)]

    def _shutdown(self) -> RunSummary:
        if self.executor is not None and self._owns_executor:
            self.executor.shutdown(wait=True, cancel_futures=True)
        elif self._inflight is not None:
            self._inflight.future.cancel()
        self._inflight = None
        if self.config.execute and self._robot_connected:
            self._final_command()
        for close in (self.cameras.disconnect, self.robot.close):
            try:
                close()
            except Exception as exc:  # closing must not hide the summary
                log.warning("while closing: %s", one_line(exc))
        reason = self.stop_reason or "stop requested"
        # The steps covered the slots from 0 to the last one's end.
        duration = self._last_t + self.period if self.steps else 0.0
        summary = self.stats.summary(self.timer.summary(), self.monitor.totals, duration_s=duration,
                                     rate_hz=self.config.rate_hz, stop_reason=reason, faulted=self.faulted,
                                     execute=self.config.execute, robot_travel_m=self._travel)
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
