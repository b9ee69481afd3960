"""The two vision towers of the Prismatic "dinosiglip-vit-so-224px" backbone (spec 1.3).

The released checkpoints name their towers by timm model id and store timm's parameter layout
(with DINOv2's LayerScale `gamma` renamed `scale_factor`). The towers are written out here rather
than built with `timm.create_model` because timm imports torchvision at import time, and no
torchvision build loads beside the CPU torch 2.13.0 wheel this project installs; everything the
checkpoint holds is reproduced name for name, so a released `model.safetensors` loads strictly.

Only what RD-VLA reads is computed: the patch tokens at the output of the second-to-last block,
without the final norm. The final block, the final norm and SigLIP's attention-pool head exist as
parameters (they are in the checkpoint) but are never run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 224
PATCH_SIZE = 14  # the released towers': 256 patches per image


@dataclass(frozen=True)
class TowerConfig:
    """Shape of one ViT tower; `timm_id` names the family as the checkpoint's config.json does."""

    timm_id: str
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    reg_tokens: int
    class_token: bool
    layer_scale: bool
    map_head: bool
    patch_size: int = PATCH_SIZE

    @property
    def num_patches(self) -> int:
        """Patch tokens per image: 256 for the released towers."""
        return (IMAGE_SIZE // self.patch_size) ** 2

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)


# The released families (timm defaults for these ids; spec 1.3).
TOWER_FAMILIES: dict[str, TowerConfig] = {
    "vit_large_patch14_reg4_dinov2.lvd142m": TowerConfig(
        "vit_large_patch14_reg4_dinov2.lvd142m", 1024, 24, 16, 4.0, 4, True, True, False
    ),
    "vit_so400m_patch14_siglip_224": TowerConfig(
        "vit_so400m_patch14_siglip_224", 1152, 27, 16, 3.7362, 0, False, False, True
    ),
}

# The keyword overrides a reduced checkpoint may pass through `timm_model_kwargs` (spec 4.1).
# A larger patch size gives fewer vision tokens (patch 28: 64 per image), for models trained on a CPU.
ALLOWED_OVERRIDES = ("embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size")


def tower_config(timm_id: str, overrides: dict[str, Any] | None = None) -> TowerConfig:
    """The tower for a timm id, with the reduced-size overrides of spec 4.1 applied."""
    family = TOWER_FAMILIES.get(timm_id) or TOWER_FAMILIES.get(timm_id.split(".")[0] + ".lvd142m")
    if family is None:
        raise ValueError(
            f"unsupported vision tower {timm_id!r}; supported: {', '.join(sorted(TOWER_FAMILIES))}"
        )
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(ALLOWED_OVERRIDES))
    if unknown:
        raise ValueError(
            f"timm_model_kwargs for {timm_id!r} has unsupported keys {unknown}; "
            f"allowed: {list(ALLOWED_OVERRIDES)}"
        )
    cfg = replace(family, **overrides)
    if cfg.embed_dim % cfg.num_heads:
        raise ValueError(f"{timm_id}: embed_dim {cfg.embed_dim} not divisible by num_heads {cfg.num_heads}")
    if isinstance(cfg.patch_size, bool) or not isinstance(cfg.patch_size, int) or cfg.patch_size < 1 \
            or IMAGE_SIZE % cfg.patch_size:
        raise ValueError(f"{timm_id}: patch_size {cfg.patch_size!r} does not divide the image size {IMAGE_SIZE}")
    if cfg.depth < 2:
        raise ValueError(f"{timm_id}: depth {cfg.depth} < 2 (the second-to-last block is read)")
    return cfg


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, patches, dim)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * (d // self.num_heads) ** -0.5) @ k.transpose(-2, -1)
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


class Block(nn.Module):
    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = Attention(d, cfg.num_heads)
        self.ls1 = LayerScale(d) if cfg.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = Mlp(d, cfg.mlp_hidden)
        self.ls2 = LayerScale(d) if cfg.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class AttentionPoolHead(nn.Module):
    """SigLIP's multihead attention-pool head: kept for strict loading, never run by RD-VLA."""

    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.latent = nn.Parameter(torch.zeros(1, 1, d))
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.mlp = Mlp(d, cfg.mlp_hidden)


class VisionTower(nn.Module):
    """A ViT whose forward returns the patch tokens after block `depth - 2` (spec 1.3)."""

    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.reg_tokens, d)) if cfg.reg_tokens else None
        # Position embedding on the patch grid only (DINOv2 `no_embed_class`, SigLIP has no prefix).
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches, d))
        self.patch_embed = PatchEmbed(d, cfg.patch_size)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.attn_pool = AttentionPoolHead(cfg) if cfg.map_head else None

    @property
    def blocks_run(self) -> int:
        """Blocks executed: through the second-to-last one."""
        return self.cfg.depth - 1

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) normalised pixels -> (B, num_patches, embed_dim) patch tokens."""
        x = self.patch_embed(pixels) + self.pos_embed
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        x = torch.cat(prefix + [x], dim=1)
        for block in self.blocks[: self.blocks_run]:
            x = block(x)
        return x[:, self.cfg.num_prefix_tokens :]


class DinoSigLIPBackbone(nn.Module):
    """`vision_backbone` of the checkpoint: DINOv2 (`featurizer`) and SigLIP (`fused_featurizer`)."""

    def __init__(self, dino: TowerConfig, siglip: TowerConfig) -> None:
        super().__init__()
        if dino.num_patches != siglip.num_patches:
            raise ValueError(f"the towers' patch sizes differ ({dino.patch_size}, {siglip.patch_size}): their features "
                             "are concatenated patch by patch")
        self.featurizer = VisionTower(dino)
        self.fused_featurizer = VisionTower(siglip)

    @property
    def feature_dim(self) -> int:
        return self.featurizer.cfg.embed_dim + self.fused_featurizer.cfg.embed_dim

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 6n, 224, 224) with [DINO RGB, SigLIP RGB] per image -> (B, patches n, dino+siglip)."""
        per_image = []
        for image in torch.split(pixel_values, 6, dim=1):
            dino, siglip = torch.split(image, 3, dim=1)
            per_image.append(torch.cat([self.featurizer(dino), self.fused_featurizer(siglip)], dim=2))
        return torch.cat(per_image, dim=1)
