"""Golden cases: inputs and the reference's 32-iteration trace, shipped in every bundle.

A fixed-depth-k answer is the decode after iteration k of the trace, and an adaptive answer is
read off the trace's statistics with the same halting rule, so one trace answers every mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rdvla.runtime.bundle import Bundle
from rdvla.runtime.halting import HaltingRule

TRACE_DEPTH = 32


@dataclass
class GoldenCase:
    images: list[np.ndarray]
    instruction: str
    proprio: np.ndarray  # raw, (8,)
    init_latent: np.ndarray  # (1, 8, D)
    trace_actions: np.ndarray  # (32, 8, 7): decode after iteration k = the fixed-depth-k answer
    trace_mse: np.ndarray  # (32,), NaN at k = 1
    trace_cosine: np.ndarray
    # The same trace un-normalised with the statistics the bundle was exported with, and the scale of
    # each action dimension (0.5 (q99 - q01) where normalised, 1 elsewhere): what `rdvla verify`
    # compares un-normalised actions with, so edited statistics cannot pass.
    trace_unnormalized_actions: np.ndarray
    action_scale: np.ndarray  # (7,)

    def reference(self, halting: HaltingRule) -> tuple[np.ndarray, int]:
        """The reference answer for `halting`, read off the 32-iteration trace."""
        for k in range(1, halting.max_iterations + 1):
            stat = None if k == 1 else halting.delta(float(self.trace_mse[k - 1]), float(self.trace_cosine[k - 1]))
            if halting.should_stop(k, stat if halting.needs_decode else None):
                return self.trace_actions[k - 1], k
        raise AssertionError("halting never stopped")

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path, images=np.stack(self.images), instruction=np.array(self.instruction), proprio=self.proprio,
            init_latent=self.init_latent, trace_actions=self.trace_actions, trace_mse=self.trace_mse,
            trace_cosine=self.trace_cosine, trace_unnormalized_actions=self.trace_unnormalized_actions,
            action_scale=self.action_scale,
        )

    @classmethod
    def load(cls, path: Path) -> "GoldenCase":
        with np.load(path, allow_pickle=False) as z:
            return cls(list(z["images"]), str(z["instruction"]), z["proprio"], z["init_latent"],
                       z["trace_actions"], z["trace_mse"], z["trace_cosine"], z["trace_unnormalized_actions"], z["action_scale"])


def load_cases(bundle: Bundle) -> list[GoldenCase]:
    """Every golden case the bundle's manifest lists, in order."""
    return [GoldenCase.load(bundle.path(rel)) for rel in bundle.manifest.golden]
