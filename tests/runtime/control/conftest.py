"""A robot rig made of fakes on a fake clock: cameras, policy, worker and robot with scripted faults.

Time moves only when something says so: the loop's sleep advances the clock, the fake policy
advances it by its latency when it runs inline (synchronous mode), and the deferred executor makes a
query finish at a chosen fake time, so every asynchronous test is deterministic.
"""

from __future__ import annotations

import collections
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Deque, Optional, Sequence

import numpy as np
import pytest

from rdvla.devices.cameras.base import Frame
from rdvla.devices.cameras.multi import Observation
from rdvla.devices.robots.base import RobotLimits, RobotState
from rdvla.devices.robots.sim import SimRobot
from rdvla.devices.testing import FakeClock
from rdvla.runtime.control.records import LogRecord, StepRecord
from rdvla.runtime.control.step_log import StepLog, read_log
from rdvla.runtime.control.subscriber import Subscriber
from rdvla.runtime.control.config import LoopConfig
from rdvla.runtime.control.loop import ControlLoop
from rdvla.runtime.horizon import FixedHorizon
from rdvla.runtime.normalization import robot_ready
from rdvla.runtime.policy import PolicyResult

RATE_HZ = 10.0
PERIOD = 1.0 / RATE_HZ
LIMITS = RobotLimits(workspace_min=(-1.0, -1.0, -1.0), workspace_max=(1.0, 1.0, 1.0), max_translation_m=0.05,
                     max_rotation_rad=0.5, max_linear_speed_mps=1.0, max_angular_speed_radps=5.0)


def chunk_for(query: int) -> np.ndarray:
    """Action i of query q carries (q, i) in its first two dimensions, small enough to pass the filter."""
    actions = np.zeros((8, 7))
    actions[:, 0] = 0.01 * query
    actions[:, 1] = 0.001 * np.arange(8)
    actions[:, 6] = 0.9  # LIBERO post-processing turns it into -1 (open)
    return actions


def decode(action: list[float]) -> tuple[int, int]:
    return round(action[0] / 0.01), round(action[1] / 0.001)


class FakeCameras:
    """Two cameras read as one; ``faults[read_index]`` is raised instead of an observation."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.reads = 0
        self.faults: dict[int, Exception] = {}
        self.connected = False
        self.image = np.zeros((8, 8, 3), np.uint8)

    def connect(self) -> None:
        self.connected = True

    def disconnect(self) -> None:
        self.connected = False

    def read(self, timeout_s: float) -> Observation:
        index = self.reads
        self.reads += 1
        if index in self.faults:
            raise self.faults[index]
        now = self.clock()
        frames = tuple(Frame(self.image, None, 0.0, 1000.0 * now, "global_time", index, now, role)
                       for role in ("third_person", "wrist"))
        return Observation(frames, ("third_person", "wrist"), 0.0, "device")


class FakePolicy:
    """Returns ``chunk_for(call index)``; costs ``latency_s`` of fake time when it runs inline."""

    def __init__(self, clock: FakeClock, latency_s: float = 0.02) -> None:
        self.clock = clock
        self.latency_s = latency_s
        self.count = 0
        self.calls: Deque[dict[str, Any]] = collections.deque(maxlen=100)  # bounded: long runs measure memory
        self.errors: set[int] = set()
        self.nonfinite: set[int] = set()

    def act(self, instruction: str, proprio: Any, images: Any = None, pixel_values: Any = None, halting: Any = None,
            init_latent: Any = None, seed: Optional[int] = None, deadline_s: Optional[float] = None,
            gripper: str = "raw") -> PolicyResult:
        index = self.count
        self.count += 1
        self.calls.append({"instruction": instruction, "seed": seed, "deadline_s": deadline_s, "images": len(images),
                           "gripper": gripper})
        self.clock.advance(self.latency_s)
        if index in self.errors:
            raise RuntimeError(f"engine failure in query {index}")
        actions = chunk_for(index)
        if index in self.nonfinite:
            actions[3, 2] = np.nan
        return PolicyResult(actions, robot_ready(actions, gripper), 4, deltas=[float("nan"), 1e-2, 1e-3, 1e-4],
                            timings_ms={"vlm_prelude": 1e3 * self.latency_s, "total": 1e3 * self.latency_s},
                            stopped_by="converged")


class _DeferredFuture:
    def __init__(self, clock: FakeClock, ready_at: float, value: Any = None, error: Optional[BaseException] = None) -> None:
        self.clock, self.ready_at, self.value, self.error = clock, ready_at, value, error
        self.cancelled = False

    def done(self) -> bool:
        return self.clock() >= self.ready_at

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class DeferredExecutor(Executor):
    """The inference worker, made deterministic: a job runs at once and is reported done ``latency_s``
    of fake time after its submission (give the policy no latency of its own: the worker's time is
    not the loop's)."""

    def __init__(self, clock: FakeClock, latency_s: float) -> None:
        self.clock, self.latency_s = clock, latency_s
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        start = self.clock()
        try:
            value, error = fn(*args, **kwargs), None
        except Exception as exc:
            value, error = None, exc
        return _DeferredFuture(self.clock, start + self.latency_s, value, error)


class ScriptedRobot(SimRobot):
    """A SimRobot whose calls can fail or take time; hooks see the call index."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(LIMITS, action_scale=(1.0, 1.0), clock=clock)
        self.fake_clock = clock
        self.sends = 0
        self.reads = 0
        self.holds = 0
        self.stops = 0
        self.send_faults: dict[int, Exception] = {}
        self.slow_reads: dict[int, float] = {}  # read index -> seconds the read takes
        self.on_send: Optional[Callable[[int], None]] = None

    def read_state(self) -> RobotState:
        index = self.reads
        self.reads += 1
        self.fake_clock.advance(self.slow_reads.get(index, 0.0))
        return super().read_state()

    def send_action(self, action: np.ndarray) -> RobotState:
        index = self.sends
        self.sends += 1
        if self.on_send is not None:
            self.on_send(index)
        if index in self.send_faults:
            raise self.send_faults[index]
        return super().send_action(action)

    def hold(self) -> RobotState:
        self.holds += 1
        return super().hold()

    def stop(self) -> RobotState:
        self.stops += 1
        return super().stop()

    def snapshot(self) -> RobotState:
        """The state, connected or not (the loop closes the robot when it ends)."""
        return self._state()


@dataclass
class Rig:
    tmp: Path
    clock: FakeClock = field(default_factory=FakeClock)
    cameras: FakeCameras = field(init=False)
    policy: FakePolicy = field(init=False)
    robot: ScriptedRobot = field(init=False)
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.cameras = FakeCameras(self.clock)
        self.policy = FakePolicy(self.clock)
        self.robot = ScriptedRobot(self.clock)
        self.log_path = self.tmp / "steps.jsonl"

    def config(self, **overrides: Any) -> LoopConfig:
        base = LoopConfig(instruction="pick up the cube", rate_hz=RATE_HZ, mode="sync", horizon=FixedHorizon(5),
                          execute=True, max_steps=20)
        return replace(base, **overrides)

    def loop(self, executor: Optional[Executor] = None, subscribers: Sequence[Subscriber] = (), **overrides: Any) -> ControlLoop:
        return ControlLoop(self.cameras, self.policy, self.robot, self.config(**overrides), clock=self.clock,
                           sleep=self.clock.advance, executor=executor, subscribers=[StepLog(self.log_path), *subscribers])

    def records(self) -> list[LogRecord]:
        return read_log(self.log_path)

    def steps(self) -> list[StepRecord]:
        return [r for r in self.records() if isinstance(r, StepRecord)]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)
