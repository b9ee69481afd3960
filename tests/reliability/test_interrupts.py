"""A Ctrl+C or SIGTERM that a C extension swallows (torch clears errors raised in its callbacks) still stops
the command: nothing is published after it, and the CLI reports "interrupted" with exit 130."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Iterator

import pytest

from rdvla import cli
from rdvla.cli import checkpoint
from rdvla.runtime import interrupts
from rdvla.runtime.outputs import atomic_write, publish_directory, scratch_directory


@pytest.fixture(autouse=True)
def signals_as_an_interactive_python_has_them() -> Iterator[None]:
    """SIGINT raising KeyboardInterrupt and SIGTERM at its default, whatever pytest started with: a shell starts a
    background job (`cmd &`) and nohup start a command with SIGINT ignored, which `remembered()` rightly keeps."""
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
                signal.SIGTERM: signal.signal(signal.SIGTERM, signal.SIG_DFL)}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set outside Python


def _swallowed(signum: int) -> None:
    """What a library that clears a pending Python error does to the KeyboardInterrupt of our handler."""
    try:
        signal.raise_signal(signum)  # the handler runs before this call returns
    except KeyboardInterrupt:
        pass


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_nothing_is_published_after_a_swallowed_signal(tmp_path: Path, signum: int) -> None:
    destination = tmp_path / "bundle"
    with interrupts.remembered():
        with pytest.raises(KeyboardInterrupt), scratch_directory(destination) as work:
            (work / "manifest.json").write_text("{}")
            _swallowed(signum)
            assert interrupts.received()
            publish_directory(work, destination)
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor the scratch folder


def test_no_file_is_replaced_after_a_swallowed_signal(tmp_path: Path) -> None:
    target = tmp_path / "pixel_values.npy"
    target.write_bytes(b"the user's")
    with interrupts.remembered():
        with pytest.raises(KeyboardInterrupt), atomic_write(target) as temporary:
            temporary.write_bytes(b"new")
            _swallowed(signal.SIGTERM)
    assert sorted(tmp_path.iterdir()) == [target] and target.read_bytes() == b"the user's"


def test_each_command_starts_with_no_signal_remembered_and_the_handlers_are_put_back(tmp_path: Path) -> None:
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with interrupts.remembered():
        _swallowed(signal.SIGINT)
    with interrupts.remembered():
        assert not interrupts.received()
        with scratch_directory(tmp_path / "out") as work:
            publish_directory(work, tmp_path / "out")
    assert (tmp_path / "out").is_dir()
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_a_signal_the_parent_ignores_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts.remembered():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def _finishes_anyway(args: argparse.Namespace) -> int:
    _swallowed(signal.SIGTERM)
    return 0


def _fails_otherwise(args: argparse.Namespace) -> int:
    _swallowed(signal.SIGINT)
    raise ValueError("could not determine the shape of object type 'torch.storage.UntypedStorage'")


@pytest.mark.parametrize("work", [_finishes_anyway, _fails_otherwise])
def test_the_cli_reports_a_swallowed_signal_as_interrupted(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path,
                                                          work) -> None:
    monkeypatch.setattr(checkpoint, "run", work)
    assert cli.main(["init-checkpoint", "--preset", "tiny", "--out", str(tmp_path / "ckpt")]) == cli.INTERRUPTED
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted"]


def test_a_command_without_a_signal_keeps_its_own_outcome(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setattr(checkpoint, "run", lambda args: 3)
    assert cli.main(["init-checkpoint", "--preset", "tiny", "--out", str(tmp_path / "ckpt")]) == 3
    monkeypatch.setattr(checkpoint, "run", _fails_without_a_signal)
    assert cli.main(["init-checkpoint", "--preset", "tiny", "--out", str(tmp_path / "ckpt")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: bad input"


def _fails_without_a_signal(args: argparse.Namespace) -> int:
    raise ValueError("bad input")


def test_a_signal_between_the_manifest_and_its_digest_waits_for_both(bundle_copy: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl+C after the manifest's rename but before its digest's would leave a bundle no command opens."""
    from dataclasses import replace

    from rdvla.runtime import outputs
    from rdvla.runtime.manifest import read_manifest

    manifest = read_manifest(bundle_copy)
    real_replace = outputs.os.replace

    def replace_then_interrupt(source: str, target: str) -> None:
        real_replace(source, target)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(outputs.os, "replace", replace_then_interrupt)
    with interrupts.remembered():
        with pytest.raises(KeyboardInterrupt):
            replace(manifest, created="2026-12-01T00:00:00+00:00").save(bundle_copy)
        assert interrupts.received()
    assert not interrupts.received()  # forgotten with the command: a later library call publishes as usual
    assert read_manifest(bundle_copy).created == "2026-12-01T00:00:00+00:00"  # digest and manifest agree
    assert not [p for p in bundle_copy.iterdir() if p.name.startswith(".rdvla-")]


def test_held_hands_a_signal_to_python_s_own_handler_outside_the_cli() -> None:
    with pytest.raises(KeyboardInterrupt):
        with interrupts.held():
            signal.raise_signal(signal.SIGINT)
            finished = True
    assert finished and signal.getsignal(signal.SIGINT) is signal.default_int_handler
