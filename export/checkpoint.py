"""The released checkpoint directory (spec section 4): find its files, load them strictly, write them.

A checkpoint directory holds `config.json`, `model.safetensors` (or a sharded index),
`action_head--<step>_checkpoint.pt`, `action_head_config--<step>_checkpoint.json`,
`proprio_projector--<step>_checkpoint.pt`, `dataset_statistics.json` and the tokenizer files.
Every mismatch is a `CheckpointError` naming the file and the key or shape at fault.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import Qwen2Config

from rdvla.export.head import HeadConfig
from rdvla.export.model import RDVLA
from rdvla.export.vision import tower_config
from rdvla.export.vlm import VLMConfig
from rdvla.runtime.normalization import NormStats

log = logging.getLogger(__name__)

MODEL_WEIGHTS = "model.safetensors"
MODEL_INDEX = "model.safetensors.index.json"
HEAD_WEIGHTS_GLOB = "action_head--*_checkpoint.pt"
HEAD_CONFIG_GLOB = "action_head_config--*_checkpoint.json"
PROPRIO_WEIGHTS_GLOB = "proprio_projector--*_checkpoint.pt"
STATISTICS = "dataset_statistics.json"
TOKENIZER = "tokenizer.json"
# Scalars the authors store as one-element tensors; a 0-d save of the same value is accepted too.
_SCALAR_SUFFIXES = (".gate", "gamma_adapt", "gamma_init")
_MAX_KEYS_SHOWN = 8


class CheckpointError(ValueError):
    """A checkpoint directory that does not match the released layout or the model it describes."""


@dataclass(frozen=True)
class CheckpointFiles:
    root: Path
    config: Path
    weights: tuple[Path, ...]
    head_weights: Path
    head_config: Path
    proprio_weights: Path
    statistics: Path
    tokenizer: Path

    @classmethod
    def discover(cls, root: Path) -> "CheckpointFiles":
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise CheckpointError(f"{root} is a file, not a checkpoint directory: give the folder that holds config.json "
                                  "and model.safetensors")
        if not root.is_dir():
            raise CheckpointError(f"checkpoint directory not found: {root}")

        def required(name: str) -> Path:
            path = root / name
            if not path.is_file():
                raise CheckpointError(f"{root}: missing file {name}")
            return path

        def one(pattern: str) -> Path:
            found = sorted(root.glob(pattern))
            if len(found) != 1:
                what = "no file" if not found else f"{len(found)} files ({', '.join(p.name for p in found)})"
                raise CheckpointError(f"{root}: expected exactly one {pattern}, found {what}")
            return found[0]

        if (root / MODEL_WEIGHTS).is_file():
            weights: tuple[Path, ...] = (root / MODEL_WEIGHTS,)
        elif (root / MODEL_INDEX).is_file():
            weights = tuple(required(name) for name in _shards(root / MODEL_INDEX))
        else:
            raise CheckpointError(f"{root}: missing file {MODEL_WEIGHTS} (or {MODEL_INDEX})")
        return cls(
            root=root,
            config=required("config.json"),
            weights=weights,
            head_weights=one(HEAD_WEIGHTS_GLOB),
            head_config=one(HEAD_CONFIG_GLOB),
            proprio_weights=one(PROPRIO_WEIGHTS_GLOB),
            statistics=required(STATISTICS),
            tokenizer=required(TOKENIZER),
        )

    def all_files(self) -> list[Path]:
        return [self.config, *self.weights, self.head_weights, self.head_config, self.proprio_weights,
                self.statistics, self.tokenizer]


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of the checkpoint (every one is an object), or a CheckpointError naming it."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{path.name}: not UTF-8 text; copy the file again from the training run") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path.name}: not valid JSON ({exc}); copy the file again from the training run") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path.name}: holds a JSON {type(data).__name__}, expected an object")
    return data


def _shards(index_path: Path) -> list[str]:
    """The shard files a sharded checkpoint's index names (plain file names inside the checkpoint)."""
    weight_map = _read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path.name}: no 'weight_map' object (tensor name -> shard file); "
                              "copy the index again from the training run")
    shards = sorted({str(name) for name in weight_map.values()})
    outside = [name for name in shards if Path(name).name != name or name in ("", ".", "..")]
    if outside:
        raise CheckpointError(f"{index_path.name}: shard {outside[0]!r} is not a file name inside the checkpoint directory")
    return shards


