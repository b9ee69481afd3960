"""Shared fixtures: a tiny checkpoint in the released layout, written once per session, and a camera recording."""

from __future__ import annotations

import hashlib
import json
import shutil
import types
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pytest

from rdvla.runtime import contract
from rdvla.runtime.manifest import MANIFEST, SCHEMA, SCHEMA_VERSION, TOKENIZER_FILE, Manifest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rdvla.export.presets import init_checkpoint

    return init_checkpoint("tiny", tmp_path_factory.mktemp("ckpt") / "tiny_100", seed=0)


@pytest.fixture
def tiny_copy(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A private copy a test may damage."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "tiny"))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rdvla.export.bundle_writer import export_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    export_bundle(tiny_checkpoint, out, cases=2)
    return out


# TensorFlow's preprocessing of six images (tests/fixtures/preprocess): what both implementations are held to.
TF_CASES = sorted((Path(__file__).parent / "fixtures" / "preprocess").glob("*.npz"))


@pytest.fixture(scope="session")
def tf_cases() -> dict[str, dict[str, np.ndarray]]:
    """Each fixture by name (libero_256x256, ...): the image, TF's JPEG window, resize and crop, its version."""
    cases = {}
    for path in TF_CASES:
        with np.load(path) as data:
            cases[path.stem] = {key: data[key] for key in data.files}
    return cases


@pytest.fixture(params=[path.stem for path in TF_CASES])
def tf_case(request: pytest.FixtureRequest, tf_cases: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return tf_cases[request.param]


# A camera recording, shared by the camera tests (tests/devices/cameras) and `rdvla cameras` (tests/cli).
EPISODE_FRAMES = 30


@pytest.fixture(scope="session")
def episode_frames() -> int:
    return EPISODE_FRAMES


@pytest.fixture(scope="session")
def episode(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 colour+depth framesets whose pixels encode their frame number, recorded through RealSenseCamera."""
    from rdvla.devices.cameras.realsense.sdk import recording_extension, sdk_version
    from rdvla.devices.cameras.realsense.synthetic import pattern_frame, synthetic_timestamp_ms, write_synthetic_recording

    path = tmp_path_factory.mktemp("recordings") / f"episode{recording_extension(sdk_version())}"
    frames = ((*pattern_frame(64, 48, n), synthetic_timestamp_ms(n)) for n in range(EPISODE_FRAMES))
    assert write_synthetic_recording(path, frames) == EPISODE_FRAMES
    return path


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the bundle a test may damage."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


# ----- synthetic bundles: tiny real ONNX graphs of any I/O, a manifest written the one way ------------------


def write_onnx_graph(path: Path, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
    """An ONNX graph with exactly these inputs and outputs (each output a Constant): what the bundle
    checks read, never run."""
    import onnx
    from onnx import helper, numpy_helper

    def info(t: dict[str, Any]) -> Any:
        return helper.make_tensor_value_info(t["name"], helper.np_dtype_to_tensor_dtype(np.dtype(t["dtype"])), list(t["shape"]))

    nodes = [helper.make_node("Constant", [], [t["name"]], name=f"make_{t['name']}", value=numpy_helper.from_array(
        np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in t["shape"]], np.dtype(t["dtype"])))) for t in outputs]
    graph = helper.make_graph(nodes, path.stem, [info(t) for t in inputs], [info(t) for t in outputs])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def list_files(root: Path, data: dict[str, Any], rels: list[str]) -> None:
    """Add the SHA-256 of each bundle-relative file to the manifest dict's `files`."""
    data.setdefault("files", {}).update({rel: sha((root / rel).read_bytes()) for rel in rels})


def synthetic_manifest(graphs: dict[str, Any], model: dict[str, Any], prompt: tuple[int, int]) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": "2026-01-01T00:00:00Z",
        "tools": {"rdvla": "test"}, "source": {}, "model": model,
        "prompt": {"template": "{task}", "lowercase_task": True, "min_len": prompt[0], "max_len": prompt[1]},
        "preprocess": {},
        "normalization": {"key": "test", "action": {"q01": [-1.0] * 7, "q99": [1.0] * 7},
                          "proprio": {"q01": [-1.0] * 8, "q99": [1.0] * 8}},
        "halting": {"rule": "mse", "threshold": 1e-3, "min_iterations": 2, "max_iterations": 32, "fixed_iterations": 12},
        "horizon": {"rule": "fixed", "actions": 5}, "graphs": graphs, "golden": [], "engines": {}, "files": {},
    }


def write_synthetic_bundle(root: Path, graphs: dict[str, Any], model: dict[str, Any], prompt: tuple[int, int],
                           **sections: Any) -> Path:
    """A bundle that opens: a graph file with the I/O of each spec, a placeholder tokenizer, and a manifest
    (plus `sections`, e.g. graphs_int8) saved with its digest."""
    root.mkdir(parents=True, exist_ok=True)
    for spec in graphs.values():
        write_onnx_graph(root / spec["file"], spec["inputs"], spec["outputs"])
    (root / TOKENIZER_FILE).write_text("{}\n")
    data = {**synthetic_manifest(graphs, model, prompt), **sections}
    list_files(root, data, [TOKENIZER_FILE, *(spec["file"] for spec in graphs.values())])
    Manifest.from_json(data).save(root)
    return root


def edit_manifest(root: Path, change: Callable[[dict[str, Any]], None], new_files: Sequence[str] = ()) -> dict[str, Any]:
    """Change a bundle's manifest as a command that owns it would (files listed, digest rewritten)."""
    data = json.loads((root / MANIFEST).read_text())
    change(data)
    list_files(root, data, list(new_files))
    Manifest.from_json(data).save(root)
    return data


# ----- the bundle contract's graph I/O at a tiny size: what a backend or the doctor opens, never runs -----

HIDDEN, HEADS, CONTEXT = 32, 4, 577


def _t(name: str, dtype: str, shape: list[Any]) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": shape}


def contract_graphs(hidden: int = HIDDEN, heads: int = HEADS, n_core: int = 1, n_coda: int = 1) -> dict[str, Any]:
    kv = [1, heads, CONTEXT, hidden // heads]
    latent = [1, 8, hidden]
    core = [_t(n, "float32", kv) for n in contract.kv_names("core", n_core)]
    coda = [_t(n, "float32", kv) for n in contract.kv_names("coda", n_coda)]
    injection = _t(contract.INJECTION, "float32", latent)
    specs = {
        contract.VLM_PRELUDE: {
            "file": "vlm_prelude.onnx",
            "inputs": [
                _t(contract.PIXEL_VALUES, "float32", [1, 12, 224, 224]),
                _t(contract.INPUT_IDS, "int64", [1, "prompt_len"]),
                _t(contract.PROPRIO, "float32", [1, 8]),
            ],
            "outputs": [injection, *core, *coda],
        },
        contract.CORE_STEP: {
            "file": "core_step.onnx",
            "inputs": [_t(contract.LATENT, "float32", latent), injection, *core],
            "outputs": [_t(contract.NEXT_LATENT, "float32", latent)],
        },
        contract.CORE_STEP_DECODE: {
            "file": "core_step_decode.onnx",
            "inputs": [_t(contract.LATENT, "float32", latent), _t(contract.PREV_ACTIONS, "float32", [1, 8, 7]), injection, *core, *coda],
            "outputs": [
                _t(contract.NEXT_LATENT, "float32", latent),
                _t(contract.ACTIONS, "float32", [1, 8, 7]),
                _t(contract.MSE, "float32", [1]),
                _t(contract.COSINE, "float32", [1]),
            ],
        },
        contract.DECODE: {
            "file": "decode.onnx",
            "inputs": [_t(contract.LATENT, "float32", latent), *coda],
            "outputs": [_t(contract.ACTIONS, "float32", [1, 8, 7])],
        },
    }
    return json.loads(json.dumps(specs))  # no tensor dict shared between graphs: tests edit one graph at a time


CONTRACT_MODEL = {"hidden_dim": HIDDEN, "num_heads": HEADS, "chunk_len": 8, "action_dim": 7, "proprio_dim": 8, "num_images": 2,
         "context_tokens": CONTEXT, "prelude_vlm_layers": [11], "recurrent_vlm_layers": [23], "coda_vlm_layers": [23],
         "init_sigma": 0.02}


@pytest.fixture
def bundles() -> types.SimpleNamespace:
    """The synthetic-bundle helpers (conftest modules are not importable under --import-mode=importlib)."""
    return types.SimpleNamespace(write=write_synthetic_bundle, edit_manifest=edit_manifest, write_onnx_graph=write_onnx_graph,
                                 sha=sha, contract_graphs=contract_graphs, contract_model=CONTRACT_MODEL, HIDDEN=HIDDEN,
                                 HEADS=HEADS, CONTEXT=CONTEXT)
