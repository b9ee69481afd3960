"""The PyTorch reference as a policy: a checkpoint directory answers `act` like a bundle's `Policy` does,
so `rdvla predict` and `rdvla eval` run a checkpoint and a bundle through the same calls."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from rdvla.export.checkpoint import load_checkpoint
from rdvla.runtime.halting import FixedIterations, HaltingRule
from rdvla.runtime.normalization import normalize_proprio, robot_ready, unnormalize_actions
from rdvla.runtime.policy import PolicyResult
from rdvla.runtime.preprocess import to_pixel_values
from rdvla.runtime.prompt import PromptTokenizer

DEFAULT_HALTING = FixedIterations(12)  # the authors' evaluation default (recurrent_num_iter)


class ReferencePolicy:
    def __init__(self, checkpoint: Path, unnorm_key: Optional[str] = None, dtype: str = "float32",
                 preprocessing: Optional[str] = None) -> None:
        ckpt = load_checkpoint(checkpoint)
        self.model = ckpt.model.to(getattr(torch, dtype))
        self.stats = ckpt.norm_stats(unnorm_key)
        self.tokenizer = PromptTokenizer(ckpt.files.tokenizer)
        self.preprocessing = preprocessing
        self.num_images = self.model.vlm.cfg.num_images
        head = self.model.action_head.cfg
        self.latent_shape = (1, head.action_chunk_len, head.hidden_dim)

    def act(self, instruction: str, proprio: Sequence[float] | np.ndarray, images: Optional[Sequence[np.ndarray]] = None,
            pixel_values: Optional[np.ndarray] = None, halting: Optional[HaltingRule] = None,
            init_latent: Optional[np.ndarray] = None, seed: Optional[int] = None,
            deadline_s: Optional[float] = None, gripper: str = "raw") -> PolicyResult:
        """One query; `deadline_s` is not honoured (the reference is the accuracy yardstick, never cut short)."""
        halting = halting or DEFAULT_HALTING
        start = time.perf_counter()
        if (images is None) == (pixel_values is None):
            raise ValueError("give either camera images or pixel_values")
        if pixel_values is None:
            assert images is not None
            if len(images) != self.num_images:
                raise ValueError(f"the policy takes {self.num_images} images; got {len(images)}")
            pixel_values = to_pixel_values(images, implementation=self.preprocessing)
        input_ids = self.tokenizer(instruction)
        normalized_proprio = normalize_proprio(np.asarray(proprio, np.float64), self.stats)[None]
        latent = None
        if init_latent is not None:
            if tuple(np.shape(init_latent)) != self.latent_shape:
                raise ValueError(f"initial latent has shape {tuple(np.shape(init_latent))}, expected {self.latent_shape}")
            latent = torch.from_numpy(np.asarray(init_latent, np.float32))
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        out = self.model.predict(torch.from_numpy(np.asarray(pixel_values)), torch.from_numpy(np.array(input_ids)),
                                 torch.from_numpy(normalized_proprio), halting, init_latent=latent, generator=generator)
        normalized = out.actions[0].float().numpy()
        # As Policy's: the halting statistic per iteration where the rule decodes each one, none otherwise.
        deltas = [halting.delta(m, c) for m, c in zip(out.mse, out.cosine)] if halting.needs_decode else []
        total_ms = 1e3 * (time.perf_counter() - start)
        actions = robot_ready(unnormalize_actions(normalized, self.stats), gripper)
        return PolicyResult(normalized, actions, out.iterations, list(out.mse),
                            list(out.cosine), deltas, {"total": total_ms}, stopped_by=out.stopped_by)

    def close(self) -> None:
        """Nothing to release."""
