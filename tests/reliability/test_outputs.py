"""What the tools publish is whole, and readable as a normal `mkdir` or `open` would make it: a bundle copied to
the robot under another user must not fail on a 0700 folder or a 0600 manifest."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rdvla.runtime.outputs import atomic_write, publish_directory, scratch_directory


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_published_folders_and_manifests_follow_the_umask(tmp_path: Path, bundles) -> None:
    previous = os.umask(0o022)
    try:
        destination = tmp_path / "out"
        with scratch_directory(destination) as work:
            assert work.name.startswith(".out.rdvla-")
            publish_directory(work, destination)
        assert _mode(destination) == 0o755
        graph = {"file": "g.onnx", "inputs": [{"name": "x", "dtype": "float32", "shape": [1]}],
                 "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]}
        model = {"hidden_dim": 8, "num_heads": 2, "chunk_len": 8, "action_dim": 7, "proprio_dim": 8, "num_images": 2,
                 "context_tokens": 4, "prelude_vlm_layers": [0], "recurrent_vlm_layers": [0], "coda_vlm_layers": [0],
                 "init_sigma": 0.5}
        root = bundles.write(tmp_path / "bundle", {"g": graph}, model, (2, 8))
        assert _mode(root / "manifest.json") == 0o644 and _mode(root / "manifest.sha256") == 0o644
    finally:
        os.umask(previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "out"]  # no scratch folder left


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "profile.json"
    target.write_text("the old report")
    with pytest.raises(RuntimeError), atomic_write(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.endswith("profile.json") and temporary.name.startswith(".")
        temporary.write_text("half of the new")
        raise RuntimeError("the disk filled up")
    assert target.read_text() == "the old report" and sorted(tmp_path.iterdir()) == [target]
    previous = os.umask(0o022)
    try:
        with atomic_write(target) as temporary:
            temporary.write_text("the new report")
    finally:
        os.umask(previous)
    assert target.read_text() == "the new report" and sorted(tmp_path.iterdir()) == [target]
    assert _mode(target) == 0o644
