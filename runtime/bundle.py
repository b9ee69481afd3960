"""The bundle: the only thing that passes from the workstation to the robot (manifest.json + files).

`Bundle.open(dir)` reads and validates `manifest.json` (schema, required fields, every file's
SHA-256) and refuses, with one clear message, anything it cannot serve.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rdvla.runtime.normalization import NormStats
from rdvla.runtime.preprocess import PreprocessConfig

SCHEMA = "rdvla.bundle"
SCHEMA_VERSION = 2  # 2: the recurrent tensors are named latent / next_latent
MANIFEST = "manifest.json"


class BundleError(ValueError):
    """A bundle this runtime cannot serve."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


DYNAMIC = -1  # how TensorRT reports a dimension it only knows once the input shapes are set


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a graph or an engine: the one description used by the manifest, the backends and the builder.

    A dynamic dimension is a name (the manifest's graphs: "prompt_len") or -1 (an engine's I/O as
    TensorRT reports it). `mode` is "input" or "output" where one list holds both (engine I/O).
    """

    name: str
    dtype: str  # numpy dtype name: float32, int64, float16
    shape: tuple[int | str, ...]
    mode: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TensorSpec":
        return cls(data["name"], data["dtype"], tuple(data["shape"]), data.get("mode"))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.mode is not None:
            data["mode"] = self.mode
        return data

    @property
    def is_dynamic(self) -> bool:
        return any(isinstance(d, str) or d == DYNAMIC for d in self.shape)

    def resolve(self, dims: Mapping[str, int]) -> "TensorSpec":
        """This tensor with each named dimension replaced from `dims` (a KeyError names a missing one)."""
        return replace(self, shape=tuple(dims[d] if isinstance(d, str) else int(d) for d in self.shape))

    @property
    def nbytes(self) -> int:
        if self.is_dynamic:
            raise ValueError(f"{self.name} has a dynamic shape {list(self.shape)}: resolve it first")
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class GraphSpec:
    name: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> "GraphSpec":
        return cls(
            name,
            data["file"],
            tuple(TensorSpec.from_json(t) for t in data["inputs"]),
            tuple(TensorSpec.from_json(t) for t in data["outputs"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "inputs": [t.to_json() for t in self.inputs], "outputs": [t.to_json() for t in self.outputs]}


@dataclass(frozen=True)
class ModelDims:
    hidden_dim: int
    num_heads: int
    chunk_len: int
    action_dim: int
    proprio_dim: int
    num_images: int
    context_tokens: int  # 64 latents + proprio + 512 vision = 577
    prelude_vlm_layers: tuple[int, ...]
    recurrent_vlm_layers: tuple[int, ...]
    coda_vlm_layers: tuple[int, ...]
    init_sigma: float  # |gamma_init| * init_std: the truncated-normal S0 scale

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (1, self.chunk_len, self.hidden_dim)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ModelDims":
        layers = {k: tuple(data[k]) for k in ("prelude_vlm_layers", "recurrent_vlm_layers", "coda_vlm_layers")}
        scalars = {k: v for k, v in data.items() if k not in layers}
        return cls(**scalars, **layers)


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict[str, Any]
    dims: ModelDims
    graphs: dict[str, GraphSpec]
    prompt_len: tuple[int, int]
    preprocess: PreprocessConfig
    norm_stats: NormStats

    @classmethod
    def open(cls, root: Path, verify_hashes: bool = True) -> "Bundle":
        root = Path(root)
        path = root / MANIFEST
        if not root.is_dir():
            raise BundleError(f"bundle directory not found: {root}")
        if not path.is_file():
            raise BundleError(f"{root} is not a bundle: {MANIFEST} is missing")
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise BundleError(f"{path}: not valid JSON ({exc})") from None
        schema, version = manifest.get("schema"), manifest.get("schema_version")
        if schema != SCHEMA:
            raise BundleError(f"{path}: unknown schema {schema!r} (this runtime reads {SCHEMA!r})")
        if version != SCHEMA_VERSION:
            raise BundleError(
                f"{path}: schema version {version!r} is not supported by this runtime (it reads version {SCHEMA_VERSION}); "
                "re-export the bundle with a matching rdvla"
            )
        try:
            dims = ModelDims.from_json(manifest["model"])
            graphs = {name: GraphSpec.from_json(name, g) for name, g in manifest["graphs"].items()}
            low, high = manifest["prompt"]["min_len"], manifest["prompt"]["max_len"]
            preprocess = PreprocessConfig.from_manifest(manifest["preprocess"])
            stats = manifest["normalization"]
            norm = NormStats.from_dataset_statistics({stats["key"]: stats}, stats["key"])
        except (KeyError, TypeError) as exc:
            raise BundleError(f"{path}: malformed manifest ({type(exc).__name__}: {exc})") from None
        bundle = cls(root, manifest, dims, graphs, (int(low), int(high)), preprocess, norm)
        if verify_hashes:
            bundle.verify_files()
        return bundle

    def verify_files(self, names: list[str] | None = None) -> None:
        """Check the SHA-256 of every listed file (or of `names`) against the manifest."""
        files: dict[str, str] = self.manifest.get("files", {})
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

    def graph(self, name: str) -> GraphSpec:
        if name not in self.graphs:
            raise BundleError(f"{self.root}: graph {name!r} missing from {MANIFEST}")
        return self.graphs[name]

    def check_prompt(self, input_ids: np.ndarray) -> None:
        p = int(input_ids.shape[-1])
        low, high = self.prompt_len
        if not low <= p <= high:
            raise BundleError(
                f"the prompt is {p} tokens; this bundle was exported for {low}..{high} "
                "(re-export with --prompt-len MIN:MAX to widen the range)"
            )

    @property
    def halting_defaults(self) -> dict[str, Any]:
        return dict(self.manifest.get("halting", {}))
