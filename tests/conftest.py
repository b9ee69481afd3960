"""Shared fixtures: a tiny checkpoint in the released layout, written once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


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


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the bundle a test may damage."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
