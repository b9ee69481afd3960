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
from typing import Callable, Optional, Sequence

import numpy as np

from rdvla.runtime.backends.registry import backend_kind, load_backend
from rdvla.runtime.backends.base import Backend
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.contract import PIXEL_VALUES, VLM_PRELUDE
from rdvla.runtime.manifest import TOKENIZER_FILE
from rdvla.runtime.halting import AdjacentMSE, HaltingRule, finite_delta, run_iterations
from rdvla.runtime.normalization import normalize_proprio, robot_ready, unnormalize_actions
from rdvla.runtime.preprocess import to_pixel_values
from rdvla.runtime.preprocess.native import resolve_implementation
from rdvla.runtime.prompt import PromptTokenizer

log = logging.getLogger(__name__)



def halting_below_floor(bundle: Bundle, precision: str, halting: HaltingRule) -> Optional[str]:
    """Why `halting` cannot stop early at `precision`, or None. `rdvla calibrate` records, per precision,
    the median of the consecutive-action MSE at each iteration index; a lower precision's levels off
    (INT8 near 4e-5 at full size), and an MSE threshold at or below that level is never met."""
    report = bundle.calibration_report() if precision != "fp32" and isinstance(halting, AdjacentMSE) else None
    section = report.get(precision) if report is not None else None
    medians = (section.get("median_deltas") if isinstance(section, dict) else None) or []
    floor = medians[-1] if medians else None
    if not isinstance(floor, (int, float)) or halting.threshold > floor:
        return None
    return (f"halting mse:{halting.threshold:g} is at or below where {precision}'s consecutive-action MSE levels off "
            f"({floor:.2g} at iteration {len(medians)}, `rdvla verify {bundle.root}`): most queries will run to "
            f"{halting.max_iterations} iterations; choose a threshold above {floor:.2g}")


