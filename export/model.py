"""RD-VLA end to end (spec section 1): VLM hidden states + projected proprio -> recurrent head -> actions."""

from __future__ import annotations

import torch
from torch import nn

from rdvla.export.head import ActionHead, HeadConfig, HeadContext, HeadOutput
from rdvla.export.vlm import PrismaticVLM, ProprioProjector, VLMConfig
from rdvla.runtime.halting import HaltingRule


class RDVLA(nn.Module):
    """The reference: what the authors' released checkpoints compute, in FP32 by default.

    Weights are stored in bf16 and upcast exactly; the head's RoPE tables follow the bf16 pipeline
    the checkpoints were trained with (spec 2.2) unless `fp32_rope`. `.to(torch.bfloat16)` runs
    the authors' precision instead.
    """

    def __init__(self, vlm_cfg: VLMConfig, head_cfg: HeadConfig, fp32_rope: bool = False) -> None:
        super().__init__()
        if head_cfg.hidden_dim != vlm_cfg.hidden_size:
            raise ValueError(f"the action head's hidden_dim {head_cfg.hidden_dim} differs from the LLM's width "
                             f"{vlm_cfg.hidden_size} (config.json text_config.hidden_size): the files come from different models")
        if max(head_cfg.vlm_indices) >= vlm_cfg.num_hidden_states:
            raise ValueError(
                f"action head reads hidden-state index {max(head_cfg.vlm_indices)}, "
                f"the LLM has indices 0..{vlm_cfg.num_hidden_states - 1}"
            )
        self.vlm = PrismaticVLM(vlm_cfg)
        self.proprio_projector = ProprioProjector(vlm_cfg.hidden_size)
        self.action_head = ActionHead(head_cfg, fp32_rope=fp32_rope)

    @property
    def dtype(self) -> torch.dtype:
        return self.proprio_projector.fc1.weight.dtype

    def context(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, proprio: torch.Tensor) -> HeadContext:
        """Once per query: VLM hidden states, proprio token, Prelude and every layer's keys/values.

        `proprio` is already normalised (B, 8).
        """
        hidden = self.vlm.hidden_states(pixel_values.to(self.dtype), input_ids)
        token = self.proprio_projector(proprio.to(self.dtype))
        return self.action_head.model.context(hidden, token)

    @torch.inference_mode()
    def predict(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        proprio: torch.Tensor,
        halting: HaltingRule,
        init_latent: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        trace: bool = False,
    ) -> HeadOutput:
        """One policy query. Without `init_latent`, S0 is drawn from `generator`."""
        ctx = self.context(pixel_values, input_ids, proprio)
        head = self.action_head.model
        if init_latent is None:
            init_latent = head.initial_latent(input_ids.shape[0], generator)
        expected = (input_ids.shape[0], head.cfg.action_chunk_len, head.cfg.hidden_dim)
        if tuple(init_latent.shape) != expected:
            raise ValueError(f"initial latent has shape {tuple(init_latent.shape)}, expected {expected}")
        return head.run(ctx, init_latent.to(self.dtype), halting, trace=trace)
