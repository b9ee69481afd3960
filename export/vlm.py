"""The Prismatic VLM as RD-VLA uses it (spec 1.3-1.8), and the proprio projector (spec 1.9).

The LLM is transformers' Qwen2 (ordinary causal attention; the pinned fork only changed Llama).
Its decoder layers are driven here rather than through `Qwen2Model.forward`, so that which hidden
state is which does not depend on how a transformers release records `hidden_states`: index 0 is
the embedding output, index i the output of decoder layer i (1-based), and index L (the last) the
output of the last layer after the final RMSNorm, as in transformers 4.40.1 used for training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM

from rdvla.export.vision import DinoSigLIPBackbone, TowerConfig

NUM_ACTION_QUERIES = 64
# Ids appended after the prompt: 64 placeholders (overwritten by the learned queries) and a stop id.
PLACEHOLDER_TOKEN_ID = 1
STOP_TOKEN_ID = 2
PROPRIO_DIM = 8


@dataclass(frozen=True)
class VLMConfig:
    dino: TowerConfig
    siglip: TowerConfig
    text: Qwen2Config
    num_images: int = 2

    @property
    def hidden_size(self) -> int:
        return int(self.text.hidden_size)

    @property
    def num_task_tokens(self) -> int:
        """512 for two cameras: the head's task-token count (256 per image at the released patch size)."""
        return self.dino.num_patches * self.num_images

    @property
    def num_hidden_states(self) -> int:
        return int(self.text.num_hidden_layers) + 1


class FusedGeluProjector(nn.Module):
    """`no-align+fused-gelu-mlp`: fc1 -> GELU -> fc2 -> GELU -> fc3 (spec 1.4)."""

    def __init__(self, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(x)))))


class ProprioProjector(nn.Module):
    """fc1 (8 -> D) -> GELU -> fc2 (D -> D); output as one token (B, 1, D)."""

    def __init__(self, llm_dim: int, proprio_dim: int = PROPRIO_DIM) -> None:
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(proprio))).unsqueeze(1)


def causal_mask(length: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive (1, 1, S, S) mask: 0 on and below the diagonal, the dtype's minimum above.

    Built by comparing two index ranges (Range, Greater, Where in the graph), not with `triu` on a
    BOOL tensor: onnx-tensorrt imports Trilu as a Select against zeros made by an elementwise PROD
    with the input, which TensorRT refuses for BOOL (rule trt-trilu-bool in rdvla.runtime.graph_check).
    """
    position = torch.arange(length)
    blocked = position[None, :] > position[:, None]
    fill = torch.tensor(torch.finfo(dtype).min, dtype=dtype)
    return torch.where(blocked, fill, torch.zeros((), dtype=dtype))[None, None]


class PrismaticVLM(nn.Module):
    """Parameter names match `model.safetensors`: vision_backbone.*, projector.*, language_model.*, action_queries."""

    def __init__(self, cfg: VLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision_backbone = DinoSigLIPBackbone(cfg.dino, cfg.siglip)
        self.projector = FusedGeluProjector(self.vision_backbone.feature_dim, cfg.hidden_size)
        text = Qwen2Config.from_dict(cfg.text.to_dict())
        # Eager attention with an explicit additive mask: the same numerics under every exporter.
        text._attn_implementation = "eager"
        self.language_model = Qwen2ForCausalLM(text)
        self.action_queries = nn.Embedding(NUM_ACTION_QUERIES, cfg.hidden_size)

    def embed_sequence(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """[emb(tok_0), 512 patches, emb(tok_1..tok_{P-1}), 64 queries, emb(stop)]: (B, P + 577, D) (spec 1.6)."""
        b = input_ids.shape[0]
        patches = self.projector(self.vision_backbone(pixel_values))
        tokens = self.language_model.model.embed_tokens(input_ids)
        queries = self.action_queries.weight.to(tokens.dtype).expand(b, -1, -1)
        stop = self.language_model.model.embed_tokens(torch.full((b, 1), STOP_TOKEN_ID, dtype=input_ids.dtype))
        return torch.cat([tokens[:, :1], patches.to(tokens.dtype), tokens[:, 1:], queries, stop], dim=1)

    def run_llm(self, embeds: torch.Tensor, last_index: int | None = None) -> list[torch.Tensor]:
        """Hidden states 0..last_index (default: all, the last one after the final norm)."""
        model = self.language_model.model
        n_layers = len(model.layers)
        last_index = n_layers if last_index is None else last_index
        position_ids = torch.arange(embeds.shape[1]).unsqueeze(0)
        position_embeddings = model.rotary_emb(embeds, position_ids)
        mask = causal_mask(embeds.shape[1], embeds.dtype)
        states = [embeds]
        h = embeds
        for layer in model.layers[:last_index]:
            h = layer(h, attention_mask=mask, position_embeddings=position_embeddings, position_ids=position_ids)
            states.append(h)
        if last_index == n_layers:
            states[-1] = model.norm(h)
        return states

    def hidden_states(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, indices: tuple[int, ...] | None = None
    ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Task and action tokens of hidden states, by index (spec 1.8).

        Positions use the training code's shift by one: task = positions 0..511 (tok_0, patches
        0..510), action = positions 511+P .. 574+P (the last prompt token, queries 0..62).
        Without `indices` this is the authors' computation: every index over the whole sequence.
        With `indices` the LLM runs only to max(indices) and over the positions up to the last
        one read; causal attention makes the dropped tail (query 63, the stop token) irrelevant.
        """
        p = input_ids.shape[1]
        if p < 2:
            raise ValueError("the prompt must hold at least two tokens")
        n_task = self.cfg.num_task_tokens
        start = n_task - 1 + p
        embeds = self.embed_sequence(pixel_values, input_ids)
        if indices is None:
            states = self.run_llm(embeds)
            wanted = range(len(states))
        else:
            states = self.run_llm(embeds[:, : start + NUM_ACTION_QUERIES], max(indices))
            wanted = sorted(set(indices))
        return {i: (states[i][:, :n_task], states[i][:, start : start + NUM_ACTION_QUERIES]) for i in wanted}
