"""The bundle: the only thing that passes from the workstation to the robot (a folder: manifest + files).

`Bundle.open(dir)` reads the manifest (checked against its digest, see `manifest`), checks that it
lists every file it points at, every listed file's SHA-256 and the graphs' I/O against the files,
and that the graphs are the contract's (`contract`) at the manifest's model dimensions; it refuses, in one
line, anything it cannot serve.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from rdvla.runtime.contract import (
    ACTIONS,
    CONTRACT,
    GRAPHS,
    INJECTION,
    LATENT,
    NEXT_LATENT,
    PIXEL_VALUES,
    PREV_ACTIONS,
    PROPRIO,
    VLM_PRELUDE,
    kv_names,
)
from rdvla.runtime.graph_check.onnx_reader import OnnxReadError, graph_io
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
    # What each file was (inode, size, modification time) when its hash matched: a loader about to read a file
    # again (the TensorRT backend, an engine of hundreds of MB) re-hashes it only if it changed since.
    _hashed: dict[str, tuple[int, int, int]] = field(default_factory=dict, compare=False, repr=False)

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
        bundle.check_dims()  # reads the manifest alone, so it runs whether or not the files were hashed
        return bundle

    def check_graph_io(self) -> None:
        """Refuse a manifest whose graph inputs and outputs (names, types, shapes) are not the graphs' own."""
        for spec in self.graphs.values():
            try:
                inputs, outputs = graph_io(self.path(spec.file))
            except OnnxReadError as exc:
                raise BundleError(f"{self.root}: {exc}") from None
            for kind, listed, found in (("inputs", spec.inputs, inputs), ("outputs", spec.outputs, outputs)):
                recorded = [(t.name, t.dtype, tuple(t.shape)) for t in listed]
                for ours, theirs in itertools.zip_longest(recorded, found):
                    if ours != theirs:
                        raise BundleError(f"{self.root}: {MANIFEST} describes the {kind} of {spec.file} as {_describe(ours)}, "
                                          f"the graph has {_describe(theirs)}: re-export the bundle")

    def check_dims(self) -> None:
        """Refuse a manifest whose graphs lack a tensor of the contract or whose model dimensions do not fit the
        graphs' tensors: the backends bind the contract's tensors by name and size every buffer from the dimensions."""
        dims, side = self.dims, self.preprocess.image_size
        chunk = (1, dims.chunk_len, dims.action_dim)
        kv = (1, dims.num_heads, dims.context_tokens, dims.head_dim)
        latent_fields = "model.chunk_len, model.hidden_dim"
        context = kv_names("core", len(dims.recurrent_vlm_layers)) + kv_names("coda", len(dims.coda_vlm_layers))
        expected = {
            PIXEL_VALUES: ((1, 6 * dims.num_images, side, side), "model.num_images, preprocess.image_size"),
            PROPRIO: ((1, dims.proprio_dim), "model.proprio_dim"),
            LATENT: (dims.latent_shape, latent_fields), NEXT_LATENT: (dims.latent_shape, latent_fields),
            INJECTION: (dims.latent_shape, latent_fields),
            PREV_ACTIONS: (chunk, "model.chunk_len, model.action_dim"), ACTIONS: (chunk, "model.chunk_len, model.action_dim"),
            **{name: (kv, "model.num_heads, model.context_tokens, model.hidden_dim") for name in context},
        }
        for graph in GRAPHS:
            spec = self.graph(graph)
            needed_inputs, needed_outputs = CONTRACT[graph]
            lacking = sorted((needed_inputs - {t.name for t in spec.inputs}) | (needed_outputs - {t.name for t in spec.outputs}))
            if lacking:
                raise BundleError(f"{self.root}: graph {spec.file} ({graph}) has no {', '.join(lacking)}: it is not the "
                                  f"{graph} graph of an rdvla bundle; re-export the bundle")
            for tensor in (*spec.inputs, *spec.outputs):
                want, fields = expected.get(tensor.name, (None, ""))
                if want is not None and tensor.shape != want:
                    raise BundleError(f"{self.root}: {MANIFEST}'s {fields} ask for {tensor.name} {list(want)}, graph "
                                      f"{spec.file} has {list(tensor.shape)}: re-export the bundle")
        produced = {t.name for t in self.graph(VLM_PRELUDE).outputs}
        missing = [name for name in context if name not in produced]
        if missing:
            raise BundleError(f"{self.root}: {MANIFEST}'s model lists {len(context) // 2} core and coda layers, "
                              f"graph {self.graph(VLM_PRELUDE).file} has no {missing[0]}: re-export the bundle")

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
            self._hashed[rel] = _identity(path)

    def unchanged_since_hashed(self, rel: str) -> bool:
        """Whether `rel` is the very file `verify_files` hashed (same inode, size and modification time)."""
        return rel in self._hashed and self._hashed[rel] == _identity(self.root / rel)

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


def _describe(tensor: Optional[tuple[str, str, Optional[tuple[Any, ...]]]]) -> str:
    if tensor is None:
        return "nothing"
    name, dtype, shape = tensor
    return f"{name} {dtype} {'of unknown rank' if shape is None else list(shape)}"


def _identity(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
