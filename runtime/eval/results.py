"""What `rdvla eval` writes, and reads back to resume:

    DIR/eval.json       the settings every episode of DIR ran with (source, backend, precision, halting,
                        horizon, render, suite); a rerun with other settings is refused unless --overwrite
    DIR/episodes.jsonl  one line per finished episode (`EpisodeResult`), appended as episodes end
    DIR/summary.json    success, Wilson 95 % interval and mean iterations, overall and per task
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from rdvla.runtime.outputs import atomic_write

SETTINGS_FILE = "eval.json"
EPISODES_FILE = "episodes.jsonl"
SUMMARY_FILE = "summary.json"
Z95 = 1.959964  # two-sided 95 % normal quantile


@dataclass(frozen=True)
class QueryOutcome:
    step: int  # control step whose observation the query answered
    iterations: int
    stopped_by: str
    latency_ms: float  # the policy's own time for the query (a simulator waits for it)
    gripper_closed: bool  # the scene when the query was asked
    object_distance_m: Optional[float]


@dataclass(frozen=True)
class EpisodeResult:
    suite: str
    task: int
    init: str  # "fixed:i" (the suite's initial state i) or "random:seed"
    success: bool
    steps: int
    render: str
    queries: list[QueryOutcome] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, int, str]:
        return self.suite, self.task, self.init

    @property
    def mean_iterations(self) -> Optional[float]:
        return sum(q.iterations for q in self.queries) / len(self.queries) if self.queries else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> "EpisodeResult":
        data = json.loads(line)
        data["queries"] = [QueryOutcome(**q) for q in data.get("queries", [])]
        return cls(**data)


def read_episodes(directory: Path) -> list[EpisodeResult]:
    """The finished episodes of DIR; a last line cut short by an interruption is ignored (that episode reruns)."""
    path = directory / EPISODES_FILE
    if not path.exists():
        return []
    results = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            results.append(EpisodeResult.from_json(line))
        except (ValueError, TypeError, KeyError):
            continue
    return results


def append_episode(directory: Path, result: EpisodeResult) -> None:
    with open(directory / EPISODES_FILE, "a", encoding="utf-8") as f:
        f.write(result.to_json() + "\n")
        f.flush()


def wilson95(successes: int, n: int) -> tuple[float, float]:
    """Wilson score interval: sound at 0 % and 100 % and for the few episodes a CPU can run."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / (1 + Z95 ** 2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _block(results: list[EpisodeResult]) -> dict[str, Any]:
    successes = sum(r.success for r in results)
    iterations = [q.iterations for r in results for q in r.queries]
    low, high = wilson95(successes, len(results))
    return {
        "episodes": len(results), "successes": successes,
        "success_rate": successes / len(results) if results else None,
        "wilson95": [round(low, 4), round(high, 4)],
        "mean_iterations": round(sum(iterations) / len(iterations), 3) if iterations else None,
        "queries": len(iterations),
        "mean_steps": round(sum(r.steps for r in results) / len(results), 1) if results else None,
    }


def summarize(results: Iterable[EpisodeResult], settings: dict[str, Any]) -> dict[str, Any]:
    results = sorted(results, key=lambda r: (r.task, r.init))
    tasks: dict[int, list[EpisodeResult]] = {}
    for result in results:
        tasks.setdefault(result.task, []).append(result)
    return {**_block(results), "settings": settings, "tasks": {str(t): _block(rs) for t, rs in sorted(tasks.items())}}


def write_summary(directory: Path, summary: dict[str, Any]) -> None:
    with atomic_write(directory / SUMMARY_FILE) as temporary:
        temporary.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def check_settings(directory: Path, settings: dict[str, Any], *, overwrite: bool) -> None:
    """Claim DIR for these settings: a new DIR, or one whose episodes ran with the same settings (resume).
    With `overwrite`, earlier episodes of other settings are discarded."""
    path = directory / SETTINGS_FILE
    if path.exists() and not overwrite:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(earlier) | set(settings) if earlier.get(k) != settings.get(k))
        if changed:
            detail = ", ".join(f"{k} {earlier.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise FileExistsError(f"--out {directory} holds episodes run with other settings ({detail}); "
                                  "choose another --out, or --overwrite to discard them")
        return
    if overwrite:
        for name in (EPISODES_FILE, SUMMARY_FILE):
            (directory / name).unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as temporary:
        temporary.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
