"""`rdvla build`: arguments, --help, and every refusal that happens before TensorRT builds anything."""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import pytest

from rdvla.cli import main
from rdvla.cli.build import register, run
from rdvla.runtime.backends.tensorrt.builder import graph_sources, open_for_build
from rdvla.runtime.backends.tensorrt.environment import TensorRTUnavailable, require_tensorrt
from rdvla.runtime.backends.tensorrt.precision import BuildError, GraphSource
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import BundleError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rdvla")
    register(p.add_subparsers(dest="command", required=True))
    return p


def invoke(*argv: str) -> int:
    """`rdvla build ARGV` as the user runs it: `main` turns what the command raises into its exit status."""
    return main(["build", *argv])


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["build", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("BUNDLE", "--precision", "--workspace", "--timing-cache", "--graphs", "fp16", "int8", "fp32", "fp8"):
        assert option in text
    assert "core_step_decode" in text  # --graphs names the graphs


def test_arguments_are_parsed(tmp_path: Path) -> None:
    args = parser().parse_args(
        ["build", str(tmp_path), "--precision", "fp16", "--workspace", "2048", "--timing-cache", "t.cache", "--graphs", "core_step, decode"]
    )
    assert (args.bundle, args.precision, args.workspace) == (tmp_path, "fp16", 2048)
    assert args.timing_cache == Path("t.cache")
    assert args.graphs == ["core_step", "decode"]
    assert args.run is run


@pytest.mark.parametrize(
    "argv, message",
    [
        (["b"], "--precision"),
        (["b", "--precision", "fp16", "--workspace", "0"], "at least 1"),
        (["b", "--precision", "fp16", "--workspace", "lots"], "not a whole number"),
        (["b", "--precision", "fp16", "--graphs", ","], "at least one graph"),
    ],
)
def test_bad_arguments_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["build", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_unknown_precision(bundle_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(str(bundle_dir), "--precision", "bf16") == 2
    assert "unknown precision 'bf16': choose fp16, int8, fp32" in one_error_line(capsys)


@pytest.mark.parametrize("precision", ["fp8", "FP4", "nvfp4"])
def test_fp8_fp4_refused_without_tensorrt(bundle_dir: Path, precision: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(str(bundle_dir), "--precision", precision) == 2
    err = one_error_line(capsys)
    assert "not supported" in err and "8.7" in err and "build fp16 or int8" in err


def test_int8_without_qdq_graphs(bundle_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(str(bundle_dir), "--precision", "int8") == 2
    assert "explicit Q/DQ graphs (manifest 'graphs_int8')" in one_error_line(capsys)


def test_unknown_graph(bundle_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(str(bundle_dir), "--precision", "fp16", "--graphs", "core_step,vision") == 2
    assert "unknown graph vision: this bundle has vlm_prelude, core_step, core_step_decode, decode" in one_error_line(capsys)


def test_not_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(str(tmp_path), "--precision", "fp16") == 2
    assert "manifest.json is missing" in one_error_line(capsys)


def test_tensorrt_absent_here(bundle_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The real situation on CI: no TensorRT (at most tensorrt-stubs' empty namespace package)."""
    try:
        require_tensorrt()
    except TensorRTUnavailable:
        pass
    else:
        pytest.skip("TensorRT is installed on this machine")
    assert invoke(str(bundle_dir), "--precision", "fp16") == 2
    err = one_error_line(capsys)
    assert err.startswith("error: TensorRT is not installed: ")
    assert "on a Jetson it comes with JetPack (python3-libnvinfer" in err
    assert not (bundle_dir / "engines").exists() or not any((bundle_dir / "engines").iterdir())


@pytest.mark.parametrize(
    "module, why",
    [
        (None, "import tensorrt failed"),  # None in sys.modules makes the import raise ImportError
        (types.ModuleType("tensorrt"), "only its type stubs"),  # what tensorrt-stubs alone leaves behind
    ],
)
def test_tensorrt_absent_simulated(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], module: object, why: str
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    with pytest.raises(TensorRTUnavailable, match=why):
        require_tensorrt()
    assert invoke(str(bundle_dir), "--precision", "fp16") == 2
    err = one_error_line(capsys)
    assert err.startswith("error: TensorRT is not installed: ") and why in err


def test_cuda_python_absent_after_tensorrt(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kit: types.SimpleNamespace
) -> None:
    """A fake tensorrt that only passes the import check: the build then needs cuda-python to identify the GPU."""
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.3.0.30"  # type: ignore[attr-defined]
    fake.Builder = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    kit.install_fake_cuda(monkeypatch, None)
    assert invoke(str(bundle_dir), "--precision", "fp16") == 2
    assert "cuda-python is not installed" in one_error_line(capsys)


def test_tensorrt_8_refused_before_building(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kit: types.SimpleNamespace
) -> None:
    kit.fake_gpu_modules(monkeypatch, trt_version="8.6.2.3")
    assert invoke(str(bundle_dir), "--precision", "fp16") == 2
    err = one_error_line(capsys)
    assert "TensorRT 8.6.2.3 is too old" in err and "JetPack 6.1 or newer" in err
    assert not (bundle_dir / "engines").exists() or not any((bundle_dir / "engines").iterdir())


def test_partial_rebuild_for_another_target_is_refused_before_building(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kit: types.SimpleNamespace
) -> None:
    kit.add_engines(bundle_dir, "fp16", {**kit.ORIN, "tensorrt_version": "10.2.0.19"})
    kit.fake_gpu_modules(monkeypatch)
    assert invoke(str(bundle_dir), "--precision", "fp16", "--graphs", "decode") == 2
    err = one_error_line(capsys)
    assert "built with TensorRT 10.2.0.19" in err and "omit --graphs" in err


def test_missing_graph_file(bundle_dir: Path) -> None:
    (bundle_dir / "decode.onnx").unlink()
    bundle = Bundle.open(bundle_dir, verify_hashes=False)
    with pytest.raises(BuildError, match="graph file decode.onnx .decode. is missing"):
        graph_sources(bundle, "fp16")


def test_graph_sources_int8_prefers_qdq_graphs(tmp_path: Path, kit: types.SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    root = kit.write_bundle(tmp_path / "b")
    (root / "core_step.int8.onnx").write_bytes(b"placeholder")
    kit.edit_manifest(root, lambda m: m.update(graphs_int8={"core_step": {"file": "core_step.int8.onnx", "strongly_typed": True}}),
                      ["core_step.int8.onnx"])
    bundle = Bundle.open(root, verify_hashes=False)
    sources = {s.name: s for s in graph_sources(bundle, "int8")}
    assert sources["core_step"] == GraphSource("core_step", "core_step.int8.onnx", True, True)
    assert sources["decode"] == GraphSource("decode", "decode.onnx", False, False)
    assert "decode has no Q/DQ graph" in caplog.text
    assert [s.name for s in graph_sources(bundle, "fp16", ["decode", "core_step", "decode"])] == ["decode", "core_step"]


def calibrated_bundle(tmp_path: Path, kit: types.SimpleNamespace, graphs_fp16: dict[str, object]) -> Bundle:
    root = kit.write_bundle(tmp_path / "b")
    for entry in graphs_fp16.values():
        (root / entry["file"]).parent.mkdir(parents=True, exist_ok=True)  # type: ignore[index]
        (root / entry["file"]).write_bytes(b"placeholder")  # type: ignore[index]
    kit.edit_manifest(root, lambda m: m.update(graphs_fp16=graphs_fp16), [e["file"] for e in graphs_fp16.values()])  # type: ignore[index]
    return Bundle.open(root, verify_hashes=False)


def test_fp16_builds_from_the_calibrated_fp16_graphs(tmp_path: Path, kit: types.SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    half = {g: {"file": f"calibration/run/fp16/{g}.onnx", "strongly_typed": True} for g in ("vlm_prelude", "core_step", "core_step_decode")}
    bundle = calibrated_bundle(tmp_path, kit, half)
    sources = {s.name: s for s in graph_sources(bundle, "fp16")}
    assert sources["core_step_decode"] == GraphSource("core_step_decode", "calibration/run/fp16/core_step_decode.onnx", False, True)
    assert sources["decode"] == GraphSource("decode", "decode.onnx", False, False)  # left in FP32 by the calibration
    assert "decode has no calibrated FP16 graph" in caplog.text
    # fp32 engines still come from the exported graphs
    assert {s.file for s in graph_sources(bundle, "fp32")} == {f"{g}.onnx" for g in bundle.graphs}


def test_fp16_without_calibration_builds_the_exported_graphs(bundle_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    sources = graph_sources(Bundle.open(bundle_dir), "fp16")
    assert [(s.file, s.strongly_typed) for s in sources] == [(f"{g}.onnx", False) for g in Bundle.open(bundle_dir).graphs]
    assert "calibrated" not in caplog.text


def test_damaged_engines_do_not_block_a_rebuild(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    kit.add_engines(bundle_dir, "fp16")
    (bundle_dir / "engines/fp16/decode.plan").write_bytes(b"half-written by an interrupted build")
    assert open_for_build(bundle_dir).root == bundle_dir
    (bundle_dir / "core_step.onnx").write_bytes(b"edited graph")
    with pytest.raises(BundleError, match="core_step.onnx does not match its SHA-256"):
        open_for_build(bundle_dir)


GIB = 1 << 30
VLM_FLOATS = 1_225_000_000  # the full VLM+Prelude graph: about 4.9 GB of FP32 weights
ORIN_NANO_8GB = "MemTotal:        7620000 kB\nMemAvailable:    6291456 kB\nSwapTotal:     {swap} kB\nSwapFree:      {swap} kB\n"


@pytest.fixture
def vlm_sized(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundle's vlm_prelude graph weighs what the real one does; the other graphs stay as written."""
    from rdvla.runtime.backends.tensorrt import build_memory
    from rdvla.runtime.graph_check.onnx_reader import FLOAT

    real = build_memory.stored_elements
    monkeypatch.setattr(build_memory, "stored_elements",
                        lambda path: {FLOAT: VLM_FLOATS} if Path(path).name == "vlm_prelude.onnx" else real(path))


def on_a_board(monkeypatch: pytest.MonkeyPatch, swap_kb: int) -> None:
    from rdvla.runtime.backends.tensorrt import builder
    from rdvla.runtime.backends.tensorrt.build_memory import parse_meminfo

    monkeypatch.setattr(builder, "read_memory", lambda: parse_meminfo(ORIN_NANO_8GB.format(swap=swap_kb)))


def test_a_build_too_big_for_the_board_is_refused_with_the_ways_out(
    bundle_dir: Path, vlm_sized: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    on_a_board(monkeypatch, swap_kb=0)
    assert invoke(str(bundle_dir), "--precision", "fp16") == 2
    err = one_error_line(capsys)
    # W + 2E: 4.56 GiB of FP32 weights held by the parser, and an FP16 engine of 2.28 GiB twice.
    assert ("not enough memory to build: the fp16 build of vlm_prelude needs about 9.1 GiB at its peak (4.6 GiB of weights "
            "in vlm_prelude.onnx held by the ONNX parser + 2 x 2.3 GiB of engine); this machine has 6.0 GiB available and "
            "0.0 GiB of free swap") in err
    assert f"`rdvla calibrate {bundle_dir} --precision fp16` first" in err and "add a swap file" in err and "--workspace 1024" in err
    assert not (bundle_dir / "engines").exists()


def test_a_build_that_fits_only_with_swap_warns_and_goes_on(
    bundle_dir: Path, vlm_sized: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture
) -> None:
    on_a_board(monkeypatch, swap_kb=8 * 1024 * 1024)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # the build goes on to TensorRT, absent here
    assert invoke(str(bundle_dir), "--precision", "fp16", "--workspace", "512") == 2
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "the fp16 build of vlm_prelude needs about 9.6 GiB" in warning and "+ 0.5 GiB of --workspace" in warning
    assert "8.0 GiB of free swap: the build will swap and take much longer" in warning
    assert "close other programs, or a smaller --workspace" in warning and "swap file" not in warning
    assert one_error_line(capsys).startswith("error: TensorRT is not installed")


def test_an_fp32_build_too_big_is_told_to_build_fp16(
    bundle_dir: Path, vlm_sized: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    on_a_board(monkeypatch, swap_kb=0)
    assert invoke(str(bundle_dir), "--precision", "fp32") == 2
    err = one_error_line(capsys)
    assert "needs about 13.7 GiB" in err and "build fp16 instead" in err and "rdvla calibrate" not in err
