"""`rdvla doctor` on described Jetsons (a fake Probe: files, commands, modules) and on this machine."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import pytest

from rdvla.devices.cameras.realsense.sdk import RealSenseUnavailableError
from rdvla.runtime.doctor import CommandOutput, DiskUsage, Finding, Status, SystemProbe, diagnose

Doctor = Callable[..., tuple[int, Any]]
LINE = re.compile(r"^(OK|WARN|FAIL|SKIP) +(\S+) +\S")


def by_check(findings: list[Finding], check: str) -> list[Finding]:
    return [f for f in findings if f.check == check]


def one(findings: list[Finding], check: str) -> Finding:
    (finding,) = by_check(findings, check)
    return finding


def line_of(lines: list[str], check: str) -> str:
    (line,) = [line for line in lines if line.split()[1:2] == [check]]
    return line


def test_a_healthy_orin_is_ready(jetson: Any, kit: types.SimpleNamespace, tmp_path: Path, doctor: Doctor) -> None:
    bundle = kit.write_bundle(tmp_path / "bundle", {"fp16": kit.ORIN})
    status, lines = doctor(jetson, bundle)
    assert status == 0
    assert all(LINE.match(line) for line in lines), lines
    assert [line.split()[0] for line in lines] == ["OK"] * len(lines), "\n".join(lines)
    assert "L4T R36.4.3 (JetPack 6.2)" in line_of(lines, "jetpack")
    assert "TensorRT 10.3.0.30" in line_of(lines, "tensorrt")
    assert "CUDA runtime 12.6 (cuda-python), driver 12.6" in line_of(lines, "cuda")
    assert "Orin, SM 8.7, 16 SMs" in line_of(lines, "gpu")
    assert "power mode MAXN (nvpmodel 0)" in line_of(lines, "power")
    clocks = line_of(lines, "clocks")
    assert "CPU cluster 2 2202 MHz" in clocks and "GPU 1300 MHz" in clocks and "vic" not in clocks
    assert "EMC clock is readable by root only" in clocks
    assert "Intel RealSense D435I 234322070123, firmware 5.16.0.1, USB 3.2" in line_of(lines, "camera")
    assert f"{bundle}: opens" in line_of(lines, "bundle")
    assert "fp16: 4 engines (1.5 GiB) built for this device (TensorRT 10.3.0.30, Orin SM 8.7 with 16 SMs)" in line_of(lines, "engines")
    assert lines[-1].split()[:2] == ["OK", "summary"]


def test_tensorrt_8_on_jetpack_6_0_fails_naming_jetpack_6_1(jetson: Any, doctor: Doctor) -> None:
    jetson.files["/etc/nv_tegra_release"] = "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64\n"
    jetson.tensorrt = "8.6.2.3"
    status, lines = doctor(jetson)
    assert status == 1
    tensorrt = line_of(lines, "tensorrt")
    assert tensorrt.startswith("FAIL") and "TensorRT 8.6.2.3 is too old: rdvla needs TensorRT 10 or newer" in tensorrt
    assert "opset 18" in tensorrt and "JetPack 6.1 or newer" in tensorrt
    jetpack = line_of(lines, "jetpack")
    assert jetpack.startswith("FAIL") and "L4T R36.3.0 is JetPack 6.0" in jetpack and "JetPack 6.1 or newer" in jetpack
    assert lines[-1].startswith("FAIL") and "fix jetpack, tensorrt first" in lines[-1]


def test_tensorrt_10_passes_the_version_check(jetson: Any) -> None:
    jetson.tensorrt = "10.7.0.23"
    assert one(diagnose(jetson), "tensorrt") == Finding("tensorrt", Status.OK, "TensorRT 10.7.0.23")


@pytest.mark.parametrize(
    ("revision", "status", "expected"),
    [
        ("R36 (release), REVISION: 4.0", Status.OK, "L4T R36.4.0 (JetPack 6.1)"),
        ("R36 (release), REVISION: 4.4", Status.OK, "L4T R36.4.4 (JetPack 6.2.1)"),
        ("R36 (release), REVISION: 4.7", Status.OK, "L4T R36.4.7 (JetPack 6.2.1 or a later update)"),
        ("R38 (release), REVISION: 2.0", Status.OK, "L4T R38.2.0 (JetPack 7.0)"),
        ("R36 (release), REVISION: 2.0", Status.FAIL, "L4T R36.2.0 is JetPack 6.0 DP"),
        ("R35 (release), REVISION: 4.1", Status.FAIL, "L4T R35.4.1 is JetPack 5.x"),
        ("no release here", Status.WARN, "names no L4T release ('# no release here, GCID"),
    ],
)
def test_l4t_release_to_jetpack(jetson: Any, revision: str, status: Status, expected: str) -> None:
    jetson.files["/etc/nv_tegra_release"] = f"# {revision}, GCID: 1, BOARD: generic, EABI: aarch64\n"
    finding = one(diagnose(jetson), "jetpack")
    assert finding.status is status and expected in finding.message


def test_a_usb_2_camera_warns_with_the_fix(jetson: Any, kit: types.SimpleNamespace, doctor: Doctor) -> None:
    jetson.cameras = ("2.56.3", [kit.camera("111", usb="3.2"), kit.camera("222", usb="2.1")])
    status, lines = doctor(jetson)
    assert status == 0  # the loop runs; the camera is what degrades
    cameras = [line for line in lines if line.split()[1] == "camera"]
    assert cameras[0].startswith("OK") and "111" in cameras[0]
    assert cameras[1].startswith("WARN") and "222" in cameras[1] and "USB 2.1" in cameras[1]
    assert "plug it into a USB 3 port with a USB 3 cable" in cameras[1]
    assert "pyrealsense2 2.56.3, 2 camera(s)" in line_of(lines, "realsense")
    assert lines[-1].startswith("WARN") and "camera" in lines[-1]


def test_two_cameras_on_a_jetson_are_told_about_the_rsusb_backend(jetson: Any, kit: types.SimpleNamespace) -> None:
    jetson.cameras = ("2.58.4", [kit.camera("111")])
    assert by_check(diagnose(jetson), "multicam") == []
    jetson.cameras = ("2.58.4", [kit.camera("111"), kit.camera("222")])
    multicam = one(diagnose(jetson), "multicam")
    assert multicam.status is Status.WARN and "RSUSB backend" in multicam.message and "meant for one camera" in multicam.message
    assert "kernel backend and the L4T patch script (docs/jetson.md, 'Two cameras')" in multicam.message
    del jetson.files["/etc/nv_tegra_release"]  # a desk: its librealsense is the wheel's, not RSUSB
    assert by_check(diagnose(jetson), "multicam") == []


def test_numpy_2_beside_jetpack_s_tensorrt_warns_with_the_pin(jetson: Any) -> None:
    assert one(diagnose(jetson), "numpy") == Finding("numpy", Status.OK, "numpy 1.26.4")
    jetson.modules["numpy"] = types.SimpleNamespace(__version__="2.2.6")
    numpy = one(diagnose(jetson), "numpy")
    assert numpy.status is Status.WARN and "numpy 2.2.6 beside JetPack's TensorRT 10.3.0.30" in numpy.message
    assert "not known to work with NumPy 2" in numpy.message and "-c scripts/jetson-constraints.txt 'numpy<2'" in numpy.message
    del jetson.files["/etc/nv_tegra_release"]  # off a Jetson, TensorRT is not JetPack's build
    assert one(diagnose(jetson), "numpy").status is Status.OK


@pytest.mark.parametrize(
    ("built", "named"),
    [
        ({"sm_count": 8}, "GPU Orin with 8 SMs (this GPU: Orin with 16 SMs)"),  # Orin NX engines on an AGX Orin
        ({"gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "sm_count": 132}, "compute capability 9.0 (this GPU is 8.7)"),
        ({"tensorrt_version": "10.7.0.23"}, "TensorRT 10.7.0.23 (this device runs 10.3.0.30)"),
    ],
)
def test_engines_built_for_another_target_fail(jetson: Any, kit: types.SimpleNamespace, tmp_path: Path, doctor: Doctor,
                                               built: dict[str, Any], named: str) -> None:
    bundle = kit.write_bundle(tmp_path / "bundle", {"fp16": {**kit.ORIN, **built}, "fp32": kit.ORIN})
    status, lines = doctor(jetson, bundle)
    assert status == 1
    engines = [line for line in lines if line.split()[1] == "engines"]
    assert len(engines) == 2
    assert engines[0].startswith("FAIL") and named in engines[0]
    assert f"run `rdvla build {bundle} --precision fp16` on this device" in engines[0]
    assert engines[1].startswith("OK") and "fp32" in engines[1]


def test_unlocked_clocks_warn_naming_jetson_clocks(jetson: Any, doctor: Doctor) -> None:
    jetson.set_clocks(cpu_floor_khz=729600, gpu_floor_hz=306000000, gpu_now_hz=306000000)
    status, lines = doctor(jetson)
    assert status == 0
    clocks = line_of(lines, "clocks")
    assert clocks.startswith("WARN") and "not locked" in clocks and "run `sudo jetson_clocks`" in clocks
    assert "GPU 306-1300 MHz (now 306)" in clocks and "CPU cluster 0 730-2202 MHz" in clocks


def test_a_gpu_at_its_ceiling_under_load_is_still_unlocked(jetson: Any) -> None:
    jetson.set_clocks(gpu_floor_hz=306000000, gpu_now_hz=1300500000)  # the floor tells, not the current frequency
    clocks = one(diagnose(jetson), "clocks")
    assert clocks.status is Status.WARN and "GPU 306-1300 MHz (now 1300)" in clocks.message and "CPU" not in clocks.message


def test_emc_read_as_root(jetson: Any) -> None:
    jetson.files.update({"/sys/kernel/debug/bpmp/debug/clk/emc/rate": "2133000000\n",
                         "/sys/kernel/debug/bpmp/debug/clk/emc/max_rate": "3199000000\n"})
    clocks = one(diagnose(jetson), "clocks")
    assert clocks.status is Status.WARN and "EMC 2133 of 3199 MHz" in clocks.message and "root only" not in clocks.message
    jetson.files["/sys/kernel/debug/bpmp/debug/clk/emc/rate"] = "3199000000\n"
    clocks = one(diagnose(jetson), "clocks")
    assert clocks.status is Status.OK and "EMC 3199 MHz" in clocks.message


def test_a_capped_power_mode_warns_with_the_maxn_command(jetson: Any) -> None:
    jetson.commands[("nvpmodel", "-q")] = CommandOutput(0, "NVPM VERB: Current mode: NV Power Mode: MODE_15W\n1\n", "")
    power = one(diagnose(jetson), "power")
    assert power.status is Status.WARN
    assert "power mode MODE_15W (nvpmodel 1)" in power.message and "`sudo nvpmodel -m 0` (MAXN)" in power.message


def test_power_mode_from_nvpmodel_files_when_the_command_is_missing(jetson: Any) -> None:
    del jetson.commands[("nvpmodel", "-q")]
    jetson.files["/etc/nvpmodel.conf"] = "< POWER_MODEL ID=0 NAME=15W >\n< POWER_MODEL ID=1 NAME=25W >\n< POWER_MODEL ID=2 NAME=MAXN_SUPER >\n"
    jetson.files["/var/lib/nvpmodel/status"] = "pmode:0000 fmode:quiet\n"
    power = one(diagnose(jetson), "power")
    assert power.status is Status.WARN and "power mode 15W (nvpmodel 0)" in power.message
    assert "`sudo nvpmodel -m 2` (MAXN_SUPER)" in power.message
    jetson.files["/var/lib/nvpmodel/status"] = "pmode:0002 fmode:quiet\n"
    assert one(diagnose(jetson), "power") == Finding("power", Status.OK, "power mode MAXN_SUPER (nvpmodel 2)")
    del jetson.files["/var/lib/nvpmodel/status"]
    assert one(diagnose(jetson), "power").status is Status.WARN


def test_cuda_that_cannot_reach_the_driver(jetson: Any, kit: types.SimpleNamespace, tmp_path: Path, doctor: Doctor) -> None:
    jetson.cuda = kit.fake_cuda_runtime(error=kit.CudaError.cudaErrorInsufficientDriver)
    bundle = kit.write_bundle(tmp_path / "bundle", {"fp16": kit.ORIN})
    status, lines = doctor(jetson, bundle)
    assert status == 1
    cuda = line_of(lines, "cuda")
    assert cuda.startswith("FAIL") and "cannot reach the CUDA driver" in cuda and "cudaErrorInsufficientDriver" in cuda
    assert "video and render" in cuda
    assert line_of(lines, "gpu").startswith("SKIP")
    engines = line_of(lines, "engines")
    assert engines.startswith("SKIP") and "built for TensorRT 10.3.0.30, Orin SM 8.7" in engines


def test_missing_cuda_python_keeps_the_runtime_message(jetson: Any, kit: types.SimpleNamespace) -> None:
    from rdvla.runtime.backends.tensorrt.environment import TensorRTUnavailable

    jetson.cuda = TensorRTUnavailable("cuda-python is not installed: import cuda.bindings.runtime failed (No module named 'cuda')")
    assert one(diagnose(jetson), "cuda") == Finding("cuda", Status.FAIL, str(jetson.cuda))
    assert one(diagnose(jetson), "gpu").status is Status.SKIP


def test_realsense_absent_or_without_cameras_warns(jetson: Any) -> None:
    jetson.cameras = RealSenseUnavailableError("pyrealsense2 is not installed: pip install 'rdvla[realsense]'")
    finding = one(diagnose(jetson), "realsense")
    assert finding.status is Status.WARN and finding.message.startswith("pyrealsense2 is not installed")
    assert not by_check(diagnose(jetson), "camera")
    jetson.cameras = RuntimeError("failed to set power state")
    finding = one(diagnose(jetson), "realsense")
    assert finding.status is Status.WARN and "cannot list the cameras (failed to set power state)" in finding.message
    jetson.cameras = ("2.56.3", [])
    finding = one(diagnose(jetson), "realsense")
    assert finding.status is Status.WARN and "no RealSense camera connected" in finding.message


def test_without_the_native_extension_preprocessing_falls_back(jetson: Any) -> None:
    del jetson.modules["rdvla._native"]
    finding = one(diagnose(jetson), "native")
    assert finding.status is Status.WARN and "numpy preprocessing fallback, slower" in finding.message


def test_low_memory_and_disk_warn(jetson: Any, kit: types.SimpleNamespace, tmp_path: Path) -> None:
    jetson.files["/proc/meminfo"] = "MemTotal:        7800000 kB\nMemAvailable:     500000 kB\n"
    jetson.disk = DiskUsage(total=64_000_000_000, free=1_000_000_000)
    bundle = kit.write_bundle(tmp_path / "bundle", {"fp16": kit.ORIN})
    findings = diagnose(jetson, bundle)
    memory, disk, engines = one(findings, "memory"), one(findings, "disk"), one(findings, "engines")
    assert memory.status is Status.WARN and "only 0.5 GiB available of 7.4 GiB (the GPU shares it)" in memory.message
    assert disk.status is Status.WARN and f"only 0.9 GiB free of 59.6 GiB at {bundle}" in disk.message
    assert engines.status is Status.WARN and "1.5 GiB of engines exceed the 0.5 GiB available" in engines.message


def test_bundle_problems(jetson: Any, kit: types.SimpleNamespace, tmp_path: Path) -> None:
    missing = one(diagnose(jetson, tmp_path / "nowhere"), "bundle")
    assert missing.status is Status.FAIL and "bundle directory not found" in missing.message
    bare = kit.write_bundle(tmp_path / "bare")
    findings = diagnose(jetson, bare)
    assert one(findings, "bundle").status is Status.OK
    assert one(findings, "engines") == Finding("engines", Status.WARN, f"no TensorRT engines yet: run `rdvla build {bare} --precision fp16` on this device")
    corrupt = kit.write_bundle(tmp_path / "corrupt", {"fp16": kit.ORIN})
    (corrupt / "engines" / "fp16" / "decode.plan").write_bytes(b"changed")
    finding = one(diagnose(jetson, corrupt), "bundle")
    assert finding.status is Status.FAIL and "engines/fp16/decode.plan does not match its SHA-256" in finding.message


def test_json_output(jetson: Any, doctor: Doctor) -> None:
    jetson.tensorrt = "8.6.2.3"
    status, report = doctor(jetson, as_json=True)
    assert status == 1 and report["status"] == "FAIL"
    checks = {f["check"]: f for f in report["findings"]}
    assert checks["tensorrt"]["status"] == "FAIL" and checks["gpu"]["status"] == "OK"
    assert report["findings"][-1]["check"] == "summary"


def test_this_machine(kit: types.SimpleNamespace, tmp_path: Path) -> None:
    """The real probe, as a user runs it, where the workstation libraries cannot be imported (as on the robot):
    every line has a status, no traceback, exit status 1 exactly when a line FAILs."""
    bundle = kit.write_bundle(tmp_path / "bundle", {"fp16": kit.ORIN})
    code = ("import sys\n"
            "for name in ('torch', 'transformers', 'timm', 'onnx', 'onnxscript', 'safetensors'): sys.modules[name] = None\n"
            f"from rdvla.cli import main; sys.exit(main(['doctor', {str(bundle)!r}]))\n")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    lines = result.stdout.splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert lines and all(LINE.match(line) for line in lines), result.stdout
    failed = [line for line in lines if line.startswith("FAIL")]
    assert result.returncode == (1 if failed else 0), result.stdout
    assert line_of(lines, "bundle").startswith("OK")
    if importlib.util.find_spec("tensorrt") is None:  # the CPU tier: TensorRT cannot run here
        assert result.returncode == 1 and line_of(lines, "tensorrt").startswith("FAIL")
        assert line_of(lines, "engines").startswith("SKIP")
    if not Path("/etc/nv_tegra_release").exists():
        assert line_of(lines, "jetpack").startswith("SKIP  jetpack      not a Jetson")
        assert line_of(lines, "power").startswith("SKIP") and line_of(lines, "clocks").startswith("SKIP")
    print(f"rdvla doctor took {elapsed:.2f} s here")


def test_system_probe_reads_files_and_runs_commands(tmp_path: Path) -> None:
    probe = SystemProbe()
    (tmp_path / "a.txt").write_text("hello\n")
    assert probe.read_text(str(tmp_path / "a.txt")) == "hello\n"
    assert probe.read_text(str(tmp_path / "missing")) is None
    assert probe.read_text(str(tmp_path)) is None  # a directory
    assert probe.glob(str(tmp_path / "*.txt")) == [str(tmp_path / "a.txt")]
    assert probe.run(["sh", "-c", "echo out; echo err >&2; exit 3"]) == CommandOutput(3, "out\n", "err\n")
    assert probe.run(["rdvla-no-such-program"]) is None
    usage = probe.disk_usage(str(tmp_path))
    assert 0 < usage.free <= usage.total


def test_a_library_answering_unexpectedly_is_one_line_not_a_traceback(jetson: Any, doctor: Doctor) -> None:
    jetson.cuda = types.SimpleNamespace()  # cuda-python answering without its version functions
    jetson.cameras = ("2.56.3", [object()])  # not a camera description
    status, lines = doctor(jetson)
    assert status == 1
    assert all(LINE.match(line) for line in lines), lines
    cuda = line_of(lines, "cuda")
    assert cuda.startswith("FAIL") and "has no attribute" in cuda
    realsense = line_of(lines, "realsense")
    assert realsense.startswith("WARN") and "the check itself failed (AttributeError" in realsense


def test_profile_reports_the_conditions_the_doctor_reads(jetson: Any) -> None:
    from rdvla.runtime.doctor.jetson import measurement_conditions

    assert measurement_conditions(jetson) == {
        "l4t_release": "R36.4.3", "power_mode": "MAXN",
        "clocks": ["CPU cluster 0 2202 MHz", "CPU cluster 1 2202 MHz", "CPU cluster 2 2202 MHz", "GPU 1300 MHz"]}  # whole MHz
    del jetson.files["/etc/nv_tegra_release"]
    assert measurement_conditions(jetson) is None


def test_whether_this_board_can_build_the_bundle(jetson: Any, kit: types.SimpleNamespace, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`rdvla build`'s own estimate: a VLM graph of about 4.9 GB of FP32 weights on an 8 GB Orin, with and without swap."""
    from rdvla.runtime.backends.tensorrt import build_memory
    from rdvla.runtime.graph_check.onnx_reader import FLOAT

    bundle = kit.write_bundle(tmp_path / "bundle")
    assert one(diagnose(jetson, bundle), "build").status is Status.OK  # the small graphs on 64 GB
    monkeypatch.setattr(build_memory, "stored_elements", lambda path: {FLOAT: 1_225_000_000})
    meminfo = "MemTotal:        7620000 kB\nMemAvailable:    6291456 kB\nSwapFree:      {} kB\n"
    jetson.files["/proc/meminfo"] = meminfo.format(0)
    build = one(diagnose(jetson, bundle), "build")
    assert build.status is Status.WARN and "fp16 build of vlm_prelude needs about 9.1 GiB" in build.message
    assert "would be ended by the kernel for lack of memory" in build.message and "add a swap file" in build.message
    jetson.files["/proc/meminfo"] = meminfo.format(8 * 1024 * 1024)
    build = one(diagnose(jetson, bundle), "build")
    assert build.status is Status.WARN and "will swap and take much longer" in build.message


def test_help_and_docs_name_what_doctor_checks_cuda_python_not_pycuda(capsys: pytest.CaptureFixture[str]) -> None:
    from rdvla.cli import main

    with pytest.raises(SystemExit):
        main(["doctor", "--help"])
    help_text = capsys.readouterr().out
    assert "cuda-python" in help_text and "numpy" in help_text and "pycuda" not in help_text
    docs = Path(__file__).resolve().parents[3] / "docs"
    assert [p.name for p in docs.glob("*.md") if "pycuda" in p.read_text()] == []
