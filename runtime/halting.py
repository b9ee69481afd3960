"""When the recurrent loop stops (spec 3.1-3.3), shared by the reference and every backend.

A rule sees the iteration index k (1-based) and the delta of iteration k: how much the decoded
actions changed from iteration k-1, as the rule measures it (None at k = 1, or when the loop did
not decode), in normalised action space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

MAX_SUPPORTED_ITERATIONS = 256


@dataclass(frozen=True)
class FixedDepth:
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

    def should_stop(self, k: int, delta: Optional[float]) -> bool:
        return k >= self.iterations


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

    def should_stop(self, k: int, delta: Optional[float]) -> bool:
        if k >= self.max_iterations:
            return True
        return k >= self.min_iterations and delta is not None and self.converged(delta)


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

    def should_stop(self, k: int, delta: Optional[float]) -> bool:
        if k >= self.max_iterations:
            return True
        return k >= self.min_iterations and delta is not None and self.converged(delta)


HaltingRule = Union[FixedDepth, AdjacentMSE, CosineSimilarity]


def parse_halting(
    spec: Optional[str],
    iterations: Optional[int] = None,
    min_iterations: Optional[int] = None,
    max_iterations: Optional[int] = None,
) -> HaltingRule:
    """Build a rule from CLI words: `--iterations N` or `--halting mse:THRESH|cosine:THRESH`
    (`--min-iterations`, `--max-iterations`); a ValueError names the option at fault."""
    if spec is not None and iterations is not None:
        raise ValueError("give either --iterations (a fixed depth) or --halting (adaptive), not both")
    if spec is None:
        if min_iterations is not None or max_iterations is not None:
            raise ValueError("--min-iterations/--max-iterations apply to adaptive halting (--halting) only")
        try:
            return FixedDepth(12 if iterations is None else iterations)
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
