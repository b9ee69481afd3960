"""What the tools publish is readable as a normal `mkdir` or `open` would make it: a bundle copied to the robot
under another user must not fail on a 0700 folder or a 0600 manifest."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rdvla.runtime.outputs import publish_directory, scratch_directory


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
