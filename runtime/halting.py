"""When the recurrent loop stops (spec 3.1-3.3): the halting rules and the one stop rule that applies them.

A rule sees the iteration index k (1-based) and the delta of iteration k: how much the decoded
actions changed from iteration k-1, as the rule measures it (None at k = 1, or when the loop did
not decode or read it), in normalised action space. `run_iterations` is the only loop that asks a
rule: the policy, the PyTorch reference head, the golden cases and calibration's report all stop
through it (the last two on a recorded trace, `stop_on_trace`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

MAX_SUPPORTED_ITERATIONS = 256
# Why a query's iterations stopped (`Stop.stopped_by`, `PolicyResult.stopped_by`, the step log's queries).
FIXED, CONVERGED, MAX_ITERATIONS, DEADLINE = "fixed", "converged", "max_iterations", "deadline"


@runtime_checkable
class HaltingRule(Protocol):
    """What `run_iterations` asks of a halting rule; every rule implements it."""

    @property
    def max_iterations(self) -> int:
        """No query runs more iterations than this."""

    @property
    def needs_decode(self) -> bool:
        """Whether the rule reads a delta each iteration (so each iteration must decode)."""

    def delta(self, mse: float, cosine: float) -> float:
        """The rule's delta from the two statistics of consecutive decodes."""

    def stopped_by(self, k: int, delta: Optional[float]) -> Optional[str]:
        """Why the loop stops after iteration k (FIXED, CONVERGED, MAX_ITERATIONS), or None to go on."""


@dataclass(frozen=True)
class FixedIterations:
    """Exactly `iterations` iterations, then one decode (the authors' default path, 12 at inference)."""

    iterations: int = 12

    def __post_init__(self) -> None:
        _check_range("iterations", self.iterations, 1, MAX_SUPPORTED_ITERATIONS)

    @property
    def max_iterations(self) -> int:
        return self.iterations

    @property
    def needs_decode(self) -> bool:
        return False

    def delta(self, mse: float, cosine: float) -> float:
        return mse

    def stopped_by(self, k: int, delta: Optional[float]) -> Optional[str]:
        return FIXED if k >= self.iterations else None


@dataclass(frozen=True)
class AdjacentMSE:
    """Stop when mean((a_k - a_{k-1})^2) < threshold (the code's "kl_divergence"; mean, not sum)."""

    threshold: float = 1e-3
    min_iterations: int = 2
    max_iterations: int = 32

    def __post_init__(self) -> None:
        if not (self.threshold > 0 and math.isfinite(self.threshold)):
            raise ValueError(f"MSE threshold must be a positive number, got {self.threshold}")
        _check_min_max(self.min_iterations, self.max_iterations)

    @property
    def needs_decode(self) -> bool:
        return True

    def delta(self, mse: float, cosine: float) -> float:
        return mse

    def converged(self, delta: float) -> bool:
        return delta < self.threshold

    def stopped_by(self, k: int, delta: Optional[float]) -> Optional[str]:
        return _adaptive_stop(self, k, delta)


@dataclass(frozen=True)
class CosineSimilarity:
    """Stop when cos(a_k, a_{k-1}) > threshold; the recorded delta is 1 - cos, as upstream reports it."""

    threshold: float = 0.999
    min_iterations: int = 2
    max_iterations: int = 32

    def __post_init__(self) -> None:
        if not (-1.0 < self.threshold < 1.0):
            raise ValueError(f"cosine threshold must lie in (-1, 1), got {self.threshold}")
        _check_min_max(self.min_iterations, self.max_iterations)

    @property
    def needs_decode(self) -> bool:
        return True

    def delta(self, mse: float, cosine: float) -> float:
        return 1.0 - cosine

    def converged(self, delta: float) -> bool:
        # 1 - cos < 1 - threshold, written on the recorded delta so every backend agrees exactly.
        return delta < 1.0 - self.threshold

    def stopped_by(self, k: int, delta: Optional[float]) -> Optional[str]:
        return _adaptive_stop(self, k, delta)


def _adaptive_stop(rule: "AdjacentMSE | CosineSimilarity", k: int, delta: Optional[float]) -> Optional[str]:
    if k >= rule.min_iterations and delta is not None and rule.converged(delta):
        return CONVERGED
    return MAX_ITERATIONS if k >= rule.max_iterations else None


@dataclass(frozen=True)
class Stop:
    iterations: int  # iterations run
    stopped_by: str  # FIXED, CONVERGED, MAX_ITERATIONS or DEADLINE


