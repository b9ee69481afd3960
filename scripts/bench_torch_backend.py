"""Latency of the PyTorch backend on this machine: VLM+Prelude, and per iteration with and without CUDA graphs.

    .venv/bin/python scripts/bench_torch_backend.py BUNDLE [--checkpoint DIR] [--device cuda|cpu]
        [--precision fp32|bf16|fp16] [--iterations 64] [--queries 5] [--repeats 10] [--threads N]

Prints one JSON report. Per-iteration numbers are medians over queries x iterations of
`TorchBackend.iteration_times_ms()`: CUDA events around each iteration on a GPU, host
perf_counter on the CPU. `host_per_iteration_ms` is wall time of a whole loop divided by its
iterations, after a final synchronisation: what the recurrent loop sees, launch overhead included.
`step_decode_read` synchronises on the halting scalars every iteration, as adaptive halting does;
`step_decode` does not read them. VLM+Prelude is host wall time of `run_context` + synchronise
(input copies included), median over repeats. On the CPU CUDA graphs do not apply and are reported
as null. Each configuration loads the backend afresh; only one is in memory at a time.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from rdvla.runtime.backends.torch_split import TorchBackend
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.normalization import normalize_proprio
from rdvla.runtime.policy import truncated_normal_latent
from rdvla.runtime.prompt import PromptTokenizer

INSTRUCTION = "pick up the black bowl between the plate and the ramekin and place it on the plate"


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def _loop(backend: TorchBackend, call: Callable[[], Any], iterations: int, queries: int, init_latent: np.ndarray) -> dict[str, float]:
    per_iteration: list[float] = []
    host: list[float] = []
    for q in range(queries + 1):  # the first query warms up
        backend.reset_latent(init_latent)
        backend.synchronize()
        start = time.perf_counter()
        for _ in range(iterations):
            call()
        backend.synchronize()
        elapsed = time.perf_counter() - start
        times = backend.iteration_times_ms()
        if q:
            per_iteration += times
            host.append(1e3 * elapsed / iterations)
    return {"per_iteration_ms": _median(per_iteration), "per_iteration_p90_ms": round(float(np.percentile(per_iteration, 90)), 4),
            "host_per_iteration_ms": _median(host)}


def bench(bundle: Bundle, args: argparse.Namespace, cuda_graphs: bool) -> dict[str, Any]:
    backend = TorchBackend(bundle, args.precision, checkpoint=args.checkpoint, device=args.device, cuda_graphs=cuda_graphs)
    try:
        rng = np.random.default_rng(0)
        pixels = rng.standard_normal(bundle.graph("vlm_prelude").inputs[0].shape).astype(np.float32)
        ids = PromptTokenizer(bundle.path("tokenizer.json"))(INSTRUCTION)
        stats = bundle.norm_stats
        proprio = normalize_proprio(rng.uniform(stats.proprio_q01, stats.proprio_q99), stats)[None]
        init_latent = truncated_normal_latent(bundle.dims.latent_shape, bundle.dims.init_sigma, rng)
        prelude = []
        for r in range(args.repeats + 1):
            start = time.perf_counter()
            backend.run_context(pixels, ids, proprio)
            backend.synchronize()
            if r:
                prelude.append(1e3 * (time.perf_counter() - start))
        return {
            "execution_modes": backend.execution_modes(),
            "vlm_prelude_ms": _median(prelude),
            "step": _loop(backend, backend.step, args.iterations, args.queries, init_latent),
            "step_decode": _loop(backend, functools.partial(backend.step_decode, read=False), args.iterations, args.queries,
                                 init_latent),
            "step_decode_read": _loop(backend, backend.step_decode, args.iterations, args.queries, init_latent),
        }
    finally:
        backend.close()
        del backend
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--checkpoint", type=Path, help="source checkpoint (default: the path recorded in the manifest)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--iterations", type=int, default=64, help="iterations per query (at most 256 are timed)")
    parser.add_argument("--queries", type=int, default=5, help="queries per measurement, after one warm-up query")
    parser.add_argument("--repeats", type=int, default=10, help="VLM+Prelude runs, after one warm-up run")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"

    bundle = Bundle.open(args.bundle)
    cuda = torch.device(args.device).type == "cuda"
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "device": torch.cuda.get_device_name(torch.device(args.device)) if cuda else "cpu",
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "bundle": str(args.bundle),
        "model": {"hidden_dim": bundle.dims.hidden_dim, "core_layers": len(bundle.dims.recurrent_vlm_layers),
                  "coda_layers": len(bundle.dims.coda_vlm_layers)},
        "precision": args.precision,
        "iterations": args.iterations,
        "queries": args.queries,
        "timer": "CUDA events" if cuda else "perf_counter",
        "cuda_graphs": bench(bundle, args, cuda_graphs=True) if cuda else None,
        "eager": bench(bundle, args, cuda_graphs=False),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
