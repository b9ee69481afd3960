"""How many of a chunk's actions to execute before querying again (spec 3.4).

Binary and dynamic rules execute MORE actions after MORE iterations (a hard state earns a longer
commitment); the linear decay does the opposite (a hard state is re-planned sooner). Both kinds
come from the authors' code and paper; which is right for a robot is an experiment, so all are
offered. Every rule returns at least 1 and never more than the chunk holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class HorizonRule(Protocol):
    """What the chunk broker asks of a horizon rule; every rule implements it."""

    def actions_to_execute(self, iterations: int, chunk_len: int) -> int:
        """How many leading actions of a chunk of `chunk_len` to execute after a query of `iterations`."""


def _clip(n: int, chunk_len: int) -> int:
    return max(1, min(int(n), chunk_len))


@dataclass(frozen=True)
class FixedHorizon:
    """`num_exec_actions`: 5 of 8 by default (the authors' evaluation setting)."""

    actions: int = 5

    def __post_init__(self) -> None:
        if self.actions < 1:
            raise ValueError(f"fixed horizon must execute at least 1 action, got {self.actions}")

    def actions_to_execute(self, iterations: int, chunk_len: int) -> int:
        return _clip(self.actions, chunk_len)


@dataclass(frozen=True)
class BinaryHorizon:
    """iterations > tau -> `high` actions, else `low` (defaults 4 -> 8 / 4)."""

    tau: int = 4
    low: int = 4
    high: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.low <= self.high:
            raise ValueError(f"binary horizon needs 1 <= low <= high, got low={self.low} high={self.high}")

    def actions_to_execute(self, iterations: int, chunk_len: int) -> int:
        return _clip(self.high if iterations > self.tau else self.low, chunk_len)


@dataclass
class DynamicHorizon:
    """Buckets over the running mean and std of iteration counts of the task so far.

    With fewer than `warmup` counts: `default`. Otherwise, with mu, sigma (population std, 1 for a
    single value): k < mu - sigma -> 2; < mu -> 4; < mu + sigma -> 6; else 8. Call `new_task()`
    when the task changes; counts of earlier episodes of the same task are kept, as upstream does.
    """

    warmup: int = 5
    default: int = 5
    history: list[int] = field(default_factory=list)

    def new_task(self) -> None:
        self.history.clear()

    def actions_to_execute(self, iterations: int, chunk_len: int) -> int:
        self.history.append(iterations)
        if len(self.history) < self.warmup:
            return _clip(self.default, chunk_len)
        mu = float(np.mean(self.history))
        sigma = float(np.std(self.history)) if len(self.history) > 1 else 1.0
        if iterations < mu - sigma:
            n = 2
        elif iterations < mu:
            n = 4
        elif iterations < mu + sigma:
            n = 6
        else:
            n = 8
        return _clip(n, chunk_len)


@dataclass(frozen=True)
class LinearDecayHorizon:
    """The paper's rule H = max(H_min, H_max - max(0, k - tau)).

    Defaults H_max = 8, H_min = 2, tau = 6 agree with the code's variant up to k = 7.
    """

    h_min: int = 2
    h_max: int = 8
    tau: int = 6

    def __post_init__(self) -> None:
        if not 1 <= self.h_min <= self.h_max:
            raise ValueError(f"linear decay needs 1 <= h_min <= h_max, got {self.h_min}, {self.h_max}")

    def actions_to_execute(self, iterations: int, chunk_len: int) -> int:
        return _clip(max(self.h_min, self.h_max - max(0, iterations - self.tau)), chunk_len)


@dataclass(frozen=True)
class CodeLinearDecayHorizon:
    """The authors' evaluation code: k <= 6 -> 8; k in {7, 8} -> 7; k > 8 -> max(2, 7 - (k - 8))."""

    def actions_to_execute(self, iterations: int, chunk_len: int) -> int:
        if iterations <= 6:
            n = 8
        elif iterations <= 8:
            n = 7
        else:
            n = max(2, 7 - (iterations - 8))
        return _clip(n, chunk_len)


def parse_horizon(spec: str) -> HorizonRule:
    """CLI words: fixed[:N] | binary[:TAU] | dynamic | linear[:HMIN:HMAX:TAU] | linear-code (a ValueError
    names `--horizon`)."""
    kind, *values = spec.split(":")
    try:
        numbers = [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--horizon {spec}: parameters must be integers") from None
    makers = {"fixed": (FixedHorizon, 1), "binary": (BinaryHorizon, 1), "dynamic": (DynamicHorizon, 0),
              "linear": (LinearDecayHorizon, 3), "linear-code": (CodeLinearDecayHorizon, 0)}
    if kind not in makers:
        raise ValueError(f"--horizon {spec}: unknown horizon rule {kind!r}; use fixed[:N], binary[:TAU], dynamic, "
                         "linear[:HMIN:HMAX:TAU] or linear-code")
    maker, most = makers[kind]
    if len(numbers) > most or (kind == "linear" and len(numbers) not in (0, 3)):
        raise ValueError(f"--horizon {spec}: wrong number of parameters (fixed[:N], binary[:TAU], linear[:HMIN:HMAX:TAU])")
    try:
        if kind == "binary" and numbers:
            return BinaryHorizon(tau=numbers[0])
        return maker(*numbers)  # type: ignore[no-any-return]
    except ValueError as exc:
        raise ValueError(f"--horizon {spec}: {exc}") from None
