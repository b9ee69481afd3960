"""The released checkpoint layout: strict loading, clear errors, exact save/load round trips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rdvla.export.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rdvla.runtime.halting import AdjacentMSE, FixedIterations
from rdvla.runtime.prompt import PromptTokenizer


def _query(ckpt_dir: Path, halting=FixedIterations(4)):
    ckpt = load_checkpoint(ckpt_dir)
    g = torch.Generator().manual_seed(3)
    pixels = torch.randn(1, 12, 224, 224, generator=g)
    proprio = torch.rand(1, 8, generator=g) * 2 - 1
    ids = torch.from_numpy(PromptTokenizer(ckpt.files.tokenizer)("stack the red block").copy())
    return ckpt, ckpt.model.predict(pixels, ids, proprio, halting, generator=torch.Generator().manual_seed(5), trace=True)


def test_released_layout_files_present(tiny_checkpoint: Path) -> None:
    names = {p.name for p in tiny_checkpoint.iterdir()}
    for required in ("config.json", "model.safetensors", "action_head--100_checkpoint.pt",
                     "action_head_config--100_checkpoint.json", "proprio_projector--100_checkpoint.pt",
                     "dataset_statistics.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                     "merges.txt", "added_tokens.json", "special_tokens_map.json", "preprocessor_config.json"):
        assert required in names
    head = torch.load(tiny_checkpoint / "action_head--100_checkpoint.pt", weights_only=True)
    assert all(k.startswith("model.") for k in head) and all(v.dtype == torch.bfloat16 for v in head.values())
    proprio = torch.load(tiny_checkpoint / "proprio_projector--100_checkpoint.pt", weights_only=True)
    assert set(proprio) == {"module.fc1.weight", "module.fc1.bias", "module.fc2.weight", "module.fc2.bias"}
    vlm = load_file(str(tiny_checkpoint / "model.safetensors"))
    assert "vision_backbone.featurizer.blocks.0.ls1.scale_factor" in vlm
    assert "vision_backbone.fused_featurizer.attn_pool.latent" in vlm
    assert "language_model.lm_head.weight" not in vlm  # tied to the embeddings, as HF saves it
    config = json.loads((tiny_checkpoint / "action_head_config--100_checkpoint.json").read_text())
    assert config["_type"] == "ActionHeadRecurrent"
    assert (config["prelude_vlm_layers"], config["recurrent_vlm_layers"], config["coda_vlm_layers"]) == ([11], [23, 23], [23])


def test_values_are_non_trivial(tiny_checkpoint: Path) -> None:
    model = load_checkpoint(tiny_checkpoint).model
    head = model.action_head.model
    gates = torch.stack([layer.gate for layer in [*head.prelude, *head.recurrent, *head.coda]])
    assert (gates.abs() > 1e-3).all()
    assert head.gamma_init.item() != 1.0 and head.gamma_adapt.item() != 1.0
    assert not torch.allclose(head.recurrent_norm.weight, torch.ones_like(head.recurrent_norm.weight))
    assert (model.vlm.vision_backbone.featurizer.blocks[0].ls1.scale_factor.abs() > 1e-3).all()


def test_save_load_round_trip_is_exact(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ckpt, first = _query(tiny_checkpoint, AdjacentMSE(1e-4))
    out = tmp_path / "again"
    save_checkpoint(ckpt.model, out, 7, ckpt.config, ckpt.statistics)
    shutil.copy(tiny_checkpoint / "tokenizer.json", out)
    reloaded, second = _query(out, AdjacentMSE(1e-4))
    before, after = ckpt.model.state_dict(), reloaded.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # Same weights, same inputs: equal up to BLAS thread-scheduling noise.
    assert first.iterations == second.iterations
    torch.testing.assert_close(first.actions, second.actions, rtol=0, atol=1e-6)
    for a, b in zip(first.per_iteration_actions, second.per_iteration_actions):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_module_prefix_and_zero_dim_scalars_load(tiny_checkpoint: Path, tiny_copy: Path) -> None:
    path = tiny_copy / "action_head--100_checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state = {f"module.{k}": (v.reshape(()) if k.endswith(".gate") else v) for k, v in state.items()}
    torch.save(state, path)
    _, reloaded = _query(tiny_copy)
    _, original = _query(tiny_checkpoint)
    torch.testing.assert_close(reloaded.actions, original.actions, rtol=0, atol=1e-6)


def test_renamed_key_is_named(tiny_copy: Path) -> None:
    path = tiny_copy / "action_head--100_checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["model.recurrent.0.gates"] = state.pop("model.recurrent.0.gate")
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tiny_copy)
    message = str(err.value)
    assert "action_head--100_checkpoint.pt" in message
    assert "missing keys: model.recurrent.0.gate" in message
    assert "unexpected keys: model.recurrent.0.gates" in message


@pytest.mark.parametrize(
    ("victim", "expected"),
    [
        ("proprio_projector--100_checkpoint.pt", "expected exactly one proprio_projector--*_checkpoint.pt, found no file"),
        ("dataset_statistics.json", "missing file dataset_statistics.json"),
        ("model.safetensors", "missing file model.safetensors"),
        ("tokenizer.json", "missing file tokenizer.json"),
    ],
)
def test_missing_file_is_named(tiny_copy: Path, victim: str, expected: str) -> None:
    (tiny_copy / victim).unlink()
    with pytest.raises(CheckpointError, match=expected.replace("*", r"\*")):
        load_checkpoint(tiny_copy)


def test_two_head_files_are_refused(tiny_copy: Path) -> None:
    shutil.copy(tiny_copy / "action_head--100_checkpoint.pt", tiny_copy / "action_head--200_checkpoint.pt")
    with pytest.raises(CheckpointError, match="found 2 files"):
        load_checkpoint(tiny_copy)


def test_wrong_shape_is_named(tiny_copy: Path) -> None:
    path = tiny_copy / "model.safetensors"
    state = load_file(str(path))
    state["projector.fc3.bias"] = torch.zeros(65, dtype=torch.bfloat16)
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"projector.fc3.bias has shape \(65,\).*expects \(64,\)"):
        load_checkpoint(tiny_copy)


def test_corrupt_files_give_clear_errors(tiny_copy: Path) -> None:
    (tiny_copy / "proprio_projector--100_checkpoint.pt").write_bytes(b"not a zip archive")
    with pytest.raises(CheckpointError, match="proprio_projector--100_checkpoint.pt: cannot be read"):
        load_checkpoint(tiny_copy)


def test_head_config_mismatch_is_named(tiny_copy: Path) -> None:
    path = tiny_copy / "action_head_config--100_checkpoint.json"
    config = json.loads(path.read_text())
    config["recurrent_vlm_layers"] = [23, 23, 23]
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="missing keys: model.recurrent.2"):
        load_checkpoint(tiny_copy)
    config["recurrent_vlm_layers"] = [30]
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="reads hidden-state index 30"):
        load_checkpoint(tiny_copy)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        load_checkpoint(tmp_path / "nope")
