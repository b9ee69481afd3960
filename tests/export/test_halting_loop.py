"""The reference head's recurrent loop (`RecurrentDepthModel.run`, torch) stops where the spec says on crafted
action sequences (spec 3.1-3.3): its statistics feed the one stop rule, and it decodes only when the rule reads them.
The rules themselves and their parser are tested without torch in tests/runtime/test_halting.py."""

from __future__ import annotations

import math

import torch

from rdvla.export.head import HeadConfig, HeadContext, RecurrentDepthModel
from rdvla.runtime.halting import AdjacentMSE, CosineSimilarity, FixedIterations

CFG = HeadConfig(hidden_dim=16, num_heads=2, recurrent_vlm_layers=(0,))


class Scripted(RecurrentDepthModel):
    """A head whose k-th decode returns actions[k-1]; counts iterations and decodes."""

    def __init__(self, actions: list[torch.Tensor]) -> None:
        super().__init__(CFG)
        self.actions, self.iterates, self.decodes = actions, 0, 0

    def iterate(self, state, ctx):
        self.iterates += 1
        return state + 1

    def decode(self, state, ctx):
        self.decodes += 1
        return self.actions[int(state.flatten()[0].item()) - 1]


def run(actions: list[torch.Tensor], halting) -> tuple[int, Scripted]:
    model = Scripted(actions)
    ctx = HeadContext(injection=torch.zeros(1, 8, 16), core_kv=[], coda_kv=[])
    out = model.run(ctx, torch.zeros(1, 8, 16), halting)
    return out.iterations, model


def chunks_with_steps(steps: list[float]) -> list[torch.Tensor]:
    """a_1 = 0; a_{k+1} = a_k + steps[k-1] on every one of the 56 elements."""
    out = [torch.zeros(1, 8, 7)]
    for s in steps:
        out.append(out[-1] + s)
    return out


def test_mse_uses_the_mean_not_the_sum() -> None:
    # Element steps of 0.02: mean square 4e-4 < 1e-3 stops; the sum (56 * 4e-4 = 0.0224) would not.
    iterations, _ = run(chunks_with_steps([0.1, 0.05, 0.02] + [0.2] * 40), AdjacentMSE(1e-3))
    assert iterations == 4


def test_mse_never_stops_before_two_even_if_first_decode_is_final() -> None:
    iterations, _ = run(chunks_with_steps([0.0] * 40), AdjacentMSE(1e-3))
    assert iterations == 2


def test_mse_respects_custom_min_and_max() -> None:
    assert run(chunks_with_steps([0.0] * 40), AdjacentMSE(1e-3, min_iterations=5))[0] == 5
    assert run(chunks_with_steps([1.0] * 40), AdjacentMSE(1e-3))[0] == 32
    assert run(chunks_with_steps([1.0] * 40), AdjacentMSE(1e-3, max_iterations=7))[0] == 7


def test_mse_threshold_is_strict() -> None:
    # Steps of exactly sqrt(1e-3) give MSE == threshold (in float64; float32 rounding may shift it),
    # so use a step just above and just below.
    above, below = math.sqrt(1e-3) * 1.01, math.sqrt(1e-3) * 0.99
    assert run(chunks_with_steps([1.0, above, below] + [1.0] * 40), AdjacentMSE(1e-3))[0] == 4


def test_cosine_stops_on_direction_not_scale() -> None:
    base = torch.randn(1, 8, 7, generator=torch.Generator().manual_seed(0))
    other = torch.randn(1, 8, 7, generator=torch.Generator().manual_seed(1))
    # Iterations 1-3 change direction; 4 is 3 scaled by 5 (cos = 1 although the MSE is large).
    seq = [base, other, base, 5 * base] + [other * (-1) ** k for k in range(40)]
    assert run(seq, CosineSimilarity(0.999))[0] == 4
    assert run(seq, AdjacentMSE(1e-3))[0] == 32


def test_fixed_depth_decodes_once() -> None:
    iterations, model = run(chunks_with_steps([0.0] * 40), FixedIterations(12))
    assert iterations == 12 and model.iterates == 12 and model.decodes == 1


def test_adaptive_decodes_once_per_iteration() -> None:
    iterations, model = run(chunks_with_steps([0.1, 0.1, 0.001] + [0.1] * 40), AdjacentMSE(1e-3))
    assert iterations == 4 and model.decodes == 4