def truncated_normal_latent(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """N(0, sigma) cut at +-3 sigma by resampling: S0 when no latent is given (spec 2.4)."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 3.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 3.0
    return (out * sigma).astype(np.float32)


class NonFiniteActions(ValueError):
    """A query's actions hold NaN or inf; they are never handed on."""


@dataclass
class PolicyResult:
    normalized_actions: np.ndarray  # (8, 7)
    actions: np.ndarray  # (8, 7) un-normalised, gripper post-processed as asked (`act(gripper=...)`): robot-ready
    iterations: int
    mse: list[float] = field(default_factory=list)  # per iteration; NaN where undefined
    cosine: list[float] = field(default_factory=list)
    deltas: list[float] = field(default_factory=list)  # the halting rule's delta per iteration
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage
    iteration_ms: list[float] = field(default_factory=list)  # time of each iteration (device time where the backend measures it)
    stopped_by: str = ""  # fixed | converged | max_iterations | deadline


class Policy:
    """Runs queries on one backend. `check_every` > 1 reads the halting scalars only every that many
    iterations (fewer host synchronisations; the loop may then run up to check_every - 1 iterations
    past the point where the rule was first met)."""

    def __init__(self, bundle: Bundle, backend: Backend, check_every: int = 1, clock: Callable[[], float] = time.perf_counter,
                 precision: str = "fp32", preprocessing: Optional[str] = None) -> None:
        if check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        self.bundle = bundle
        self.backend = backend
        self.precision = precision
        self._checked_rules: set[HaltingRule] = set()
        self.check_every = check_every
        self.clock = clock
        self.tokenizer = PromptTokenizer(bundle.path(TOKENIZER_FILE))
        self.preprocessing = resolve_implementation(preprocessing)  # None: native where it is built, else numpy (logged)
        pixel_values = next(t for t in bundle.graph(VLM_PRELUDE).inputs if t.name == PIXEL_VALUES)
        self._pixel_values_shape = tuple(int(d) for d in pixel_values.shape)
        self.default_halting: HaltingRule = bundle.halting_defaults.adaptive()

    @classmethod
    def load(cls, bundle: str | Path, backend: str = "onnxruntime", precision: Optional[str] = None, check_every: int = 1,
             preprocessing: Optional[str] = None, **options: object) -> "Policy":
        opened = Bundle.open(Path(bundle))
        preprocessing = resolve_implementation(preprocessing)  # refused before the backend loads its engines
        precision = precision or backend_kind(backend).default_precision
        return cls(opened, load_backend(opened, backend, precision, **options), check_every, precision=precision,
                   preprocessing=preprocessing)

    def initial_latent(self, seed: Optional[int] = None) -> np.ndarray:
        return truncated_normal_latent(self.bundle.dims.latent_shape, self.bundle.dims.init_sigma, np.random.default_rng(seed))

    def act(
        self,
        instruction: str,
        proprio: Sequence[float] | np.ndarray,
        images: Optional[Sequence[np.ndarray]] = None,
        pixel_values: Optional[np.ndarray] = None,
        halting: Optional[HaltingRule] = None,
        init_latent: Optional[np.ndarray] = None,
        seed: Optional[int] = None,
        deadline_s: Optional[float] = None,
        gripper: str = "raw",
    ) -> PolicyResult:
        """One query. Give camera `images` (uint8 HxWx3, camera order) or ready `pixel_values`.

        The chunk comes back robot-ready: un-normalised, and its gripper dimension post-processed as
        `gripper` says (`normalization.robot_ready`: libero binarises and inverts; raw, the default,
        keeps the prediction, which is what the golden cases and `rdvla predict` compare).

        `deadline_s` bounds the whole query (from this call): the loop stops before an iteration
        that would not finish in time (judged by the last iteration's duration) and returns the
        last iterate; at least one iteration always runs. It composes with any halting rule.
        """
        halting = halting or self.default_halting
        if halting not in self._checked_rules:
            self._checked_rules.add(halting)
            warning = halting_below_floor(self.bundle, self.precision, halting)
            if warning:
                log.warning(warning)
        if deadline_s is not None and not deadline_s > 0:
            raise ValueError(f"deadline must be a positive number of seconds, got {deadline_s}")
        times: dict[str, float] = {}
        t0 = self.clock()
        if (images is None) == (pixel_values is None):
            raise ValueError("give either camera images or pixel_values")
        if pixel_values is None:
            assert images is not None
            if len(images) != self.bundle.dims.num_images:
                raise ValueError(f"the policy takes {self.bundle.dims.num_images} images; got {len(images)}")
            # Written straight into the backend's input staging buffer (TensorRT: page-locked memory).
            staging = self.backend.pixel_values_buffer(self._pixel_values_shape)
            to_pixel_values(images, config=self.bundle.preprocess, implementation=self.preprocessing, out=staging)
        proprio_n = normalize_proprio(np.asarray(proprio, np.float64), self.bundle.norm_stats)[None]
        t1 = self.clock()
        input_ids = self.tokenizer(instruction)
        self.bundle.check_prompt(input_ids)
        t2 = self.clock()
        latent = self.initial_latent(seed) if init_latent is None else np.asarray(init_latent, np.float32)
        if pixel_values is None:
            self.backend.run_staged_context(input_ids, proprio_n)
        else:
            self.backend.run_context(pixel_values, input_ids, proprio_n)
        self.backend.reset_latent(latent)
        self.backend.synchronize()
        t3 = self.clock()
        result = self._recur(halting, None if deadline_s is None else t0 + deadline_s)
        t4 = self.clock()
        normalized = self.backend.actions()
        result.normalized_actions = normalized
        result.actions = robot_ready(unnormalize_actions(normalized, self.bundle.norm_stats), gripper)
        if not np.isfinite(result.actions).all():
            raise NonFiniteActions(f"the policy produced non-finite actions (NaN or inf) after {result.iterations} iterations: "
                                   f"the bundle's weights or statistics are broken (`rdvla verify {self.bundle.root}`)")
        t5 = self.clock()
        times.update(preprocess=t1 - t0, tokenize=t2 - t1, vlm_prelude=t3 - t2, iterations=t4 - t3, postprocess=t5 - t4, total=t5 - t0)
        result.timings_ms = {k: 1e3 * v for k, v in times.items()}
        return result

    def _recur(self, halting: HaltingRule, deadline: Optional[float]) -> PolicyResult:
        """The recurrent iterations on the backend, stopped by `run_iterations` (and the deadline)."""
        backend = self.backend
        result = PolicyResult(np.empty(0), np.empty(0), 0)
        clock = self.clock
        adaptive = halting.needs_decode
        last = 0.0  # the duration of the latest iteration: the next one is assumed to take as long

        def iterate(k: int) -> Optional[float]:
            nonlocal last
            start = clock()
            delta = None
            if not adaptive:
                backend.step()
            else:
                read = k % self.check_every == 0 or k == halting.max_iterations
                stats = backend.step_decode(read=read)
                mse, cosine = stats if (stats is not None and k > 1) else (float("nan"), float("nan"))
                result.mse.append(mse)
                result.cosine.append(cosine)
                result.deltas.append(halting.delta(mse, cosine))
                delta = finite_delta(result.deltas[-1])
            last = clock() - start
            result.iteration_ms.append(1e3 * last)
            return delta

        stop = run_iterations(halting, iterate, None if deadline is None else lambda: clock() + last > deadline)
        result.iterations, result.stopped_by = stop.iterations, stop.stopped_by
        if not adaptive:
            backend.decode()
        if backend.iteration_times:
            result.iteration_ms = backend.iteration_times_ms()
        return result

    def close(self) -> None:
        self.backend.close()
