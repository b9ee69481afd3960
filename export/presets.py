"""Random-weight checkpoints in the released layout: `rdvla init-checkpoint --preset tiny|small|full`.

`full` has the released dimensions (DINOv2-L/14-reg4, SigLIP so400m, Qwen2.5-0.5B, head
`12_24-24_24`); `tiny` keeps every structural feature (two towers, registers, LayerScale, 24 LLM
layers so the released layer lists apply unchanged, GQA, tied embeddings) at widths small enough
for tests. `small` is the size a policy trains at on a 2-core CPU (scripts/train_policy.py): the
same structure with an 8-layer LLM whose head reads it as the released head reads 24 layers,
`5_8-8_8` (hidden-state indices 4 and 7: the Prelude reads the middle layer's output, core and
Coda the second-to-last layer's, the last layer is unread), and towers of patch size 28 (64 vision tokens per image, 128 task
tokens): the LLM's attention over the ~630-token sequence is what a training step spends most
time on, so its depth and the sequence's length are what is cut. Values are non-trivial everywhere (gates, gammas, LayerScale, norms, biases,
statistics), so a test that drops any of them sees a different answer.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from rdvla.export.checkpoint import save_checkpoint, vlm_config_from_json
from rdvla.export.head import HeadConfig
from rdvla.export.model import RDVLA
from rdvla.export.tokenizer_files import write_tokenizer_files
from rdvla.runtime.preprocess import DEFAULT_CONFIG as PREPROCESS

log = logging.getLogger(__name__)

PRESETS = ("tiny", "small", "full")
DATASET_KEY = "libero_spatial_no_noops"
RELEASED_HEAD = dict(prelude_vlm_layers=(11,), recurrent_vlm_layers=(23, 23), coda_vlm_layers=(23,), mean_recurrence=32)
# `12_24-24_24` (indices 11, 23 of 24 layers) scaled to 8 layers: indices 4 and 7.
SMALL_HEAD = dict(prelude_vlm_layers=(4,), recurrent_vlm_layers=(7, 7), coda_vlm_layers=(7,), mean_recurrence=32)
_STEP = {"tiny": 100, "small": 100, "full": 40000}


def _text_config(preset: str, vocab_size: int) -> dict[str, Any]:
    """Qwen2 `text_config` as the transformers-4.40 era writes it (rope_theta at top level)."""
    base = dict(
        model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_act="silu", rms_norm_eps=1e-6,
        rope_theta=1000000.0, tie_word_embeddings=True, max_position_embeddings=32768, num_hidden_layers=24,
        attention_dropout=0.0, use_sliding_window=False, torch_dtype="bfloat16",
    )
    if preset == "full":
        return base | dict(hidden_size=896, intermediate_size=4864, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936)
    if preset == "small":
        return base | dict(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
                           num_hidden_layers=8, vocab_size=vocab_size)
    return base | dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab_size)


def preset_config(preset: str, vocab_size: int) -> tuple[dict[str, Any], HeadConfig]:
    """`config.json` content and the head config of a preset."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config: dict[str, Any] = {
        "model_type": "openvla",
        "architectures": ["OpenVLAForActionPrediction"],
        "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig",
                     "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"},
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "llm_backbone_id": "qwen25-0_5b-extra",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "use_fused_vision_backbone": True,
        "image_resize_strategy": "resize-naive",
        "image_sizes": [224, 224],
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "timm_override_act_layers": [None, None],
        "hf_llm_id": "Qwen/Qwen2.5-0.5B",
        "llm_max_length": 2048,
        "pad_token_id": 32000,
        "pad_to_multiple_of": 64,
        "n_action_bins": 256,
        "norm_stats": {},
        "output_projector_states": False,
        "torch_dtype": "bfloat16",
        "text_config": _text_config(preset, vocab_size),
    }
    if preset == "tiny":
        config["timm_model_kwargs"] = [
            {"embed_dim": 32, "depth": 3, "num_heads": 2},
            {"embed_dim": 48, "depth": 3, "num_heads": 2},
        ]
        head = HeadConfig(hidden_dim=64, num_heads=8, **RELEASED_HEAD)
    elif preset == "small":
        config["timm_model_kwargs"] = [
            {"embed_dim": 64, "depth": 3, "num_heads": 4, "patch_size": 28},
            {"embed_dim": 64, "depth": 3, "num_heads": 4, "patch_size": 28},
        ]
        head = HeadConfig(hidden_dim=64, num_heads=8, **SMALL_HEAD)
    else:
        head = HeadConfig(hidden_dim=896, num_heads=8, **RELEASED_HEAD)
    return config, head


