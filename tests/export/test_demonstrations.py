"""Recorded episodes -> the authors' statistics, normalised targets and the deployed policy's pixels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from rdvla.export.demonstrations import (
    DemonstrationError,
    action_chunks,
    bounds_q99,
    dataset_statistics,
    find_episodes,
    libero_gripper_target,
    prepared_image,
    read_episode,
    succeeded,
    training_samples,
)
from rdvla.export.training import pixel_values
from rdvla.runtime.normalization import NormStats
from rdvla.runtime.preprocess.pipeline import prepare_image, to_pixel_values


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory, episode_writer: Callable[..., Path]) -> Path:
    write_episode = episode_writer
    root = tmp_path_factory.mktemp("demos")
    write_episode(root / "a" / "ep0", seed=0, steps=6)
    write_episode(root / "b" / "ep1", seed=1, steps=5)
    write_episode(root / "ep_failed", seed=2, steps=4, success=False)
    return root


def test_reader_keeps_successful_episodes_and_drops_steps_without_action_and_noops(demos: Path) -> None:
    roots = find_episodes([demos])
    assert [r.name for r in roots] == ["ep0", "ep1", "ep_failed"]
    assert [succeeded(r) for r in roots] == [True, True, False]
    episode = read_episode(roots[0])
    # 8 logged steps: a settle step without action, 6 moves, one no-op.
    assert len(episode) == 6
    assert episode.cameras == ("agentview", "wrist")
    assert episode.frame_numbers[:, 0].tolist() == [1, 2, 3, 4, 5, 6]
    assert episode.actions.shape == (6, 7) and episode.proprio.shape == (6, 8)
    # The actions are the proposed ones (controller units), not the executed ones (metres, radians).
    first = json.loads((roots[0] / "steps.jsonl").read_text().splitlines()[1])
    assert episode.actions[0].tolist() == first["proposed"] != first["executed"]


def test_a_gripper_change_without_motion_is_not_a_noop(tmp_path: Path) -> None:
    from rdvla.export.demonstrations import drop_noops

    actions = np.zeros((4, 7))
    actions[:, 6] = [-1, 1, 1, -1]  # close, hold, open
    assert drop_noops(actions).tolist() == [1, 3]


def test_statistics_have_the_authors_layout_and_load_as_the_runtime_reads_them(demos: Path) -> None:
    episodes = [read_episode(r) for r in find_episodes([demos]) if succeeded(r)]
    stats = dataset_statistics(episodes, "libero_spatial_no_noops")
    entry = stats["libero_spatial_no_noops"]
    assert set(entry) == {"action", "proprio", "num_transitions", "num_trajectories"}
    assert set(entry["action"]) == {"mean", "std", "max", "min", "q01", "q99", "mask"}
    assert set(entry["proprio"]) == {"mean", "std", "max", "min", "q01", "q99"}
    assert all(len(v) == 7 for v in entry["action"].values())
    assert all(len(v) == 8 for v in entry["proprio"].values())
    assert entry["action"]["mask"] == [True] * 6 + [False]
    assert (entry["num_transitions"], entry["num_trajectories"]) == (11, 2)
    # The gripper statistics are of the transformed targets (1 open, 0 close).
    assert entry["action"]["min"][6] == 0.0 and entry["action"]["max"][6] == 1.0
    json.dumps(stats, allow_nan=False)
    loaded = NormStats.from_dataset_statistics(stats)
    assert loaded.action_q01.tolist() == entry["action"]["q01"]


def test_bounds_q99_against_a_hand_computation() -> None:
    block = {"q01": [0.0, -2.0, 5.0], "q99": [1.0, 2.0, 5.0], "min": [-1.0, -3.0, 5.0], "max": [2.0, 3.0, 5.0],
             "mask": [True, True, False]}
    values = np.array([[0.25, 3.0, 5.0], [-0.5, -1.0, 5.0]])
    expected = np.array([[2 * 0.25 / (1 + 1e-8) - 1, 1.0, 0.0],  # dim 1 clipped; dim 2 min == max -> 0
                         [-1.0, 2 * 1.0 / (4 + 1e-8) - 1, 0.0]])
    np.testing.assert_allclose(bounds_q99(values, block), expected, rtol=0, atol=1e-15)


def test_gripper_target_and_chunks() -> None:
    actions = np.zeros((3, 7))
    actions[:, 6] = [-1.0, 1.0, 0.3]
    assert libero_gripper_target(actions)[:, 6].tolist() == [1.0, 0.0, 0.7]
    chunks = action_chunks(np.arange(3)[:, None] * np.ones((3, 7)))
    assert chunks.shape == (3, 8, 7)
    assert chunks[0, :, 0].tolist() == [0, 1, 2, 2, 2, 2, 2, 2]  # the last action repeated past the end
    assert chunks[2, :, 0].tolist() == [2] * 8


def test_samples_are_normalised_with_the_statistics_they_carry(demos: Path) -> None:
    episodes = [read_episode(r) for r in find_episodes([demos]) if succeeded(r)]
    samples = training_samples(episodes, "k")
    assert samples.targets.shape == (11, 8, 7) and samples.proprio.shape == (11, 8)
    entry = samples.statistics["k"]
    first = libero_gripper_target(episodes[0].actions[:1])[0]
    q01, q99 = np.array(entry["action"]["q01"]), np.array(entry["action"]["q99"])
    hand = np.clip(2 * (first[:6] - q01[:6]) / (q99[:6] - q01[:6] + 1e-8) - 1, -1, 1)
    np.testing.assert_allclose(samples.targets[0, 0, :6], hand, rtol=1e-6)
    assert samples.targets[0, 0, 6] == 1.0  # open
    assert samples.instructions and (samples.instruction_index == 0).all()


def test_cached_images_give_the_deployed_pixel_values_bit_for_bit(demos: Path) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(2)]
    prepared = np.stack([prepared_image(f) for f in frames])
    assert np.array_equal(prepared, np.stack([prepare_image(f) for f in frames]))
    ours = pixel_values(prepared[None]).numpy()
    deployed = to_pixel_values(frames, implementation="numpy")
    assert ours.shape == deployed.shape == (1, 12, 224, 224)
    assert np.array_equal(ours, deployed)


def test_a_wrong_format_is_named(tmp_path: Path, episode_writer: Callable[..., Path]) -> None:
    episode = episode_writer(tmp_path / "ep", seed=0, steps=3)
    meta = json.loads((episode / "episode.json").read_text())
    (episode / "episode.json").write_text(json.dumps(meta | {"version": 9}))
    with pytest.raises(DemonstrationError, match="version 9"):
        read_episode(episode)
