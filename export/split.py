"""The reference cut into the bundle's graphs; every module only calls the reference's own methods.

vlm_prelude       once per query: VLM hidden states (pruned to the indices the head reads),
                  proprio token, Prelude, the adapter's injection term, every core/coda layer's
                  cross-attention keys/values (tanh(gate) and the softmax scale folded in)
core_step         one recurrent iteration on the 8 chunk tokens (fixed depth: no decode)
core_step_decode  one iteration + Coda decode + adjacent-action MSE and cosine (adaptive halting)
decode            Coda decode of a latent (the end of a fixed-depth query)

Tensors cross graph boundaries flat and named (runtime.backends.base), latent and actions in FP32.
"""

from __future__ import annotations

import torch
from torch import nn

from rdvla.export.head import ContextKV, HeadContext, RecurrentDepthModel, adjacent_statistic_tensors
from rdvla.export.model import RDVLA


def _pairs(flat: tuple[torch.Tensor, ...]) -> list[ContextKV]:
    return [ContextKV(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def _flatten(kvs: list[ContextKV]) -> list[torch.Tensor]:
    return [t for kv in kvs for t in (kv.keys, kv.values)]


class VLMPrelude(nn.Module):
    def __init__(self, model: RDVLA) -> None:
        super().__init__()
        self.model = model
        self.indices = model.action_head.cfg.vlm_indices

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, proprio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self.model.vlm.hidden_states(pixel_values, input_ids, indices=self.indices)
        ctx = self.model.action_head.model.context(hidden, self.model.proprio_projector(proprio))
        return (ctx.injection, *_flatten(ctx.core_kv), *_flatten(ctx.coda_kv))


class _HeadGraph(nn.Module):
    def __init__(self, model: RDVLA) -> None:
        super().__init__()
        self.head: RecurrentDepthModel = model.action_head.model
        self.n_core = len(self.head.cfg.recurrent_vlm_layers)

    def context(self, injection: torch.Tensor | None, core: tuple[torch.Tensor, ...], coda: tuple[torch.Tensor, ...]) -> HeadContext:
        # A graph that never iterates (decode) has no injection input.
        return HeadContext(torch.empty(0) if injection is None else injection, _pairs(core), _pairs(coda))


class CoreStep(_HeadGraph):
    def forward(self, latent: torch.Tensor, injection: torch.Tensor, *core_kv: torch.Tensor) -> torch.Tensor:
        return self.head.iterate(latent, self.context(injection, core_kv, ()))


class CoreStepDecode(_HeadGraph):
    def forward(
        self, latent: torch.Tensor, prev_actions: torch.Tensor, injection: torch.Tensor, *kv: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        ctx = self.context(injection, kv[: 2 * self.n_core], kv[2 * self.n_core :])
        next_latent = self.head.iterate(latent, ctx)
        actions = self.head.decode(next_latent, ctx)
        mse, cosine = adjacent_statistic_tensors(actions, prev_actions)
        return next_latent, actions, mse.reshape(1), cosine.reshape(1)


class Decode(_HeadGraph):
    def forward(self, latent: torch.Tensor, *coda_kv: torch.Tensor) -> torch.Tensor:
        return self.head.decode(latent, self.context(None, (), coda_kv))
