"""scripts/setup_jetson.sh's decisions, checked without a Jetson: the script sourced (nothing runs then) and its
functions called with a fake /proc/meminfo, nproc, Python and CMake cache."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "setup_jetson.sh"
GIB_KB = 1024 * 1024


def meminfo(total_kb: int, available_kb: int, swap_kb: int = 0) -> str:
    return (f"MemTotal:       {total_kb} kB\nMemFree:          100000 kB\nMemAvailable:   {available_kb} kB\n"
            f"SwapTotal:      {swap_kb} kB\nSwapFree:       {swap_kb} kB\n")


def executable(path: Path, text: str) -> Path:
    path.write_text("#!/usr/bin/env bash\n" + text)
    path.chmod(0o755)
    return path


def source_and_run(tmp_path: Path, command: str, meminfo_text: str = "", cores: int = 6) -> subprocess.CompletedProcess[str]:
    """`command` in a bash that sourced the script, with /proc/meminfo and nproc faked."""
    fakes = tmp_path / "bin"
    fakes.mkdir(exist_ok=True)
    executable(fakes / "nproc", f"echo {cores}\n")
    (tmp_path / "meminfo").write_text(meminfo_text)
    env = {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}", "MEMINFO": str(tmp_path / "meminfo")}
    return subprocess.run(["bash", "-c", f'source "{SCRIPT}"; {command}'], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=60)


def test_sourcing_the_script_runs_nothing(tmp_path: Path) -> None:
    result = source_and_run(tmp_path, "echo sourced")
    assert (result.returncode, result.stdout, result.stderr) == (0, "sourced\n", "")


@pytest.mark.parametrize("available_kb, cores, jobs", [
    (6 * GIB_KB, 6, 3),  # an Orin Nano 8 GB: 3 jobs, not the 5 of cores - 1
    (GIB_KB, 6, 1),  # at least one
    (60 * GIB_KB, 12, 12),  # an AGX Orin 64 GB: no more than the cores
])
def test_jobs_follow_the_available_memory(tmp_path: Path, available_kb: int, cores: int, jobs: int) -> None:
    result = source_and_run(tmp_path, "jobs_from_memory", meminfo(8 * GIB_KB, available_kb), cores)
    assert result.returncode == 0 and result.stdout == f"{jobs}\n", result.stderr


@pytest.mark.parametrize("total_kb, swap_kb, short", [
    (7_620_000, 0, True),  # an 8 GB board without swap
    (7_620_000, 8 * GIB_KB + 500_000, False),  # ... with an 8 GB swap file
    (64_335_836, 0, False),
])
def test_memory_is_short_on_8_gb_boards_without_swap(tmp_path: Path, total_kb: int, swap_kb: int, short: bool) -> None:
    result = source_and_run(tmp_path, "memory_is_short", meminfo(total_kb, total_kb // 2, swap_kb))
    assert result.returncode == (0 if short else 1)


def test_swap_is_offered_and_only_described_without_a_terminal(tmp_path: Path) -> None:
    fakes = tmp_path / "bin"
    fakes.mkdir()
    record = tmp_path / "sudo-calls"
    executable(fakes / "sudo", f'echo "$*" >> "{record}"\n')
    result = source_and_run(tmp_path, "offer_swap 8", meminfo(7_620_000, 6 * GIB_KB))
    assert result.returncode == 0 and "memory is short (7 GiB and 0 GiB of swap): a 8 GB swap file" in result.stdout
    assert "sudo fallocate -l 8G /swapfile && sudo chmod 600 /swapfile && sudo mkswap /swapfile && sudo swapon /swapfile" in result.stderr
    assert not record.exists()  # nothing done as root without a yes


def fake_python(tmp_path: Path, location: str | None) -> Path:
    """A Python whose `-m pip show pyrealsense2` reports a wheel at `location` (None: not installed)."""
    show = (f'printf "Name: pyrealsense2\\nVersion: 2.56.5.9235\\nLocation: {location}\\nRequires: \\n"; exit 0\n'
            if location is not None else 'echo "WARNING: Package(s) not found: pyrealsense2" >&2; exit 1\n')
    return executable(tmp_path / "python", f'if [[ "$*" == "-m pip show pyrealsense2" ]]; then {show}fi\nexit 2\n')


def test_a_pip_wheel_inside_the_venv_is_found_as_shadowing_the_rsusb_build(tmp_path: Path) -> None:
    venv = tmp_path / ".venv"
    python = fake_python(tmp_path, f"{venv}/lib/python3.10/site-packages")
    result = source_and_run(tmp_path, f'venv_pyrealsense2_wheel "{python}" "{venv}"')
    assert result.returncode == 0 and result.stdout == f"2.56.5.9235 {venv}/lib/python3.10/site-packages\n"


@pytest.mark.parametrize("location", ["/usr/lib/python3/dist-packages", None])
def test_the_rsusb_build_or_no_pyrealsense2_is_not_shadowing(tmp_path: Path, location: str | None) -> None:
    """The build's bindings live in a system site directory, which pip lists only when a wheel put them there."""
    python = fake_python(tmp_path, location)
    result = source_and_run(tmp_path, f'venv_pyrealsense2_wheel "{python}" "{tmp_path}/.venv"')
    assert result.returncode == 1 and result.stdout == ""


def test_the_bindings_are_looked_for_where_cmake_installs_them(tmp_path: Path) -> None:
    build = tmp_path / "build"
    build.mkdir()
    (build / "CMakeCache.txt").write_text(
        "Python_EXECUTABLE:FILEPATH=/usr/bin/python3\n"
        "PYTHON_INSTALL_DIR:PATH=/usr/lib/python3/dist-packages/pyrealsense2\n"
        "//Installation directory for Python bindings\n")
    result = source_and_run(tmp_path, f'bindings_site_dir "{build}"')
    assert result.returncode == 0 and result.stdout == "/usr/lib/python3/dist-packages\n"
    (build / "CMakeCache.txt").write_text("BUILD_PYTHON_BINDINGS:BOOL=OFF\n")
    assert source_and_run(tmp_path, f'bindings_site_dir "{build}"').returncode == 1


def test_every_pip_install_keeps_to_the_constraints_file() -> None:
    text = SCRIPT.read_text()
    installs = [line.strip() for line in text.splitlines() if "-m pip install" in line and not line.lstrip().startswith("#")]
    assert installs == ['pip_install() { "$py" -m pip install -q -c "$constraints" "$@"; }']
    constraints = (SCRIPT.parent / "jetson-constraints.txt").read_text()
    assert "numpy>=1.24,<2" in constraints.splitlines()
