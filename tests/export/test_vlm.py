"""Sequence assembly and hidden-state gathering at the positions of spec 1.6 and 1.8."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rdvla.export.checkpoint import load_checkpoint
from rdvla.export.vlm import NUM_ACTION_QUERIES, STOP_TOKEN_ID


@pytest.fixture(scope="module")
def vlm(tiny_checkpoint: Path):
    return load_checkpoint(tiny_checkpoint).model.vlm


def test_sequence_layout(vlm) -> None:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 12, 224, 224, generator=g)
    ids = torch.tensor([[5, 17, 33, 41, 9]])
    p = ids.shape[1]
    with torch.no_grad():
        seq = vlm.embed_sequence(pixels, ids)
        emb = vlm.language_model.model.embed_tokens
        patches = vlm.projector(vlm.vision_backbone(pixels))
    assert seq.shape == (1, p + 577, vlm.cfg.hidden_size)
    assert torch.equal(seq[:, 0], emb(ids[:, 0]))
    assert torch.equal(seq[:, 1:513], patches)
    assert torch.equal(seq[:, 513 : 512 + p], emb(ids[:, 1:]))
    assert torch.equal(seq[:, 512 + p : 576 + p], vlm.action_queries.weight[None])
    assert torch.equal(seq[:, -1], emb(torch.tensor([STOP_TOKEN_ID])))


def test_gathering_takes_the_shifted_positions(vlm, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each hidden state holds its own index and each position its own number; read them back."""
    p = 7
    n_states = vlm.cfg.num_hidden_states
    seq_len = p + 577

    def identifiable(embeds, last_index=None):
        positions = torch.arange(seq_len, dtype=torch.float32)[None, :, None]
        return [torch.cat([positions.expand(1, -1, 1), torch.full((1, seq_len, 1), float(i)),
                           torch.zeros(1, seq_len, vlm.cfg.hidden_size - 2)], dim=2) for i in range(n_states)]

    monkeypatch.setattr(vlm, "run_llm", identifiable)
    hidden = vlm.hidden_states(torch.zeros(1, 12, 224, 224), torch.arange(p)[None])
    assert sorted(hidden) == list(range(n_states))
    for i, (h_task, h_action) in hidden.items():
        assert h_task.shape == (1, 512, vlm.cfg.hidden_size) and h_action.shape == (1, NUM_ACTION_QUERIES, vlm.cfg.hidden_size)
        assert torch.all(h_task[0, :, 1] == i) and torch.all(h_action[0, :, 1] == i)
        # Task tokens: position 0 (tok_0) and patches 0..510 (positions 1..511); the last wrist patch is left out.
        assert torch.equal(h_task[0, :, 0], torch.arange(512, dtype=torch.float32))
        # Action tokens: the last prompt token (511 + P) then queries 0..62 (512 + P .. 574 + P).
        assert torch.equal(h_action[0, :, 0], torch.arange(511 + p, 575 + p, dtype=torch.float32))


def test_pruned_gathering_equals_the_full_run(vlm) -> None:
    g = torch.Generator().manual_seed(4)
    pixels, ids = torch.randn(1, 12, 224, 224, generator=g), torch.tensor([[3, 8, 13, 21, 34, 55]])
    with torch.no_grad():
        full = vlm.hidden_states(pixels, ids)
        pruned = vlm.hidden_states(pixels, ids, indices=(11, 23))
    assert sorted(pruned) == [11, 23]
    for i in (11, 23):
        for a, b in zip(full[i], pruned[i]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_hidden_state_indices_follow_transformers_4_40(vlm) -> None:
    """Index 0 = embeddings, i = output of decoder layer i, the last = after the final norm."""
    embeds = torch.randn(1, 20, vlm.cfg.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        states = vlm.run_llm(embeds)
        reference = vlm.language_model.model(inputs_embeds=embeds).last_hidden_state
        assert len(states) == vlm.cfg.num_hidden_states
        assert torch.equal(states[0], embeds)
        torch.testing.assert_close(states[-1], reference, rtol=1e-5, atol=1e-5)
        # Causality: changing the last token does not change earlier positions.
        changed = embeds.clone()
        changed[:, -1] += 1.0
        again = vlm.run_llm(changed)
        torch.testing.assert_close(again[11][:, :-1], states[11][:, :-1], rtol=0, atol=0)
        # A partial run stops at the requested index and leaves it un-normed.
        partial = vlm.run_llm(embeds, last_index=23)
        assert len(partial) == 24 and torch.equal(partial[23], states[23])


def test_vision_tower_reads_second_to_last_block(vlm) -> None:
    tower = vlm.vision_backbone.featurizer
    calls = []
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, b in enumerate(tower.blocks)]
    with torch.no_grad():
        out = tower(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert calls == list(range(tower.cfg.depth - 1))
    assert out.shape == (1, 256, tower.cfg.embed_dim)  # 1 class + 4 register tokens removed


def test_a_larger_patch_size_gives_fewer_task_tokens_at_the_same_positions() -> None:
    from rdvla.export.presets import preset_config
    from rdvla.export.checkpoint import vlm_config_from_json
    from rdvla.export.vision import tower_config
    from rdvla.export.vlm import PrismaticVLM

    config, _ = preset_config("small", vocab_size=128)
    cfg = vlm_config_from_json(config)
    assert (cfg.dino.patch_size, cfg.dino.num_patches, cfg.num_task_tokens) == (28, 64, 128)
    torch.manual_seed(0)
    vlm = PrismaticVLM(cfg).eval()
    ids = torch.tensor([[5, 17, 33, 41, 9]])
    pixels = torch.randn(1, 12, 224, 224)
    with torch.no_grad():
        seq = vlm.embed_sequence(pixels, ids)
        hidden = vlm.hidden_states(pixels, ids)
    assert seq.shape[1] == ids.shape[1] + 128 + NUM_ACTION_QUERIES + 1
    task, action = hidden[3]
    assert task.shape[1] == 128 and action.shape[1] == NUM_ACTION_QUERIES
    assert torch.equal(task[:, 1:], vlm.run_llm(seq)[3][:, 1:128])
    with pytest.raises(ValueError, match="does not divide"):
        tower_config("vit_so400m_patch14_siglip_224", {"patch_size": 30})
