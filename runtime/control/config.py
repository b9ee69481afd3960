"""`LoopConfig`: how a run is paced, queried and limited; read by the loop and its chunk broker."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from rdvla.runtime.control.action_queue import BLENDS
from rdvla.runtime.control.safety import SafetyConfig
from rdvla.runtime.halting import HaltingRule
from rdvla.runtime.horizon import FixedHorizon, HorizonRule
from rdvla.runtime.normalization import GRIPPERS

MODES = ("sync", "async")


@dataclass(frozen=True)
class LoopConfig:
    instruction: str
    rate_hz: float = 10.0
    mode: str = "async"
    refill_at: int = 2  # async: start the next query once at most this many actions remain queued
    blend: str = "replace"
    horizon: HorizonRule = field(default_factory=lambda: FixedHorizon(5))
    halting: Optional[HaltingRule] = None  # None: the bundle's default
    deadline_s: Optional[float] = None  # query deadline; None: derived from the period
    deadlines: bool = True  # False: no query is cut short (a stepped simulator waits for the policy)
    execute: bool = False  # False: a dry run, nothing is sent to the robot
    max_steps: Optional[int] = None
    gripper: str = "libero"  # libero: binarise and invert the gripper dimension (spec 3.6); raw: as predicted
    seed: int = 0  # query n starts from the initial latent of seed + n
    safety: SafetyConfig = field(default_factory=SafetyConfig)

    def __post_init__(self) -> None:
        if not self.instruction.strip():
            raise ValueError("the instruction must not be empty")
        if not (0 < self.rate_hz <= 1000 and math.isfinite(self.rate_hz)):
            raise ValueError(f"the control rate must lie in (0, 1000] Hz, got {self.rate_hz}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose sync or async")
        if self.refill_at < 0:
            raise ValueError(f"refill_at must be >= 0, got {self.refill_at}")
        if self.blend not in BLENDS:
            raise ValueError(f"unknown blend {self.blend!r}; choose one of {', '.join(BLENDS)}")
        if self.gripper not in GRIPPERS:
            raise ValueError(f"unknown gripper post-processing {self.gripper!r}; choose libero or raw")
        if self.deadline_s is not None and not (self.deadline_s > 0 and math.isfinite(self.deadline_s)):
            raise ValueError(f"the query deadline must be a positive number of seconds, got {self.deadline_s}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")

    def settings(self) -> dict[str, Any]:
        """The configuration as a run's start record states it (the safety limits: `SafetyFilter.settings`)."""
        return {
            "instruction": self.instruction, "rate_hz": self.rate_hz, "mode": self.mode, "refill_at": self.refill_at,
            "blend": self.blend, "horizon": repr(self.horizon),
            "halting": repr(self.halting) if self.halting else "bundle default",
            "deadline_ms": None if self.deadline_s is None else self.deadline_s * 1e3, "execute": self.execute,
            "gripper": self.gripper, "seed": self.seed,
        }

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz
