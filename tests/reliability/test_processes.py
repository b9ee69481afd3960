"""Cases that need real processes: two runs writing one step log at once, and Ctrl+C / SIGTERM during an export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rdvla.runtime.control.records import RunSummary, StartRecord
from rdvla.runtime.control.step_log import read_log

# A hang guard for each test's own work (func_only): the session's tiny bundle, built by whichever test needs
# it first, takes minutes on a shared 2-core machine and is no test's hang.
pytestmark = pytest.mark.timeout(180, func_only=True)

RDVLA = str(Path(sys.executable).with_name("rdvla"))
# Real-time runs on a shared machine overrun; what these tests check is who writes the log, so a run holds
# through its faults instead of halting on ten in a row.
HOLD_THROUGH_FAULTS = ("--max-faults", "1000")


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from rdvla.devices.cameras.realsense.sdk import recording_extension, sdk_version
    from rdvla.devices.cameras.realsense.synthetic import record_scene

    folder = tmp_path_factory.mktemp("recordings")
    files = [folder / f"{role}{recording_extension(sdk_version())}" for role in ("third_person", "wrist")]
    for path in files:
        assert record_scene(path, path.stem, 200) == 200
    return files


def test_two_runs_never_share_a_step_log(tiny_bundle: Path, recordings: list[Path], tmp_path: Path) -> None:
    """Started together on one --log: one runs, the other is refused in one line, and the log holds one whole run."""
    log = tmp_path / "same.jsonl"
    argv = [RDVLA, "run", str(tiny_bundle), "--recording", str(recordings[0]), "--recording", str(recordings[1]),
            "--robot", "sim", "--instruction", "open the drawer", "--steps", "50", "--rate", "10", "--mode", "sync",
            "--no-status", "--log", str(log), *HOLD_THROUGH_FAULTS]
    runs = [subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=150), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    _, _, refused = next(r for r in results if r[0] == 2)
    assert "Traceback" not in refused and refused.strip().splitlines()[-1].startswith("error: --log")
    records = read_log(log)
    assert sum(isinstance(r, StartRecord) for r in records) == 1 and isinstance(records[-1], RunSummary)
    assert records[-1].steps == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.jsonl"]  # no lock file left behind


def test_a_second_run_is_told_who_holds_the_log(tiny_bundle: Path, recordings: list[Path], tmp_path: Path) -> None:
    """Even with --overwrite, a log another run is writing is refused, naming that run's PID."""
    log = tmp_path / "steps.jsonl"
    base = [RDVLA, "run", str(tiny_bundle), "--recording", str(recordings[0]), "--recording", str(recordings[1]),
            "--robot", "sim", "--instruction", "open the drawer", "--rate", "10", "--mode", "sync", "--no-status",
            "--log", str(log), "--overwrite", *HOLD_THROUGH_FAULTS]
    # Stopped with Ctrl+C below: started with SIGINT at its default even if pytest runs with it ignored (`&`, nohup).
    first = subprocess.Popen([*base, "--steps", "150"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and log.stat().st_size > 0):  # the first run has started writing
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.1)
        second = subprocess.run([*base, "--steps", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"PID {first.pid}" in second.stderr.strip().splitlines()[-1]
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    records = read_log(log)
    assert sum(isinstance(r, StartRecord) for r in records) == 1  # the first run's log, whole


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_export_leaves_nothing_behind(tiny_checkpoint: Path, tmp_path: Path, signum: int) -> None:
    """Interrupted while it works: exit 130, no bundle, no scratch folder, the user's files around it untouched."""
    mine = {tmp_path / "bundle.partial": b"the user's", tmp_path / "bundle.tmp": b"also the user's"}
    for path, data in mine.items():
        path.write_bytes(data)
    # Ctrl+C as a terminal sends it: to a process that handles it, even when pytest runs as a background job
    # (whose children inherit SIGINT ignored, and keep it so, as `nohup` and `&` intend).
    export = subprocess.Popen([RDVLA, "export", str(tiny_checkpoint), "--out", str(tmp_path / "bundle"), "--cases", "1"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 90
    while not list(tmp_path.glob(".bundle.rdvla-*/golden")):  # working in its scratch folder
        assert export.poll() is None and time.monotonic() < deadline, export.communicate()
        time.sleep(0.05)
    time.sleep(1.0)
    os.kill(export.pid, signum)
    _, err = export.communicate(timeout=90)
    assert export.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted"
    assert sorted(tmp_path.iterdir()) == sorted(mine)
    assert all(path.read_bytes() == data for path, data in mine.items())
