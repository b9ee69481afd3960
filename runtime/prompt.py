"""The Qwen chat prompt RD-VLA was trained with (spec 1.5) and its tokenisation.

Tokenisation uses the checkpoint's (or bundle's) `tokenizer.json` through the `tokenizers`
library: no BOS/EOS is added; the chat special tokens inside the template are matched as
added tokens. Prompts are cached per instruction: the robot asks the same thing many times.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

PROMPT_TEMPLATE = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nWhat action should the robot take to {task}?<|im_end|>\n<|im_start|>assistant\n"
)
CHAT_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def build_prompt(instruction: str) -> str:
    """The inference prompt for a task; the task string is lower-cased as in the authors' code."""
    task = instruction.strip()
    if not task:
        raise ValueError("the instruction is empty")
    return PROMPT_TEMPLATE.format(task=task.lower())


class PromptTokenizer:
    """Instruction -> input_ids (1, P) int64, cached per instruction."""

    def __init__(self, tokenizer_json: Path) -> None:
        path = Path(tokenizer_json)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the tokenizers library raises a bare Exception for every unreadable file
            raise ValueError(f"{path} is not a readable tokenizer ({' '.join(str(exc).split())}): copy tokenizer.json "
                             "again from the checkpoint (or re-export the bundle)") from None
        missing = [t for t in CHAT_SPECIAL_TOKENS if self._tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"{path} lacks the Qwen chat special tokens {missing}")
        self._encode = lru_cache(maxsize=256)(self._encode_uncached)

    def _encode_uncached(self, instruction: str) -> np.ndarray:
        ids = self._tokenizer.encode(build_prompt(instruction), add_special_tokens=False).ids
        out = np.asarray(ids, dtype=np.int64)[None]
        out.setflags(write=False)
        return out

    def __call__(self, instruction: str) -> np.ndarray:
        return self._encode(instruction)

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))
