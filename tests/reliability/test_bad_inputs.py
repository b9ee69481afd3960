"""Issue 14's battery: every command against missing, empty, truncated, garbage, mistyped, non-finite, huge and
conflicting inputs, and against outputs that exist or cannot be written. The rules each case is held to are in
`battery.py`; `BATTERY` below is the table (python -m pytest tests/reliability -q counts it).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from .battery import (PROPRIO, Case, World, cases, check, edit_raw, nan_initializers, run_main, save_raw_manifest, shared_roots,
                      snapshot)

# A hang guard for each test's own work (func_only): the session's tiny bundle, built by whichever test needs
# it first, takes minutes on a shared 2-core machine and is no test's hang.
pytestmark = pytest.mark.timeout(600, func_only=True)  # real verify/run/export cases run minutes on a loaded machine


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from rdvla.devices.cameras.realsense.sdk import recording_extension, sdk_version
    from rdvla.devices.cameras.realsense.synthetic import record_scene

    folder = tmp_path_factory.mktemp("recordings")
    files = tuple(folder / f"{role}{recording_extension(sdk_version())}" for role in ("third_person", "wrist"))
    for path in files:
        assert record_scene(path, path.stem, 12) == 12
    return files  # type: ignore[return-value]


@pytest.fixture
def world(tmp_path: Path, tiny_checkpoint: Path, tiny_bundle: Path, recordings: tuple[Path, Path],
          monkeypatch: pytest.MonkeyPatch) -> World:
    work = tmp_path / "case"
    work.mkdir()
    monkeypatch.chdir(work)  # default outputs (./profile, runs/) land where the battery watches
    return World(work, tiny_checkpoint, tiny_bundle, recordings)


# ----- building blocks ----------------------------------------------------------------------------------------

ArgvMaker = Callable[[World], list[Any]]


def images(w: World) -> list[Any]:
    return ["--image", w.image("third.png"), "--image", w.image("wrist.png")]


def predict_bundle(*extra: Any, source: Callable[[World], Path] | None = None, with_images: bool = True) -> ArgvMaker:
    def make(w: World) -> list[Any]:
        root = source(w) if source is not None else w.bundle
        shown = images(w) if with_images else []
        return ["predict", root, *shown, "--instruction", "open the drawer", "--proprio", PROPRIO, *extra]
    return make


def predict_checkpoint(*extra: Any, source: Callable[[World], Path] | None = None) -> ArgvMaker:
    def make(w: World) -> list[Any]:
        root = source(w) if source is not None else w.checkpoint
        return ["predict", root, *images(w), "--instruction", "open the drawer", "--proprio", PROPRIO, *extra]
    return make


def run_desk(*extra: Any, bundle: Callable[[World], Path] | None = None) -> ArgvMaker:
    """`rdvla run` on a desk: the shared recordings, the simulated arm, two steps (`extra` may hold makers)."""
    def make(w: World) -> list[Any]:
        root = bundle(w) if bundle is not None else w.bundle
        return ["run", root, "--recording", w.recordings[0], "--recording", w.recordings[1], "--robot", "sim",
                "--instruction", "open the drawer", "--steps", "2", "--no-status", *[e(w) if callable(e) else e for e in extra]]
    return make


def with_image(maker: Callable[[World], Path], other: Callable[[World], Path] | None = None) -> ArgvMaker:
    """predict on the bundle with a chosen first (and optionally second) camera image."""
    def make(w: World) -> list[Any]:
        second = other(w) if other is not None else w.image("wrist.png")
        return ["predict", w.bundle, "--image", maker(w), "--image", second, "--instruction", "open the drawer",
                "--proprio", PROPRIO]
    return make


def damaged_checkpoint(damage: Callable[[Path], Any]) -> Callable[[World], Path]:
    def make(w: World) -> Path:
        root = w.checkpoint_copy()
        damage(root)
        return root
    return make


def damaged_bundle(damage: Callable[[Path], Any]) -> Callable[[World], Path]:
    def make(w: World) -> Path:
        root = w.bundle_copy()
        damage(root)
        return root
    return make


def write_to(rel: str, data: bytes | str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        (root / rel).write_bytes(data.encode() if isinstance(data, str) else data)
    return damage


def one(root: Path, pattern: str) -> Path:
    (found,) = root.glob(pattern)
    return found


def pt_file(pattern: str, content: Callable[[Path], Any]) -> Callable[[Path], None]:
    """Replace the checkpoint's `pattern` file with what `content(path)` writes."""
    def damage(root: Path) -> None:
        content(one(root, pattern))
    return damage


