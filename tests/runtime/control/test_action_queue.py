"""Time-aligned chunks, the horizon, stale actions and blending."""

from __future__ import annotations

import numpy as np
import pytest

from rdvla.runtime.control.action_queue import ActionQueue, Chunk


def chunk(value: float, obs_slot: int, executable: int, gripper: float = -1.0) -> Chunk:
    actions = np.zeros((8, 7))
    actions[:, 0] = value + np.arange(8)  # action i of the chunk: value + i
    actions[:, 6] = gripper
    return Chunk(actions, obs_slot, executable)


def test_a_chunk_computed_in_its_own_slot_queues_its_horizon() -> None:
    queue = ActionQueue()
    report = queue.push(chunk(0, obs_slot=10, executable=5), now_slot=10)
    assert (report.queued, report.stale, report.blended) == (5, 0, 0)
    assert [queue.pop(s)[0] for s in range(10, 15)] == [0, 1, 2, 3, 4]
    assert queue.pop(15) is None and len(queue) == 0


def test_a_late_chunk_drops_the_actions_of_slots_already_past() -> None:
    queue = ActionQueue()
    report = queue.push(chunk(0, obs_slot=10, executable=5), now_slot=13)
    assert (report.queued, report.stale) == (2, 3)
    assert queue.remaining(12) == 2 and queue.has(13) and not queue.has(12)
    assert queue.pop(13)[0] == 3 and queue.pop(14)[0] == 4  # action i runs in slot obs_slot + i, never shifted


def test_a_chunk_later_than_its_horizon_contributes_nothing() -> None:
    queue = ActionQueue()
    report = queue.push(chunk(0, obs_slot=10, executable=3), now_slot=14)
    assert (report.queued, report.stale) == (0, 3)
    assert len(queue) == 0


def test_pop_discards_actions_of_earlier_slots() -> None:
    queue = ActionQueue()
    queue.push(chunk(0, obs_slot=0, executable=5), now_slot=0)
    assert queue.pop(3)[0] == 3  # slots 0-2 were missed (held): their actions are gone
    assert queue.remaining(3) == 1


@pytest.mark.parametrize("blend", ["replace", "average", "crossfade"])
def test_overlapping_chunks_blend_and_the_new_plan_takes_over(blend: str) -> None:
    queue = ActionQueue(blend)
    queue.push(chunk(0, obs_slot=0, executable=5, gripper=-1.0), now_slot=0)  # slots 0..4 -> 0..4
    queue.pop(0)
    queue.pop(1)
    report = queue.push(chunk(100, obs_slot=1, executable=3, gripper=1.0), now_slot=2)  # slots 2, 3 -> 101.., stale 1
    assert (report.queued, report.stale, report.blended) == (2, 1, 2)
    first, second = queue.pop(2), queue.pop(3)
    old, new = np.array([2.0, 3.0]), np.array([101.0, 102.0])
    weights = {"replace": [1.0, 1.0], "average": [0.5, 0.5], "crossfade": [1 / 3, 2 / 3]}[blend]
    np.testing.assert_allclose([first[0], second[0]], (1 - np.array(weights)) * old + np.array(weights) * new)
    assert first[6] == second[6] == 1.0  # the gripper follows the newest plan, never a mean of open and close
    assert queue.pop(4) is None  # slot 4 of the old plan lies beyond the new plan's horizon: dropped


def test_bad_chunks_and_blends_are_refused() -> None:
    with pytest.raises(ValueError, match="executable"):
        chunk(0, obs_slot=0, executable=9)
    with pytest.raises(ValueError, match="executable"):
        chunk(0, obs_slot=0, executable=0)
    with pytest.raises(ValueError, match="blend"):
        ActionQueue("median")
