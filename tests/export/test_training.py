"""The paper's training pieces stay usable: depth sampling and truncated BPTT."""

from __future__ import annotations

import statistics

import torch

from rdvla.export.head import ActionHead, HeadConfig, sample_iterations, truncated_bptt_forward


def test_iteration_sampler_matches_the_log_normal_poisson_formula() -> None:
    g = torch.Generator().manual_seed(0)
    draws = [sample_iterations(32, g) for _ in range(4000)]
    assert min(draws) >= 1 and max(draws) <= 64
    assert 30.0 < statistics.mean(draws) < 33.5  # clipping at 64 pulls the mean slightly below 32
    assert 26 <= statistics.median(draws) <= 31
    assert 0.03 < sum(d == 64 for d in draws) / len(draws) < 0.10


def test_truncated_bptt_lowers_the_loss_and_limits_gradient_depth() -> None:
    torch.manual_seed(0)
    cfg = HeadConfig(hidden_dim=32, num_heads=4, prelude_vlm_layers=(0,), recurrent_vlm_layers=(1,), coda_vlm_layers=(1,), mean_recurrence=4)
    head = ActionHead(cfg)
    head.reset_parameters(torch.Generator().manual_seed(0))
    model = head.model
    g = torch.Generator().manual_seed(1)
    hidden = {j: (torch.randn(4, 512, 32, generator=g), torch.randn(4, 64, 32, generator=g)) for j in (0, 1)}
    proprio = torch.randn(4, 1, 32, generator=g)
    target = torch.rand(4, 8, 7, generator=g) * 2 - 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    grad_enabled_iterations = []
    original = model.iterate

    def counting_iterate(latent, ctx):
        grad_enabled_iterations.append(torch.is_grad_enabled())
        return original(latent, ctx)

    model.iterate = counting_iterate  # type: ignore[method-assign]
    losses = []
    for _ in range(12):
        ctx = model.context(hidden, proprio)
        latent = model.initial_latent(4, g)
        loss = (truncated_bptt_forward(model, ctx, latent, iterations=6, backprop_depth=2) - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    assert grad_enabled_iterations[:6] == [False] * 4 + [True] * 2
    assert losses[-1] < 0.8 * losses[0]
