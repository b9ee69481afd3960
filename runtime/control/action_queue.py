"""The action queue between the policy and the robot: time-aligned chunks, the execution horizon,
and blending where consecutive chunks overlap.

Every action belongs to a slot of the control grid. A chunk computed from the observation taken
at slot ``s`` plans slots ``s, s+1, ..., s+7``; the horizon (spec 3.4) allows its first ``n``.
When the chunk arrives at slot ``t > s`` (inference took ``t - s`` slots, as in asynchronous mode),
its actions for slots before ``t`` are stale and dropped: executing action ``i`` at any slot but
``s + i`` would replay the plan shifted in time. So a chunk contributes its actions ``t - s`` to
``n - 1``, and the asynchronous pipeline keeps the robot moving only while inference takes less
than the actions a chunk contributes; the loop counts the slots where the queue ran dry.

Where a new chunk meets actions still queued from an earlier one, the two are blended (``replace``:
the new plan wins; ``average``: the mean; ``crossfade``: weights moving linearly from the old plan
to the new across the overlap). The gripper command always comes from the newest plan: a mean of
open (-1) and close (+1) would be a half-closed gripper nobody asked for. Queued actions beyond the
new chunk's last executable slot are dropped: the newer plan is the one in charge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

BLENDS = ("replace", "average", "crossfade")


@dataclass(frozen=True)
class Chunk:
    actions: np.ndarray  # (L, 7): actions[i] is planned for slot obs_slot + i
    obs_slot: int  # slot whose observation produced the chunk
    executable: int  # how many of its leading actions the horizon allows

    def __post_init__(self) -> None:
        if self.actions.ndim != 2 or self.actions.shape[0] < 1:
            raise ValueError(f"a chunk holds (L, action_dim) actions, got shape {self.actions.shape}")
        if not 1 <= self.executable <= self.actions.shape[0]:
            raise ValueError(f"executable must lie in [1, {self.actions.shape[0]}], got {self.executable}")


@dataclass(frozen=True)
class PushReport:
    queued: int  # actions of the chunk now waiting for their slots
    stale: int  # leading executable actions whose slots had already passed
    blended: int  # slots where the chunk met an action of an earlier chunk


class ActionQueue:
    """Actions keyed by slot; holds at most one chunk's length of future actions."""

    def __init__(self, blend: str = "replace") -> None:
        if blend not in BLENDS:
            raise ValueError(f"unknown blend {blend!r}; choose one of {', '.join(BLENDS)}")
        self.blend = blend
        self._by_slot: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._by_slot)

    def has(self, slot: int) -> bool:
        return slot in self._by_slot

    def remaining(self, after_slot: int) -> int:
        """Actions queued for slots later than ``after_slot``."""
        return sum(1 for slot in self._by_slot if slot > after_slot)

    def clear(self) -> None:
        self._by_slot.clear()

    def push(self, chunk: Chunk, now_slot: int) -> PushReport:
        """Queue the chunk's executable actions for slots from ``now_slot`` on."""
        first = max(now_slot, chunk.obs_slot)
        last = chunk.obs_slot + chunk.executable - 1
        stale = min(chunk.executable, first - chunk.obs_slot)
        for slot in [s for s in self._by_slot if s > last or s < now_slot]:
            del self._by_slot[slot]
        overlap = [slot for slot in range(first, last + 1) if slot in self._by_slot]
        for slot in range(first, last + 1):
            new = np.array(chunk.actions[slot - chunk.obs_slot], dtype=np.float64)
            old = self._by_slot.get(slot)
            if old is not None:
                new = self._blend(old, new, overlap.index(slot), len(overlap))
            self._by_slot[slot] = new
        return PushReport(queued=max(0, last - first + 1), stale=stale, blended=len(overlap))

    def _blend(self, old: np.ndarray, new: np.ndarray, index: int, overlap: int) -> np.ndarray:
        if self.blend == "replace":
            return new
        weight = 0.5 if self.blend == "average" else (index + 1) / (overlap + 1)
        out = (1.0 - weight) * old + weight * new
        out[-1] = new[-1]
        return out

    def pop(self, slot: int) -> Optional[np.ndarray]:
        """The action for ``slot`` (None if there is none); actions for earlier slots are discarded."""
        for earlier in [s for s in self._by_slot if s < slot]:
            del self._by_slot[earlier]
        return self._by_slot.pop(slot, None)
