"""The action head against the spec's formulas, written independently here."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rdvla.export.head import HeadConfig, RecurrentDepthModel, RecurrentLayer, apply_rope, rope_tables

CFG = HeadConfig(hidden_dim=64, num_heads=4, prelude_vlm_layers=(1,), recurrent_vlm_layers=(2, 2), coda_vlm_layers=(2,))


def bf16(x: float) -> float:
    return torch.tensor(x, dtype=torch.float32).bfloat16().float().item()


def spec_rope(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Spec 2.2, element by element: angle(t, k) = t * inv_freq[k mod d/2], every step rounded to bf16;
    x'_k = x_k cos + R(x)_k sin with R(x)_{2i} = -x_{2i+1}, R(x)_{2i+1} = x_{2i}."""
    *_, length, d = x.shape
    out = torch.empty_like(x)
    for t in range(length):
        for k in range(d):
            inv = bf16(1.0 / base ** (2 * (k % (d // 2)) / d))
            angle = bf16(t * inv)
            c, s = bf16(math.cos(angle)), bf16(math.sin(angle))
            partner = -x[..., t, k + 1] if k % 2 == 0 else x[..., t, k - 1]
            out[..., t, k] = x[..., t, k] * c + partner * s
    return out


def test_rope_matches_spec_formula() -> None:
    x = torch.randn(2, 3, 8, 16, generator=torch.Generator().manual_seed(0))
    cos, sin = rope_tables(16, 8, 10000.0)
    torch.testing.assert_close(apply_rope(x, cos, sin), spec_rope(x), rtol=0, atol=1e-6)


def test_rope_is_not_norm_preserving_and_fp32_tables_differ() -> None:
    x = torch.randn(1, 1, 8, 112, generator=torch.Generator().manual_seed(1))
    cos, sin = rope_tables(112, 8, 10000.0)
    rotated = apply_rope(x, cos, sin)
    assert not torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-3)
    cos32, sin32 = rope_tables(112, 8, 10000.0, bf16_pipeline=False)
    assert (cos32 - cos).abs().max() > 1e-4


def _rand_layer(seed: int) -> RecurrentLayer:
    torch.manual_seed(seed)
    layer = RecurrentLayer(CFG)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.2)
        for norm in (layer.norm1, layer.norm2, layer.norm3):
            norm.weight.add_(1.0)
        layer.gate.fill_(0.7)
    return layer


def spec_layer(layer: RecurrentLayer, x, latents, vision, proprio) -> torch.Tensor:
    """Spec 2.3 written out: joint softmax over [Q K_l^T, tanh(gate) Q K_v^T] * s."""
    h, dh = CFG.num_heads, CFG.head_dim
    s = dh**-0.5

    def rms(module, v):
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + CFG.rms_norm_eps) * module.weight

    def heads(v):
        return v.view(v.shape[0], v.shape[1], h, dh).transpose(1, 2)

    u = rms(layer.norm1, x)
    q, k, v = heads(u @ layer.q_self.weight.T), heads(u @ layer.k_self.weight.T), heads(u @ layer.v_self.weight.T)
    q, k = spec_rope(q), spec_rope(k)
    a = torch.softmax(q @ k.transpose(-1, -2) * s, -1) @ v
    x = x + a.transpose(1, 2).reshape(x.shape) @ layer.o_self.weight.T
    c = torch.cat([latents, proprio], 1)
    q = heads(rms(layer.norm2, x) @ layer.q_cross.weight.T)
    kl, vl = heads(c @ layer.k_latents.weight.T), heads(c @ layer.v_latents.weight.T)
    kv, vv = heads(vision @ layer.k_vision.weight.T), heads(vision @ layer.v_vision.weight.T)
    logits = torch.cat([q @ kl.transpose(-1, -2), torch.tanh(layer.gate) * (q @ kv.transpose(-1, -2))], -1) * s
    a = torch.softmax(logits, -1) @ torch.cat([vl, vv], 2)
    x = x + a.transpose(1, 2).reshape(x.shape) @ layer.o_cross.weight.T
    u = rms(layer.norm3, x)
    return x + (F.silu(u @ layer.ffn_gate.weight.T) * (u @ layer.ffn_up.weight.T)) @ layer.ffn_down.weight.T


def test_layer_matches_spec() -> None:
    layer = _rand_layer(0)
    g = torch.Generator().manual_seed(1)
    x, lat, vis, pro = (torch.randn(2, n, 64, generator=g) for n in (8, 64, 512, 1))
    cos, sin = rope_tables(CFG.head_dim, 8, CFG.rope_base)
    ours = layer(x, layer.context_kv(lat, vis, pro), cos, sin)
    torch.testing.assert_close(ours, spec_layer(layer, x, lat, vis, pro), rtol=1e-5, atol=1e-5)


def test_zero_gate_keeps_vision_keys_with_uniform_logits() -> None:
    layer = _rand_layer(2)
    with torch.no_grad():
        layer.gate.zero_()
    g = torch.Generator().manual_seed(3)
    x, lat, pro = torch.randn(1, 8, 64, generator=g), torch.randn(1, 64, 64, generator=g), torch.randn(1, 1, 64, generator=g)
    cos, sin = rope_tables(CFG.head_dim, 8, CFG.rope_base)
    vis_a, vis_b = torch.randn(1, 512, 64, generator=g), torch.randn(1, 512, 64, generator=g)
    out_a = layer(x, layer.context_kv(lat, vis_a, pro), cos, sin)
    out_b = layer(x, layer.context_kv(lat, vis_b, pro), cos, sin)
    # Vision values still enter through the uniform-logit keys, so different vision changes the output.
    assert (out_a - out_b).abs().max() > 1e-3
    torch.testing.assert_close(out_a, spec_layer(layer, x, lat, vis_a, pro), rtol=1e-5, atol=1e-5)


def test_initial_state_is_truncated_at_three_sigma() -> None:
    model = RecurrentDepthModel(CFG)
    with torch.no_grad():
        model.gamma_init.fill_(0.5)
    s0 = model.initial_latent(64, torch.Generator().manual_seed(0))
    sigma = 0.5 * CFG.init_std
    assert s0.shape == (64, 8, 64)
    assert s0.abs().max() <= 3 * sigma
    assert abs(s0.std().item() - sigma * 0.986) < 0.02 * sigma  # std of N(0,1) cut at +-3 is 0.9866
