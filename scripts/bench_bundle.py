"""Per-stage latency of a bundle on this machine (ONNX Runtime, CPU) against the PyTorch reference.

    .venv/bin/python scripts/bench_bundle.py CHECKPOINT BUNDLE [--iterations 50] [--repeats 5]

Prints one JSON report: graph file sizes; VLM+Prelude latency; per-iteration latency of the core
step (latent only, and with decode + halting statistics) through bare ONNX Runtime sessions; the
reference head's per-iteration latency in PyTorch, with the context keys/values cached (as the
bundle does) and recomputed every iteration (the authors' structure); MatMul FLOPs and bytes per
iteration from the graph shapes; and the weight-streaming floor per iteration on an AGX Orin.
Medians over repeated runs, all measured in this one process.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rdvla.export.checkpoint import load_checkpoint
from rdvla.export.graph_stats import ORIN_AGX_BANDWIDTH, graph_stats
from rdvla.runtime import contract
from rdvla.runtime.backends.onnxruntime import OnnxRuntimeBackend
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.graph_check.onnx_reader import graph_files
from rdvla.runtime.normalization import normalize_proprio
from rdvla.runtime.halting import AdjacentMSE, FixedIterations
from rdvla.runtime.policy import Policy


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--iterations", type=int, default=50, help="core-step calls per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="VLM+Prelude calls")
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    bundle = Bundle.open(args.bundle)
    policy = Policy(bundle, OnnxRuntimeBackend(bundle))
    backend = policy.backend
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((1, 12, 224, 224)).astype(np.float32)
    ids = policy.tokenizer("pick up the black bowl between the plate and the ramekin and place it on the plate")
    proprio = normalize_proprio(rng.uniform(bundle.norm_stats.proprio_q01, bundle.norm_stats.proprio_q99), bundle.norm_stats)[None]
    report: dict = {"machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores", "date": time.strftime("%Y-%m-%d"),
                    "onnxruntime_threads": "default", "torch_threads": torch.get_num_threads()}
    report["graph_mb"] = {}
    for name in contract.GRAPHS:
        files = graph_files(bundle.path(bundle.graph(name).file))
        report["graph_mb"][name] = round(sum(f.stat().st_size for f in files) / 1e6, 2)
    report["vlm_prelude_ms"] = median_ms(lambda: backend.run_context(pixels, ids, proprio), args.repeats)
    backend.reset_latent(policy.initial_latent(0))

    def loop(call):
        def run():
            for _ in range(args.iterations):
                call()
        return median_ms(run, 3) / args.iterations

    report["ort_core_step_ms"] = loop(backend.step)
    report["ort_core_step_decode_ms"] = loop(backend.step_decode)
    report["ort_decode_ms"] = loop(backend.decode)

    # Loop overhead: the bare session call on pre-bound buffers, the backend call, and Policy's loop
    # (halting bookkeeping, timing) per iteration, all for the same graph in this one process.
    n = args.iterations
    session = backend.sessions[contract.CORE_STEP_DECODE]
    binding = backend._bindings[(contract.CORE_STEP_DECODE, (0, 0))]  # noqa: SLF001 - the bare engine call is the point of comparison
    bare = loop(lambda: session.run_with_iobinding(binding))
    via_backend = loop(lambda: backend.step_decode(read=True))
    via_policy = median_ms(lambda: policy._iterate(AdjacentMSE(1e-30, max_iterations=n), None), 3) / n  # noqa: SLF001
    report["loop_overhead"] = {
        "graph": contract.CORE_STEP_DECODE, "bare_session_ms": bare, "backend_ms": via_backend, "policy_ms": via_policy,
        "policy_overhead_us": 1e3 * (via_policy - bare), "policy_overhead_pct": 100 * (via_policy - bare) / bare,
    }
    report["end_to_end_ms"] = {}
    for k in (1, 4, 12, 32):
        report["end_to_end_ms"][str(k)] = median_ms(
            lambda: policy.act("pick up the black bowl", bundle.norm_stats.proprio_q01, pixel_values=pixels,
                               halting=FixedIterations(k), seed=0), args.repeats)

    model = load_checkpoint(args.checkpoint).model
    head = model.action_head.model
    hidden = model.vlm.hidden_states(torch.from_numpy(pixels), torch.from_numpy(np.array(ids)), indices=head.cfg.vlm_indices)
    token = model.proprio_projector(torch.from_numpy(proprio))
    ctx = head.context(hidden, token)
    latent = head.initial_latent(1, torch.Generator().manual_seed(0))
    report["torch_head_iterate_cached_kv_ms"] = loop(lambda: head.iterate(latent, ctx))

    def authors_iteration():
        # The authors' layers project [latents; proprio] and the 512 vision tokens inside every iteration.
        fresh = [layer.context_kv(hidden[j][1], hidden[j][0], token) for layer, j in zip(head.recurrent, head.cfg.recurrent_vlm_layers)]
        ctx.core_kv[:] = fresh
        head.iterate(latent, ctx)

    report["torch_head_iterate_recomputed_kv_ms"] = loop(authors_iteration)

    p = int(ids.shape[1])
    stats = {g: graph_stats(args.bundle / bundle.graph(g).file, {"prompt_len": p}) for g in contract.GRAPHS}
    report["per_iteration"] = {}
    for g in (contract.CORE_STEP, contract.CORE_STEP_DECODE):
        s = stats[g]
        report["per_iteration"][g] = {
            "matmul_gflop": s.matmul_flops / 1e9, "weight_params_m": s.weight_params / 1e6,
            "bytes_fp16_weights_mb": (2 * s.weight_params + s.io_bytes) / 1e6,
            "orin_floor_fp16_ms": 1e3 * s.floor_seconds(2), "orin_floor_int8_ms": 1e3 * s.floor_seconds(1),
        }
    report["vlm_prelude_gflop"] = stats[contract.VLM_PRELUDE].matmul_flops / 1e9
    report["orin_bandwidth_gbs"] = ORIN_AGX_BANDWIDTH / 1e9
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
