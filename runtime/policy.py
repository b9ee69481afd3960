"""`Policy`: camera images + proprio + instruction in, an action chunk out, through any backend.

    policy = Policy.load("bundle/", backend="onnxruntime")
    result = policy.act(images=[agentview, wrist], proprio=state8, instruction="open the drawer",
                        halting=AdjacentMSE(1e-3))

The VLM+Prelude graph runs once per query; the core graph then runs on the backend's buffers
until the halting policy stops it. Only the halting scalars come back to the host per iteration.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from runtime.backends import load_backend
from runtime.backends.base import Backend
from runtime.bundle import Bundle
from runtime.halting import AdjacentMSE, HaltingPolicy
from runtime.normalization import normalize_proprio, unnormalize_actions
from runtime.preprocess import to_pixel_values
from runtime.prompt import PromptTokenizer

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"


def truncated_normal_state(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """N(0, sigma) cut at +-3 sigma by resampling: S0 when no state is given (spec 2.4)."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 3.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 3.0
    return (out * sigma).astype(np.float32)


@dataclass
class PolicyResult:
    normalized_actions: np.ndarray  # (8, 7)
    actions: np.ndarray  # (8, 7) un-normalised, no gripper post-processing
    iterations: int
    mse: list[float] = field(default_factory=list)  # per iteration; NaN where undefined
    cosine: list[float] = field(default_factory=list)
    deltas: list[float] = field(default_factory=list)  # the halting statistic per iteration
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage
    iteration_ms: list[float] = field(default_factory=list)  # host time of each iteration call


class Policy:
    def __init__(self, bundle: Bundle, backend: Backend) -> None:
        self.bundle = bundle
        self.backend = backend
        self.tokenizer = PromptTokenizer(bundle.path(TOKENIZER_FILE))
        defaults = bundle.halting_defaults
        self.default_halting: HaltingPolicy = AdjacentMSE(
            defaults.get("threshold", 1e-3), defaults.get("min_iterations", 2), defaults.get("max_iterations", 32)
        )

    @classmethod
    def load(cls, bundle: str | Path, backend: str = "onnxruntime", precision: str = "fp32", **options: object) -> "Policy":
        opened = Bundle.open(Path(bundle))
        return cls(opened, load_backend(opened, backend, precision, **options))

    def initial_state(self, seed: Optional[int] = None) -> np.ndarray:
        return truncated_normal_state(self.bundle.dims.state_shape, self.bundle.dims.init_sigma, np.random.default_rng(seed))

    def act(
        self,
        instruction: str,
        proprio: Sequence[float] | np.ndarray,
        images: Optional[Sequence[np.ndarray]] = None,
        pixel_values: Optional[np.ndarray] = None,
        halting: Optional[HaltingPolicy] = None,
        init_state: Optional[np.ndarray] = None,
        seed: Optional[int] = None,
    ) -> PolicyResult:
        """One query. Give camera `images` (uint8 HxWx3, camera order) or ready `pixel_values`."""
        halting = halting or self.default_halting
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        if (images is None) == (pixel_values is None):
            raise ValueError("give either camera images or pixel_values")
        if pixel_values is None:
            assert images is not None
            if len(images) != self.bundle.dims.num_images:
                raise ValueError(f"the policy takes {self.bundle.dims.num_images} images; got {len(images)}")
            pixel_values = to_pixel_values(images, config=self.bundle.preprocess)
        proprio_n = normalize_proprio(np.asarray(proprio, np.float64), self.bundle.norm_stats)[None]
        t1 = time.perf_counter()
        input_ids = self.tokenizer(instruction)
        self.bundle.check_prompt(input_ids)
        t2 = time.perf_counter()
        state = self.initial_state(seed) if init_state is None else np.asarray(init_state, np.float32)
        self.backend.run_context(pixel_values, input_ids, proprio_n)
        self.backend.reset_state(state)
        self.backend.synchronize()
        t3 = time.perf_counter()
        result = self._iterate(halting)
        t4 = time.perf_counter()
        normalized = self.backend.actions()
        result.normalized_actions = normalized
        result.actions = unnormalize_actions(normalized, self.bundle.norm_stats)
        t5 = time.perf_counter()
        times.update(preprocess=t1 - t0, tokenize=t2 - t1, vlm_prelude=t3 - t2, iterations=t4 - t3, postprocess=t5 - t4, total=t5 - t0)
        result.timings_ms = {k: 1e3 * v for k, v in times.items()}
        return result

    def _iterate(self, halting: HaltingPolicy) -> PolicyResult:
        backend = self.backend
        result = PolicyResult(np.empty(0), np.empty(0), 0)
        clock = time.perf_counter
        if not halting.needs_decode:
            for _ in range(halting.max_iterations):
                start = clock()
                backend.step()
                result.iteration_ms.append(1e3 * (clock() - start))
            backend.decode()
            result.iterations = halting.max_iterations
            return result
        for k in range(1, halting.max_iterations + 1):
            start = clock()
            stats = backend.step_decode(read=True)
            result.iteration_ms.append(1e3 * (clock() - start))
            assert stats is not None
            mse, cosine = stats if k > 1 else (float("nan"), float("nan"))
            result.mse.append(mse)
            result.cosine.append(cosine)
            statistic = halting.statistic(mse, cosine)
            result.deltas.append(statistic)
            result.iterations = k
            if halting.should_stop(k, None if k == 1 else statistic):
                break
        return result

    def close(self) -> None:
        self.backend.close()