def random_statistics(generator: torch.Generator) -> dict[str, Any]:
    """Plausible BOUNDS_Q99 statistics with distinct ranges per dimension and the LIBERO mask."""

    def uniform(n: int, low: float, high: float) -> list[float]:
        return (torch.rand(n, generator=generator, dtype=torch.float64) * (high - low) + low).tolist()

    def block(n: int, mask: list[bool] | None) -> dict[str, Any]:
        q01 = uniform(n, -1.0, -0.05)
        q99 = [lo + w for lo, w in zip(q01, uniform(n, 0.2, 1.8))]
        out = {
            "mean": [(a + b) / 2 for a, b in zip(q01, q99)],
            "std": [(b - a) / 4 for a, b in zip(q01, q99)],
            "min": [a - 0.1 for a in q01],
            "max": [b + 0.1 for b in q99],
            "q01": q01,
            "q99": q99,
        }
        if mask is not None:
            out["mask"] = mask
        return out

    return {
        DATASET_KEY: {
            "action": block(7, [True] * 6 + [False]),
            "proprio": block(8, None),
            "num_transitions": 52970,
            "num_trajectories": 432,
        }
    }


@torch.no_grad()
def randomize(model: RDVLA, generator: torch.Generator) -> None:
    """Non-trivial values for every parameter; linears at a depth-safe scale."""
    model.action_head.reset_parameters(generator)
    head_params = {id(p) for p in model.action_head.parameters()}
    for name, p in model.named_parameters():
        is_head = id(p) in head_params
        if name.endswith(".gate"):
            p.uniform_(-1.5, 1.5, generator=generator)
        elif name.endswith(("gamma_init", "gamma_adapt")):
            p.uniform_(0.6, 1.4, generator=generator)
        elif name.endswith("scale_factor"):
            p.uniform_(0.05, 0.5, generator=generator)
        elif p.ndim == 1 and ("norm" in name.rsplit(".", 2)[-2]) and name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=generator))
        elif name.endswith("bias"):
            p.normal_(0.0, 0.02, generator=generator)
        elif name.endswith("output_proj.weight"):
            # A trained head emits actions spread over [-1, 1]; the authors' tiny init would not.
            p.normal_(0.0, 0.5 / math.sqrt(p.shape[1]), generator=generator)
        elif is_head:
            continue  # linears and chunk queries keep the authors' initialisation
        elif p.ndim >= 2 and "embed_tokens" not in name:
            fan_in = p[0].numel()
            p.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
        else:
            p.normal_(0.0, 0.02 if "embed" in name or "queries" in name else 0.5, generator=generator)


def preprocessor_config() -> dict[str, Any]:
    """The Prismatic processor config; the bf16-rounded DINOv2 constants are the effective ones (spec 1.2)."""
    return {
        "image_processor_type": "PrismaticImageProcessor",
        "processor_class": "PrismaticProcessor",
        "image_resize_strategy": "resize-naive",
        "input_sizes": [[3, 224, 224], [3, 224, 224]],
        "interpolations": ["bicubic", "bicubic"],
        "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]],
        "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]],
        "tvf_normalize_params": [
            {"mean": list(PREPROCESS.dino_mean), "std": list(PREPROCESS.dino_std), "inplace": False},
            {"mean": list(PREPROCESS.siglip_mean), "std": list(PREPROCESS.siglip_std), "inplace": False},
        ],
        "use_fused_vision_backbone": True,
    }


def init_checkpoint(preset: str, out: Path, seed: int = 0) -> Path:
    """Write a random-weight checkpoint of `preset` into `out` (created; must be empty or absent)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    generator = torch.Generator().manual_seed(seed)
    vocab = write_tokenizer_files(out, vocab_size=4096 if preset == "full" else 1000)
    config, head_cfg = preset_config(preset, vocab_size=64 * math.ceil(vocab / 64))
    log.info("building the %s model", preset)
    model = RDVLA(vlm_config_from_json(config), head_cfg)
    randomize(model, generator)
    # Round to bf16 now so the model in memory equals what a load of the written files gives.
    for p in model.parameters():
        p.data = p.data.to(torch.bfloat16).to(torch.float32)
    log.info("writing %s", out)
    save_checkpoint(model, out, _STEP[preset], config, random_statistics(generator))
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=2) + "\n")
    return out

