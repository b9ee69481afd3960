"""Behaviour cloning (rdvla.export.training, scripts/train_policy.py): the authors' recipe, resumable, learning."""

from __future__ import annotations

import importlib.util
import math
import statistics
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from rdvla.export.checkpoint import load_checkpoint
from rdvla.export.head import ActionHead, HeadConfig, sample_iterations, truncated_bptt_forward
from rdvla.export.training import STATE_FILE, TrainSettings, batch_rows, open_run, shifted, step_generator, train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory, episode_writer: Callable[..., Path]) -> Path:
    root = tmp_path_factory.mktemp("bc_demos")
    episode_writer(root / "ep0", seed=0, steps=8)
    episode_writer(root / "ep1", seed=1, steps=8)
    return root


def test_depth_draws_follow_the_formula_and_repeat_for_a_seed() -> None:
    draws = [sample_iterations(12, step_generator(0, step)) for step in range(3000)]
    assert min(draws) >= 1 and max(draws) <= 64
    # E[n] = E[Poisson(e^tau)] + 1 = E[e^tau] + 1 = exp(ln 12 - 0.125 + 0.125) + 1 = 13 (clipping is rare at r = 12).
    assert 12.4 < statistics.mean(draws) < 13.6
    assert draws == [sample_iterations(12, step_generator(0, step)) for step in range(3000)]
    assert draws != [sample_iterations(12, step_generator(1, step)) for step in range(3000)]


def test_data_order_visits_every_sample_once_per_epoch_and_repeats_for_a_seed() -> None:
    rows = np.concatenate([batch_rows(3, step, 4, 10) for step in range(5)])  # two epochs of 10
    assert sorted(rows[:10]) == list(range(10)) and sorted(rows[10:20]) == list(range(10))
    assert not np.array_equal(rows[:10], rows[10:20])
    assert np.array_equal(rows, np.concatenate([batch_rows(3, step, 4, 10) for step in range(5)]))


def test_shift_moves_each_image_by_at_most_its_bound_and_repeats_the_border() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 2, 40, 40, 3), dtype=np.uint8)
    assert shifted(images, 0, torch.Generator().manual_seed(0)) is images
    out = shifted(images, 4, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == np.uint8
    moves = set()
    for i in range(3):
        for j in range(2):
            # The interior of the shifted image is the original moved by (dy, dx) with |dy|, |dx| <= 4.
            found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                     if np.array_equal(out[i, j, 4:36, 4:36], images[i, j, 4 + dy:36 + dy, 4 + dx:36 + dx])]
            assert len(found) == 1
            dy, dx = found[0]
            moves.add((dy, dx))
            # Rows moved in from above the image repeat its top row (the first row of the moved content).
            assert all(np.array_equal(out[i, j, 0], out[i, j, r]) for r in range(max(0, -dy) + 1))
    assert len(moves) > 1  # not one offset for the whole batch
    assert np.array_equal(out, shifted(images, 4, torch.Generator().manual_seed(0)))


def test_truncated_backprop_gives_the_gradient_of_the_last_k_iterations_only() -> None:
    torch.manual_seed(0)
    cfg = HeadConfig(hidden_dim=32, num_heads=4, recurrent_vlm_layers=(0,), mean_recurrence=4)
    head = ActionHead(cfg)
    head.reset_parameters(torch.Generator().manual_seed(0))
    model = head.model
    g = torch.Generator().manual_seed(1)
    hidden = {0: (torch.randn(2, 512, 32, generator=g), torch.randn(2, 64, 32, generator=g))}
    proprio = torch.randn(2, 1, 32, generator=g)
    target = torch.rand(2, 8, 7, generator=g)
    start = model.initial_latent(2, g).requires_grad_(True)
    weight = model.recurrent[0].ffn_down.weight

    def grad(loss: torch.Tensor) -> torch.Tensor:
        (out,) = torch.autograd.grad(loss, weight)
        return out

    ctx = model.context(hidden, proprio)
    truncated = (truncated_bptt_forward(model, ctx, start, iterations=6, backprop_depth=2) - target).abs().mean()
    assert torch.autograd.grad(truncated, start, allow_unused=True)[0] is None  # nothing flows into the first 4
    ctx = model.context(hidden, proprio)
    truncated = (truncated_bptt_forward(model, ctx, start, iterations=6, backprop_depth=2) - target).abs().mean()
    # By hand: 4 iterations whose result is a constant, then 2 differentiated ones.
    ctx = model.context(hidden, proprio)
    latent = start
    for _ in range(4):
        latent = model.iterate(latent, ctx)
    latent = latent.detach()
    for _ in range(2):
        latent = model.iterate(latent, ctx)
    by_hand = (model.decode(latent, ctx) - target).abs().mean()
    ctx = model.context(hidden, proprio)
    latent = start
    for _ in range(6):
        latent = model.iterate(latent, ctx)
    full = (model.decode(latent, ctx) - target).abs().mean()
    g_truncated, g_by_hand, g_full = grad(truncated), grad(by_hand), grad(full)
    assert torch.equal(g_truncated, g_by_hand)
    assert (g_truncated - g_full).abs().max() > 1e-3 * g_full.abs().max()
    # With n <= k every iteration is differentiated: full backprop.
    ctx = model.context(hidden, proprio)
    short = (truncated_bptt_forward(model, ctx, start, iterations=2, backprop_depth=4) - target).abs().mean()
    ctx = model.context(hidden, proprio)
    full_short = (model.decode(model.iterate(model.iterate(start, ctx), ctx), ctx) - target).abs().mean()
    assert torch.equal(grad(short), grad(full_short))


