"""`rdvla cameras`, as the user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rdvla.cli import main
from rdvla.devices.cameras.realsense import CameraInfo


pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["cameras", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_lists_cameras_or_says_there_are_none(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import rdvla.devices.cameras.realsense as realsense
    code, out, err = cli(capsys)  # the real SDK: the CI machine has no camera, a dev machine may have some
    assert code == 0 and err == ""
    assert "No RealSense camera found" in out or out.startswith("SERIAL")

    monkeypatch.setattr(realsense, "find_cameras", lambda: [])
    code, out, _ = cli(capsys)
    assert code == 0 and out.startswith("No RealSense camera found")

    found = [
        CameraInfo("135122070001", "Intel RealSense D435", "5.16.0.1", "3.2", "D400"),
        CameraInfo("135122070002", "Intel RealSense D405", "5.16.0.1", "3.2", "D400"),
    ]
    monkeypatch.setattr(realsense, "find_cameras", lambda: found)
    code, out, _ = cli(capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["SERIAL", "NAME", "FIRMWARE", "USB"]
    assert lines[1].startswith("135122070001  Intel RealSense D435") and "3.2" in lines[1]
    code, out, _ = cli(capsys, "--json")
    assert json.loads(out)[1]["serial"] == "135122070002"


def test_reports_a_recording(capsys: pytest.CaptureFixture[str], episode: Path, episode_frames: int) -> None:
    code, out, err = cli(capsys, "--recording", str(episode))
    assert code == 0 and err == ""
    assert f"frames:    {episode_frames}\n" in out
    assert "color 64x48@30 rgb8: 30 frames" in out and "depth 64x48@30 z16: 30 frames" in out
    assert "duration:  1.000 s" in out
    code, out, _ = cli(capsys, "--recording", str(episode), "--json")
    assert code == 0 and json.loads(out)["frame_count"] == episode_frames


@pytest.mark.parametrize("content", [None, b"", b"SQLite format 3\x00" + b"\x00" * 500])
def test_bad_recording_is_one_line_and_non_zero(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.db3"
    if content is not None:
        path.write_bytes(content)
    code, out, err = cli(capsys, "--recording", str(path))
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_record_needs_a_serial(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, "--record", str(tmp_path / "x.db3"))
    assert code == 2 and err == "error: --record needs --serial (see `rdvla cameras` for the connected cameras)\n"
    code, _, err = cli(capsys, "--record", str(tmp_path / "x.db3"), "--serial", "999999999999", "--seconds", "1")
    assert code == 2 and err.startswith("error: no RealSense camera with serial 999999999999")


def test_help_describes_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli(capsys, "--help")
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--recording FILE" in out and "frame count" in out


def test_devices_import_without_pyrealsense2_or_torch() -> None:
    code = (
        "import sys\n"
        "sys.modules['pyrealsense2'] = None  # as if it were not installed\n"
        "import rdvla.devices, rdvla.devices.cameras, rdvla.devices.robots, rdvla.devices.config, rdvla.cli.cameras\n"
        "import rdvla.devices.robots.bridge, rdvla.devices.cameras.realsense.synthetic, rdvla.devices.cameras.realsense.recording\n"
        "assert 'torch' not in sys.modules\n"
        "from rdvla.devices.cameras import RealSenseCameraConfig, RealSenseUnavailableError, open_realsense\n"
        "try:\n"
        "    open_realsense(RealSenseCameraConfig(serial='1')).connect()\n"
        "except RealSenseUnavailableError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pyrealsense2 is not installed: pip install 'rdvla[realsense]'")
