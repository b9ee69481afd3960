"""`rdvla profile`: per-iteration latency, VLM+Prelude latency, end-to-end latency against the
iteration count, the iteration histogram under adaptive halting, resident memory against the iteration count, and the environment.

All times come from `Policy.act` on the chosen backend (device-side per-iteration times where the
backend measures them, e.g. CUDA events on TensorRT). Percentiles are over `repeats` queries.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from rdvla.runtime.golden import GoldenCase
from rdvla.runtime.halting import AdjacentMSE, FixedIterations
from rdvla.runtime.outputs import atomic_write
from rdvla.runtime.policy import Policy

log = logging.getLogger(__name__)

DEFAULT_ITERATION_COUNTS = (1, 2, 4, 8, 12, 16, 24, 32)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "max": float(a.max()), "n": int(a.size)}


def resident_mb() -> float:
    """Resident set size of this process (Linux /proc; on a Jetson it includes the GPU's share of DRAM)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def environment(policy: Policy) -> dict[str, Any]:
    """What the numbers were measured on: machine, libraries, backend (`rdvla profile` adds a Jetson's power
    mode and clocks, as `rdvla doctor` reads them)."""
    env: dict[str, Any] = {
        "machine": platform.machine(), "platform": platform.platform(), "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "backend": policy.backend.name, "bundle_tools": policy.bundle.manifest.tools,
        "preprocessing": policy.preprocessing,
    }
    cpu = Path("/proc/cpuinfo")
    if cpu.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpu.read_text().splitlines() if line.startswith("model name")]
        env["cpu"] = names[0] if names else platform.processor()
    # Versions from the installed metadata: importing torch (on a workstation) only to name it would cost seconds.
    for distribution in ("numpy", "onnxruntime", "tensorrt", "torch"):
        try:
            env[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return env


def profile(
    policy: Policy,
    counts: Sequence[int] = DEFAULT_ITERATION_COUNTS,
    repeats: int = 10,
    cases: Optional[list[GoldenCase]] = None,
    progress: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Measure a bundle on `policy`'s backend; returns the JSON-able report."""
    if not counts or min(counts) < 1:
        raise ValueError("iteration counts must be positive integers")
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    rng = np.random.default_rng(0)
    dims = policy.bundle.dims
    images = cases[0].images if cases else [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(dims.num_images)]
    instruction = cases[0].instruction if cases else "pick up the black bowl and place it on the plate"
    proprio = cases[0].proprio if cases else (policy.bundle.norm_stats.proprio_q01 + policy.bundle.norm_stats.proprio_q99) / 2

    def query(halting: Any, seed: int) -> Any:
        return policy.act(instruction, proprio, images=images, halting=halting, seed=seed)

    progress("warming up")
    query(FixedIterations(1), 0)
    query(AdjacentMSE(max_iterations=2), 0)

    most = max(counts)
    per_index: dict[str, list[list[float]]] = {"core_step_decode": [[] for _ in range(most)], "core_step": [[] for _ in range(most)]}
    stage_times: dict[str, list[float]] = {}
    progress(f"per-iteration latency: {repeats} queries of {most} iterations, with and without decode")
    for r in range(repeats):
        # A threshold never met: every query runs `most` iterations with the decode and halting statistics.
        decoding = AdjacentMSE(1e-30, min_iterations=1, max_iterations=most)
        for name, halting in (("core_step_decode", decoding), ("core_step", FixedIterations(most))):
            result = query(halting, r)
            for i, ms in enumerate(result.iteration_ms):
                per_index[name][i].append(ms)
            for stage, ms in result.timings_ms.items():
                if stage in ("preprocess", "tokenize", "vlm_prelude", "postprocess"):
                    stage_times.setdefault(stage, []).append(ms)

    end_to_end: dict[str, Any] = {}
    memory: dict[str, float] = {}
    for count in sorted(counts):
        progress(f"end-to-end latency at {count} iterations")
        totals = [query(FixedIterations(count), r).timings_ms["total"] for r in range(repeats)]
        end_to_end[str(count)] = percentiles(totals)
        memory[str(count)] = resident_mb()

    histogram: dict[str, dict[str, int]] = {}
    if cases:
        progress(f"iterations under adaptive halting over {len(cases)} golden cases")
        for threshold in (1e-3, 1e-4):
            counts: dict[str, int] = {}
            for case in cases:
                k = policy.act(case.instruction, case.proprio, images=case.images, halting=AdjacentMSE(threshold),
                               init_latent=case.init_latent).iterations
                counts[str(k)] = counts.get(str(k), 0) + 1
            histogram[f"mse_{threshold:g}"] = counts

    return {
        "environment": environment(policy),
        "repeats": repeats,
        "per_iteration_ms": {name: [percentiles(v) for v in rows] for name, rows in per_index.items()},
        "stages_ms": {stage: percentiles(v) for stage, v in stage_times.items()},
        "end_to_end_ms": end_to_end,
        "resident_mb": memory,
        "adaptive_iterations": histogram,
    }


REPORT_JSON = "profile.json"
PLOTS = {"per_iteration": "per_iteration_latency.png", "iterations": "latency_vs_iterations.png", "memory": "memory_vs_iterations.png",
         "adaptive": "adaptive_iterations.png"}
REPORT_FILES = (REPORT_JSON, *PLOTS.values())


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """profile.json and, where matplotlib is installed, the PNG plots; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / REPORT_JSON]
    with atomic_write(written[0]) as temporary:
        temporary.write_text(json.dumps(report, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: wrote %s only (pip install 'rdvla[robot]' for the plots)", written[0])
        return written
    title = f"{report['environment']['backend']} on {report['environment'].get('cpu', report['environment']['machine'])}"

    fig, ax = plt.subplots(figsize=(7, 4))
    for (name, rows), color in zip(report["per_iteration_ms"].items(), ("tab:blue", "tab:green")):
        idx = np.arange(1, len(rows) + 1)
        ax.plot(idx, [r["p50"] for r in rows], marker="o", color=color, label=f"{name} p50")
        ax.fill_between(idx, [r["p50"] for r in rows], [r["p95"] for r in rows], color=color, alpha=0.2, label=f"{name} p50-p95")
        ax.plot(idx, [r["max"] for r in rows], linestyle=":", color=color, label=f"{name} max")
    ax.set(xlabel="iteration index", ylabel="ms", title=f"per-iteration latency ({title})")
    ax.legend(fontsize=7)
    written.append(_save(fig, out / PLOTS["per_iteration"], plt))

    counts = sorted(report["end_to_end_ms"], key=int)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.errorbar([int(k) for k in counts], [report["end_to_end_ms"][k]["p50"] for k in counts],
                yerr=[[0] * len(counts), [report["end_to_end_ms"][k]["p95"] - report["end_to_end_ms"][k]["p50"] for k in counts]],
                marker="o", capsize=3, label="end to end (p50, bar to p95)")
    vlm = report["stages_ms"].get("vlm_prelude")
    if vlm:
        ax.axhline(vlm["p50"], color="gray", linestyle="--", label=f"VLM+Prelude p50 {vlm['p50']:.1f} ms")
    ax.set(xlabel="recurrent iterations", ylabel="ms", title="query latency against iterations")
    ax.legend(fontsize=7)
    written.append(_save(fig, out / PLOTS["iterations"], plt))

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([int(k) for k in counts], [report["resident_mb"][k] for k in counts], marker="o")
    ax.set(xlabel="recurrent iterations", ylabel="resident MB", title="memory against iterations")
    written.append(_save(fig, out / PLOTS["memory"], plt))

    if report["adaptive_iterations"]:
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.4
        for i, (mode, counts) in enumerate(report["adaptive_iterations"].items()):
            ks = sorted(counts, key=int)
            ax.bar([int(k) + (i - 0.5) * width for k in ks], [counts[k] for k in ks], width=width, label=mode)
        ax.set(xlabel="iterations at stop", ylabel="queries", title="adaptive halting over the golden cases")
        ax.legend(fontsize=7)
        written.append(_save(fig, out / PLOTS["adaptive"], plt))
    return written


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    with atomic_write(path) as temporary:
        fig.savefig(temporary, dpi=110)
    plt.close(fig)
    return path