def run_iterations(halting: HaltingRule, iterate: Callable[[int], Optional[float]],
                   out_of_time: Optional[Callable[[], bool]] = None) -> Stop:
    """The one stop rule: run iterations k = 1, 2, ... until `halting` stops them.

    `iterate(k)` runs iteration k and returns its delta (None where there is none: k = 1, no
    decode, a statistic not read back, NaN). `out_of_time()` is asked before every iteration after
    the first (at least one always runs); True stops with DEADLINE after the iterations done.
    """
    for k in range(1, halting.max_iterations + 1):
        if k > 1 and out_of_time is not None and out_of_time():
            return Stop(k - 1, DEADLINE)
        stopped_by = halting.stopped_by(k, iterate(k))
        if stopped_by is not None:
            return Stop(k, stopped_by)
    raise AssertionError(f"{halting!r} did not stop at its max_iterations")


def stop_on_trace(halting: HaltingRule, mse: Sequence[float], cosine: Sequence[float]) -> Stop:
    """Where `halting` stops a query whose per-iteration statistics were recorded (`mse[k - 1]`,
    `cosine[k - 1]` against the decode before; NaN at k = 1), as a live query would."""

    def recorded(k: int) -> Optional[float]:
        if k == 1 or not halting.needs_decode:
            return None
        return finite_delta(halting.delta(float(mse[k - 1]), float(cosine[k - 1])))

    return run_iterations(halting, recorded)


def finite_delta(delta: float) -> Optional[float]:
    """A measured delta as `run_iterations` takes it: None where it is NaN (k = 1, not read back)."""
    return None if math.isnan(delta) else delta


def parse_halting(
    spec: Optional[str],
    iterations: Optional[int] = None,
    min_iterations: Optional[int] = None,
    max_iterations: Optional[int] = None,
) -> "FixedIterations | AdjacentMSE | CosineSimilarity":
    """Build a rule from CLI words: `--iterations N` or `--halting mse:THRESH|cosine:THRESH`
    (`--min-iterations`, `--max-iterations`); a ValueError names the option at fault."""
    if spec is not None and iterations is not None:
        raise ValueError("give either --iterations (a fixed count) or --halting (adaptive), not both")
    if spec is None:
        if min_iterations is not None or max_iterations is not None:
            raise ValueError("--min-iterations/--max-iterations apply to adaptive halting (--halting) only")
        try:
            return FixedIterations(12 if iterations is None else iterations)
        except ValueError as exc:
            raise ValueError(f"--iterations {iterations}: {exc}") from None
    kind, colon, value = spec.partition(":")
    if colon and not value.strip():
        raise ValueError(f"--halting {spec}: no threshold after the colon; give one (e.g. mse:1e-3 or cosine:0.999), "
                         "or the rule's name alone for its default")
    bounds = {}
    for option, name, given in (("--min-iterations", "min_iterations", min_iterations),
                                ("--max-iterations", "max_iterations", max_iterations)):
        if given is not None:
            try:
                _check_range(name, given, 1, MAX_SUPPORTED_ITERATIONS)
            except ValueError as exc:
                raise ValueError(f"{option} {given}: {exc}") from None
            bounds[name] = given
    low = bounds.get("min_iterations", AdjacentMSE.min_iterations)
    high = bounds.get("max_iterations", AdjacentMSE.max_iterations)
    if low > high:
        raise ValueError(f"--min-iterations {low}{'' if min_iterations is not None else ' (the default)'} exceeds "
                         f"--max-iterations {high}{'' if max_iterations is not None else ' (the default)'}: "
                         "give a minimum at most the maximum")
    try:
        threshold = float(value) if value else None
    except ValueError:
        raise ValueError(f"--halting {spec}: the threshold {value!r} is not a number") from None
    try:
        if kind == "mse":
            return AdjacentMSE(threshold if threshold is not None else 1e-3, **bounds)
        if kind == "cosine":
            return CosineSimilarity(threshold if threshold is not None else 0.999, **bounds)
    except ValueError as exc:
        raise ValueError(f"--halting {spec}: {exc}") from None
    raise ValueError(f"--halting {spec}: unknown halting rule {kind!r}; use mse:THRESH or cosine:THRESH")


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def _check_min_max(min_iterations: int, max_iterations: int) -> None:
    _check_range("min_iterations", min_iterations, 1, MAX_SUPPORTED_ITERATIONS)
    _check_range("max_iterations", max_iterations, 1, MAX_SUPPORTED_ITERATIONS)
    if min_iterations > max_iterations:
        raise ValueError(f"min_iterations {min_iterations} exceeds max_iterations {max_iterations}")
