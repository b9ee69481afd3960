"""`rdvla export`: checkpoint directory -> bundle (graphs, manifest, tokenizer, golden cases, parity report).

The bundle is made in a hidden folder the tool owns and renamed only after every parity gate
passes, so a directory named like the requested bundle is always a complete, verified one. A failed
gate leaves `<out>.parity-report.json` for inspection and raises `ParityError`.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rdvla.export.checkpoint import LoadedCheckpoint, load_checkpoint
from rdvla.export.model import RDVLA
from rdvla.export.onnx_export import OPSET, export_graph, graph_plans
from rdvla.export.split import VLMPrelude
from rdvla import __version__
from rdvla.runtime import contract
from rdvla.runtime.backends.onnxruntime import OnnxRuntimeBackend
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import MANIFEST, TOKENIZER_FILE, GraphSpec, HaltingDefaults, Manifest, ModelDims, PromptSpec, sha256_file
from rdvla.runtime.outputs import check_apart, check_new_directory, publish_directory, scratch_directory
from rdvla.runtime.gates import gate_for
from rdvla.runtime.halting import FixedIterations
from rdvla.runtime.normalization import NormStats, action_span, normalize_proprio, unnormalize_actions
from rdvla.runtime.policy import Policy, truncated_normal_latent
from rdvla.runtime.verify import FIXED_ITERATIONS, MSE_THRESHOLDS, error, gate_failures, verify_actions, worst
from rdvla.runtime.preprocess import DEFAULT_CONFIG, to_pixel_values
from rdvla.runtime.golden import TRACE_ITERATIONS, GoldenCase
from rdvla.runtime.graph_check.onnx_reader import graph_files
from rdvla.runtime.graph_check.rules import require_compatible
from rdvla.runtime.prompt import PROMPT_TEMPLATE, PromptTokenizer

log = logging.getLogger(__name__)

GOLDEN_INSTRUCTIONS = (
    "pick up the black bowl between the plate and the ramekin and place it on the plate",
    "open the top drawer and put the bowl inside",
    "put both the alphabet soup and the tomato sauce in the basket",
    "turn on the stove",
)
DEFAULT_PROMPT_LEN = (24, 128)


class ParityError(RuntimeError):
    """An exported graph disagrees with the reference beyond its gate."""


def synthetic_camera(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A smooth scene with edges and sensor noise: something preprocessing and ViTs both respond to."""
    y, x = np.mgrid[0:size, 0:size] / size
    f = rng.uniform(2, 9, 3)
    base = np.stack([np.sin(f[0] * x + f[1] * y), np.cos(f[1] * x * y * 3), np.sin(f[2] * (x - y))], -1)
    block = (x > rng.uniform(0.2, 0.8)) & (y > rng.uniform(0.2, 0.8))
    img = 127 + 90 * base + 40 * block[..., None] + rng.normal(0, 6, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_golden_cases(model: RDVLA, tokenizer: PromptTokenizer, stats: NormStats, count: int, seed: int = 0) -> list[GoldenCase]:
    rng = np.random.default_rng(seed)
    sigma = abs(model.action_head.model.gamma_init.item()) * model.action_head.cfg.init_std
    cases = []
    for i in range(count):
        images = [synthetic_camera(rng) for _ in range(model.vlm.cfg.num_images)]
        instruction = GOLDEN_INSTRUCTIONS[i % len(GOLDEN_INSTRUCTIONS)]
        proprio = rng.uniform(stats.proprio_q01, stats.proprio_q99)
        init_latent = truncated_normal_latent((1, model.action_head.cfg.action_chunk_len, model.action_head.cfg.hidden_dim), sigma, rng)
        out = model.predict(
            torch.from_numpy(to_pixel_values(images)), torch.from_numpy(np.array(tokenizer(instruction))),
            torch.from_numpy(normalize_proprio(proprio, stats)[None]), FixedIterations(TRACE_ITERATIONS),
            init_latent=torch.from_numpy(init_latent), trace=True,
        )
        trace = torch.cat(out.per_iteration_actions).float().numpy()
        cases.append(GoldenCase(
            images, instruction, proprio.astype(np.float64), init_latent, trace,
            np.asarray(out.mse, np.float32), np.asarray(out.cosine, np.float32),
            unnormalize_actions(trace, stats), action_span(stats),
        ))
    return cases


def parity_report(root: Path, model: RDVLA, cases: list[GoldenCase], precision: str = "fp32") -> dict[str, Any]:
    """Run the bundle with ONNX Runtime against the reference on the golden cases: every
    VLM+Prelude output, then the actions of every verification mode."""
    gate = gate_for(precision)
    bundle = Bundle.open(root, verify_hashes=False)
    backend = OnnxRuntimeBackend(bundle, precision)
    policy = Policy(bundle, backend)
    prelude = VLMPrelude(model).eval()
    outputs: dict[str, dict[str, float]] = {}
    for case in cases:
        pixels = to_pixel_values(case.images, config=bundle.preprocess)
        ids = policy.tokenizer(case.instruction)
        proprio = normalize_proprio(case.proprio, bundle.norm_stats)[None]
        with torch.no_grad():
            reference = prelude(torch.from_numpy(pixels), torch.from_numpy(np.array(ids)), torch.from_numpy(proprio))
        backend.run_context(pixels, ids, proprio)
        ours = backend.context()
        for name, ref in zip([t.name for t in bundle.graph(contract.VLM_PRELUDE).outputs], reference):
            err = error(ours[name], ref.numpy())
            prev = outputs.setdefault(name, {"max_abs": 0.0, "max_rel": 0.0})
            outputs[name] = {k: worst([prev[k], err[k]]) for k in prev}
    actions = verify_actions(policy, cases)
    failures = [f"vlm_prelude output {name}: max_rel {err['max_rel']:.3g} > {gate.context_max_rel:g}"
                for name, err in outputs.items() if not err["max_rel"] <= gate.context_max_rel]
    failures += gate_failures(actions, gate)
    return {
        "precision": precision, "backend": backend.name, "cases": len(cases), "gate": gate.__dict__,
        "context_outputs": outputs, "actions": {mode: r.to_json() for mode, r in actions.items()},
        "passed": not failures, "failures": failures,
    }


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import transformers

    return {"rdvla": __version__, "python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "transformers": transformers.__version__, "opset": str(OPSET)}


def build_manifest(ckpt: LoadedCheckpoint, stats: NormStats, graphs: dict[str, GraphSpec], prompt: PromptSpec,
                   golden: list[str], files: dict[str, str]) -> Manifest:
    model = ckpt.model
    head = model.action_head.cfg
    gamma_init = abs(model.action_head.model.gamma_init.item())
    return Manifest(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        tools=_versions(),
        source={"checkpoint": str(ckpt.files.root.resolve()), "files": {p.name: sha256_file(p) for p in ckpt.files.all_files()}},
        model=ModelDims(
            hidden_dim=head.hidden_dim, num_heads=head.num_heads, chunk_len=head.action_chunk_len, action_dim=head.action_dim,
            proprio_dim=model.proprio_projector.fc1.in_features, num_images=model.vlm.cfg.num_images,
            context_tokens=64 + 1 + model.vlm.cfg.num_task_tokens,
            prelude_vlm_layers=tuple(head.prelude_vlm_layers), recurrent_vlm_layers=tuple(head.recurrent_vlm_layers),
            coda_vlm_layers=tuple(head.coda_vlm_layers), init_sigma=gamma_init * head.init_std,
        ),
        prompt=prompt,
        preprocess=DEFAULT_CONFIG,
        normalization=stats,
        halting=HaltingDefaults(rule="mse", threshold=1e-3, min_iterations=2, max_iterations=32, fixed_iterations=12),
        horizon={"rule": "fixed", "actions": 5},
        graphs=graphs,
        golden=tuple(golden),
        files=files,
    )


def export_bundle(checkpoint: Path, out: Path, unnorm_key: str | None = None,
                  prompt_len: tuple[int, int] = DEFAULT_PROMPT_LEN, cases: int = 3, overwrite: bool = False) -> dict[str, Any]:
    """Export, check parity, and publish `out`; returns the parity report.

    The bundle is made in a hidden scratch folder beside `out` (removed on failure and on Ctrl+C)
    and takes the name `out` only when every gate has passed; an existing `out` is replaced only
    with `overwrite`, and only then.
    """
    out = Path(out)
    check_new_directory(out, overwrite=overwrite, option="--out")
    check_apart(out, checkpoint, option="--out", what="checkpoint")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():  # --overwrite replaces a bundle, never another folder
        raise ValueError(f"--out {out} exists and is not a bundle (no {MANIFEST}); give a new directory, or remove it yourself")
    try:  # the manifest's own check of the range, reported as the option that set it
        prompt = PromptSpec(PROMPT_TEMPLATE, True, *prompt_len)
    except ValueError:
        raise ValueError(f"--prompt-len must be MIN:MAX with 2 <= MIN <= MAX, got {prompt_len[0]}:{prompt_len[1]}") from None
    with scratch_directory(out) as work:
        report = _export_into(work, checkpoint, unnorm_key, prompt, cases)
        if not report["passed"]:
            failed = out.with_name(f"{out.name}.parity-report.json")
            shutil.copyfile(work / "report.json", failed)
            raise ParityError(f"parity gates failed (report: {failed}): " + "; ".join(report["failures"]))
        publish_directory(work, out)
    return report


def _export_into(work: Path, checkpoint: Path, unnorm_key: str | None, prompt: PromptSpec, cases: int) -> dict[str, Any]:
    low, high = prompt.min_len, prompt.max_len
    (work / "graphs").mkdir()
    (work / "golden").mkdir()
    log.info("[1/5] loading %s", checkpoint)
    ckpt = load_checkpoint(checkpoint)
    stats = ckpt.norm_stats(unnorm_key)
    tokenizer = PromptTokenizer(ckpt.files.tokenizer)  # refused by its own name, not the scratch copy's
    shutil.copy(ckpt.files.tokenizer, work / TOKENIZER_FILE)

    log.info("[2/5] golden cases: %d reference queries of %d iterations", cases, TRACE_ITERATIONS)
    golden = make_golden_cases(ckpt.model, tokenizer, stats, cases)
    for i, case in enumerate(golden):
        if not (np.isfinite(case.trace_actions).all() and np.isfinite(case.trace_unnormalized_actions).all()):
            raise ValueError(f"{checkpoint}: the reference model's actions on golden case {i} are not finite (NaN or inf): "
                             "its weights are broken; export another training step's checkpoint")
    for case in golden:
        ids = tokenizer(case.instruction)
        if not low <= ids.shape[1] <= high:
            raise ValueError(f"golden prompt of {ids.shape[1]} tokens lies outside --prompt-len {low}:{high}")
    golden_files = []
    for i, case in enumerate(golden):
        rel = f"golden/case{i}.npz"
        case.save(work / rel)
        golden_files.append(rel)

    log.info("[3/5] exporting graphs (opset %d) and checking them against TensorRT's ONNX parser", OPSET)
    graphs = {plan.name: export_graph(plan, work, "graphs") for plan in graph_plans(ckpt.model, (low, high))}
    require_compatible((work / g.file for g in graphs.values()), root=work)  # named as in the bundle: the scratch folder is about to go

    log.info("[4/5] writing the manifest")
    listed = [work / TOKENIZER_FILE, *(work / g for g in golden_files)]
    for spec in graphs.values():
        listed += graph_files(work / spec.file)
    files = {str(p.relative_to(work)): sha256_file(p) for p in listed}
    build_manifest(ckpt, stats, graphs, prompt, golden_files, files).save(work)

    log.info("[5/5] parity: ONNX Runtime against the reference (%d cases, iterations %s, MSE %s)",
             len(golden), ",".join(map(str, FIXED_ITERATIONS)), ",".join(f"{t:g}" for t in MSE_THRESHOLDS))
    report = parity_report(work, ckpt.model, golden)
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
