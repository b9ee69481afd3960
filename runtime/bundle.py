"""The bundle: the only thing that passes from the workstation to the robot (a folder: manifest + files).

`Bundle.open(dir)` reads the manifest (checked against its digest, see `manifest`), checks that it
lists every file it points at, and checks every listed file's SHA-256; it refuses, in one line,
anything it cannot serve.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from rdvla.runtime.graph_check.onnx_reader import OnnxReadError, onnx_dtype_name, read_model
from rdvla.runtime.manifest import (
    MANIFEST,
    BundleError,
    GraphSpec,
    HaltingDefaults,
    Manifest,
    ModelDims,
    read_manifest,
    sha256_file,
)
from rdvla.runtime.normalization import NormStats
from rdvla.runtime.preprocess import PreprocessConfig

@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: Manifest

    @classmethod
    def open(cls, root: Path, verify_hashes: bool = True) -> "Bundle":
        bundle = cls(Path(root), read_manifest(Path(root)))
        unlisted = sorted(bundle.manifest.referenced_files() - set(bundle.manifest.files))
        if unlisted:
            raise BundleError(f"{bundle.root}: {MANIFEST} points at {', '.join(unlisted)} without listing its SHA-256 in "
                              "'files': re-export the bundle")
        if verify_hashes:
            bundle.verify_files()
            bundle.check_graph_io()
        return bundle

    def check_graph_io(self) -> None:
        """Refuse a manifest whose graph inputs and outputs (names, types, shapes) are not the graphs' own."""
        for spec in self.graphs.values():
            try:
                graph = read_model(self.path(spec.file)).graph
            except OnnxReadError as exc:
                raise BundleError(f"{self.root}: {exc}") from None
            for kind, listed, actual in (("inputs", spec.inputs, graph.inputs), ("outputs", spec.outputs, graph.outputs)):
                recorded = [(t.name, t.dtype, tuple(t.shape)) for t in listed]
                found = [(v.name, onnx_dtype_name(v.elem_type), v.shape) for v in actual]
                for ours, theirs in itertools.zip_longest(recorded, found):
                    if ours != theirs:
                        raise BundleError(f"{self.root}: {MANIFEST} describes the {kind} of {spec.file} as {_describe(ours)}, "
                                          f"the graph has {_describe(theirs)}: re-export the bundle")

    def verify_files(self, names: list[str] | None = None) -> None:
        """Check the SHA-256 of every listed file (or of `names`) against the manifest."""
        files = self.manifest.files
        for rel in names if names is not None else sorted(files):
            if rel not in files:
                raise BundleError(f"{self.root}: {rel} is not listed in {MANIFEST}")
            path = self.root / rel
            if not path.is_file():
                raise BundleError(f"{self.root}: file {rel} listed in {MANIFEST} is missing")
            if sha256_file(path) != files[rel]:
                raise BundleError(f"{self.root}: {rel} does not match its SHA-256 in {MANIFEST} (corrupted or edited)")

    def path(self, rel: str) -> Path:
        return self.root / rel

    @property
    def dims(self) -> ModelDims:
        return self.manifest.model

    @property
    def graphs(self) -> dict[str, GraphSpec]:
        return self.manifest.graphs

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.manifest.preprocess

    @property
    def norm_stats(self) -> NormStats:
        return self.manifest.normalization

    @property
    def halting_defaults(self) -> HaltingDefaults:
        return self.manifest.halting

    @property
    def prompt_len(self) -> tuple[int, int]:
        return self.manifest.prompt.min_len, self.manifest.prompt.max_len

    def calibration_report(self) -> Optional[dict[str, Any]]:
        """The accuracy report `rdvla calibrate` wrote (its file is hashed like any other), or None without one."""
        rel = self.manifest.calibration.get("report")
        if not rel:
            return None
        try:
            report = json.loads(self.path(rel).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"{self.path(rel)}: not a readable calibration report ({exc}): rerun `rdvla calibrate`") from None
        if not (isinstance(report, dict) and isinstance(report.get("summary"), list)):
            raise BundleError(f"{self.path(rel)}: not a calibration report (no summary): rerun `rdvla calibrate`")
        return report

    def graph(self, name: str) -> GraphSpec:
        if name not in self.graphs:
            raise BundleError(f"{self.root}: graph {name!r} missing from {MANIFEST}: re-export the bundle")
        return self.graphs[name]

    def check_prompt(self, input_ids: np.ndarray) -> None:
        p = int(input_ids.shape[-1])
        low, high = self.prompt_len
        if not low <= p <= high:
            raise BundleError(
                f"the prompt is {p} tokens; this bundle was exported for {low}..{high} "
                "(re-export with --prompt-len MIN:MAX to widen the range)"
            )


def _describe(tensor: Optional[tuple[str, str, tuple[Any, ...]]]) -> str:
    return "nothing" if tensor is None else f"{tensor[0]} {tensor[1]} {list(tensor[2])}"
