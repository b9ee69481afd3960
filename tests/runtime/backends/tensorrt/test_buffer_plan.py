"""The backends' bookkeeping without a GPU: buffer plan, the shared ping-pong schedule, the capture decision."""

from __future__ import annotations

import copy
import random
import types
from pathlib import Path
from typing import Any

import pytest

from rdvla.runtime import contract
from rdvla.runtime.backends.capture import DISABLED
from rdvla.runtime.backends.pingpong import DIRECTIONS, PingPong, slots
from rdvla.runtime.backends.tensorrt.backend import capture_skip_reason
from rdvla.runtime.backends.tensorrt.buffers import SCALAR_STRIDE, dynamic_dims, plan_buffers
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import BundleError, TensorSpec


def test_plan_sizes_every_buffer_from_the_manifest(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    plan = plan_buffers(Bundle.open(bundle_dir))
    d, h, ctx = kit.HIDDEN, kit.HEADS, kit.CONTEXT
    host = {b.name: (b.dtype, b.shape, b.nbytes) for b in plan.host_inputs}
    assert host == {
        contract.PIXEL_VALUES: ("float32", (1, 12, 224, 224), 12 * 224 * 224 * 4),
        contract.INPUT_IDS: ("int64", (1, kit.PROMPT[1]), kit.PROMPT[1] * 8),  # sized for the longest prompt
        contract.PROPRIO: ("float32", (1, 8), 32),
    }
    kv = h * ctx * (d // h) * 4
    assert {b.name: b.nbytes for b in plan.context} == {
        contract.INJECTION: 8 * d * 4,
        "core0_keys": kv,
        "core0_values": kv,
        "coda0_keys": kv,
        "coda0_values": kv,
    }
    assert (plan.latent.shape, plan.latent.nbytes) == ((1, 8, d), 8 * d * 4)
    assert (plan.actions.shape, plan.actions.nbytes) == ((1, 8, 7), 8 * 7 * 4)
    assert [b.name for b in plan.scalars] == [contract.MSE, contract.COSINE]
    assert plan.device_bytes == sum(b[2] for b in host.values()) + 8 * d * 4 + 4 * kv + 2 * (8 * d * 4 + 224) + 2 * SCALAR_STRIDE
    assert plan.dynamic == {"prompt_len": kit.PROMPT}


def bundle_with(tmp_path: Path, kit: types.SimpleNamespace, edit: Any) -> Bundle:
    graphs = kit.graph_specs()
    edit(graphs)
    return Bundle.open(kit.write_bundle(tmp_path / "edited", graphs), verify_hashes=False)


def _tensor(graphs: dict[str, Any], graph: str, side: str, name: str) -> dict[str, Any]:
    return next(t for t in graphs[graph][side] if t["name"] == name)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda g: _tensor(g, "core_step", "outputs", "next_latent").update(name="new_latent"),
         r"graph core_step.onnx \(core_step\) has no next_latent: it is not the core_step graph of an rdvla bundle"),
        (lambda g: _tensor(g, "decode", "inputs", "coda0_keys").update(shape=[1, 4, 600, 8]),
         r"ask for coda0_keys \[1, 4, 577, 8\], graph decode.onnx has \[1, 4, 600, 8\]"),
        (lambda g: _tensor(g, "core_step_decode", "inputs", "prev_actions").update(shape=[1, 8, 6]),
         r"model.chunk_len, model.action_dim ask for prev_actions \[1, 8, 7\], graph core_step_decode.onnx has \[1, 8, 6\]"),
        (lambda g: _tensor(g, "vlm_prelude", "inputs", "pixel_values").update(shape=["batch", 12, 224, 224]),
         r"ask for pixel_values \[1, 12, 224, 224\], graph vlm_prelude.onnx has \['batch', 12, 224, 224\]"),
    ],
)
def test_contract_violations_refused_when_the_bundle_opens(tmp_path: Path, kit: types.SimpleNamespace, edit: Any, message: str) -> None:
    """Tensors the contract names, at the manifest's model dimensions: checked by `Bundle.open`, hashes verified or not."""
    with pytest.raises(BundleError, match=message):
        bundle_with(tmp_path, kit, edit)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda g: g["core_step"]["outputs"].append({"name": "extra", "dtype": "float32", "shape": [1]}),
         "outputs .'extra', 'next_latent'., expected .'next_latent'."),
        (lambda g: _tensor(g, "core_step", "inputs", "latent").update(dtype="float16"), "latent is float32 .1, 8, 32. here but float16"),
        (lambda g: _tensor(g, "core_step_decode", "outputs", "mse").update(dtype="float16"), "mse is float16; latent, actions and halting"),
        (lambda g: [_tensor(g, graph, "outputs", "next_latent").update(dtype="float16") for graph in ("core_step", "core_step_decode")],
         "next_latent is float16; latent, actions and halting"),
        (lambda g: g["core_step_decode"]["inputs"].append({"name": "noise", "dtype": "float32", "shape": [1]}), "inputs noise are neither"),
        (lambda g: _tensor(g, "core_step_decode", "outputs", "mse").update(shape=[1, 8]), "mse has shape .1, 8.; a halting scalar"),
        (lambda g: _tensor(g, "vlm_prelude", "inputs", "input_ids").update(shape=["batch", "prompt_len"]), "dynamic dimension 'batch'"),
    ],
)
def test_contract_violations_refused(tmp_path: Path, kit: types.SimpleNamespace, edit: Any, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        plan_buffers(bundle_with(tmp_path, kit, edit))


def test_prompt_axis_found_by_position(tmp_path: Path, kit: types.SimpleNamespace) -> None:
    bundle = bundle_with(tmp_path, kit, lambda g: _tensor(g, "vlm_prelude", "inputs", "input_ids").update(shape=[1, "s0"]))
    assert dynamic_dims(bundle.graphs, bundle.prompt_len) == {"prompt_len": kit.PROMPT, "s0": kit.PROMPT}
    assert plan_buffers(bundle).host_inputs[1].shape == (1, kit.PROMPT[1])


def test_slots_never_read_and_write_one_buffer() -> None:
    for graph, directions in DIRECTIONS.items():
        for d in directions:
            bound = slots(graph, d)
            reads = {bound[n] for n in (contract.LATENT, contract.PREV_ACTIONS) if n in bound}
            writes = {bound[n] for n in (contract.NEXT_LATENT, contract.ACTIONS) if n in bound}
            assert not reads & writes, (graph, d)
    assert slots(contract.CORE_STEP, (1,)) == {contract.LATENT: ("latent", 1), contract.NEXT_LATENT: ("latent", 0)}
    with pytest.raises(ValueError):
        slots(contract.VLM_PRELUDE, (0,))


class Device:
    """Buffers that remember which logical value they hold, driven through `slots` like the backend."""

    def __init__(self) -> None:
        self.buffers = {("latent", 0): "S0", ("latent", 1): None, ("actions", 0): "zeros", ("actions", 1): None}

    def run(self, graph: str, direction: tuple[int, ...], produced: dict[str, str]) -> dict[str, Any]:
        bound = slots(graph, direction)
        read = {n: self.buffers[bound[n]] for n in (contract.LATENT, contract.PREV_ACTIONS) if n in bound}
        for name, value in produced.items():
            self.buffers[bound[name]] = value
        return read


def test_schedule_feeds_each_call_the_latest_values() -> None:
    """Random mixes of step / step_decode / decode: every call reads the newest state and the last decode."""
    rng = random.Random(0)
    for trial in range(200):
        schedule, device = PingPong(), Device()
        state, last_decode = "S0", "zeros"
        for k in range(rng.randint(1, 12)):
            op = rng.choice(("step", "step_decode", "decode"))
            if op == "step":
                read = device.run(contract.CORE_STEP, schedule.step(), {contract.NEXT_LATENT: f"S{k + 1}"})
                assert read == {contract.LATENT: state}
                state = f"S{k + 1}"
            elif op == "step_decode":
                produced = {contract.NEXT_LATENT: f"S{k + 1}", contract.ACTIONS: f"A{k + 1}"}
                read = device.run(contract.CORE_STEP_DECODE, schedule.step_decode(), produced)
                assert read == {contract.LATENT: state, contract.PREV_ACTIONS: last_decode}, (trial, k)
                state, last_decode = f"S{k + 1}", f"A{k + 1}"
            else:
                read = device.run(contract.DECODE, schedule.decode(), {contract.ACTIONS: f"D({state})"})
                assert read == {contract.LATENT: state}
                last_decode = f"D({state})"
            # actions() and state() read these buffers
            assert device.buffers[("latent", schedule.latent)] == state
            assert device.buffers[("actions", schedule.actions)] == last_decode


def test_reset_returns_to_the_first_buffers() -> None:
    schedule = PingPong()
    schedule.step_decode()
    schedule.step()
    schedule.decode()
    assert (schedule.latent, schedule.actions) == (0, 0)
    schedule.step()
    assert (schedule.latent, schedule.actions) == (1, 0)
    schedule.reset()
    assert (schedule.latent, schedule.actions) == (0, 0)
    assert copy.copy(schedule).step_decode() == (0, 0)


def static(name: str, shape: tuple[int, ...]) -> TensorSpec:
    return TensorSpec(name, "float32", shape, "input")


def test_capture_skip_reason() -> None:
    io = [static("latent", (1, 8, 32)), static("injection", (1, 8, 32))]
    assert capture_skip_reason(True, io) is None
    assert capture_skip_reason(False, io) == DISABLED
    reason = capture_skip_reason(True, [*io, static("input_ids", (1, -1))])
    assert reason is not None and "dynamic shapes (input_ids)" in reason


def test_dynamic_is_one_check_for_names_and_minus_one() -> None:
    assert TensorSpec("ids", "int64", (1, "prompt_len")).is_dynamic
    assert TensorSpec("ids", "int64", (1, -1), "input").is_dynamic
    assert not TensorSpec("latent", "float32", (1, 8, 32)).is_dynamic
    with pytest.raises(ValueError, match="ids has a dynamic shape"):
        TensorSpec("ids", "int64", (1, -1)).nbytes
    assert TensorSpec("ids", "int64", (1, "prompt_len")).resolve({"prompt_len": 9}).nbytes == 72


def test_tensor_spec_json_round_trip() -> None:
    engine = TensorSpec("input_ids", "int64", (1, -1), "input")
    assert engine.to_json() == {"name": "input_ids", "dtype": "int64", "shape": [1, -1], "mode": "input"}
    assert TensorSpec.from_json(engine.to_json()) == engine
    graph = TensorSpec("input_ids", "int64", (1, "prompt_len"))
    assert "mode" not in graph.to_json() and TensorSpec.from_json(graph.to_json()) == graph
