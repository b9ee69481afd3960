"""The RD-VLA action head (spec section 2), readable top to bottom.

Prelude layers turn 8 learned chunk queries into `e`; a weight-tied recurrent core refines a latent
latent S that starts as truncated-normal noise, re-injecting `e` every iteration; the Coda decodes S
into an (8, 7) chunk of normalised actions. Every layer cross-attends to the VLM's hidden states
at its bound index: [64 action-query latents; the proprio token] and the 512 task (vision) tokens.

Cross-attention keys and values depend only on the VLM context, never on S, so each layer splits
into `context_kv` (once per query) and a query-side `forward` (every iteration); the exporter cuts
the graph exactly there. tanh(gate) and the softmax scale are folded into the keys:
    concat(Q K_l^T, tanh(g) Q K_v^T) * s  ==  Q concat(s K_l, s tanh(g) K_v)^T
which is the same math with different float rounding (below 1e-6 relative in FP32).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from rdvla.runtime.halting import HaltingRule, finite_delta, run_iterations

log = logging.getLogger(__name__)

HEAD_TYPE = "ActionHeadRecurrent"


@dataclass(frozen=True)
class HeadConfig:
    """`RecurrentConfigInternal` of the authors' code (spec 2.1); stored as the head config JSON."""

    hidden_dim: int = 896
    num_heads: int = 8
    prelude_vlm_layers: tuple[int, ...] = ()
    recurrent_vlm_layers: tuple[int, ...] = (6, 23)
    coda_vlm_layers: tuple[int, ...] = ()
    action_chunk_len: int = 8
    action_dim: int = 7
    mean_recurrence: int = 12
    backprop_depth: int = 8
    random_iterations: bool = True
    init_std: float = 0.632
    rms_norm_eps: float = 1e-6
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "num_heads", "action_chunk_len", "action_dim", "mean_recurrence"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} not divisible by num_heads {self.num_heads}")
        if (self.hidden_dim // self.num_heads) % 2:
            raise ValueError("head dimension must be even for the head's RoPE")
        if not self.recurrent_vlm_layers:
            raise ValueError("recurrent_vlm_layers is empty: the head needs at least one core layer")

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    @property
    def weight_std(self) -> float:
        return math.sqrt(2.0 / (5.0 * self.hidden_dim))

    @property
    def output_std(self) -> float:
        return self.weight_std / math.sqrt(self.mean_recurrence * len(self.recurrent_vlm_layers))

    @property
    def vlm_indices(self) -> tuple[int, ...]:
        """Every VLM hidden-state index some head layer reads, sorted."""
        return tuple(sorted(set(self.prelude_vlm_layers + self.recurrent_vlm_layers + self.coda_vlm_layers)))

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> "HeadConfig":
        data = dict(data)
        kind = data.pop("_type", HEAD_TYPE)
        if kind != HEAD_TYPE:
            raise ValueError(f"action head type {kind!r} is not supported (expected {HEAD_TYPE!r})")
        if data.pop("use_persistent_memory", False):
            raise ValueError("the persistent-memory head extension (use_persistent_memory) is not supported")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            log.warning("ignoring unknown action-head config fields: %s", ", ".join(unknown))
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**kwargs)

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        out["_type"] = HEAD_TYPE
        return out


class RMSNorm(nn.Module):
    """Computed in FP32, weight applied in FP32, cast back to the input dtype (spec 2.2)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


def rope_tables(head_dim: int, length: int, base: float, bf16_pipeline: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (length, head_dim) of the head's RoPE variant (spec 2.2).

    inv_freq_j = base^(-2j/d); angle(t, k) = t * inv_freq[k mod d/2], laid out as [freqs, freqs].
    With `bf16_pipeline` (the default, and what released checkpoints were trained with) every step
    is rounded to bf16 as the authors' bf16-cast module does: inv_freq, positions, products, cos, sin.
    """
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    positions = torch.arange(length, dtype=torch.float32)
    if bf16_pipeline:
        inv_freq = inv_freq.bfloat16()
        positions = positions.bfloat16()
    freqs = torch.outer(positions, inv_freq)
    angles = torch.cat([freqs, freqs], dim=-1)
    return angles.cos().float(), angles.sin().float()