def _settings(**changes: object) -> TrainSettings:
    base = TrainSettings(preset="small", steps=4, batch_size=3, lr=2e-3, warmup_steps=2, mean_recurrence=3,
                         backprop_depth=2, seed=5)
    return TrainSettings(**(base.__dict__ | changes))  # type: ignore[arg-type]


@pytest.fixture
def one_thread() -> object:
    """One torch thread: OpenMP's busy-waiting makes two threads crawl when other processes share the cores
    (the script sets OMP_WAIT_POLICY=PASSIVE before torch loads; a test process cannot)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_resumed_run_equals_an_uninterrupted_one(demos: Path, tmp_path: Path, one_thread: object) -> None:
    straight = open_run(tmp_path / "straight", [demos], _settings(), resume=False)
    train(straight, save_every=2)
    interrupted = open_run(tmp_path / "resumed", [demos], _settings(steps=2), resume=False)
    train(interrupted, save_every=2)
    resumed = open_run(tmp_path / "resumed", [demos], _settings(), resume=True)
    assert resumed.step == 2
    train(resumed, save_every=2)
    assert [r["loss"] for r in straight.curve or []] == [r["loss"] for r in resumed.curve or []]
    a = torch.load(tmp_path / "straight" / STATE_FILE, weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The released-layout checkpoint loads strictly into the reference and carries the run's statistics.
    loaded = load_checkpoint(tmp_path / "resumed" / "checkpoint")
    assert loaded.files.head_weights.name == "action_head--4_checkpoint.pt"
    assert loaded.norm_stats("libero_spatial_no_noops").action_mask.tolist() == [True] * 6 + [False]
    with pytest.raises(ValueError, match="other settings \\(lr\\)"):
        open_run(tmp_path / "resumed", [demos], _settings(lr=1e-3), resume=True)


def test_learning_rate_warms_up_holds_then_falls_to_a_tenth() -> None:
    s = TrainSettings(lr=1.0, steps=100, warmup_steps=10, decay_steps=20)
    assert [s.lr_at(k) for k in (0, 5, 10, 79, 80, 90)] == pytest.approx([0.1, 0.55, 1.0, 1.0, 1.0, 0.55])
    assert s.lr_at(99) == pytest.approx(0.145)
    assert TrainSettings(lr=1.0, steps=100, warmup_steps=10).lr_at(99) == 1.0  # no decay by default


def test_a_run_is_extended_with_a_decay_as_if_it_had_been_asked_for_from_the_start(demos: Path, tmp_path: Path,
                                                                                   one_thread: object) -> None:
    straight = open_run(tmp_path / "straight", [demos], _settings(steps=5, decay_steps=2), resume=False)
    train(straight, save_every=5)
    first = open_run(tmp_path / "extended", [demos], _settings(steps=3), resume=False)
    train(first, save_every=3)
    extended = open_run(tmp_path / "extended", [demos], _settings(steps=5, decay_steps=2), resume=True)
    train(extended, save_every=5)
    assert [r["lr"] for r in extended.curve or []] == [r["lr"] for r in straight.curve or []]
    assert [r["loss"] for r in extended.curve or []] == [r["loss"] for r in straight.curve or []]
    # Past the start of its decay a run cannot be extended: its last steps already had the falling rates.
    with pytest.raises(ValueError, match="cannot be extended"):
        open_run(tmp_path / "straight", [demos], _settings(steps=8, decay_steps=2), resume=True)


@pytest.mark.slow
def test_a_small_model_fits_two_episodes(demos: Path, tmp_path: Path, one_thread: object) -> None:
    run = open_run(tmp_path / "fit", [demos], _settings(steps=30, batch_size=4, lr=1e-3, warmup_steps=5), resume=False)
    train(run, save_every=1000)
    losses = [r["loss"] for r in run.curve or []]
    assert all(math.isfinite(x) for x in losses)
    # From ~0.7 (outputs near 0 against targets spread over [-1, 1]) to ~0.4 in 30 steps at seed 5.
    assert statistics.mean(losses[-6:]) < 0.7 * statistics.mean(losses[:6])


def _script() -> Callable[[list[str]], int]:
    spec = importlib.util.spec_from_file_location("train_policy", ROOT / "scripts" / "train_policy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_script_refuses_bad_runs_in_one_line(demos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main = _script()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    assert main(["--data", str(demos), "--out", str(busy)]) == 2
    assert main(["--data", str(demos), "--out", str(tmp_path / "new"), "--resume"]) == 2
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "new")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert "--resume" in errors[0] and "no train_state.pt" in errors[1] and "missing" in errors[2]


def test_script_refuses_a_bad_shift_or_decay_in_one_line(demos: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    main = _script()
    for extra in (["--shift", "-3"], ["--decay-steps", "-1"]):
        with pytest.raises(SystemExit) as exited:  # argparse: usage and one error line
            main(["--data", str(demos), "--out", str(tmp_path / "new"), *extra])
        assert exited.value.code == 2
    assert main(["--data", str(demos), "--out", str(tmp_path / "new"), "--steps", "50", "--decay-steps", "1"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 3, errors
    assert "--shift" in errors[0] and "--decay-steps" in errors[1] and "at most --steps minus --warmup-steps (0)" in errors[2]
    assert not (tmp_path / "new").exists()  # refused before anything is written
