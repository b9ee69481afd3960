"""`ChunkBroker`: keeps the action queue supplied with chunks, so the loop only asks for a slot's action.

The broker owns everything between an observation and a queued action: query ids, the in-flight
query of the asynchronous mode, each query's deadline and the running estimate of its fixed cost,
and a chunk's arrival (the horizon, the push into the action queue). The policy hands over
robot-ready chunks: un-normalised, the gripper post-processed as `LoopConfig.gripper` says.

* Synchronous mode: when no action is queued for the slot, the broker queries the policy inside
  the cycle, with the end of the period as its deadline.
* Asynchronous mode: the broker collects a finished query from the worker, and starts the next one
  from this cycle's observation once at most ``refill_at`` actions remain queued, with the slot
  where the queue runs dry as its deadline.

Either deadline moves to a later slot boundary when the query's fixed part (preprocessing,
VLM+Prelude) cannot meet it: see `ChunkBroker.deadline_s`. A failed query or a rejected chunk is a
fault of the cycle (recorded in the run's `FaultLog`), never an error of the loop.

Threads: the policy runs on the caller's thread (synchronous mode) or on the executor's single
worker (asynchronous mode). A backend bound to the thread that created it (TensorRT) must then be
created through that same executor (see `load_on`). Tests pass an executor that runs queries
synchronously, finishing them at a chosen fake time.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence, TypeVar

import numpy as np

from rdvla.runtime.control.action_queue import ActionQueue, Chunk
from rdvla.runtime.control.config import LoopConfig
from rdvla.runtime.control.faults import Fault, FaultLog, one_line
from rdvla.runtime.control.pacing import CycleTimer
from rdvla.runtime.control.records import QueryRecord, floats, matrix
from rdvla.runtime.halting import HaltingRule
from rdvla.runtime.policy import PolicyResult

# Kept free at the end of a period for the safety filter, the robot command and the log line.
RESERVE_FRACTION = 0.1
FIXED_COST_SMOOTHING = 0.3  # weight of the newest query in the running estimate of a query's fixed cost

T = TypeVar("T")


class PolicyLike(Protocol):
    def act(self, instruction: str, proprio: Sequence[float] | np.ndarray, images: Optional[Sequence[np.ndarray]] = None,
            pixel_values: Optional[np.ndarray] = None, halting: Optional[HaltingRule] = None,
            init_latent: Optional[np.ndarray] = None, seed: Optional[int] = None,
            deadline_s: Optional[float] = None, gripper: str = "raw") -> PolicyResult: ...


class StartError(RuntimeError):
    """The loop could not start: no usable first observation, or the first query failed."""


class RejectedChunk(ValueError):
    """A finished query's chunk that may not enter the queue (non-finite actions)."""


def single_worker() -> ThreadPoolExecutor:
    """The inference worker of the asynchronous mode: one thread, so a backend stays on one thread."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="rdvla-inference")


def load_on(executor: Optional[Executor], load: Callable[[], T]) -> T:
    """Run ``load`` on the executor's worker (or here, without one): where the policy will run."""
    return load() if executor is None else executor.submit(load).result()


@dataclass(frozen=True)
class QueryInputs:
    """What a query is computed from: one observation's images (policy order) and the robot's proprio."""

    images: list[np.ndarray]
    proprio: np.ndarray


@dataclass(frozen=True)
class SlotAction:
    """What the broker did for one slot."""

    action: Optional[np.ndarray]  # the slot's action (None: nothing queued for it)
    arrived: Optional[QueryRecord]  # the query whose chunk arrived in this cycle
    submitted: Optional[int]  # id of a query started from this cycle's observation (asynchronous mode)


@dataclass
class _Inflight:
    future: "Future[PolicyResult]"
    query_id: int
    obs_slot: int
    submitted: float
    deadline_s: Optional[float]


