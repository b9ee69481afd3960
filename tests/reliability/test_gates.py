"""Nothing false: gates that cannot pass on garbage, and a bundle whose edited statistics fail `rdvla verify`.

The issue's two headline failures are tests here by name: a NaN checkpoint exported to a bundle that passed every
gate, and a manifest whose action statistics were scaled by 10 that `rdvla verify` passed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rdvla.cli import main

from .battery import edit_raw, nan_initializers


def _nan_checkpoint(root: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    weights = root / "model.safetensors"
    save_file({k: torch.full_like(v, math.nan) for k, v in load_file(weights).items()}, str(weights), metadata={"format": "pt"})
    for head in [*root.glob("action_head--*_checkpoint.pt"), *root.glob("proprio_projector--*_checkpoint.pt")]:
        torch.save({k: torch.full_like(v, math.nan) for k, v in torch.load(head, weights_only=True).items()}, head)


def test_a_nan_checkpoint_fails_rdvla_export(tiny_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _nan_checkpoint(tiny_copy)
    out = tmp_path / "bundle"
    assert main(["export", str(tiny_copy), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "NaN" in err and "model.safetensors" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".bundle.rdvla-*"))  # no bundle, no scratch folder


def test_a_checkpoint_that_computes_inf_fails_rdvla_export_and_predict(tiny_copy: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Finite weights whose activations overflow: only running the reference shows it."""
    import torch

    head = next(tiny_copy.glob("action_head--*_checkpoint.pt"))
    state = torch.load(head, weights_only=True)
    torch.save({k: torch.full_like(v, 3e38) if v.is_floating_point() and v.ndim == 2 else v for k, v in state.items()}, head)
    out = tmp_path / "bundle"
    assert main(["export", str(tiny_copy), "--out", str(out)]) == 2
    assert "not finite" in capsys.readouterr().err and not out.exists()
    pixels = tmp_path / "pixels.npy"
    np.save(pixels, np.zeros((1, 12, 224, 224), np.float32))
    assert main(["predict", str(tiny_copy), "--pixel-values", str(pixels), "--instruction", "open the drawer",
                 "--proprio", "0,0,0,0,0,0,0.04,-0.04"]) == 2
    captured = capsys.readouterr()
    assert "non-finite actions" in captured.err and "nan" not in captured.out.lower()


@pytest.mark.parametrize("through", ["plain JSON", "Manifest.save"])
def test_an_edited_manifest_fails_rdvla_verify(bundle_copy: Path, bundles, through: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Action q01/q99 scaled by 10 with a recomputed digest: the graphs and the normalised actions are untouched, so
    only the golden cases' un-normalised actions can tell, and verify must fail on them."""
    def scale(data: dict) -> None:
        action = data["normalization"]["action"]
        action["q01"] = [10 * v for v in action["q01"]]
        action["q99"] = [10 * v for v in action["q99"]]

    if through == "plain JSON":  # what a user's script does: rewrite the JSON, recompute the digest
        edit_raw(bundle_copy, scale)
    else:
        bundles.edit_manifest(bundle_copy, scale)
    assert main(["verify", str(bundle_copy)]) == 1
    out = capsys.readouterr().out
    assert "all gates passed" not in out
    assert "FAILED" in out and "the bundle's normalisation statistics differ from the export's" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("fixed_", "mse_"))]
    assert rows and all(row[-1] == "FAIL" and float(row[3]) > 1e-2 for row in rows)  # the un-normalised column
    assert all(float(row[1]) <= 1e-4 for row in rows)  # the normalised actions still agree: nothing else could tell


