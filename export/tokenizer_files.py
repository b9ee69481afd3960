"""Offline Qwen-style tokenizer files for generated checkpoints.

A generated checkpoint cannot download Qwen's tokenizer, so it carries a byte-level BPE trained
here on the prompt template and robot-task phrases, with the Qwen chat special tokens appended
after the merges as Qwen does. It tokenises any text (byte-level fallback), so it exercises the
same code paths as the real tokenizer; only the ids differ.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from rdvla.runtime.prompt import CHAT_SPECIAL_TOKENS, PROMPT_TEMPLATE

_TASK_PHRASES = (
    "pick up the black bowl between the plate and the ramekin and place it on the plate",
    "put the cream cheese in the bowl", "open the top drawer and put the bowl inside",
    "turn on the stove and put the moka pot on it", "push the plate to the front of the stove",
    "put both the alphabet soup and the tomato sauce in the basket", "stack the red block on the blue cube",
    "close the microwave", "move the cup to the left of the sink", "grasp the handle and lift the lid",
)


def _corpus() -> list[str]:
    return [PROMPT_TEMPLATE.format(task=t) for t in _TASK_PHRASES] + list(_TASK_PHRASES)


def build_tokenizer(vocab_size: int) -> Tokenizer:
    """A byte-level BPE of at most `vocab_size` entries (merges included) plus the chat special tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    tokenizer.add_special_tokens(list(CHAT_SPECIAL_TOKENS))
    return tokenizer


def write_tokenizer_files(out_dir: Path, vocab_size: int) -> int:
    """Write tokenizer.json, vocab.json, merges.txt and the HF side files; returns the token count."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    tokenizer.model.save(str(out_dir))  # vocab.json, merges.txt
    ids = {t: tokenizer.token_to_id(t) for t in CHAT_SPECIAL_TOKENS}
    (out_dir / "added_tokens.json").write_text(json.dumps(ids, indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                    "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]}, indent=2) + "\n"
    )
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "Qwen2Tokenizer",
                "add_bos_token": False,
                "bos_token": None,
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "model_max_length": 32768,
                "added_tokens_decoder": {
                    str(i): {"content": t, "special": True, "normalized": False} for t, i in ids.items()
                },
            },
            indent=2,
        )
        + "\n"
    )
    return int(tokenizer.get_vocab_size(with_added_tokens=True))
