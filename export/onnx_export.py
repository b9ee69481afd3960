"""Export the split modules to ONNX graphs that TensorRT 10.3 (JetPack 6.1/6.2) parses.

Opset 18: the lowest the torch dynamo exporter emits, within TensorRT 10.3's parser range, and
above 17 so LayerNormalization stays one fused node (a decomposed LayerNorm's Pow overflows in
FP16). Graphs over 2 GB keep their weights in external data next to the .onnx file.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from rdvla.export.model import RDVLA
from rdvla.export.split import CoreStep, CoreStepDecode, Decode, VLMPrelude
from rdvla.runtime import contract
from rdvla.runtime.graph_check.onnx_reader import TensorIO, graph_io
from rdvla.runtime.manifest import GraphSpec, TensorSpec

log = logging.getLogger(__name__)

OPSET = 18
EXTERNAL_DATA_BYTES = 1_800_000_000  # below protobuf's 2 GB limit, with headroom for the graph itself


@dataclass
class GraphPlan:
    name: str
    module: torch.nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: list[str]
    dynamic: dict[str, dict[int, torch.export.Dim] | None]


def graph_plans(model: RDVLA, prompt_len: tuple[int, int]) -> list[GraphPlan]:
    """The four graphs with example inputs drawn from the reference itself."""
    cfg = model.action_head.cfg
    n_core, n_coda = len(cfg.recurrent_vlm_layers), len(cfg.coda_vlm_layers)
    core_names, coda_names = contract.kv_names("core", n_core), contract.kv_names("coda", n_coda)
    low, high = prompt_len
    g = torch.Generator().manual_seed(0)
    vlm_inputs = {
        contract.PIXEL_VALUES: torch.randn(1, 6 * model.vlm.cfg.num_images, 224, 224, generator=g),
        contract.INPUT_IDS: torch.randint(3, 100, (1, (low + high) // 2), generator=g),
        contract.PROPRIO: torch.rand(1, model.proprio_projector.fc1.in_features, generator=g) * 2 - 1,
    }
    prelude = VLMPrelude(model).eval()
    with torch.no_grad():
        context = dict(zip([contract.INJECTION, *core_names, *coda_names], prelude(*vlm_inputs.values())))
    latent = model.action_head.model.initial_latent(1, g)
    prev = torch.zeros(1, cfg.action_chunk_len, cfg.action_dim)
    core_ctx = {k: context[k] for k in [contract.INJECTION, *core_names]}
    coda_ctx = {k: context[k] for k in coda_names}
    prompt_dim = torch.export.Dim("prompt_len", min=low, max=high)
    return [
        GraphPlan(contract.VLM_PRELUDE, prelude, vlm_inputs, [contract.INJECTION, *core_names, *coda_names],
                  {contract.PIXEL_VALUES: None, contract.INPUT_IDS: {1: prompt_dim}, contract.PROPRIO: None}),
        GraphPlan(contract.CORE_STEP, CoreStep(model).eval(), {contract.LATENT: latent, **core_ctx}, [contract.NEXT_LATENT], {}),
        GraphPlan(contract.CORE_STEP_DECODE, CoreStepDecode(model).eval(),
                  {contract.LATENT: latent, contract.PREV_ACTIONS: prev, **core_ctx, **coda_ctx},
                  [contract.NEXT_LATENT, contract.ACTIONS, contract.MSE, contract.COSINE], {}),
        GraphPlan(contract.DECODE, Decode(model).eval(), {contract.LATENT: latent, **coda_ctx}, [contract.ACTIONS], {}),
    ]


def export_graph(plan: GraphPlan, root: Path, folder: str) -> GraphSpec:
    """Export one graph to `root/folder`, check it, and describe it as the manifest does: its file relative
    to `root`, its I/O as the ONNX file declares them."""
    rel = f"{folder}/{plan.name}.onnx"
    path = root / rel
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            plan.module,
            tuple(plan.inputs.values()),
            input_names=list(plan.inputs),
            output_names=plan.outputs,
            dynamic_shapes={k: plan.dynamic.get(k) for k in plan.inputs} if plan.dynamic else None,
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    assert program is not None
    weight_bytes = sum(p.numel() * p.element_size() for p in plan.module.parameters())
    external = weight_bytes > EXTERNAL_DATA_BYTES
    program.save(str(path), external_data=external)
    onnx.checker.check_model(str(path), full_check=False)  # by path: the checker reads the file (and any external data) itself
    inputs, outputs = graph_io(path)
    if [t.name for t in inputs] != list(plan.inputs) or [t.name for t in outputs] != plan.outputs:
        raise RuntimeError(f"{plan.name}: exported I/O names differ from the plan")
    spec = GraphSpec(plan.name, rel, tuple(_tensor_spec(plan, t) for t in inputs), tuple(_tensor_spec(plan, t) for t in outputs))
    log.info("exported %s in %.1f s (%s)", path.name, time.perf_counter() - start, "external data" if external else "single file")
    return spec


def _tensor_spec(plan: GraphPlan, tensor: TensorIO) -> TensorSpec:
    """`tensor` as the manifest records it, where every dimension is a size or a name; `Bundle.open` compares
    it with the graph's own description again."""
    dims = [d for d in tensor.shape or () if d is not None]
    if tensor.shape is None or len(dims) != len(tensor.shape):
        raise RuntimeError(f"{plan.name}: the exported graph leaves the shape of {tensor.name} unknown ({tensor.shape})")
    return TensorSpec(tensor.name, tensor.dtype, tuple(dims))
