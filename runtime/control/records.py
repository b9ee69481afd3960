"""The records of a run, typed, and their JSON form: the one place a record is written or read.

A run's step log (`rdvla run --log PATH`, or DIR/steps.jsonl of a recorded episode) is one JSON
object per line, in this order:

* `StartRecord` (`"type": "start"`): what the caller says about the run (`info`: bundle, backend,
  precision, cameras, robot), the loop's `settings`, and `prime`: the query that filled the queue
  before the first cycle, with the frames and proprio it was computed from.
* `StepRecord` (`"type": "step"`), one per control cycle: `step` (cycle count from 0), `slot` (grid
  slot; `slot - step` slots were missed so far), `t` (seconds since the start), `missed_slots`
  (skipped just before this cycle), `frames` (per camera: role, frame_number, timestamp_ms, age_ms),
  `skew_ms`, `proprio` (8 values read from the robot), `instruction`, `query` (a chunk that arrived
  in this cycle, else null), `submitted` (id of a query started from this cycle's observation),
  `queue` (actions left for later slots), `inflight`, `proposed` (the queued action for this slot,
  policy units), `executed` (after the safety filter: metres, radians and the gripper command, as
  the robot takes it), `limits` (the limits that changed it),
  `decision`, `faults` and `sections_ms` (observe, infer, act, send).
* `RunSummary` (`"type": "summary"`): why the run stopped (`stop_reason`: one of the `STOP_*`
  reasons below, a fault's reason, a signal, "interrupted" or "error: ..."), rate achieved,
  latencies, overruns, queue, iterations, faults, and `success` (whether a robot that simulates a
  task succeeded; null for a robot without episodes, and in logs written before the field);
  `rdvla run` prints it.

To rebuild the policy inputs of a query, take the step whose `slot` equals the query's `obs_slot`
(for the priming query: the start record's `prime`): its `frames` name each camera's frame in the
recording, and its `proprio` and `instruction` complete the inputs (`episode.read_episode`).
JSON has no NaN: non-finite numbers are written as null.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping, Optional, Union

import numpy as np

from rdvla.runtime.control.pacing import Stats
from rdvla.runtime.control.faults import Fault


STOP_STEPS = "steps"  # the configured number of cycles ran
STOP_RECORDING_ENDED = "recording ended"  # a replayed recording has no more frames
STOP_EPISODE_DONE = "episode_done"  # the robot's episode finished (task succeeded or step limit reached)
STOP_REQUESTED = "stop requested"  # request_stop() without a reason


class Decision(str, enum.Enum):
    """What a control step did with its action."""

    ACT = "act"  # sent to the robot
    DRY_RUN = "dry_run"  # computed and filtered, not sent: the run does not execute
    HOLD = "hold"  # no usable action (a fault, or nothing queued): the arm holds its pose
    STOP = "stop"  # the robot failed: the arm is halted

    @property
    def acted(self) -> bool:
        """An action was produced for this step (sent, or not sent only because the run does not execute)."""
        return self in (Decision.ACT, Decision.DRY_RUN)


def floats(values: Iterable[float] | np.ndarray, digits: int = 6) -> list[Optional[float]]:
    """JSON-safe numbers: rounded, NaN and infinities as null."""
    return [round(float(v), digits) if math.isfinite(v) else None for v in np.asarray(values, np.float64).ravel()]


def matrix(values: np.ndarray, digits: int = 6) -> list[list[Optional[float]]]:
    return [floats(row, digits) for row in np.asarray(values, np.float64)]


def _stats_map(data: Mapping[str, Mapping[str, Any]]) -> dict[str, Stats]:
    return {name: Stats.from_json(value) for name, value in data.items()}


@dataclass(frozen=True)
class FrameRecord:
    """Which frame a camera gave an observation, and how old it was when the cycle read it."""

    role: str
    frame_number: int
    timestamp_ms: float
    age_ms: float


@dataclass(frozen=True)
class FaultRecord:
    kind: Fault
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "detail": self.detail}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FaultRecord":
        return cls(Fault(data["kind"]), data["detail"])


@dataclass(frozen=True)
class QueryRecord:
    """A policy query whose chunk reached the action queue."""

    id: int
    obs_slot: int  # the slot whose observation it was computed from
    iterations: int
    stopped_by: str  # fixed | converged | max_iterations | deadline
    deadline_ms: Optional[float]
    deltas: list[Optional[float]]
    timings_ms: dict[str, float]  # per stage of Policy.act
    latency_ms: float  # from submission to arrival
    horizon: int  # actions of the chunk to execute
    queued: int
    stale: int  # actions for slots already past when the chunk arrived
    blended: int
    actions: list[list[Optional[float]]]  # (8, 7) after un-normalisation and gripper post-processing

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "QueryRecord":
        return cls(**data)


@dataclass(frozen=True)
class PrimeRecord:
    """The query that filled the queue before the first cycle, and its inputs."""

    query: QueryRecord
    frames: list[FrameRecord]
    proprio: list[Optional[float]]

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query.to_json(), "frames": [_frame_json(f) for f in self.frames], "proprio": self.proprio}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "PrimeRecord":
        return cls(QueryRecord.from_json(data["query"]), [FrameRecord(**f) for f in data["frames"]], data["proprio"])


def _frame_json(frame: FrameRecord) -> dict[str, Any]:
    return {f.name: getattr(frame, f.name) for f in fields(frame)}


@dataclass(frozen=True)
class StartRecord:
    info: dict[str, Any]  # what the caller says about the run: bundle, backend, precision, cameras, robot
    settings: dict[str, Any]  # the loop's configuration as it ran
    prime: PrimeRecord

    def to_json(self) -> dict[str, Any]:
        return {"type": "start", "info": self.info, "settings": self.settings, "prime": self.prime.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "StartRecord":
        return cls(dict(data["info"]), dict(data["settings"]), PrimeRecord.from_json(data["prime"]))


@dataclass(frozen=True)
class StepRecord:
    step: int
    slot: int
    t: float
    missed_slots: int
    frames: list[FrameRecord]
    skew_ms: Optional[float]
    proprio: Optional[list[Optional[float]]]
    instruction: str
    query: Optional[QueryRecord]
    submitted: Optional[int]
    queue: int
    inflight: bool
    proposed: Optional[list[Optional[float]]]
    executed: Optional[list[Optional[float]]]
    limits: list[str]
    decision: Decision
    faults: list[FaultRecord]
    sections_ms: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "step"}
        for f in fields(self):
            out[f.name] = getattr(self, f.name)
        out["frames"] = [_frame_json(frame) for frame in self.frames]
        out["query"] = None if self.query is None else self.query.to_json()
        out["decision"] = self.decision.value
        out["faults"] = [fault.to_json() for fault in self.faults]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "StepRecord":
        values = {f.name: data[f.name] for f in fields(cls)}
        values["frames"] = [FrameRecord(**frame) for frame in data["frames"]]
        values["query"] = None if data["query"] is None else QueryRecord.from_json(data["query"])
        values["decision"] = Decision(data["decision"])
        values["faults"] = [FaultRecord.from_json(fault) for fault in data["faults"]]
        return cls(**values)


@dataclass(frozen=True)
class IterationSummary:
    n: int
    mean: Optional[float] = None
    min: Optional[int] = None
    max: Optional[int] = None
    histogram: dict[str, int] = field(default_factory=dict)  # iterations -> queries
    stopped_by: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    stop_reason: str
    stopped_on_fault: bool
    steps: int
    duration_s: float
    target_rate_hz: float
    achieved_rate_hz: Optional[float]
    execute: bool
    acted: int  # steps whose action was sent (or would have been, had the run executed)
    holds: int
    limited: int  # steps where the safety filter changed the action
    overruns: int
    missed_slots: int
    max_overrun_ms: float
    step_ms: Stats
    sections_ms: dict[str, Stats]
    queries: int
    query_latency_ms: Stats
    query_stages_ms: dict[str, Stats]
    iterations: IterationSummary
    stale_actions: int
    blended_actions: int
    queue: Stats
    frame_age_ms: Stats
    faults: dict[str, int]
    robot_travel_m: Optional[float]
    success: Optional[bool] = None  # the robot's episode: succeeded or not; None without episodes

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "summary"}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Stats):
                value = value.to_json()
            elif isinstance(value, IterationSummary):
                value = {g.name: getattr(value, g.name) for g in fields(value)}
            elif f.name in ("sections_ms", "query_stages_ms"):
                value = {name: stats.to_json() for name, stats in value.items()}
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RunSummary":
        values = {f.name: data[f.name] for f in fields(cls) if f.name != "success"}
        values["success"] = data.get("success")  # absent from logs written before episodes
        for name in ("step_ms", "query_latency_ms", "queue", "frame_age_ms"):
            values[name] = Stats.from_json(data[name])
        for name in ("sections_ms", "query_stages_ms"):
            values[name] = _stats_map(data[name])
        values["iterations"] = IterationSummary(**data["iterations"])
        return cls(**values)


LogRecord = Union[StartRecord, StepRecord, RunSummary]
_READERS = {"start": StartRecord.from_json, "step": StepRecord.from_json, "summary": RunSummary.from_json}


def record_from_json(data: Mapping[str, Any]) -> LogRecord:
    """The typed record of one step-log line; ValueError names what is wrong with it."""
    kind = data.get("type") if isinstance(data, Mapping) else None
    if kind not in _READERS:
        raise ValueError(f"not a step-log record (type {kind!r})")
    try:
        return _READERS[kind](data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed {kind} record ({type(exc).__name__}: {exc})") from None