def vlm_config_from_json(config: Mapping[str, Any], source: str = "config.json") -> VLMConfig:
    """Tower and LLM shapes from the OpenVLA `config.json` (with the reduced-size key of spec 4.1)."""
    try:
        ids = list(config["timm_model_ids"])
        text = config["text_config"]
    except KeyError as exc:
        raise CheckpointError(f"{source}: missing field {exc.args[0]!r}") from None
    except TypeError:
        raise CheckpointError(f"{source}: timm_model_ids must be a list of two timm model names") from None
    if not isinstance(text, dict):
        raise CheckpointError(f"{source}: text_config must be an object (the Qwen2 LLM's config)")
    if len(ids) != 2 or not config.get("use_fused_vision_backbone", True):
        raise CheckpointError(f"{source}: expected the fused DINOv2+SigLIP backbone (two timm_model_ids), got {ids}")
    overrides = config.get("timm_model_kwargs") or [{}, {}]
    if len(overrides) != 2:
        raise CheckpointError(f"{source}: timm_model_kwargs must list one dict per tower")
    if text.get("model_type", "qwen2") != "qwen2":
        raise CheckpointError(f"{source}: text_config.model_type {text.get('model_type')!r} is not qwen2")
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        value = text.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(f"{source}: text_config.{key} must be a positive whole number, got {value!r}")
    try:
        dino, siglip = (tower_config(i, o) for i, o in zip(ids, overrides))
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    return VLMConfig(dino=dino, siglip=siglip, text=Qwen2Config.from_dict(text), num_images=2)


def _strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_pt(path: Path) -> dict[str, torch.Tensor]:
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path.name} is empty (0 bytes): copy it again from the training run")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"{path.name}: cannot be read as a torch state dict of tensors ({_torch_reason(exc)}); "
                              "copy it again from the training run, or re-save it with torch.save(module.state_dict(), path)") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path.name}: holds a {type(state).__name__}, expected a state dict")
    return _strip_module(state)


def _torch_reason(exc: BaseException) -> str:
    """torch.load's reason in a few words. Its advice to load with weights_only=False, or to allow more globals,
    would let the file run code: it is not passed on."""
    text = " ".join(str(exc).split())
    detail = text.partition("WeightsUnpickler error:")[2].strip()
    if detail:
        detail = detail.split(" Please use ")[0].split(" Check the documentation")[0].rstrip(". ")
        return f"it holds more than tensors: {detail}"
    return text.split(". ")[0].rstrip(".") if text else f"{type(exc).__name__}: the file is truncated or not a torch file"