def rotate_interleaved(x: torch.Tensor) -> torch.Tensor:
    """R(x)_{2i} = -x_{2i+1}, R(x)_{2i+1} = x_{2i}: interleaved pairs, unlike the [freqs, freqs] tables."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos.to(x.dtype) + rotate_interleaved(x) * sin.to(x.dtype)


class ContextKV(NamedTuple):
    """One layer's iteration-invariant cross-attention operands, per head: (B, heads, 577, head_dim).

    keys = [s * K_latents ; s * tanh(gate) * K_vision], values = [V_latents ; V_vision].
    """

    keys: torch.Tensor
    values: torch.Tensor


class RecurrentLayer(nn.Module):
    """Self-attention with RoPE, gated cross-attention, SwiGLU; all pre-norm (spec 2.3)."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        d, eps = cfg.hidden_dim, cfg.rms_norm_eps
        self.num_heads = cfg.num_heads
        self.scale = cfg.head_dim**-0.5
        self.norm1 = RMSNorm(d, eps)
        self.q_self = nn.Linear(d, d, bias=False)
        self.k_self = nn.Linear(d, d, bias=False)
        self.v_self = nn.Linear(d, d, bias=False)
        self.o_self = nn.Linear(d, d, bias=False)
        self.norm2 = RMSNorm(d, eps)
        self.q_cross = nn.Linear(d, d, bias=False)
        self.k_latents = nn.Linear(d, d, bias=False)
        self.v_latents = nn.Linear(d, d, bias=False)
        self.k_vision = nn.Linear(d, d, bias=False)
        self.v_vision = nn.Linear(d, d, bias=False)
        self.o_cross = nn.Linear(d, d, bias=False)
        self.gate = nn.Parameter(torch.zeros(1))
        self.norm3 = RMSNorm(d, eps)
        self.ffn_gate = nn.Linear(d, 4 * d, bias=False)
        self.ffn_up = nn.Linear(d, 4 * d, bias=False)
        self.ffn_down = nn.Linear(4 * d, d, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, H, N, dh)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).flatten(2)

    def context_kv(self, latents: torch.Tensor, vision: torch.Tensor, proprio: torch.Tensor) -> ContextKV:
        """Keys/values over [64 latents; proprio token] and the 512 vision tokens (no norm on this side)."""
        ctx = torch.cat([latents, proprio], dim=1)
        k_lat = self._heads(self.k_latents(ctx)) * self.scale
        k_vis = self._heads(self.k_vision(vision)) * (self.scale * torch.tanh(self.gate))
        v_lat = self._heads(self.v_latents(ctx))
        v_vis = self._heads(self.v_vision(vision))
        return ContextKV(torch.cat([k_lat, k_vis], dim=2), torch.cat([v_lat, v_vis], dim=2))

    def forward(self, x: torch.Tensor, kv: ContextKV, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # Self-attention over the 8 chunk tokens: bidirectional, RoPE on q and k.
        u = self.norm1(x)
        q = apply_rope(self._heads(self.q_self(u)), cos, sin)
        k = apply_rope(self._heads(self.k_self(u)), cos, sin)
        v = self._heads(self.v_self(u))
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = x + self.o_self(self._merge(attn @ v))
        # Gated cross-attention: one softmax over 65 latent/proprio keys and 512 gated vision keys.
        q = self._heads(self.q_cross(self.norm2(x)))
        attn = (q @ kv.keys.transpose(-2, -1)).softmax(dim=-1)
        x = x + self.o_cross(self._merge(attn @ kv.values))
        # SwiGLU feed-forward.
        u = self.norm3(x)
        return x + self.ffn_down(F.silu(self.ffn_gate(u)) * self.ffn_up(u))


@dataclass
class HeadContext:
    """Everything iterations need, computed once per query."""

    injection: torch.Tensor  # the adapter's term for the Prelude output e: e @ W_e^T, (B, T, D)
    core_kv: list[ContextKV]
    coda_kv: list[ContextKV]


# VLM hidden states by index: index -> (task tokens (B, 512, D), action tokens (B, 64, D)).
HiddenStates = dict[int, tuple[torch.Tensor, torch.Tensor]]


@dataclass
class HeadOutput:
    actions: torch.Tensor  # (B, T, A) normalised actions of the final latent
    iterations: int
    mse: list[float] = field(default_factory=list)  # adjacent-action mean squared difference per iteration (NaN at 1)
    cosine: list[float] = field(default_factory=list)  # adjacent-action cosine similarity per iteration (NaN at 1)
    per_iteration_actions: list[torch.Tensor] = field(default_factory=list)
    stopped_by: str = ""  # why the iterations stopped (halting.FIXED, CONVERGED, MAX_ITERATIONS)


class RecurrentDepthModel(nn.Module):
    """`ActionHeadRecurrent.model`: parameter names match the checkpoint's `model.*` keys (spec 2.4)."""

    def __init__(self, cfg: HeadConfig, fp32_rope: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_dim
        self.action_queries = nn.Parameter(torch.zeros(cfg.action_chunk_len, d))
        if cfg.prelude_vlm_layers:
            self.prelude = nn.ModuleList(RecurrentLayer(cfg) for _ in cfg.prelude_vlm_layers)
        self.adapter = nn.Linear(2 * d, d, bias=False)
        self.adapter_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.gamma_adapt = nn.Parameter(torch.ones(1))
        self.recurrent = nn.ModuleList(RecurrentLayer(cfg) for _ in cfg.recurrent_vlm_layers)
        self.recurrent_norm = RMSNorm(d, cfg.rms_norm_eps)
        if cfg.coda_vlm_layers:
            self.coda = nn.ModuleList(RecurrentLayer(cfg) for _ in cfg.coda_vlm_layers)
        self.output_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.output_proj = nn.Linear(d, cfg.action_dim, bias=True)
        self.gamma_init = nn.Parameter(torch.ones(1))
        cos, sin = rope_tables(cfg.head_dim, cfg.action_chunk_len, cfg.rope_base, bf16_pipeline=not fp32_rope)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def _layers(self, name: str) -> list[RecurrentLayer]:
        return list(getattr(self, name)) if hasattr(self, name) else []

    def context(self, hidden: HiddenStates, proprio: torch.Tensor) -> HeadContext:
        """Run the Prelude, its adapter term, and every core/coda layer's keys and values.

        `hidden` maps each VLM hidden-state index a layer reads to (task, action) tokens;
        proprio is the projected token (B, 1, D).
        """
        cfg = self.cfg

        def kv(layer: RecurrentLayer, j: int) -> ContextKV:
            h_task, h_action = hidden[j]
            return layer.context_kv(h_action, h_task, proprio)

        x = self.action_queries.to(proprio.dtype).expand(proprio.shape[0], -1, -1)
        for layer, j in zip(self._layers("prelude"), cfg.prelude_vlm_layers):
            x = layer(x, kv(layer, j), self.rope_cos, self.rope_sin)
        return HeadContext(
            injection=F.linear(x, self.adapter.weight[:, cfg.hidden_dim :]),
            core_kv=[kv(layer, j) for layer, j in zip(self.recurrent, cfg.recurrent_vlm_layers)],
            coda_kv=[kv(layer, j) for layer, j in zip(self._layers("coda"), cfg.coda_vlm_layers)],
        )

    def initial_latent(self, batch: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """S0 ~ TruncNormal(0, sigma0) cut at +-3 sigma0, sigma0 = gamma_init * init_std (spec 2.4)."""
        sigma = float(self.gamma_init.detach().float().abs()) * self.cfg.init_std
        s0 = torch.empty(batch, self.cfg.action_chunk_len, self.cfg.hidden_dim, dtype=torch.float32)
        nn.init.trunc_normal_(s0, mean=0.0, std=sigma, a=-3 * sigma, b=3 * sigma, generator=generator)
        return s0.to(dtype)

    def iterate(self, latent: torch.Tensor, ctx: HeadContext) -> torch.Tensor:
        """One recurrent iteration: adapter with input injection, core layers, recurrent norm.

        adapter(concat(S, e)) = S W_s^T + e W_e^T; the second term is fixed per query (ctx.injection).
        """
        z = F.linear(latent, self.adapter.weight[:, : self.cfg.hidden_dim]) + ctx.injection
        z = self.adapter_norm(self.gamma_adapt * z)
        for layer, kv in zip(self.recurrent, ctx.core_kv):
            z = layer(z, kv, self.rope_cos, self.rope_sin)
        return self.recurrent_norm(z)

    def decode(self, latent: torch.Tensor, ctx: HeadContext) -> torch.Tensor:
        """Coda layers, output norm and projection -> (B, T, A) normalised actions."""
        y = latent
        for layer, kv in zip(self._layers("coda"), ctx.coda_kv):
            y = layer(y, kv, self.rope_cos, self.rope_sin)
        return self.output_proj(self.output_norm(y))

    def run(
        self,
        ctx: HeadContext,
        latent: torch.Tensor,
        halting: HaltingRule,
        trace: bool = False,
    ) -> HeadOutput:
        """Iterate from `latent` until `halting` stops; decode once per iteration only when needed.

        With a fixed iteration count and no `trace`, the Coda runs once at the end, as upstream does. The
        returned actions are the decode of the final latent, which equals the last per-iteration
        decode (the upstream loop's extra final decode recomputes the same value).
        """
        decode_each = trace or halting.needs_decode
        out = HeadOutput(actions=torch.empty(0), iterations=0)
        prev: torch.Tensor | None = None

        def iterate(k: int) -> Optional[float]:
            nonlocal latent, prev
            latent = self.iterate(latent, ctx)
            if not decode_each:
                return None
            actions = self.decode(latent, ctx)
            mse, cos = adjacent_statistics(actions, prev)
            out.mse.append(mse)
            out.cosine.append(cos)
            out.per_iteration_actions.append(actions)
            prev = actions
            return finite_delta(halting.delta(mse, cos))

        stop = run_iterations(halting, iterate)
        out.iterations, out.stopped_by = stop.iterations, stop.stopped_by
        out.actions = out.per_iteration_actions[-1] if decode_each else self.decode(latent, ctx)
        return out


def adjacent_statistics(current: torch.Tensor, previous: torch.Tensor | None) -> tuple[float, float]:
    """(mean squared difference, cosine similarity) of two flattened chunks; NaN without a previous one."""
    if previous is None:
        return math.nan, math.nan
    mse, cos = adjacent_statistic_tensors(current, previous)
    return float(mse), float(cos)


def adjacent_statistic_tensors(current: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (not sum) of squared differences, and cosine similarity, over all B*T*A elements, in FP32."""
    a, b = current.float().flatten(), previous.float().flatten()
    mse = (a - b).pow(2).mean()
    cos = (a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-8)
    return mse, cos


class ActionHead(nn.Module):
    """The saved module: its state dict keys are `model.<param>` as in the released checkpoints."""

    def __init__(self, cfg: HeadConfig, fp32_rope: bool = False) -> None:
        super().__init__()
        self.model = RecurrentDepthModel(cfg, fp32_rope=fp32_rope)

    @property
    def cfg(self) -> HeadConfig:
        return self.model.cfg

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The authors' initialisation of linears and queries (spec 2.6); gates, gammas and norms start
        as constructed (0, 1, 1). The `o_proj` entry of the name filter matches nothing, as upstream."""
        cfg = self.cfg
        for name, module in self.model.named_modules():
            if isinstance(module, nn.Linear):
                small = any(tag in name for tag in ("ffn_down", "output_proj", "o_proj"))
                std = cfg.output_std if small else cfg.weight_std
                nn.init.trunc_normal_(module.weight, std=std, a=-3 * std, b=3 * std, generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(
            self.model.action_queries, std=cfg.init_std, a=-3 * cfg.init_std, b=3 * cfg.init_std, generator=generator
        )


def sample_iterations(mean_recurrence: int, generator: torch.Generator | None = None) -> int:
    """Training-time depth: tau ~ N(ln r - sigma^2/2, sigma^2), sigma = 0.5; n = clip(Poisson(min(e^tau, 100)) + 1, 1, 64)."""
    sigma = 0.5
    tau = torch.normal(
        torch.tensor(math.log(mean_recurrence) - sigma**2 / 2), torch.tensor(sigma), generator=generator
    )
    rate = torch.clamp(torch.exp(tau), max=100.0)
    n = torch.poisson(rate, generator=generator) + 1
    return int(torch.clamp(n, 1, 64))


def truncated_bptt_forward(
    model: RecurrentDepthModel,
    ctx: HeadContext,
    latent: torch.Tensor,
    iterations: int,
    backprop_depth: int,
) -> torch.Tensor:
    """Training forward (spec 2.6): max(0, n-k) iterations without gradient, then min(k, n) with, then decode."""
    with torch.no_grad():
        for _ in range(max(0, iterations - backprop_depth)):
            latent = model.iterate(latent, ctx)
    latent = latent.detach()
    for _ in range(min(backprop_depth, iterations)):
        latent = model.iterate(latent, ctx)
    return model.decode(latent, ctx)