def test_verify_fails_when_the_graphs_compute_nan(bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """NaN from the backend is a failed gate (exit 1, inf in the table), never '0.00e+00' or a pass."""
    nan_initializers(bundle_copy / "graphs" / "decode.onnx")
    edit_raw(bundle_copy, lambda data: None, rehash=("graphs/decode.onnx",))
    assert main(["verify", str(bundle_copy)]) == 1
    out = capsys.readouterr().out
    assert "all gates passed" not in out and "FAILED" in out and "inf" in out


def test_nan_in_the_stored_reference_fails_verify(bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = bundle_copy / "golden" / "case0.npz"
    case = dict(np.load(path))
    case["trace_actions"] = np.full_like(case["trace_actions"], np.nan)
    np.savez_compressed(path, **case)
    edit_raw(bundle_copy, lambda data: None, rehash=("golden/case0.npz",))
    assert main(["verify", str(bundle_copy)]) == 1
    assert "all gates passed" not in capsys.readouterr().out


# ----- the comparisons themselves --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("side", ["ours", "reference"])
def test_error_is_infinite_on_non_finite_values(bad: float, side: str) -> None:
    from rdvla.calibration.report import output_error
    from rdvla.runtime.verify import error

    good = np.zeros((8, 7), np.float32)
    broken = good.copy()
    broken[3, 2] = bad
    ours, ref = (broken, good) if side == "ours" else (good, broken)
    assert error(ours, ref) == {"max_abs": math.inf, "max_rel": math.inf}
    assert output_error(ours, ref)["max_abs"] == math.inf and output_error(ours, ref)["rel_l2"] == math.inf
    assert error(good, good) == {"max_abs": 0.0, "max_rel": 0.0}


def test_worst_is_infinite_when_any_value_is_not_finite() -> None:
    from rdvla.runtime.verify import worst

    assert max([0.0, math.nan]) == 0.0  # what the builtin does, and why `worst` exists
    assert worst([0.0, math.nan]) == math.inf and worst([math.nan, 0.0]) == math.inf and worst([1.0, math.inf]) == math.inf
    assert worst([1e-5, 2e-5]) == 2e-5 and worst([]) == 0.0


def test_gate_failures_report_nan_results() -> None:
    from rdvla.runtime.gates import gate_for
    from rdvla.runtime.verify import ModeResult, gate_failures

    nan = ModeResult(max_abs=math.nan, max_rel=math.nan, unnormalized_max_abs=math.nan, iterations=[4], reference_iterations=[4])
    failures = gate_failures({"fixed_4": nan}, gate_for("fp32"))
    assert any("actions max_abs" in f for f in failures) and any("un-normalised" in f for f in failures)


@pytest.mark.parametrize("edit, message", [
    (lambda e: e["action"].update(q01=[math.nan] * 7), "NaN or inf"),
    (lambda e: e["proprio"].update(q99=[math.inf] * 8), "NaN or inf"),
    (lambda e: e["action"].update(q01=e["action"]["q99"], q99=e["action"]["q01"]), "below q01"),
    (lambda e: e["action"].update(q01="low"), "lists of numbers"),
])
def test_normalisation_statistics_refuse_garbage(tiny_checkpoint: Path, edit, message: str) -> None:
    from rdvla.runtime.normalization import NormStats

    stats = json.loads((tiny_checkpoint / "dataset_statistics.json").read_text())
    key = next(iter(stats))
    edit(stats[key])
    with pytest.raises(ValueError, match=message):
        NormStats.from_dataset_statistics(stats, key)


def test_policy_never_hands_on_non_finite_actions(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rdvla.runtime.halting import FixedIterations
    from rdvla.runtime.policy import NonFiniteActions, Policy

    policy = Policy.load(tiny_bundle)
    try:
        real = policy.backend.actions
        monkeypatch.setattr(policy.backend, "actions", lambda: np.where(np.arange(7) == 6, np.nan, real()))
        with pytest.raises(NonFiniteActions, match="non-finite"):
            policy.act("open the drawer", np.zeros(8), pixel_values=np.zeros((1, 12, 224, 224), np.float32),
                       halting=FixedIterations(2), seed=0)
    finally:
        policy.close()


# ----- images read as the policy expects ---------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [(0x0000, 0), (0x80FF, 128), (0xFFFF, 255)])
def test_a_16_bit_grayscale_png_keeps_its_brightness(tmp_path: Path, value: int, expected: int) -> None:
    """The issue's 16-bit PNG read as almost all white: its top 8 bits are the 8-bit gray, on all three channels."""
    from PIL import Image

    from rdvla.cli.inputs import read_image

    path = tmp_path / "gray16.png"
    Image.fromarray(np.full((6, 5), value, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I;16")
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (6, 5, 3)
    assert np.array_equal(image, np.full((6, 5, 3), expected, np.uint8))


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "1", "CMYK"])
def test_eight_bit_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    from PIL import Image

    from rdvla.cli.inputs import read_image

    rgb = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    source = Image.fromarray(rgb).convert(mode)
    path = tmp_path / f"image.{'jpg' if mode == 'CMYK' else 'png'}"
    source.save(path)
    image = read_image(path)
    assert image.shape == (4, 6, 3) and image.dtype == np.uint8
    if mode in ("L", "LA"):  # gray on all three channels
        assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    if mode == "RGBA":  # alpha dropped, colours kept
        assert np.array_equal(image, rgb)