class SafetensorsFiles(Mapping[str, torch.Tensor]):
    """Tensors of one or more .safetensors files, read one at a time (a 2.5 GB VLM never sits twice in memory)."""

    def __init__(self, paths: tuple[Path, ...]) -> None:
        self._where: dict[str, Path] = {}
        for path in paths:
            try:
                with safe_open(str(path), framework="pt") as f:
                    self._where.update({k: path for k in f.keys()})
            except (SafetensorError, OSError) as exc:
                raise CheckpointError(f"{path.name}: cannot be read as safetensors ({exc})") from None

    def __getitem__(self, key: str) -> torch.Tensor:
        path = self._where[key]
        try:
            with safe_open(str(path), framework="pt") as f:
                return f.get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path.name}: cannot read tensor {key} ({exc})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def _shown(keys: list[str]) -> str:
    more = f" (+{len(keys) - _MAX_KEYS_SHOWN} more)" if len(keys) > _MAX_KEYS_SHOWN else ""
    return ", ".join(keys[:_MAX_KEYS_SHOWN]) + more


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str, skip: frozenset[str] = frozenset()) -> None:
    """Copy `state` into `module`, refusing any missing or unexpected key or misfit shape."""
    expected = {k: v for k, v in module.state_dict(keep_vars=True).items() if k not in skip}
    given_keys = set(state) - skip
    missing = sorted(set(expected) - given_keys)
    unexpected = sorted(given_keys - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys: {_shown(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_shown(unexpected)}")
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    with torch.no_grad():
        for key, target in expected.items():
            value = state[key]
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{source}: {key} holds a {type(value).__name__}, not a tensor")
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"{source}: {key} holds NaN or inf: the checkpoint is broken; "
                                      "take another training step's checkpoint")
            if value.shape != target.shape:
                if key.endswith(_SCALAR_SUFFIXES) and value.numel() == target.numel() == 1:
                    value = value.reshape(target.shape)
                else:
                    raise CheckpointError(
                        f"{source}: {key} has shape {tuple(value.shape)}, the model built from the config expects {tuple(target.shape)}"
                    )
            target.copy_(value)  # in place, converting dtype: no second copy of the model


@dataclass
class LoadedCheckpoint:
    files: CheckpointFiles
    model: RDVLA
    statistics: dict[str, Any]
    config: dict[str, Any]

    def norm_stats(self, key: str | None) -> NormStats:
        """The statistics of dataset `key` (default: the only one), or a CheckpointError naming the file."""
        try:
            stats = NormStats.from_dataset_statistics(self.statistics, key)
        except ValueError as exc:
            raise CheckpointError(f"{self.files.statistics.name}: {exc}") from None
        for name, values, dim in (("action", stats.action_q01, self.model.action_head.cfg.action_dim),
                                  ("proprio", stats.proprio_q01, self.model.proprio_projector.fc1.in_features)):
            if len(values) != dim:
                raise CheckpointError(f"{self.files.statistics.name}: {stats.key!r} holds {len(values)} {name} statistics, "
                                      f"the model has {dim} {name} dimensions: the files come from different runs")
        return stats


def load_checkpoint(root: Path, fp32_rope: bool = False) -> LoadedCheckpoint:
    """Build the reference model from a checkpoint directory and load every weight strictly."""
    files = CheckpointFiles.discover(root)
    config = _read_json(files.config)
    vlm_cfg = vlm_config_from_json(config)
    head_json = _read_json(files.head_config)
    try:
        head_cfg = HeadConfig.from_json_dict(head_json)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{files.head_config.name}: {exc}") from None
    try:
        model = RDVLA(vlm_cfg, head_cfg, fp32_rope=fp32_rope)
    except ValueError as exc:
        raise CheckpointError(f"{root}: {exc}") from None
    tied = {"language_model.lm_head.weight"} if vlm_cfg.text.tie_word_embeddings else set()
    load_strict(model.vlm, SafetensorsFiles(files.weights), "model.safetensors", skip=frozenset(tied))
    load_strict(model.action_head, _load_pt(files.head_weights), files.head_weights.name)
    load_strict(model.proprio_projector, _load_pt(files.proprio_weights), files.proprio_weights.name)
    model.eval()
    statistics = _read_json(files.statistics)
    return LoadedCheckpoint(files=files, model=model, statistics=statistics, config=config)


def save_checkpoint(
    model: RDVLA,
    out: Path,
    step: int,
    config: dict[str, Any],
    statistics: dict[str, Any],
) -> None:
    """Write the model in the released layout, weights in bf16 as the authors save them."""
    out.mkdir(parents=True, exist_ok=True)
    tied = model.vlm.cfg.text.tie_word_embeddings
    vlm_state = {
        k: v.detach().to(torch.bfloat16).contiguous()
        for k, v in model.vlm.state_dict().items()
        if not (tied and k == "language_model.lm_head.weight")
    }
    save_file(vlm_state, str(out / MODEL_WEIGHTS), metadata={"format": "pt"})
    head_state = {k: v.detach().to(torch.bfloat16).clone() for k, v in model.action_head.state_dict().items()}
    torch.save(head_state, out / f"action_head--{step}_checkpoint.pt")
    (out / f"action_head_config--{step}_checkpoint.json").write_text(
        json.dumps(model.action_head.cfg.to_json_dict(), indent=2) + "\n"
    )
    # The projector is saved from its DDP wrapper upstream, hence the `module.` prefix.
    proprio_state = {f"module.{k}": v.detach().to(torch.bfloat16).clone() for k, v in model.proprio_projector.state_dict().items()}
    torch.save(proprio_state, out / f"proprio_projector--{step}_checkpoint.pt")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / STATISTICS).write_text(json.dumps(statistics, indent=2) + "\n")

