"""`rdvla predict CHECKPOINT`: the one-shot tool every later comparison goes through."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rdvla.export.checkpoint import load_checkpoint
from rdvla.cli import main
from rdvla.runtime.halting import AdjacentMSE
from rdvla.runtime.normalization import NormStats, far_outside_range, normalize_proprio, unnormalize_actions
from rdvla.runtime.prompt import PromptTokenizer

PROPRIO = "0.1,-0.2,0.3,0.0,0.5,-0.5,0.03,-0.03"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    for name in ("agent", "wrist"):
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(d / f"{name}.png")
    np.save(d / "pixels.npy", rng.standard_normal((1, 12, 224, 224)).astype(np.float32))
    np.save(d / "latent.npy", (0.6 * rng.standard_normal((1, 8, 64))).astype(np.float32))
    return {"agent": d / "agent.png", "wrist": d / "wrist.png", "pixels": d / "pixels.npy", "latent": d / "latent.npy", "dir": d}


def test_predict_writes_the_documented_outputs(tiny_checkpoint: Path, inputs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "a.npz"
    rc = main(["predict", str(tiny_checkpoint), "--pixel-values", str(inputs["pixels"]), "--instruction", "Open the drawer",
               "--proprio", PROPRIO, "--init-latent", str(inputs["latent"]), "--halting", "mse:1e-4", "--out", str(out)])
    assert rc == 0
    result = np.load(out)
    assert result["normalized_actions"].shape == (8, 7) and result["normalized_actions"].dtype == np.float32
    assert result["actions"].shape == (8, 7)
    k = int(result["iterations"])
    assert result["deltas"].shape == (k,) and np.isnan(result["deltas"][0]) and np.all(result["deltas"][1:] >= 0)
    assert result["deltas"][-1] < 1e-4 <= result["deltas"][-2]

    # The same query through the library gives the same numbers.
    ckpt = load_checkpoint(tiny_checkpoint)
    stats = NormStats.from_dataset_statistics(ckpt.statistics)
    proprio = normalize_proprio(np.array([float(v) for v in PROPRIO.split(",")]), stats)[None]
    ids = PromptTokenizer(ckpt.files.tokenizer)("open the drawer")
    direct = ckpt.model.predict(torch.from_numpy(np.load(inputs["pixels"])), torch.from_numpy(ids.copy()),
                                torch.from_numpy(proprio), AdjacentMSE(1e-4), init_latent=torch.from_numpy(np.load(inputs["latent"])))
    # Equal up to BLAS thread-scheduling noise (MKL may split reductions differently under load).
    np.testing.assert_allclose(result["normalized_actions"], direct.actions[0].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(result["actions"], unnormalize_actions(direct.actions[0].numpy(), stats), rtol=0, atol=1e-5)
    assert direct.iterations == k
    assert f"iterations  {k}" in capsys.readouterr().out


def test_images_and_seed_are_deterministic(tiny_checkpoint: Path, inputs, tmp_path: Path) -> None:
    args = ["predict", str(tiny_checkpoint), "--image", str(inputs["agent"]), "--image", str(inputs["wrist"]),
            "--instruction", "open the drawer", "--proprio", PROPRIO, "--iterations", "3"]
    assert main(args + ["--seed", "1", "--out", str(tmp_path / "a.npz")]) == 0
    assert main(args + ["--seed", "1", "--out", str(tmp_path / "b.npz")]) == 0
    assert main(args + ["--seed", "2", "--out", str(tmp_path / "c.npz")]) == 0
    a, b, c = (np.load(tmp_path / f"{n}.npz") for n in "abc")
    np.testing.assert_allclose(a["actions"], b["actions"], rtol=0, atol=1e-6)
    assert np.abs(a["actions"] - c["actions"]).max() > 1e-3
    assert int(a["iterations"]) == 3 and a["deltas"].shape == (3,) and np.isnan(a["deltas"]).all()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--proprio", "1,2,3"], "8 finite numbers"),
        (["--proprio", PROPRIO, "--image", "{agent}"], "takes 2 images"),
        (["--proprio", PROPRIO, "--image", "{agent}", "--image", "{dir}/missing.png"], "image not found"),
        (["--proprio", PROPRIO, "--pixel-values", "{latent}"], "has shape (1, 8, 64), expected (1, 12, 224, 224)"),
        (["--proprio", PROPRIO, "--pixel-values", "{pixels}", "--halting", "mse:1e-3", "--min-iterations", "9", "--max-iterations", "3"], "exceeds"),
        (["--proprio", PROPRIO, "--pixel-values", "{pixels}", "--unnorm-key", "bridge"], "not in dataset statistics"),
        (["--proprio", PROPRIO, "--halting", "mse:"], "--halting mse:: no threshold after the colon"),
        (["--proprio", "1e300,0,0,0,0,0,0,0"], "--proprio dimension 0 (eef x) is 1e+300, more than 10 times the width"),
        (["--proprio", "0.1,-0.2,0.3,0,0,0,0.03,-3000"], "--proprio dimension 7 (gripper 2) is -3000"),
    ],
)
def test_bad_input_is_one_line(tiny_checkpoint: Path, inputs, extra, message, capsys) -> None:
    if "--image" not in extra and "--pixel-values" not in extra:
        extra = extra + ["--pixel-values", "{pixels}"]
    extra = [e.format(**{k: str(v) for k, v in inputs.items()}) for e in extra]
    rc = main(["predict", str(tiny_checkpoint), "--instruction", "x"] + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not any("Traceback" in line for line in err)


def test_a_bundle_refuses_a_proprio_far_outside_its_range_in_one_line(tiny_bundle: Path, inputs, capsys) -> None:
    rc = main(["predict", str(tiny_bundle), "--instruction", "x", "--pixel-values", str(inputs["pixels"]),
               "--proprio", "0.1,-0.2,0.3,0,0,0,0.03,-3000"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --proprio dimension 7 (gripper 2) is -3000")


def test_far_outside_range_measures_in_widths_of_the_range() -> None:
    stats = NormStats("d", np.zeros(1), np.ones(1), np.ones(1, bool), np.array([0.0, 0.0, 5.0]), np.array([1.0, 2.0, 5.0]))
    assert far_outside_range(np.array([11.0, -20.0, 1e9]), stats) == []  # at the limit; q01 == q99 is not judged
    assert far_outside_range(np.array([11.01, -20.01, 1e9]), stats) == [0, 1]
    assert far_outside_range(np.array([-0.5, 3.0, 5.0]), stats) == []  # unusual, not absurd


def test_several_statistics_keys_need_a_choice(tiny_checkpoint: Path, inputs, tmp_path: Path, capsys) -> None:
    ckpt = Path(shutil.copytree(tiny_checkpoint, tmp_path / "two_keys"))
    stats = json.loads((ckpt / "dataset_statistics.json").read_text())
    stats["libero_goal_no_noops"] = next(iter(stats.values()))
    (ckpt / "dataset_statistics.json").write_text(json.dumps(stats))
    base = ["predict", str(ckpt), "--pixel-values", str(inputs["pixels"]), "--instruction", "x", "--proprio", PROPRIO, "--iterations", "1"]
    assert main(base) == 2
    assert "libero_goal_no_noops, libero_spatial_no_noops" in capsys.readouterr().err
    assert main(base + ["--unnorm-key", "libero_goal_no_noops"]) == 0


def test_missing_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    rc = main(["predict", str(tmp_path / "nope"), "--pixel-values", "x.npy", "--instruction", "x", "--proprio", PROPRIO])
    assert rc == 2 and capsys.readouterr().err.strip().startswith("error: ")