def torch_save(obj_factory: Callable[[], Any]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import torch

        torch.save(obj_factory(), path)
    return write


def head_state_edited(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import torch

        state = torch.load(path, weights_only=True)
        edit(state)
        torch.save(state, path)
    return write


def nan_weights(root: Path) -> None:
    """Every weight NaN (the issue's checkpoint that exported to a bundle passing every gate)."""
    import torch
    from safetensors.torch import load_file, save_file

    path = root / "model.safetensors"
    save_file({k: torch.full_like(v, math.nan) for k, v in load_file(path).items()}, str(path), metadata={"format": "pt"})
    for pattern in ("action_head--*_checkpoint.pt", "proprio_projector--*_checkpoint.pt"):
        head = one(root, pattern)
        torch.save({k: torch.full_like(v, math.nan) for k, v in torch.load(head, weights_only=True).items()}, head)


def overflowing_weights(root: Path) -> None:
    """Finite weights whose activations overflow to inf: only running the model shows it."""
    import torch

    head = one(root, "action_head--*_checkpoint.pt")
    state = torch.load(head, weights_only=True)
    for key, value in state.items():
        if value.is_floating_point() and value.ndim == 2:
            state[key] = torch.full_like(value, 3e38)
    torch.save(state, head)


def statistics_edit(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / "dataset_statistics.json"
        data = json.loads(path.read_text())
        replaced = edit(data)
        path.write_text(json.dumps(replaced if replaced is not None else data))
    return damage


def first_key(stats: dict[str, Any]) -> dict[str, Any]:
    return stats[next(iter(stats))]


def set_in(path: str | tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    """Set a dotted path (or a tuple of keys) of a JSON document (list indices as numbers)."""
    keys = list(path) if isinstance(path, tuple) else [int(k) if k.isdigit() else k for k in path.split(".")]

    def change(data: dict[str, Any]) -> None:
        node: Any = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return change


def drop(path: str | tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    keys = list(path) if isinstance(path, tuple) else path.split(".")

    def change(data: dict[str, Any]) -> None:
        node: Any = data
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]
    return change


def raw_bundle(change: Callable[[dict[str, Any]], Any], rehash: tuple[str, ...] = (),
               before: Callable[[Path], None] | None = None) -> Callable[[World], Path]:
    """A bundle copy whose manifest a user edited and re-digested (valid digest, wrong content)."""
    def make(w: World) -> Path:
        root = w.bundle_copy()
        if before is not None:
            before(root)
        return edit_raw(root, change, rehash)
    return make


def verify(source: Callable[[World], Path], *extra: Any) -> ArgvMaker:
    return lambda w: ["verify", source(w), *extra]


def npz_edit(rel: str, edit: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        with np.load(root / rel) as z:
            data = {k: z[k] for k in z.files}
        np.savez_compressed(root / rel, **edit(data))
    return damage


def truncate(rel: str, keep: float = 0.5) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        data = (root / rel).read_bytes()
        (root / rel).write_bytes(data[: int(len(data) * keep)])
    return damage


def scaled_statistics(data: dict[str, Any]) -> None:
    norm = data["normalization"]["action"]
    norm["q01"] = [10 * v for v in norm["q01"]]
    norm["q99"] = [10 * v for v in norm["q99"]]


BUNDLE = "bundle"  # the private copy's folder under the case's tmp


# ----- init-checkpoint ----------------------------------------------------------------------------------------

INIT_CHECKPOINT = [
    Case("init/preset-unknown", lambda w: ["init-checkpoint", "--preset", "huge", "--out", w.path("c")], says=("--preset", "tiny")),
    Case("init/no-out", lambda w: ["init-checkpoint", "--preset", "tiny"], says=("--out",)),
    Case("init/out-not-empty", lambda w: ["init-checkpoint", "--preset", "tiny", "--out", w.write("c/mine.txt", "x").parent],
         says=("--out", "not empty", "new or empty")),
    Case("init/out-is-a-file", lambda w: ["init-checkpoint", "--preset", "tiny", "--out", w.write("c", "mine")],
         says=("--out", "is a file")),
    Case("init/out-parent-is-a-file", lambda w: ["init-checkpoint", "--preset", "tiny", "--out", w.write("f", "x") / "c"],
         says=("--out", "not a directory")),
    Case("init/seed-not-a-number", lambda w: ["init-checkpoint", "--preset", "tiny", "--out", w.path("c"), "--seed", "x"],
         says=("--seed",)),
    Case("init/seed-negative", lambda w: ["init-checkpoint", "--preset", "tiny", "--out", w.path("c"), "--seed", "-1"],
         says=("--seed",)),
    Case("init/seed-huge", lambda w: ["init-checkpoint", "--preset", "tiny", "--out", w.path("c"), "--seed", str(2**70)],
         says=("--seed",)),
]

# ----- predict: the checkpoint side ---------------------------------------------------------------------------

CHECKPOINT_FILES = [
    Case("ckpt/missing", predict_checkpoint(source=lambda w: w.path("nowhere")), says=("nowhere", "not found")),
    Case("ckpt/is-a-file", predict_checkpoint(source=lambda w: w.write("ckpt.bin", "x")), says=("ckpt.bin", "directory")),
    Case("ckpt/empty-folder", predict_checkpoint(source=lambda w: w.folder("empty")), says=("model.safetensors",)),
    Case("ckpt/no-config", predict_checkpoint(source=damaged_checkpoint(lambda r: (r / "config.json").unlink())),
         says=("config.json",)),
    Case("ckpt/config-not-json", predict_checkpoint(source=damaged_checkpoint(write_to("config.json", "{oops"))),
         says=("config.json", "JSON")),
    Case("ckpt/config-empty", predict_checkpoint(source=damaged_checkpoint(write_to("config.json", ""))),
         says=("config.json", "JSON")),
    Case("ckpt/config-a-list", predict_checkpoint(source=damaged_checkpoint(write_to("config.json", "[1, 2]"))),
         says=("config.json", "object")),
    Case("ckpt/config-not-utf8", predict_checkpoint(source=damaged_checkpoint(write_to("config.json", b"{\"a\": \"\xff\xfe\"}"))),
         says=("config.json", "UTF-8")),
    Case("ckpt/config-text-config-a-string", predict_checkpoint(source=damaged_checkpoint(
        lambda r: (r / "config.json").write_text(json.dumps({**json.loads((r / "config.json").read_text()), "text_config": "qwen"})))),
        says=("config.json", "text_config")),
    Case("ckpt/config-hidden-size-negative", predict_checkpoint(source=damaged_checkpoint(
        lambda r: (r / "config.json").write_text(json.dumps(_with(json.loads((r / "config.json").read_text()),
                                                                   "text_config.hidden_size", -64))))),
        says=("config.json", "hidden_size")),
    Case("ckpt/config-hidden-size-changed", predict_checkpoint(source=damaged_checkpoint(
        lambda r: (r / "config.json").write_text(json.dumps(_with(json.loads((r / "config.json").read_text()),
                                                                   "text_config.hidden_size", 128))))),
        says=("hidden_size", "different models")),
    Case("ckpt/index-without-weight-map", predict_checkpoint(source=damaged_checkpoint(
        lambda r: ((r / "model.safetensors").rename(r / "model-00001-of-00001.safetensors"),
                   (r / "model.safetensors.index.json").write_text('{"metadata": {}}')))),
        says=("model.safetensors.index.json", "weight_map")),
    Case("ckpt/index-weight-map-a-list", predict_checkpoint(source=damaged_checkpoint(
        lambda r: ((r / "model.safetensors").unlink(), (r / "model.safetensors.index.json").write_text('{"weight_map": [1]}')))),
        says=("model.safetensors.index.json", "weight_map")),
    Case("ckpt/index-not-json", predict_checkpoint(source=damaged_checkpoint(
        lambda r: ((r / "model.safetensors").unlink(), (r / "model.safetensors.index.json").write_text("{")))),
        says=("model.safetensors.index.json", "JSON")),
    Case("ckpt/index-names-missing-shard", predict_checkpoint(source=damaged_checkpoint(
        lambda r: ((r / "model.safetensors").unlink(),
                   (r / "model.safetensors.index.json").write_text('{"weight_map": {"a": "shard-1.safetensors"}}')))),
        says=("shard-1.safetensors",)),
    Case("ckpt/index-shard-outside", predict_checkpoint(source=damaged_checkpoint(
        lambda r: ((r / "model.safetensors").unlink(),
                   (r / "model.safetensors.index.json").write_text('{"weight_map": {"a": "../../etc/passwd"}}')))),
        says=("model.safetensors.index.json", "../../etc/passwd")),
    Case("ckpt/safetensors-truncated", predict_checkpoint(source=damaged_checkpoint(truncate("model.safetensors"))),
         says=("model.safetensors", "safetensors")),
    Case("ckpt/safetensors-empty", predict_checkpoint(source=damaged_checkpoint(write_to("model.safetensors", b""))),
         says=("model.safetensors",)),
    Case("ckpt/safetensors-garbage", predict_checkpoint(source=damaged_checkpoint(write_to("model.safetensors", b"\x00garbage" * 50))),
         says=("model.safetensors",)),
    Case("ckpt/weights-nan", predict_checkpoint(source=damaged_checkpoint(nan_weights)),
         says=("model.safetensors", "NaN")),
    Case("ckpt/weights-overflow", predict_checkpoint(source=damaged_checkpoint(overflowing_weights)),
         says=("non-finite",)),
    Case("ckpt/head-pt-empty", predict_checkpoint(source=damaged_checkpoint(pt_file("action_head--*_checkpoint.pt", lambda p: p.write_bytes(b"")))),
         says=("action_head--100_checkpoint.pt", "empty")),
    Case("ckpt/head-pt-truncated", predict_checkpoint(source=damaged_checkpoint(
        pt_file("action_head--*_checkpoint.pt", lambda p: p.write_bytes(p.read_bytes()[:5000])))),
        says=("action_head--100_checkpoint.pt",)),
    Case("ckpt/head-pt-text", predict_checkpoint(source=damaged_checkpoint(
        pt_file("action_head--*_checkpoint.pt", lambda p: p.write_text("not a torch file")))),
        says=("action_head--100_checkpoint.pt",)),
    Case("ckpt/head-pt-arbitrary-object", predict_checkpoint(source=damaged_checkpoint(
        pt_file("action_head--*_checkpoint.pt", torch_save(lambda: {"w": __import__("collections").OrderedDict(a=Path("x"))})))),
        says=("action_head--100_checkpoint.pt",)),
    Case("ckpt/head-pt-a-list", predict_checkpoint(source=damaged_checkpoint(
        pt_file("action_head--*_checkpoint.pt", torch_save(lambda: [1, 2])))),
        says=("action_head--100_checkpoint.pt", "state dict")),
    Case("ckpt/head-pt-values-not-tensors", predict_checkpoint(source=damaged_checkpoint(
        pt_file("action_head--*_checkpoint.pt", head_state_edited(lambda s: s.update({k: 1 for k in s}))))),
        says=("action_head--100_checkpoint.pt", "tensor")),
    Case("ckpt/head-pt-wrong-shape", predict_checkpoint(source=damaged_checkpoint(
        pt_file("action_head--*_checkpoint.pt", head_state_edited(
            lambda s: s.update({k: v[..., :1] for k, v in s.items() if v.ndim == 2}))))),
        says=("action_head--100_checkpoint.pt", "shape")),
    Case("ckpt/head-pt-missing-keys", predict_checkpoint(source=damaged_checkpoint(
        pt_file("action_head--*_checkpoint.pt", head_state_edited(lambda s: s.pop(next(iter(s))))))),
        says=("action_head--100_checkpoint.pt", "missing keys")),
    Case("ckpt/two-head-files", predict_checkpoint(source=damaged_checkpoint(
        lambda r: shutil.copy(one(r, "action_head--*_checkpoint.pt"), r / "action_head--200_checkpoint.pt"))),
        says=("action_head--*_checkpoint.pt", "2 files")),
    Case("ckpt/head-config-a-list", predict_checkpoint(source=damaged_checkpoint(
        pt_file("action_head_config--*_checkpoint.json", lambda p: p.write_text("[]")))),
        says=("action_head_config--100_checkpoint.json",)),
    Case("ckpt/head-config-negative-dim", predict_checkpoint(source=damaged_checkpoint(
        pt_file("action_head_config--*_checkpoint.json",
                lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "hidden_dim": -8}))))),
        says=("action_head_config--100_checkpoint.json", "hidden_dim")),
    Case("ckpt/proprio-pt-garbage", predict_checkpoint(source=damaged_checkpoint(
        pt_file("proprio_projector--*_checkpoint.pt", lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 64)))),
        says=("proprio_projector--100_checkpoint.pt",)),
    Case("ckpt/statistics-missing", predict_checkpoint(source=damaged_checkpoint(lambda r: (r / "dataset_statistics.json").unlink())),
         says=("dataset_statistics.json",)),
    Case("ckpt/statistics-a-list", predict_checkpoint(source=damaged_checkpoint(write_to("dataset_statistics.json", "[]"))),
         says=("dataset_statistics.json", "object")),
    Case("ckpt/statistics-entry-a-string", predict_checkpoint(source=damaged_checkpoint(
        statistics_edit(lambda s: {k: "x" for k in s}))), says=("dataset_statistics.json",)),
    Case("ckpt/statistics-q01-strings", predict_checkpoint(source=damaged_checkpoint(
        statistics_edit(lambda s: first_key(s)["action"].update(q01=["a"] * 7)))), says=("dataset_statistics.json", "q01")),
    Case("ckpt/statistics-q01-nan", predict_checkpoint(source=damaged_checkpoint(
        statistics_edit(lambda s: first_key(s)["action"].update(q01=[math.nan] * 7)))), says=("dataset_statistics.json", "NaN")),
    Case("ckpt/statistics-proprio-inf", predict_checkpoint(source=damaged_checkpoint(
        statistics_edit(lambda s: first_key(s)["proprio"].update(q99=[math.inf] * 8)))), says=("dataset_statistics.json", "inf")),
    Case("ckpt/statistics-inverted", predict_checkpoint(source=damaged_checkpoint(
        statistics_edit(lambda s: first_key(s)["action"].update(q01=first_key(s)["action"]["q99"],
                                                                 q99=first_key(s)["action"]["q01"])))),
        says=("dataset_statistics.json", "below")),
    Case("ckpt/statistics-wrong-length", predict_checkpoint(source=damaged_checkpoint(
        statistics_edit(lambda s: first_key(s)["action"].update(q01=[0.0] * 3, q99=[1.0] * 3, mask=[True] * 3)))),
        says=("dataset_statistics.json", "7")),
    Case("ckpt/statistics-two-keys", predict_checkpoint(source=damaged_checkpoint(
        statistics_edit(lambda s: {**s, "other": first_key(s)}))), says=("--unnorm-key", "other")),
    Case("ckpt/unnorm-key-unknown", predict_checkpoint("--unnorm-key", "bogus"), says=("bogus", "available")),
    Case("ckpt/tokenizer-missing", predict_checkpoint(source=damaged_checkpoint(lambda r: (r / "tokenizer.json").unlink())),
         says=("tokenizer.json",)),
    Case("ckpt/tokenizer-empty-object", predict_checkpoint(source=damaged_checkpoint(write_to("tokenizer.json", "{}"))),
         says=("tokenizer.json",)),
    Case("ckpt/tokenizer-not-utf8", predict_checkpoint(source=damaged_checkpoint(write_to("tokenizer.json", b"\xff\xfe\x00"))),
         says=("tokenizer.json",)),
    Case("ckpt/dtype-on-bundle", predict_bundle("--dtype", "bfloat16"), says=("--dtype", "--precision")),
    Case("ckpt/backend-on-checkpoint", predict_checkpoint("--backend", "onnxruntime"), says=("--backend", "bundles")),
    Case("ckpt/nan-weights-export", lambda w: ["export", damaged_checkpoint(nan_weights)(w), "--out", w.path("nan-bundle")],
         says=("model.safetensors", "NaN")),
    Case("ckpt/overflow-export", lambda w: ["export", damaged_checkpoint(overflowing_weights)(w), "--out", w.path("inf-bundle")],
         says=("golden case", "not finite")),
]


def _with(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    set_in(path, value)(data)
    return data


# ----- predict: query inputs (on the bundle: fast) ------------------------------------------------------------


def bad_proprio(text: str, *says: str) -> Case:
    return Case(f"query/proprio={text}", predict_bundle_with("--proprio", text), says=("--proprio", *says))


def predict_bundle_with(option: str, value: str) -> ArgvMaker:
    """predict on the bundle with `option` replaced (argv given as the user types it, `--opt value`)."""
    def make(w: World) -> list[Any]:
        argv = predict_bundle()(w)
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
        return argv
    return make


QUERY = [
    bad_proprio("1,2,3", "8"),
    bad_proprio("1,2,3,4,5,6,7,8,9", "8"),
    bad_proprio("", "8"),
    bad_proprio("a,b,c,d,e,f,g,h", "numbers"),
    bad_proprio("nan,0,0,0,0,0,0,0", "finite"),
    bad_proprio("0,0,0,0,0,0,0,inf", "finite"),
    bad_proprio("1e400,0,0,0,0,0,0,0", "finite"),
    bad_proprio("-nan,0,0,0,0,0,0,0", "finite"),
    bad_proprio("-inf,0,0,0,0,0,0,0", "finite"),
    bad_proprio("0;0;0;0;0;0;0;0", "comma"),
    Case("query/proprio-negative-first", predict_bundle_with("--proprio", "-0.1,0.2,0,0,0,0,0.04,-0.04"), code=0),
    Case("query/proprio-negative-dot", predict_bundle_with("--proprio", "-.1,0.2,0,0,0,0,0.04,-0.04"), code=0),
    Case("query/proprio-far-outside-the-range", predict_bundle_with("--proprio", "1e300,-1e300,0,0,0,0,0,0"),
         says=("--proprio dimension 0 (eef x)", "units")),
    Case("query/instruction-empty", predict_bundle_with("--instruction", ""), says=("--instruction", "empty")),
    Case("query/instruction-blank", predict_bundle_with("--instruction", "   "), says=("--instruction", "empty")),
    Case("query/instruction-too-long", predict_bundle_with("--instruction", "open the drawer " * 200),
         says=("prompt", "--prompt-len")),
    Case("query/instruction-lone-surrogate", predict_bundle_with("--instruction", "open \udcff drawer"),
         says=("--instruction",)),
    Case("query/instruction-unicode", predict_bundle_with("--instruction", "öffne die Schublade ✓"), code=0),
    Case("query/seed-negative", predict_bundle_with("--seed", "-1"), says=("--seed",)),
    Case("query/seed-huge", predict_bundle_with("--seed", str(2**70)), says=("--seed",)),
    Case("query/seed-not-a-number", predict_bundle_with("--seed", "1.5"), says=("--seed",)),
    Case("query/seed-and-init-latent", lambda w: predict_bundle("--seed", "1", "--init-latent", w.npy("l.npy", np.zeros((1, 8, 64), np.float32)))(w),
         says=("--init-latent", "--seed")),
    Case("query/iterations-zero", predict_bundle_with("--iterations", "0"), says=("--iterations",)),
    Case("query/iterations-negative", predict_bundle_with("--iterations", "-3"), says=("--iterations",)),
    Case("query/iterations-too-many", predict_bundle_with("--iterations", "100000"), says=("--iterations", "256")),
    Case("query/iterations-float", predict_bundle_with("--iterations", "2.5"), says=("--iterations",)),
    Case("query/halting-unknown", predict_bundle_with("--halting", "kl:1e-3"), says=("--halting", "mse:")),
    Case("query/halting-not-a-number", predict_bundle_with("--halting", "mse:abc"), says=("--halting", "number")),
    Case("query/halting-no-threshold", predict_bundle_with("--halting", "mse:"), says=("--halting", "threshold")),
    Case("query/halting-negative", predict_bundle_with("--halting", "mse:-1"), says=("--halting", "positive")),
    Case("query/halting-nan", predict_bundle_with("--halting", "mse:nan"), says=("--halting", "positive")),
    Case("query/halting-inf", predict_bundle_with("--halting", "mse:inf"), says=("--halting", "positive")),
    Case("query/halting-cosine-above-one", predict_bundle_with("--halting", "cosine:2"), says=("--halting", "(-1, 1)")),
    Case("query/halting-and-iterations", lambda w: predict_bundle("--halting", "mse:1e-3", "--iterations", "4")(w),
         says=("--iterations", "--halting")),
    Case("query/min-above-max", lambda w: predict_bundle("--halting", "mse:1e-3", "--min-iterations", "5",
                                                         "--max-iterations", "3")(w),
         says=("--min-iterations 5", "--max-iterations 3")),
    Case("query/max-below-default-min", lambda w: predict_bundle("--halting", "mse:1e-3", "--max-iterations", "1")(w),
         says=("--max-iterations 1", "--min-iterations")),
    Case("query/max-iterations-huge", lambda w: predict_bundle("--halting", "mse:1e-3", "--max-iterations", "9999")(w),
         says=("--max-iterations", "256")),
    Case("query/min-without-halting", predict_bundle_with("--min-iterations", "2"), says=("--min-iterations", "--halting")),
    Case("query/out-exists", lambda w: predict_bundle("--out", w.write("result.npz", "mine"))(w), says=("--out", "--overwrite")),
    Case("query/out-exists-overwrite", lambda w: predict_bundle("--out", w.write("result.npz", "mine"), "--overwrite")(w),
         code=0, outputs=("result.npz",)),
    Case("query/out-without-suffix", lambda w: predict_bundle("--out", w.path("result"))(w), code=0, outputs=("result",)),
    Case("query/out-new-folder", lambda w: predict_bundle("--out", w.path("new/deeper/result.npz"))(w), code=0,
         outputs=("new/deeper/result.npz",)),
    Case("query/out-is-a-folder", lambda w: predict_bundle("--out", w.folder("results"))(w), says=("--out", "directory")),
    Case("query/out-parent-is-a-file", lambda w: predict_bundle("--out", w.write("f", "x") / "r.npz")(w),
         says=("--out", "not a directory")),
    Case("query/out-dangling-symlink", lambda w: predict_bundle("--out", _symlink(w, "link.npz", w.path("elsewhere.npz")))(w),
         says=("--out", "--overwrite")),
    Case("query/out-into-the-bundle", lambda w: ["predict", damaged_bundle(lambda r: None)(w), *images(w),
                                                 "--instruction", "x", "--proprio", PROPRIO,
                                                 "--out", w.path(f"{BUNDLE}/manifest.json"), "--overwrite"],
         says=("--out", "manifest.json")),
    Case("query/unnorm-key-on-bundle", predict_bundle("--unnorm-key", "bogus"), says=("--unnorm-key", "re-export")),
    Case("query/precision-unknown", predict_bundle("--precision", "fp8"), says=("fp8",)),
    Case("query/precision-not-calibrated", predict_bundle("--precision", "int8"), says=("int8", "rdvla calibrate")),
    Case("query/backend-tensorrt-absent", predict_bundle("--backend", "tensorrt"), says=("TensorRT",)),
    Case("query/backend-unknown", predict_bundle("--backend", "cuda"), says=("--backend",)),
    Case("query/source-missing", predict_bundle(source=lambda w: w.path("no-bundle")), says=("no-bundle", "not found")),
]


def _symlink(w: World, rel: str, target: Path) -> Path:
    link = w.path(rel)
    link.symlink_to(target)
    return link


# ----- images and arrays ----------------------------------------------------------------------------------------


def gray16(w: World) -> Path:
    return w.image("gray16.png", array=np.full((48, 64), 0x8000, np.uint16))


IMAGES = [
    Case("image/missing", with_image(lambda w: w.path("nope.png")), says=("nope.png", "not found")),
    Case("image/a-folder", with_image(lambda w: w.folder("frames")), says=("frames", "directory")),
    Case("image/empty", with_image(lambda w: w.write("empty.png", b"")), says=("empty.png",)),
    Case("image/text", with_image(lambda w: w.write("notes.png", "hello")), says=("notes.png", "image")),
    Case("image/garbage", with_image(lambda w: w.write("noise.png", bytes(range(256)) * 8)), says=("noise.png",)),
    Case("image/truncated", with_image(lambda w: w.write("cut.png", w.image("whole.png", size=(640, 480)).read_bytes()[:3000])),
         says=("cut.png", "damaged")),
    Case("image/decompression-bomb", with_image(lambda w: w.png_declaring("bomb.png", 30000, 30000)),
         says=("bomb.png", "megapixels")),
    Case("image/too-many-pixels", with_image(lambda w: w.png_declaring("huge.png", 7000, 7000)),
         says=("huge.png", "megapixels")),
    Case("image/float-tiff", with_image(lambda w: w.image("depth.tiff", array=np.ones((48, 64), np.float32))),
         says=("depth.tiff", "mode F")),
    Case("image/int32-beyond-16-bit", with_image(lambda w: w.image("wide.tiff", array=np.full((48, 64), 70000, np.int32))),
         says=("wide.tiff", "16-bit")),
    Case("image/one-pixel", with_image(lambda w: w.image("dot.png", size=(1, 1))), says=("dot.png", "2x2")),
    Case("image/symlink-loop", with_image(lambda w: _symlink(w, "loop.png", w.path("loop.png"))), says=("loop.png",)),
    Case("image/one-instead-of-two", lambda w: ["predict", w.bundle, "--image", w.image("a.png"), "--instruction", "x",
                                                "--proprio", PROPRIO], says=("--image", "2")),
    Case("image/three-instead-of-two", lambda w: ["predict", w.bundle, *images(w), "--image", w.image("c.png"),
                                                  "--instruction", "x", "--proprio", PROPRIO], says=("--image", "2")),
    Case("image/and-pixel-values", lambda w: predict_bundle("--pixel-values", w.npy("p.npy", np.zeros((1, 12, 224, 224), np.float32)))(w),
         says=("--pixel-values", "--image")),
    Case("image/16-bit-gray", with_image(gray16), code=0),
    Case("image/8-bit-gray", with_image(lambda w: w.image("gray.png", mode="L")), code=0),
    Case("image/1-bit", with_image(lambda w: w.image("bits.png", mode="1")), code=0),
    Case("image/palette", with_image(lambda w: w.image("palette.png", mode="P")), code=0),
    Case("image/rgba", with_image(lambda w: w.image("alpha.png", mode="RGBA")), code=0),
    Case("image/gray-alpha", with_image(lambda w: w.image("la.png", mode="LA")), code=0),
    Case("image/cmyk-jpeg", with_image(lambda w: w.image("print.jpg", mode="CMYK", fmt="JPEG")), code=0),
    Case("image/webp", with_image(lambda w: w.image("frame.webp", fmt="WEBP")), code=0),
    Case("image/symlink", with_image(lambda w: _symlink(w, "linked.png", w.image("real.png"))), code=0),
]


def pixel_values_case(name: str, array: Any, *says: str, suffix: str = ".npy", code: int = 2) -> Case:
    def make(w: World) -> list[Any]:
        if isinstance(array, (bytes, str)):
            path = w.write(f"{name}{suffix}", array)
        elif isinstance(array, dict):
            path = w.path(f"{name}{suffix}")
            np.savez(path, **array)
        else:
            path = w.npy(f"{name}{suffix}", array)
        return ["predict", w.bundle, "--pixel-values", path, "--instruction", "x", "--proprio", PROPRIO]
    return Case(f"array/pixel-values-{name}", make, code=code, says=(f"{name}{suffix}", *says))


def init_latent_case(name: str, array: Any, *says: str) -> Case:
    def make(w: World) -> list[Any]:
        path = w.npy(f"{name}.npy", array)
        return [*predict_bundle()(w), "--init-latent", path]
    return Case(f"array/init-latent-{name}", make, says=(f"{name}.npy", *says))


PIXELS = (1, 12, 224, 224)
ARRAYS = [
    Case("array/pixel-values-missing", lambda w: ["predict", w.bundle, "--pixel-values", w.path("gone.npy"), "--instruction", "x",
                                                   "--proprio", PROPRIO], says=("gone.npy", "not found")),
    pixel_values_case("empty", b"", "not a .npy"),
    pixel_values_case("text", "1 2 3", "not a .npy"),
    pixel_values_case("pickled", np.array([{"a": 1}], dtype=object), "not a .npy"),
    pixel_values_case("npz", {"pixel_values": np.zeros(PIXELS, np.float32)}, ".npy", suffix=".npz"),
    pixel_values_case("wrong-shape", np.zeros((1, 6, 224, 224), np.float32), "shape", "(1, 12, 224, 224)"),
    pixel_values_case("scalar", np.float32(1.0), "shape"),
    pixel_values_case("nan", np.full(PIXELS, np.nan, np.float32), "NaN"),
    pixel_values_case("inf", np.full(PIXELS, np.inf, np.float32), "NaN or inf"),
    pixel_values_case("overflows-float32", np.full(PIXELS, 1e300, np.float64), "NaN or inf"),
    pixel_values_case("strings", np.full(PIXELS[:1], "x"), "shape"),
    pixel_values_case("structured", np.zeros(PIXELS, dtype=[("a", np.float32)]), "numbers"),
    pixel_values_case("complex", np.zeros(PIXELS, np.complex64), "real"),
    pixel_values_case("integers", np.zeros(PIXELS, np.int64), "", code=0),
    init_latent_case("wrong-shape", np.zeros((1, 8, 32), np.float32), "shape", "(1, 8, 64)"),
    init_latent_case("nan", np.full((1, 8, 64), np.nan, np.float32), "NaN"),
    init_latent_case("object", np.array([None], dtype=object), "not a .npy"),
    init_latent_case("inf", np.full((1, 8, 64), -np.inf, np.float32), "NaN or inf"),
    Case("array/init-latent-missing", lambda w: [*predict_bundle()(w), "--init-latent", w.path("none.npy")],
         says=("none.npy", "not found")),
    Case("array/init-latent-a-folder", lambda w: [*predict_bundle()(w), "--init-latent", w.folder("latents.npy")],
         says=("latents.npy",)),
]

# ----- export -------------------------------------------------------------------------------------------------

EXPORT = [
    Case("export/checkpoint-missing", lambda w: ["export", w.path("gone"), "--out", w.path("b")], says=("gone", "not found")),
    Case("export/no-out", lambda w: ["export", w.checkpoint], says=("--out",)),
    Case("export/out-exists", lambda w: ["export", w.checkpoint, "--out", w.folder("b")], says=("--out", "--overwrite")),
    Case("export/out-is-a-file", lambda w: ["export", w.checkpoint, "--out", w.write("b", "mine")], says=("--out", "is a file")),
    Case("export/out-parent-is-a-file", lambda w: ["export", w.checkpoint, "--out", w.write("f", "x") / "b"],
         says=("--out", "not a directory")),
    Case("export/out-is-the-checkpoint", lambda w: ["export", w.checkpoint_copy(), "--out", w.path("ckpt"), "--overwrite"],
         says=("--out", "checkpoint")),
    Case("export/out-holds-the-checkpoint", lambda w: ["export", w.checkpoint_copy("work/ckpt"), "--out", w.path("work"),
                                                       "--overwrite"], says=("--out", "checkpoint")),
    Case("export/overwrite-a-folder-that-is-no-bundle", lambda w: ["export", w.checkpoint, "--out", w.write("docs/thesis.tex", "x").parent,
                                                                    "--overwrite"], says=("--out", "not a bundle")),
    Case("export/partial-file-of-the-user-kept", lambda w: (w.write("b.partial", "mine"), w.write("b.tmp", "mine"),
                                                            ["export", damaged_checkpoint(write_to("config.json", "{"))(w),
                                                             "--out", w.path("b")])[-1],
         says=("config.json",)),
    Case("export/prompt-len-one-number", lambda w: ["export", w.checkpoint, "--out", w.path("b"), "--prompt-len", "24"],
         says=("--prompt-len", "MIN:MAX")),
    Case("export/prompt-len-words", lambda w: ["export", w.checkpoint, "--out", w.path("b"), "--prompt-len", "a:b"],
         says=("--prompt-len", "MIN:MAX")),
    Case("export/prompt-len-inverted", lambda w: ["export", w.checkpoint, "--out", w.path("b"), "--prompt-len", "128:24"],
         says=("--prompt-len", "MIN <= MAX")),
    Case("export/prompt-len-too-short", lambda w: ["export", w.checkpoint, "--out", w.path("b"), "--prompt-len", "1:1"],
         says=("--prompt-len",)),
    Case("export/prompt-len-negative", lambda w: ["export", w.checkpoint, "--out", w.path("b"), "--prompt-len", "-5:10"],
         says=("--prompt-len",)),
    Case("export/prompt-len-excludes-golden", lambda w: ["export", w.checkpoint, "--out", w.path("b"), "--prompt-len", "2:3"],
         says=("--prompt-len",)),
    Case("export/cases-zero", lambda w: ["export", w.checkpoint, "--out", w.path("b"), "--cases", "0"], says=("--cases",)),
    Case("export/cases-huge", lambda w: ["export", w.checkpoint, "--out", w.path("b"), "--cases", "100000"], says=("--cases",)),
    Case("export/unnorm-key-unknown", lambda w: ["export", w.checkpoint, "--out", w.path("b"), "--unnorm-key", "bogus"],
         says=("bogus", "available")),
    Case("export/statistics-nan", lambda w: ["export", damaged_checkpoint(statistics_edit(
        lambda s: first_key(s)["proprio"].update(q01=[math.nan] * 8)))(w), "--out", w.path("b")],
        says=("dataset_statistics.json", "NaN")),
    Case("export/tokenizer-empty-object", lambda w: ["export", damaged_checkpoint(write_to("tokenizer.json", "{}"))(w),
                                                     "--out", w.path("b")], says=("tokenizer.json",)),
]

# ----- the bundle: files, manifest fields, and content that a re-saved digest covers ---------------------------

MANIFEST_FIELDS = {
    # field: JSON values of the wrong type or content, each refused when the bundle opens
    "schema": ["other", None, 3],
    "schema_version": [1, 3, "2", None],
    "model": [None, [], "tiny", 7],
    "prompt": [None, [], "x"],
    "preprocess": [None, [], "x"],
    "normalization": [None, [], "x", {}],
    "halting": [None, [], "x", {}],
    "graphs": [None, [], "x", {}],
    "golden": [None, {}, "x", 5],
    "files": [None, [], "x", {}],
    "engines": [[], "x", 5, {"fp16": "x"}, {"fp16": {"graphs": "x"}}, {"fp16": {"graphs": {"decode": {}}}}],
    "calibration": [[], "x", 5, {"report": 5}, {"report": "calibration/nowhere.json"}],
    "graphs_int8": [[], "x", 5, {"decode": "x"}, {"decode": {}}],
    "graphs_fp16": [[], "x", {"decode": []}],
    "tools": [[], "x"],
    "source": [[], "x"],
    "horizon": [[], "x"],
}


def _said(field: str) -> str:
    """How the refusal names a manifest field."""
    return {"schema_version": "schema version", "graphs_int8": "graphs_int8", "graphs_fp16": "graphs_fp16"}.get(field, field)


def manifest_field_cases() -> list[Case]:
    out = []
    for name, values in MANIFEST_FIELDS.items():
        for i, value in enumerate(values):
            out.append(Case(f"manifest/{name}={json.dumps(value)}", verify(raw_bundle(set_in(name, value))),
                            says=("manifest.json", _said(name))))
        if name not in ("engines", "calibration", "graphs_int8", "graphs_fp16", "tools", "source", "horizon"):
            out.append(Case(f"manifest/{name}-missing", verify(raw_bundle(drop(name))), says=("manifest.json", _said(name))))
    return out


MANIFEST_CONTENT = [
    Case("manifest/json-list", verify(lambda w: _resaved(w, [1, 2, 3])), says=("manifest.json", "list")),
    Case("manifest/json-string", verify(lambda w: _resaved(w, "bundle")), says=("manifest.json", "str")),
    Case("manifest/json-null", verify(lambda w: _resaved(w, None)), says=("manifest.json", "null")),
    Case("manifest/not-json", verify(lambda w: _resaved(w, None, b"{\"schema\": ")), says=("manifest.json", "JSON")),
    Case("manifest/not-utf8", verify(lambda w: _resaved(w, None, b"{\"schema\": \"\xff\"}")), says=("manifest.json", "JSON")),
    Case("manifest/empty-file", verify(lambda w: _resaved(w, None, b"")), says=("manifest.json", "JSON")),
    Case("manifest/digest-missing", verify(damaged_bundle(lambda r: (r / "manifest.sha256").unlink())),
         says=("manifest.sha256", "re-export")),
    Case("manifest/digest-empty", verify(damaged_bundle(write_to("manifest.sha256", ""))), says=("manifest.sha256", "re-export")),
    Case("manifest/digest-stale", verify(damaged_bundle(
        lambda r: (r / "manifest.json").write_text((r / "manifest.json").read_text().replace('"threshold": 0.001', '"threshold": 0.01')))),
        says=("manifest.sha256", "re-export")),
    Case("manifest/missing", verify(damaged_bundle(lambda r: (r / "manifest.json").unlink())), says=("manifest.json", "not a bundle")),
    Case("manifest/is-a-folder", verify(damaged_bundle(lambda r: ((r / "manifest.json").unlink(), (r / "manifest.json").mkdir()))),
         says=("manifest.json",)),
    Case("manifest/hidden-dim-edited", verify(raw_bundle(set_in("model.hidden_dim", 32))), says=("hidden_dim", "re-export")),
    Case("manifest/hidden-dim-a-string", verify(raw_bundle(set_in("model.hidden_dim", "64"))), says=("model.hidden_dim",)),
    Case("manifest/hidden-dim-huge", verify(raw_bundle(set_in("model.hidden_dim", 10**18))), says=("hidden_dim",)),
    Case("manifest/chunk-len-edited", verify(raw_bundle(set_in("model.chunk_len", 4))), says=("chunk_len", "re-export")),
    Case("manifest/action-dim-edited", verify(raw_bundle(set_in("model.action_dim", 6))), says=("action_dim", "re-export")),
    Case("manifest/num-images-edited", verify(raw_bundle(set_in("model.num_images", 1))), says=("num_images", "re-export")),
    Case("manifest/init-sigma-nan", verify(raw_bundle(set_in("model.init_sigma", math.nan))), says=("init_sigma",)),
    Case("manifest/init-sigma-infinite", verify(raw_bundle(set_in("model.init_sigma", math.inf))), says=("init_sigma",)),
    Case("manifest/layers-not-a-list", verify(raw_bundle(set_in("model.recurrent_vlm_layers", 5))), says=("model",)),
    Case("manifest/unknown-model-field", verify(raw_bundle(set_in("model.depth", 5))), says=("model", "depth")),
    Case("manifest/graph-input-shape-edited", verify(raw_bundle(set_in("graphs.core_step.inputs.0.shape", [1, 8, 32]))),
         says=("core_step.onnx", "re-export")),
    Case("manifest/graph-input-renamed", verify(raw_bundle(set_in("graphs.decode.inputs.0.name", "state"))),
         says=("decode.onnx", "re-export")),
    Case("manifest/graph-output-dtype-edited", verify(raw_bundle(set_in("graphs.decode.outputs.0.dtype", "float16"))),
         says=("decode.onnx", "re-export")),
    Case("manifest/graph-input-dropped", verify(raw_bundle(lambda d: d["graphs"]["core_step"]["inputs"].pop())),
         says=("core_step.onnx", "re-export")),
    Case("manifest/graph-files-swapped", verify(raw_bundle(lambda d: _swap(d["graphs"]["core_step"], d["graphs"]["decode"], "file"))),
         says=("re-export",)),
    Case("manifest/graph-missing", verify(raw_bundle(drop("graphs.decode"))), says=("decode",)),
    Case("manifest/graph-dtype-unknown", verify(raw_bundle(set_in("graphs.decode.inputs.0.dtype", "float128"))),
         says=("decode.onnx",)),
    Case("manifest/graph-shape-a-string", verify(raw_bundle(set_in("graphs.decode.inputs.0.shape", "1x8x64"))),
         says=("graphs",)),
    Case("manifest/graph-tensor-a-string", verify(raw_bundle(set_in("graphs.decode.inputs.0", "latent"))), says=("graphs",)),
    Case("manifest/statistics-nan", verify(raw_bundle(set_in("normalization.action.q01", [math.nan] * 7))),
         says=("manifest.json", "NaN")),
    Case("manifest/statistics-inf", verify(raw_bundle(set_in("normalization.proprio.q99", [math.inf] * 8))),
         says=("manifest.json", "inf")),
    Case("manifest/statistics-inverted", verify(raw_bundle(lambda d: _swap(d["normalization"]["action"], d["normalization"]["action"], "q01", "q99"))),
         says=("manifest.json", "below")),
    Case("manifest/statistics-wrong-length", verify(raw_bundle(lambda d: d["normalization"]["action"].update(
        q01=[0.0] * 6, q99=[1.0] * 6, mask=[True] * 6))), says=("manifest.json", "action_dim")),
    Case("manifest/proprio-statistics-wrong-length", verify(raw_bundle(lambda d: d["normalization"]["proprio"].update(
        q01=[0.0] * 7, q99=[1.0] * 7))), says=("manifest.json", "proprio")),
    Case("manifest/statistics-strings", verify(raw_bundle(set_in("normalization.action.q99", ["a"] * 7))),
         says=("manifest.json", "normalization")),
    Case("manifest/statistics-scaled", verify(raw_bundle(scaled_statistics)), code=1, verdict="stdout",
         says=("FAILED", "normalisation statistics")),
    Case("manifest/mask-flipped", verify(raw_bundle(lambda d: d["normalization"]["action"].update(mask=[False] * 7))), code=1,
         verdict="stdout", says=("FAILED", "normalisation statistics")),
    Case("manifest/prompt-min-above-max", verify(raw_bundle(set_in("prompt.min_len", 500))), says=("prompt",)),
    Case("manifest/prompt-len-strings", verify(raw_bundle(set_in("prompt.max_len", "128"))), says=("prompt",)),
    Case("manifest/prompt-template-a-number", verify(raw_bundle(set_in("prompt.template", 5))), says=("prompt", "template")),
    Case("manifest/halting-threshold-string", verify(raw_bundle(set_in("halting.threshold", "x"))), says=("halting", "threshold")),
    Case("manifest/halting-threshold-negative", verify(raw_bundle(set_in("halting.threshold", -1))), says=("halting", "threshold")),
    Case("manifest/halting-min-above-max", verify(raw_bundle(set_in("halting.min_iterations", 99))), says=("halting",)),
    Case("manifest/halting-rule-unknown", verify(raw_bundle(set_in("halting.rule", "kl"))), says=("halting", "rule")),
    Case("manifest/preprocess-unknown-key", verify(raw_bundle(set_in("preprocess.gamma", 2.2))), says=("preprocess", "gamma")),
    Case("manifest/preprocess-crop-scale", verify(raw_bundle(set_in("preprocess.crop_scale", 5))), says=("preprocess", "crop_scale")),
    Case("manifest/preprocess-std-zero", verify(raw_bundle(set_in("preprocess.dino_std", [0, 0, 0]))), says=("preprocess", "dino_std")),
    Case("manifest/preprocess-std-nan", verify(raw_bundle(set_in("preprocess.siglip_std", [math.nan] * 3))),
         says=("preprocess", "siglip_std")),
    Case("manifest/preprocess-mean-strings", verify(raw_bundle(set_in("preprocess.dino_mean", ["a", "b", "c"]))),
         says=("preprocess", "dino_mean")),
    Case("manifest/preprocess-image-size-string", verify(raw_bundle(set_in("preprocess.image_size", "224"))),
         says=("preprocess", "image_size")),
    Case("manifest/files-entry-dropped", verify(raw_bundle(drop(("files", "graphs/decode.onnx")))), says=("graphs/decode.onnx", "files")),
    Case("manifest/files-lists-a-missing-file", verify(raw_bundle(set_in(("files", "extra.bin"), "0" * 64))), says=("extra.bin", "missing")),
    Case("manifest/files-outside-the-bundle", verify(raw_bundle(set_in(("files", "../outside.txt"), "0" * 64))),
         says=("../outside.txt", "outside")),
    Case("manifest/files-absolute-path", verify(raw_bundle(set_in(("files", "/etc/hostname"), "0" * 64))),
         says=("/etc/hostname", "outside")),
    Case("manifest/files-hash-a-number", verify(raw_bundle(set_in(("files", "tokenizer.json"), 5))), says=("tokenizer.json",)),
    Case("manifest/golden-outside-the-bundle", verify(raw_bundle(lambda d: d.update(golden=["../case.npz"]) or
                                                                 d["files"].update({"../case.npz": "0" * 64}))),
         says=("../case.npz", "outside")),
    Case("manifest/calibration-report-garbage", verify(raw_bundle(
        lambda d: d.update(calibration={"report": "calibration/report.json"}), rehash=(),
        before=lambda r: _listed(r, "calibration/report.json", b"{not json"))), says=("report.json", "rdvla calibrate")),
    Case("manifest/calibration-report-a-list", verify(raw_bundle(
        lambda d: d.update(calibration={"report": "calibration/report.json"}),
        before=lambda r: _listed(r, "calibration/report.json", b"[1, 2]"))), says=("report.json", "rdvla calibrate")),
    Case("manifest/golden-empty", verify(raw_bundle(set_in("golden", []))), says=("golden",)),
    Case("manifest/golden-names-the-tokenizer", verify(raw_bundle(set_in("golden", ["tokenizer.json"]))),
         says=("tokenizer.json", "golden")),
]


def _listed(root: Path, rel: str, data: bytes) -> None:
    """Write a bundle file and list it in the manifest's `files` (the manifest is re-digested by `edit_raw` after)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"][rel] = hashlib.sha256(data).hexdigest()
    save_raw_manifest(root, manifest)


def _swap(a: dict[str, Any], b: dict[str, Any], key: str, other: str | None = None) -> None:
    other = other or key
    a[key], b[other] = b[other], a[key]


def _resaved(w: World, data: Any, text: bytes | None = None) -> Path:
    root = w.bundle_copy()
    save_raw_manifest(root, data, text)
    return root


BUNDLE_FILES = [
    Case("bundle/missing", verify(lambda w: w.path("gone")), says=("gone", "not found")),
    Case("bundle/a-symlink", verify(lambda w: _symlink(w, "linked-bundle", w.bundle)), code=0),
    Case("bundle/a-dangling-symlink", verify(lambda w: _symlink(w, "dangling", w.path("nowhere"))), says=("dangling", "not found")),
    Case("ckpt/a-symlink", predict_checkpoint(source=lambda w: _symlink(w, "linked-ckpt", w.checkpoint)), code=0),
    Case("bundle/is-a-file", verify(lambda w: w.write("bundle.tar", "x")), says=("bundle.tar",)),
    Case("bundle/empty-folder", verify(lambda w: w.folder("empty")), says=("manifest.json", "not a bundle")),
    Case("bundle/a-checkpoint", verify(lambda w: w.checkpoint), says=("manifest.json", "not a bundle")),
    Case("bundle/graph-deleted", verify(damaged_bundle(lambda r: (r / "graphs/decode.onnx").unlink())),
         says=("graphs/decode.onnx", "missing")),
    Case("bundle/graph-truncated", verify(damaged_bundle(truncate("graphs/core_step.onnx"))),
         says=("graphs/core_step.onnx", "SHA-256")),
    Case("bundle/graph-truncated-rehashed", verify(raw_bundle(lambda d: None, rehash=("graphs/core_step.onnx",),
                                                              before=truncate("graphs/core_step.onnx", 0.9))),
         says=("core_step.onnx",)),
    Case("bundle/graph-garbage-rehashed", verify(raw_bundle(lambda d: None, rehash=("graphs/decode.onnx",),
                                                            before=write_to("graphs/decode.onnx", b"\x08\x07garbage" * 100))),
         says=("decode.onnx",)),
    Case("bundle/graph-empty-rehashed", verify(raw_bundle(lambda d: None, rehash=("graphs/decode.onnx",),
                                                          before=write_to("graphs/decode.onnx", b""))),
         says=("decode.onnx",)),
    Case("bundle/graph-is-another-graph-rehashed", verify(raw_bundle(
        lambda d: None, rehash=("graphs/decode.onnx",),
        before=lambda r: shutil.copyfile(r / "graphs/core_step.onnx", r / "graphs/decode.onnx"))), says=("decode.onnx", "re-export")),
    Case("bundle/tokenizer-edited", verify(damaged_bundle(write_to("tokenizer.json", "{}"))), says=("tokenizer.json", "SHA-256")),
    Case("bundle/tokenizer-empty-object-rehashed", verify(raw_bundle(lambda d: None, rehash=("tokenizer.json",),
                                                                     before=write_to("tokenizer.json", "{}"))),
         says=("tokenizer.json",)),
    Case("bundle/tokenizer-garbage-rehashed", verify(raw_bundle(lambda d: None, rehash=("tokenizer.json",),
                                                                before=write_to("tokenizer.json", b"\xff\x00\x01"))),
         says=("tokenizer.json",)),
    Case("bundle/tokenizer-a-folder", verify(damaged_bundle(lambda r: ((r / "tokenizer.json").unlink(), (r / "tokenizer.json").mkdir()))),
         says=("tokenizer.json",)),
    Case("bundle/golden-truncated-rehashed", verify(raw_bundle(lambda d: None, rehash=("golden/case0.npz",),
                                                               before=truncate("golden/case0.npz"))),
         says=("golden/case0.npz",)),
    Case("bundle/golden-lacks-unnormalized-rehashed", verify(raw_bundle(
        lambda d: None, rehash=("golden/case0.npz",),
        before=npz_edit("golden/case0.npz", lambda z: {k: v for k, v in z.items() if k != "trace_unnormalized_actions"}))),
        says=("golden/case0.npz", "trace_unnormalized_actions")),
    Case("bundle/golden-wrong-shape-rehashed", verify(raw_bundle(
        lambda d: None, rehash=("golden/case0.npz",),
        before=npz_edit("golden/case0.npz", lambda z: {**z, "trace_actions": z["trace_actions"][:4]}))),
        says=("golden/case0.npz", "trace_actions")),
    Case("bundle/golden-nan-reference-rehashed", verify(raw_bundle(
        lambda d: None, rehash=("golden/case0.npz",),
        before=npz_edit("golden/case0.npz", lambda z: {**z, "trace_actions": np.full_like(z["trace_actions"], np.nan)}))),
        code=1, verdict="stdout", says=("FAILED", "inf")),
    Case("bundle/golden-nan-unnormalized-rehashed", verify(raw_bundle(
        lambda d: None, rehash=("golden/case1.npz",),
        before=npz_edit("golden/case1.npz", lambda z: {**z, "trace_unnormalized_actions": z["trace_unnormalized_actions"] * np.nan}))),
        code=1, verdict="stdout", says=("FAILED", "normalisation statistics")),
    Case("bundle/graph-weights-nan-rehashed", verify(raw_bundle(lambda d: None, rehash=("graphs/decode.onnx",),
                                                                before=lambda r: nan_initializers(r / "graphs/decode.onnx"))),
         code=1, verdict="stdout", says=("FAILED", "inf")),
    Case("bundle/precision-fp8", verify(lambda w: w.bundle, "--precision", "fp8"), says=("fp8",)),
    Case("bundle/precision-int8-uncalibrated", verify(lambda w: w.bundle, "--precision", "int8"), says=("int8", "rdvla calibrate")),
    Case("bundle/backend-tensorrt-absent", verify(lambda w: w.bundle, "--backend", "tensorrt"), says=("TensorRT",)),
    Case("bundle/checkpoint-on-onnxruntime", verify(lambda w: w.bundle, "--checkpoint", "x"), says=("--checkpoint", "torch")),
    Case("bundle/torch-backend-on-cpu", verify(lambda w: w.bundle, "--backend", "torch"), code=0),
    Case("bundle/profile-backend-tensorrt-absent", lambda w: ["profile", w.bundle, "--backend", "tensorrt", "--out", w.path("p")],
         says=("TensorRT",)),
    Case("bundle/run-backend-tensorrt-absent", run_desk("--backend", "tensorrt", "--log", lambda w: w.path("s.jsonl")),
         says=("TensorRT",)),
    Case("bundle/torch-checkpoint-missing", verify(lambda w: w.bundle, "--backend", "torch", "--checkpoint", "gone"),
         says=("gone",)),
    Case("bundle/doctor-missing", lambda w: ["doctor", w.path("gone")], code=1, verdict="doctor", says=("gone", "not found")),
    Case("bundle/doctor-edited-manifest", lambda w: ["doctor", damaged_bundle(
        lambda r: (r / "manifest.json").write_text((r / "manifest.json").read_text() + " "))(w)],
        code=1, verdict="doctor", says=("manifest.sha256", "re-export")),
    Case("bundle/doctor-statistics-nan", lambda w: ["doctor", raw_bundle(set_in("normalization.action.q01", [math.nan] * 7))(w)],
         code=1, verdict="doctor", says=("manifest.json", "NaN")),
    Case("bundle/doctor-a-file", lambda w: ["doctor", w.write("b.txt", "x")], code=1, verdict="doctor", says=("b.txt",)),
    Case("bundle/predict-edited-hidden-dim", predict_bundle(source=raw_bundle(set_in("model.hidden_dim", 32))),
         says=("hidden_dim", "re-export")),
    Case("bundle/predict-tokenizer-empty-object-rehashed", predict_bundle(source=raw_bundle(
        lambda d: None, rehash=("tokenizer.json",), before=write_to("tokenizer.json", "{}"))), says=("tokenizer.json",)),
]


# ----- profile, calibrate, build, preprocess, cameras, doctor, demo -------------------------------------------

PROFILE = [
    Case("profile/iterations-words", lambda w: ["profile", w.bundle, "--iterations", "1,x"], says=("--iterations",)),
    Case("profile/iterations-zero", lambda w: ["profile", w.bundle, "--iterations", "0"], says=("--iterations",)),
    Case("profile/iterations-huge", lambda w: ["profile", w.bundle, "--iterations", "99999"], says=("--iterations", "256")),
    Case("profile/iterations-empty", lambda w: ["profile", w.bundle, "--iterations", ""], says=("--iterations",)),
    Case("profile/iterations-one", lambda w: ["profile", w.bundle, "--iterations", "1", "--repeats", "1", "--out", w.path("p")],
         code=0, outputs=("p",)),
    Case("profile/repeats-zero", lambda w: ["profile", w.bundle, "--repeats", "0"], says=("--repeats",)),
    Case("profile/repeats-negative", lambda w: ["profile", w.bundle, "--repeats", "-1"], says=("--repeats",)),
    Case("profile/out-is-a-file", lambda w: ["profile", w.bundle, "--out", w.write("p", "mine")], says=("--out", "is a file")),
    Case("profile/out-holds-a-report", lambda w: ["profile", w.bundle, "--out", w.write("p/profile.json", "{}").parent],
         says=("--out", "profile.json", "--overwrite")),
    Case("profile/out-parent-is-a-file", lambda w: ["profile", w.bundle, "--out", w.write("f", "x") / "p"],
         says=("--out", "not a directory")),
    Case("profile/default-out-holds-a-report", lambda w: (w.write("profile/profile.json", "{}"), ["profile", w.bundle])[1],
         says=("--out", "profile", "--overwrite")),
    Case("profile/bad-bundle-before-measuring", lambda w: ["profile", raw_bundle(set_in("model.hidden_dim", 32))(w),
                                                           "--out", w.path("p")], says=("hidden_dim",)),
    Case("profile/precision-unknown", lambda w: ["profile", w.bundle, "--precision", "fp4", "--out", w.path("p")],
         says=("fp4",)),
]

CALIBRATE = [
    Case("calibrate/data-missing", lambda w: ["calibrate", w.bundle, "--data", w.path("gone.db3")], says=("gone.db3",)),
    Case("calibrate/data-text-file", lambda w: ["calibrate", w.bundle, "--data", w.write("notes.txt", "hello")],
         says=("notes.txt", ".db3")),
    Case("calibrate/data-empty-folder", lambda w: ["calibrate", w.bundle, "--data", w.folder("nothing")],
         says=("nothing", "recordings")),
    Case("calibrate/data-garbage-recording", lambda w: ["calibrate", w.bundle, "--data",
                                                        f"{w.write('a.db3', 'junk')},{w.write('b.db3', 'junk')}",
                                                        "--instruction", "x"], says=("a.db3",)),
    Case("calibrate/data-empty-recording", lambda w: ["calibrate", w.bundle, "--data",
                                                      f"{w.write('a.db3', b'')},{w.write('b.db3', b'')}", "--instruction", "x"],
         says=("a.db3",)),
    Case("calibrate/data-one-recording-for-two-cameras", lambda w: ["calibrate", w.bundle, "--data",
                                                                    w.recording_copy("only.db3"), "--instruction", "x"],
         says=("--data", "one per camera")),
    Case("calibrate/data-without-instruction", lambda w: ["calibrate", w.bundle, "--data",
                                                          f"{w.recording_copy('a.db3')},{w.recording_copy('b.db3', 1)}"],
         says=("--instruction",)),
    Case("calibrate/episode-json-garbage", lambda w: ["calibrate", w.bundle, "--data", w.write("ep/episode.json", "{").parent],
         says=("episode", "ep")),
    Case("calibrate/episode-json-a-list", lambda w: ["calibrate", w.bundle, "--data", w.write("ep/episode.json", "[]").parent],
         says=("episode", "ep")),
    Case("calibrate/episode-steps-missing", lambda w: ["calibrate", w.bundle, "--data", w.write("ep/episode.json", json.dumps(
        {"format": "rdvla-episode", "version": 1, "cameras": [{"recording": "a.db3"}, {"recording": "b.db3"}]})).parent],
        says=("episode", "ep")),
    Case("calibrate/precision-unknown", lambda w: ["calibrate", w.bundle, "--data", "x", "--precision", "fp8"],
         says=("--precision",)),
    Case("calibrate/graphs-unknown", lambda w: ["calibrate", w.bundle, "--data", "x", "--graphs", "everything"],
         says=("--graphs",)),
    Case("calibrate/queries-zero", lambda w: ["calibrate", w.bundle, "--data", "x", "--queries", "0"], says=("--queries",)),
    Case("calibrate/latents-per-query-huge", lambda w: ["calibrate", w.bundle, "--data",
                                                        f"{w.recording_copy('a.db3')},{w.recording_copy('b.db3', 1)}",
                                                        "--instruction", "x", "--latents-per-query", "1000"],
         says=("--latents-per-query", "32")),
    Case("calibrate/method-unknown", lambda w: ["calibrate", w.bundle, "--data",
                                                f"{w.recording_copy('a.db3')},{w.recording_copy('b.db3', 1)}",
                                                "--instruction", "x", "--method", "magic"], says=("--method", "magic")),
    Case("calibrate/seed-negative", lambda w: ["calibrate", w.bundle, "--data", "x", "--seed", "-1"], says=("--seed",)),
    Case("calibrate/bundle-missing", lambda w: ["calibrate", w.path("gone"), "--data", w.recording_copy("a.db3")],
         says=("gone", "not found")),
    Case("calibrate/bundle-edited", lambda w: ["calibrate", raw_bundle(set_in("model.hidden_dim", 32))(w), "--data",
                                               f"{w.recording_copy('a.db3')},{w.recording_copy('b.db3', 1)}", "--instruction", "x"],
         says=("hidden_dim",)),
]

BUILD = [
    Case("build/no-tensorrt", lambda w: ["build", w.bundle, "--precision", "fp16"], says=("TensorRT",)),
    Case("build/precision-unknown", lambda w: ["build", w.bundle, "--precision", "fp12"], says=("fp12", "choose")),
    Case("build/precision-fp8", lambda w: ["build", w.bundle, "--precision", "fp8"], says=("fp8",)),
    Case("build/int8-uncalibrated", lambda w: ["build", w.bundle, "--precision", "int8"], says=("int8", "calibrate")),
    Case("build/workspace-zero", lambda w: ["build", w.bundle, "--precision", "fp16", "--workspace", "0"], says=("--workspace",)),
    Case("build/graphs-empty", lambda w: ["build", w.bundle, "--precision", "fp16", "--graphs", ","], says=("--graphs",)),
    Case("build/graphs-unknown", lambda w: ["build", w.bundle, "--precision", "fp16", "--graphs", "everything"],
         says=("everything",)),
    Case("build/timing-cache-a-folder", lambda w: ["build", w.bundle, "--precision", "fp16", "--timing-cache", w.folder("cache")],
         says=("--timing-cache", "cache")),
    Case("build/bundle-missing", lambda w: ["build", w.path("gone"), "--precision", "fp16"], says=("gone", "not found")),
    Case("build/bundle-edited", lambda w: ["build", damaged_bundle(truncate("graphs/decode.onnx"))(w), "--precision", "fp16"],
         says=("graphs/decode.onnx", "SHA-256")),
    Case("build/no-precision", lambda w: ["build", w.bundle], says=("--precision",)),
]

PREPROCESS = [
    Case("preprocess/ok", lambda w: ["preprocess", "--image", w.image("a.png"), "--out", w.path("seen")], code=0, outputs=("seen",)),
    Case("preprocess/out-holds-results", lambda w: ["preprocess", "--image", w.image("a.png"), "--out",
                                                    w.write("seen/pixel_values.npy", "mine").parent],
         says=("--out", "pixel_values.npy", "--overwrite")),
    Case("preprocess/out-holds-results-overwrite", lambda w: ["preprocess", "--image", w.image("a.png"), "--out",
                                                              w.write("seen/pixel_values.npy", "mine").parent, "--overwrite"],
         code=0, outputs=("seen/pixel_values.npy", "seen/camera0.png")),
    Case("preprocess/out-is-a-file", lambda w: ["preprocess", "--image", w.image("a.png"), "--out", w.write("seen", "x")],
         says=("--out", "is a file")),
    Case("preprocess/image-missing", lambda w: ["preprocess", "--image", w.path("nope.png"), "--out", w.path("seen")],
         says=("nope.png", "not found")),
    Case("preprocess/image-16-bit", lambda w: ["preprocess", "--image", gray16(w), "--out", w.path("seen")], code=0, outputs=("seen",)),
    Case("preprocess/image-bomb", lambda w: ["preprocess", "--image", w.png_declaring("bomb.png", 30000, 30000), "--out",
                                             w.path("seen")], says=("bomb.png", "megapixels")),
    Case("preprocess/repeat-zero", lambda w: ["preprocess", "--image", w.image("a.png"), "--out", w.path("seen"), "--repeat", "0"],
         says=("--repeat",)),
    Case("preprocess/bundle-edited", lambda w: ["preprocess", "--image", w.image("a.png"), "--out", w.path("seen"), "--bundle",
                                                raw_bundle(set_in("preprocess.crop_scale", 0))(w)], says=("crop_scale",)),
    Case("preprocess/bundle-missing", lambda w: ["preprocess", "--image", w.image("a.png"), "--out", w.path("seen"), "--bundle",
                                                 w.path("gone")], says=("gone", "not found")),
    Case("preprocess/no-image", lambda w: ["preprocess", "--out", w.path("seen")], says=("--image",)),
]

CAMERAS = [
    Case("cameras/recording-missing", lambda w: ["cameras", "--recording", w.path("gone.db3")], says=("gone.db3",)),
    Case("cameras/recording-empty", lambda w: ["cameras", "--recording", w.write("empty.db3", b"")], says=("empty.db3",)),
    Case("cameras/recording-text", lambda w: ["cameras", "--recording", w.write("notes.db3", "hello")], says=("notes.db3",)),
    Case("cameras/recording-a-folder", lambda w: ["cameras", "--recording", w.folder("rec.db3")], says=("rec.db3",)),
    Case("cameras/recording-truncated", lambda w: ["cameras", "--recording", w.write(
        "cut.db3", w.recordings[0].read_bytes()[:2000])], says=("cut.db3",)),
    Case("cameras/recording-ok", lambda w: ["cameras", "--recording", w.recordings[0]], code=0),
    Case("cameras/record-without-serial", lambda w: ["cameras", "--record", w.path("r.db3")], says=("--serial",)),
    Case("cameras/record-over-a-file", lambda w: ["cameras", "--record", w.write("mine.db3", "mine"), "--serial", "1"],
         says=("--record", "--overwrite")),
    Case("cameras/record-into-a-folder", lambda w: ["cameras", "--record", w.folder("d"), "--serial", "1"],
         says=("--record", "directory")),
    Case("cameras/record-seconds-negative", lambda w: ["cameras", "--record", w.path("r.db3"), "--serial", "1", "--seconds", "-1"],
         says=("--seconds",)),
    Case("cameras/record-seconds-nan", lambda w: ["cameras", "--record", w.path("r.db3"), "--serial", "1", "--seconds", "nan"],
         says=("--seconds",)),
    Case("cameras/record-seconds-inf", lambda w: ["cameras", "--record", w.path("r.db3"), "--serial", "1", "--seconds", "inf"],
         says=("--seconds",)),
    Case("cameras/record-width-zero", lambda w: ["cameras", "--record", w.path("r.db3"), "--serial", "1", "--width", "0"],
         says=("--width",)),
    Case("cameras/record-fps-negative", lambda w: ["cameras", "--record", w.path("r.db3"), "--serial", "1", "--fps", "-30"],
         says=("--fps",)),
    Case("cameras/record-no-such-camera", lambda w: ["cameras", "--record", w.path("r.db3"), "--serial", "999999999999",
                                                     "--seconds", "1"], says=("999999999999",)),
    Case("cameras/record-and-recording", lambda w: ["cameras", "--record", w.path("r.db3"), "--recording", w.recordings[0]],
         says=("--recording",)),
]

DOCTOR_DEMO = [
    Case("demo/steps-zero", lambda w: ["demo", "--out", w.path("d"), "--steps", "0"], says=("--steps",)),
    Case("demo/steps-negative", lambda w: ["demo", "--out", w.path("d"), "--steps", "-5"], says=("--steps",)),
    Case("demo/out-is-a-file", lambda w: ["demo", "--out", w.write("d", "mine")], says=("--out", "is a file")),
    Case("demo/out-holds-a-checkpoint-of-the-user", lambda w: ["demo", "--out", w.write("d/checkpoint/config.json", "{}").parents[1]],
         says=("--out", "checkpoint", "--overwrite")),
    Case("demo/out-parent-is-a-file", lambda w: ["demo", "--out", w.write("f", "x") / "d"], says=("--out", "not a directory")),
    Case("doctor/unknown-option", lambda w: ["doctor", "--fast"], says=("--fast",)),
    Case("cli/no-command", lambda w: [], says=("COMMAND",)),
    Case("cli/unknown-command", lambda w: ["deploy"], says=("deploy",)),
]

# ----- run ----------------------------------------------------------------------------------------------------


def setup_yaml(text: str | bytes) -> Callable[[World], Path]:
    return lambda w: w.write("setup.yaml", text)


def run_simulator(*extra: Any, setup: str = "version: 1\nsimulator: {suite: libero_spatial, task: 0}\n") -> ArgvMaker:
    return lambda w: ["run", w.bundle, "--config", w.write("libero.yaml", setup), *(a(w) if callable(a) else a for a in extra)]


RUN = [
    Case("run/ok", run_desk("--log", lambda w: w.path("steps.jsonl")), code=0, outputs=("steps.jsonl",)),
    Case("run/no-cameras", lambda w: ["run", w.bundle, "--instruction", "x"], says=("--config", "--recording")),
    Case("run/log-exists", run_desk("--log", lambda w: w.write("steps.jsonl", "mine\n")), says=("--log", "--overwrite")),
    Case("run/log-exists-overwrite", run_desk("--log", lambda w: w.write("steps.jsonl", "mine\n"), "--overwrite"), code=0,
         outputs=("steps.jsonl",)),
    Case("run/log-is-a-folder", run_desk("--log", lambda w: w.folder("logs")), says=("--log", "directory")),
    Case("run/log-parent-is-a-file", run_desk("--log", lambda w: w.write("f", "x") / "s.jsonl"), says=("--log", "not a directory")),
    Case("run/log-locked-by-another-run", run_desk("--log", lambda w: _locked_log(w), "--overwrite"), says=("--log", "PID")),
    Case("run/log-default-taken", lambda w: (w.write("runs/keep.txt", "x"), run_desk()(w))[1], code=0, outputs=("runs/run-*.jsonl",)),
    Case("run/record-holds-a-recording", run_desk("--record", lambda w: w.write("ep/third_person.db3", "mine").parent),
         says=("--record", "third_person.db3", "--overwrite")),
    Case("run/record-holds-an-episode", run_desk("--record", lambda w: w.write("ep/episode.json", "{}").parent),
         says=("--record", "episode.json", "--overwrite")),
    Case("run/record-into-the-recordings-folder", lambda w: ["run", w.bundle, "--recording", w.recording_copy("rec/third_person.db3"),
                                                             "--recording", w.recording_copy("rec/wrist.db3", 1), "--robot", "sim",
                                                             "--instruction", "x", "--steps", "2", "--no-status",
                                                             "--record", w.path("rec")],
         says=("--record", "another directory")),
    Case("run/log-into-the-bundle", lambda w: run_desk("--log", w.path(f"{BUNDLE}/manifest.json"), "--overwrite",
                                                       bundle=damaged_bundle(lambda r: None))(w),
         says=("--log", "inside the bundle")),
    Case("run/record-into-the-bundle", lambda w: run_desk("--record", w.path(BUNDLE), bundle=damaged_bundle(lambda r: None))(w),
         says=("--record", "inside the bundle")),
    Case("run/record-is-a-file", run_desk("--record", lambda w: w.write("ep", "mine")), says=("--record", "is a file")),
    Case("run/record-and-log", run_desk("--record", lambda w: w.path("ep"), "--log", lambda w: w.path("l.jsonl")),
         says=("--log",)),
    Case("run/record-ok", run_desk("--record", lambda w: w.path("ep")), code=0, outputs=("ep",)),
    Case("run/recording-missing", lambda w: ["run", w.bundle, "--recording", w.path("gone.db3"), "--robot", "sim",
                                             "--instruction", "x", "--steps", "2", "--log", w.path("s.jsonl")],
         says=("gone.db3",)),
    Case("run/recording-garbage", lambda w: ["run", w.bundle, "--recording", w.write("junk.db3", "junk"), "--robot", "sim",
                                             "--instruction", "x", "--steps", "2", "--log", w.path("s.jsonl")],
         says=("junk.db3",), outputs=("s.jsonl",)),  # the log records why the run stopped
    Case("run/recording-a-folder", lambda w: ["run", w.bundle, "--recording", w.folder("rec.db3"), "--robot", "sim",
                                              "--instruction", "x", "--steps", "2", "--log", w.path("s.jsonl")],
         says=("rec.db3",)),
    Case("run/three-recordings", lambda w: run_desk("--recording", w.recordings[0], "--log", w.path("s.jsonl"))(w),
         says=("--recording",)),
    Case("run/steps-zero", run_desk("--steps", "0"), says=("--steps",)),
    Case("run/steps-negative", run_desk("--steps", "-1"), says=("--steps",)),
    Case("run/rate-zero", run_desk("--rate", "0"), says=("--rate",)),
    Case("run/rate-nan", run_desk("--rate", "nan"), says=("--rate",)),
    Case("run/rate-inf", run_desk("--rate", "inf"), says=("--rate",)),
    Case("run/rate-negative", run_desk("--rate", "-10"), says=("--rate",)),
    Case("run/refill-at-negative", run_desk("--refill-at", "-1"), says=("--refill-at",)),
    Case("run/horizon-unknown", run_desk("--horizon", "forever"), says=("--horizon", "fixed")),
    Case("run/horizon-zero", run_desk("--horizon", "fixed:0"), says=("--horizon",)),
    Case("run/horizon-words", run_desk("--horizon", "fixed:x"), says=("--horizon", "integers")),
    Case("run/horizon-linear-two-numbers", run_desk("--horizon", "linear:1:2"), says=("--horizon",)),
    Case("run/horizon-linear-inverted", run_desk("--horizon", "linear:8:2:6"), says=("--horizon",)),
    Case("run/horizon-negative", run_desk("--horizon=fixed:-3"), says=("--horizon",)),
    Case("run/halting-nan", run_desk("--halting", "mse:nan"), says=("--halting",)),
    Case("run/iterations-zero", run_desk("--iterations", "0"), says=("--iterations",)),
    Case("run/iterations-huge", run_desk("--iterations", "100000"), says=("--iterations",)),
    Case("run/min-without-halting", run_desk("--min-iterations", "3"), says=("--min-iterations", "--halting")),
    Case("run/max-below-default-min", run_desk("--halting", "mse:1e-3", "--max-iterations", "1"),
         says=("--max-iterations 1", "--min-iterations")),
    Case("run/deadline-zero", run_desk("--deadline-ms", "0"), says=("--deadline-ms",)),
    Case("run/deadline-nan", run_desk("--deadline-ms", "nan"), says=("--deadline-ms",)),
    Case("run/seed-negative", run_desk("--seed", "-1"), says=("--seed",)),
    Case("run/seed-huge", run_desk("--seed", str(2**70)), says=("--seed",)),
    Case("run/max-faults-zero", run_desk("--max-faults", "0"), says=("--max-faults",)),
    Case("run/max-reconnect-nan", run_desk("--max-reconnect-s", "nan"), says=("--max-reconnect-s",)),
    Case("run/max-linear-accel-negative", run_desk("--max-linear-accel", "-1"), says=("--max-linear-accel",)),
    Case("run/max-angular-accel-inf", run_desk("--max-angular-accel", "inf"), says=("--max-angular-accel",)),
    Case("run/instruction-empty", run_desk("--instruction", ""), says=("--instruction",)),
    Case("run/config-missing", lambda w: ["run", w.bundle, "--config", w.path("setup.yaml"), "--instruction", "x"],
         says=("setup.yaml", "not found")),
    Case("run/config-a-folder", lambda w: ["run", w.bundle, "--config", w.folder("setup.yaml"), "--instruction", "x"],
         says=("setup.yaml",)),
    Case("run/config-not-yaml", lambda w: ["run", w.bundle, "--config", setup_yaml("version: [1\n")(w), "--instruction", "x"],
         says=("setup.yaml", "YAML")),
    Case("run/config-a-list", lambda w: ["run", w.bundle, "--config", setup_yaml("- 1\n- 2\n")(w), "--instruction", "x"],
         says=("setup.yaml", "mapping")),
    Case("run/config-not-utf8", lambda w: ["run", w.bundle, "--config", setup_yaml(b"version: \xff\n")(w), "--instruction", "x"],
         says=("setup.yaml",)),
    Case("run/config-empty", lambda w: ["run", w.bundle, "--config", setup_yaml("")(w), "--instruction", "x"],
         says=("setup.yaml",)),
    Case("run/config-rate-nan", lambda w: ["run", w.bundle, "--config", setup_yaml(
        "version: 1\ncontrol_rate_hz: .nan\ncameras: []\nrobot: {type: sim}\n")(w), "--instruction", "x"],
        says=("setup.yaml", "control_rate_hz")),
    Case("run/bundle-edited", run_desk(bundle=raw_bundle(set_in("model.hidden_dim", 32))), says=("hidden_dim",)),
    Case("run/bundle-statistics-nan", run_desk(bundle=raw_bundle(set_in("normalization.action.q99", [math.nan] * 7))),
         says=("manifest.json", "NaN")),
    Case("run/playback-unknown", run_desk("--playback", "fast"), says=("--playback",)),
    Case("run/instruction-missing", lambda w: ["run", w.bundle, "--recording", w.recordings[0], "--robot", "sim"],
         says=("--instruction", "required")),
    Case("run/simulator-record", run_simulator("--record", lambda w: w.path("episode")), says=("--record", "rdvla eval")),
    Case("run/simulator-mode-async", run_simulator("--mode", "async"), says=("--mode async", "simulator")),
    Case("run/simulator-rate", run_simulator("--rate", "10"), says=("--rate", "simulator")),
    Case("run/simulator-recording", run_simulator("--recording", lambda w: w.recordings[0]), says=("--recording", "simulator")),
    Case("run/simulator-task-missing", run_simulator(setup="version: 1\nsimulator: {suite: libero_spatial, task: 10}\n"),
         says=("task 10", "0..9")),
    Case("run/simulator-state-missing", run_simulator(setup="version: 1\nsimulator: {suite: libero_spatial, task: 0, init: fixed:50}\n"),
         says=("simulator.init", "0..49")),
]


def _locked_log(w: World) -> Path:
    """A log another process holds (this test process takes the lock for it, and keeps it for the case)."""
    from rdvla.runtime.outputs import OwnedFile

    path = w.path("shared.jsonl")
    holder = OwnedFile(path, overwrite=False, option="--log")
    _HELD.append(holder)
    holder.write("another run\n")
    return path


_HELD: list[Any] = []


@pytest.fixture(autouse=True)
def _release_held_files():
    yield
    while _HELD:
        _HELD.pop().close()


# Where nothing can be created, whoever runs the tests (root included): /proc.
UNWRITABLE = Path("/proc/rdvla-battery")

UNWRITABLE_OUTPUTS = [
    Case("unwritable/init-checkpoint", lambda w: ["init-checkpoint", "--preset", "tiny", "--out", UNWRITABLE], says=("--out", "/proc")),
    Case("unwritable/predict", predict_bundle("--out", UNWRITABLE / "a.npz"), says=("--out", "/proc")),
    Case("unwritable/export", lambda w: ["export", w.checkpoint, "--out", UNWRITABLE], says=("--out", "/proc")),
    Case("unwritable/profile", lambda w: ["profile", w.bundle, "--out", UNWRITABLE], says=("--out", "/proc")),
    Case("unwritable/preprocess", lambda w: ["preprocess", "--image", w.image("a.png"), "--out", UNWRITABLE], says=("--out", "/proc")),
    Case("unwritable/run-log", run_desk("--log", UNWRITABLE / "steps.jsonl"), says=("--log", "/proc")),
    Case("unwritable/run-record", run_desk("--record", UNWRITABLE), says=("--record", "/proc")),
    Case("unwritable/demo", lambda w: ["demo", "--out", UNWRITABLE], says=("--out", "/proc")),
    Case("unwritable/cameras-record", lambda w: ["cameras", "--record", UNWRITABLE / "r.db3", "--serial", "1"],
         says=("--record", "/proc")),
    Case("unwritable/build-timing-cache", lambda w: ["build", w.bundle, "--precision", "fp16", "--timing-cache",
                                                     UNWRITABLE / "cache.bin"], says=("--timing-cache", "/proc")),
]

BATTERY = [*UNWRITABLE_OUTPUTS, *INIT_CHECKPOINT, *CHECKPOINT_FILES, *QUERY, *IMAGES, *ARRAYS, *EXPORT, *manifest_field_cases(), *MANIFEST_CONTENT,
           *BUNDLE_FILES, *PROFILE, *CALIBRATE, *BUILD, *PREPROCESS, *CAMERAS, *DOCTOR_DEMO, *RUN]


@pytest.fixture(scope="module", autouse=True)
def _shared_fixtures_unchanged(tiny_checkpoint: Path, tiny_bundle: Path, recordings: tuple[Path, Path]):
    """Every case reads the shared checkpoint, bundle and recordings; none may change a byte of them."""
    roots = shared_roots(World(Path("/nonexistent"), tiny_checkpoint, tiny_bundle, recordings))
    before = snapshot(roots)
    yield
    assert snapshot(roots) == before


@pytest.mark.parametrize("case", cases(BATTERY))
def test_bad_input(case: Case, world: World, capsys: pytest.CaptureFixture[str]) -> None:
    check(case, world, capsys)


def test_the_battery_is_large() -> None:
    assert len(BATTERY) >= 150




def test_a_bundle_of_foreign_graphs_is_refused_by_name(tmp_path: Path, bundles, capsys: pytest.CaptureFixture[str]) -> None:
    """Graphs and manifest agree (the bundle opens), but they are not rdvla's graphs: refused before any allocation."""
    tensor = {"name": "x", "dtype": "float32", "shape": [1, 4]}
    graphs = {name: {"file": f"graphs/{name}.onnx", "inputs": [tensor], "outputs": [{**tensor, "name": "y"}]}
              for name in ("vlm_prelude", "core_step", "core_step_decode", "decode")}
    model = {"hidden_dim": 8, "num_heads": 2, "chunk_len": 8, "action_dim": 7, "proprio_dim": 8, "num_images": 2,
             "context_tokens": 4, "prelude_vlm_layers": [0], "recurrent_vlm_layers": [0], "coda_vlm_layers": [0], "init_sigma": 0.5}
    root = bundles.write(tmp_path / "foreign", graphs, model, (2, 8))
    outcome = run_main(["verify", str(root)], capsys)
    assert outcome.code == 2 and not outcome.escaped and "Traceback" not in outcome.err
    assert outcome.err.strip().splitlines()[-1].endswith(
        "graph graphs/vlm_prelude.onnx (vlm_prelude) has no injection, input_ids, pixel_values, proprio: it is not the "
        "vlm_prelude graph of an rdvla bundle; re-export the bundle")


@pytest.mark.parametrize("section, floor", [([3], None), ({"median_deltas": "x"}, None), ({"median_deltas": [None, "a"]}, None),
                                            ({"median_deltas": [None, 2e-3]}, 2e-3)])
def test_halting_floor_reads_any_calibration_report(bundle_copy: Path, section: Any, floor: Any) -> None:
    """The warning about thresholds below a precision's floor reads the report without trusting its shape."""
    from rdvla.runtime.bundle import Bundle
    from rdvla.runtime.halting import AdjacentMSE
    from rdvla.runtime.policy import halting_below_floor

    _listed(bundle_copy, "calibration/report.json", json.dumps({"summary": [], "fp16": section}).encode())
    edit_raw(bundle_copy, lambda d: d.update(calibration={"report": "calibration/report.json"}))
    warning = halting_below_floor(Bundle.open(bundle_copy), "fp16", AdjacentMSE(1e-3))
    assert (warning is None) == (floor is None)
    if floor is not None:
        assert "choose a threshold above 0.002" in warning