class ChunkBroker:
    """Schedules the policy's queries and queues their chunks; `action_for(slot)` is all the loop asks.

    In asynchronous mode without an ``executor`` the broker makes its own worker and shuts it down
    in `close`.
    """

    def __init__(self, policy: PolicyLike, config: LoopConfig, timer: CycleTimer, faults: FaultLog,
                 executor: Optional[Executor] = None) -> None:
        if config.mode == "sync" and executor is not None:
            raise ValueError("an executor serves the asynchronous mode only")
        self.policy = policy
        self.config = config
        self.timer = timer
        self.clock = timer.clock
        self.faults = faults
        self._owns_executor = config.mode == "async" and executor is None
        self.executor: Optional[Executor] = single_worker() if self._owns_executor else executor
        self.queue = ActionQueue(config.blend)
        self._next_query = 0
        self._inflight: Optional[_Inflight] = None
        self._fixed_cost_s: Optional[float] = None  # running estimate of a query's time outside the iterations

    @property
    def inflight(self) -> bool:
        return self._inflight is not None

    def queued_after(self, slot: int) -> int:
        """Actions queued for slots later than ``slot``."""
        return self.queue.remaining(slot)

    def prime(self, inputs: QueryInputs) -> QueryRecord:
        """The first query, before the clock starts, run where every later query runs (it also warms
        the backend up); its chunk fills the queue from slot 0. StartError when it fails."""
        query_id = self._take_query_id()
        start = self.clock()
        try:
            result = load_on(self.executor, lambda: self._infer(inputs, None, query_id))
            return self._arrive(result, query_id, 0, 0, start, None)
        except Exception as exc:
            detail = str(exc) if isinstance(exc, RejectedChunk) else one_line(exc)
            raise StartError(f"the first query failed: {detail}") from exc

    def action_for(self, slot: int, inputs: Optional[QueryInputs]) -> SlotAction:
        """Bring the queue up to date for ``slot`` and take the slot's action. ``inputs``: this cycle's
        observation and proprio, or None when the cycle has none (no query starts from it)."""
        if self.config.mode == "sync":
            arrived = None
            if inputs is not None and not self.queue.has(slot):
                arrived = self._query_now(slot, inputs)
            return SlotAction(self.queue.pop(slot), arrived, None)
        arrived = self._collect(slot)
        action = self.queue.pop(slot)
        submitted = None
        if inputs is not None and self._inflight is None and self.queue.remaining(slot) <= self.config.refill_at:
            submitted = self._submit(slot, inputs)
        return SlotAction(action, arrived, submitted)

    def deadline_s(self, slots_ahead: int) -> Optional[float]:
        """The query's deadline: the end of the slot ``slots_ahead`` from this one, less a reserve.

        A chunk is only collected at a slot boundary, so a deadline the query's fixed part
        (preprocessing, VLM+Prelude) cannot meet anyway would cut the recurrent iterations for
        nothing: the deadline then moves to the first boundary the fixed part can meet.
        """
        if not self.config.deadlines:
            return None
        if self.config.deadline_s is not None:
            return self.config.deadline_s
        period = self.timer.period_s
        base = self.timer.elapsed() + RESERVE_FRACTION * period
        slots = max(1, slots_ahead)
        while slots * period - base <= (self._fixed_cost_s or 0.0):
            slots += 1
        return slots * period - base

    def close(self) -> None:
        """Drop the query in flight; shut down the worker this broker made."""
        if self.executor is not None and self._owns_executor:
            self.executor.shutdown(wait=True, cancel_futures=True)
        elif self._inflight is not None:
            self._inflight.future.cancel()
        self._inflight = None

    # ----- queries ---------------------------------------------------------------------------------

    def _take_query_id(self) -> int:
        query_id = self._next_query
        self._next_query += 1
        return query_id

    def _infer(self, inputs: QueryInputs, deadline_s: Optional[float], query_id: int) -> PolicyResult:
        return self.policy.act(self.config.instruction, inputs.proprio, images=inputs.images, halting=self.config.halting,
                               seed=self.config.seed + query_id, deadline_s=deadline_s, gripper=self.config.gripper)

    def _query_now(self, slot: int, inputs: QueryInputs) -> Optional[QueryRecord]:
        query_id = self._take_query_id()
        deadline = self.deadline_s(1)
        start = self.clock()
        return self._receive(lambda: self._infer(inputs, deadline, query_id), query_id, slot, slot, start, deadline)

    def _submit(self, slot: int, inputs: QueryInputs) -> int:
        assert self.executor is not None
        query_id = self._take_query_id()
        deadline = self.deadline_s(self.queue.remaining(slot) + 1)
        copied = QueryInputs(inputs.images, inputs.proprio.copy())
        future = self.executor.submit(self._infer, copied, deadline, query_id)
        self._inflight = _Inflight(future, query_id, slot, self.clock(), deadline)
        return query_id

    def _collect(self, slot: int) -> Optional[QueryRecord]:
        inflight = self._inflight
        if inflight is None or not inflight.future.done():
            return None
        self._inflight = None
        return self._receive(inflight.future.result, inflight.query_id, inflight.obs_slot, slot, inflight.submitted,
                             inflight.deadline_s)

    def _receive(self, result: Callable[[], PolicyResult], query_id: int, obs_slot: int, slot: int, submitted: float,
                 deadline_s: Optional[float]) -> Optional[QueryRecord]:
        """A query's result, queued; a failure is a fault of this cycle, not of the loop."""
        try:
            finished = result()
        except Exception as exc:
            self.faults.add(Fault.INFERENCE_ERROR, f"query {query_id}: {one_line(exc)}")
            return None
        try:
            return self._arrive(finished, query_id, obs_slot, slot, submitted, deadline_s)
        except RejectedChunk as exc:
            self.faults.add(Fault.NONFINITE_ACTION, str(exc))
            return None

    # ----- arrival ---------------------------------------------------------------------------------

    def _arrive(self, result: PolicyResult, query_id: int, obs_slot: int, slot: int, submitted: float,
                deadline_s: Optional[float]) -> QueryRecord:
        """Queue a finished query's chunk and return the query's log entry; RejectedChunk keeps it out."""
        latency_ms = (self.clock() - submitted) * 1e3
        actions = np.asarray(result.actions, np.float64)  # robot-ready: the policy post-processed it
        if not np.all(np.isfinite(actions)):
            raise RejectedChunk(f"query {query_id} returned non-finite actions; chunk rejected")
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
        )
