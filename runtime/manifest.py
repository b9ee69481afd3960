"""manifest.json, typed: what a bundle holds, what made it, and the one way it is written.

The manifest is covered by `manifest.sha256` beside it (the SHA-256 of its bytes), and the manifest
in turn lists the SHA-256 of every other file of the bundle (`files`, required). `Bundle.open`
checks both, so an edited or half-copied bundle is refused instead of served. This protects against
accidents: an edited file, a stale copy, a transfer cut short. It does not protect against someone
who can rewrite the files, the manifest and its digest together.

Commands that add to a bundle (`rdvla calibrate`, `rdvla build`) change the manifest through
`dataclasses.replace` on the typed fields and write it with `Manifest.save`, which writes the
digest too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

import numpy as np

from rdvla.runtime.halting import AdjacentMSE, FixedIterations
from rdvla.runtime.normalization import NormStats
from rdvla.runtime.outputs import atomic_writes
from rdvla.runtime.preprocess import PreprocessConfig

SCHEMA = "rdvla.bundle"
SCHEMA_VERSION = 2  # 2: the recurrent tensors are named latent / next_latent; the manifest has a digest
MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest.sha256"
TOKENIZER_FILE = "tokenizer.json"
# What `rdvla calibrate` adds, per precision: graph -> entry (file, inputs, outputs, and how it was made).
CALIBRATED_SECTIONS = {"fp16": "graphs_fp16", "int8": "graphs_int8"}

T = TypeVar("T")


class BundleError(ValueError):
    """A bundle this runtime cannot serve (one line naming the problem and the way out)."""


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
        name, dtype, shape = data["name"], data["dtype"], data["shape"]
        if not (isinstance(name, str) and isinstance(dtype, str) and isinstance(shape, list)):
            raise ValueError(f"tensor {name!r}: name and dtype must be strings and shape a list")
        if not all(isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool) and d >= DYNAMIC) for d in shape):
            raise ValueError(f"tensor {name}: shape {shape} holds something other than sizes and dimension names")
        try:
            np.dtype(dtype)
        except TypeError:
            raise ValueError(f"tensor {name}: unknown dtype {dtype!r}") from None
        return cls(name, dtype, tuple(shape), data.get("mode"))

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
            bundle_path(data["file"]),
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

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "num_heads", "chunk_len", "action_dim", "proprio_dim", "num_images", "context_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name} must be a positive whole number, got {value!r}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"model.hidden_dim {self.hidden_dim} is not a multiple of model.num_heads {self.num_heads}")
        if not (isinstance(self.init_sigma, (int, float)) and np.isfinite(self.init_sigma) and self.init_sigma > 0):
            raise ValueError(f"model.init_sigma must be a positive number, got {self.init_sigma!r}")
        for name in ("prelude_vlm_layers", "recurrent_vlm_layers", "coda_vlm_layers"):
            if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in getattr(self, name)):
                raise ValueError(f"model.{name} must list layer indices, got {list(getattr(self, name))}")

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

    def to_json(self) -> dict[str, Any]:
        return {name: list(value) if isinstance(value, tuple) else value for name, value in self.__dict__.items()}


@dataclass(frozen=True)
class PromptSpec:
    template: str
    lowercase_task: bool
    min_len: int  # prompt lengths (tokens) the VLM graph accepts
    max_len: int

    def __post_init__(self) -> None:
        if not (isinstance(self.min_len, int) and isinstance(self.max_len, int) and 2 <= self.min_len <= self.max_len):
            raise ValueError(f"prompt.min_len/max_len must satisfy 2 <= min <= max, got {self.min_len}, {self.max_len}")
        if not isinstance(self.template, str) or not isinstance(self.lowercase_task, bool):
            raise ValueError("prompt.template must be a string and prompt.lowercase_task true or false")


@dataclass(frozen=True)
class HaltingDefaults:
    rule: str
    threshold: float
    min_iterations: int
    max_iterations: int
    fixed_iterations: int

    def __post_init__(self) -> None:
        if self.rule != "mse":  # what `Policy` runs by default
            raise ValueError(f"halting.rule must be 'mse', got {self.rule!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise ValueError(f"halting.threshold must be a number, got {self.threshold!r}")
        self.adaptive()  # a ValueError names the bad value
        FixedIterations(self.fixed_iterations)

    def adaptive(self) -> AdjacentMSE:
        """The rule a query runs when none is given: stop when consecutive actions stop changing."""
        return AdjacentMSE(self.threshold, self.min_iterations, self.max_iterations)


@dataclass(frozen=True)
class EngineEnvironment:
    """What a TensorRT engine is tied to, as recorded in `manifest["engines"][precision]` at build time."""

    tensorrt_version: str
    cuda_version: str  # of the driver, e.g. "12.6"
    gpu_name: str
    compute_capability: str  # "8.7"
    sm_count: int
    l4t_release: Optional[str] = None

    @property
    def capability(self) -> tuple[int, int]:
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> "EngineEnvironment":
        """The environment fields of an engines section's JSON."""
        try:
            return cls(
                str(section["tensorrt_version"]),
                str(section["cuda_version"]),
                str(section["gpu_name"]),
                str(section["compute_capability"]),
                int(section["sm_count"]),
                section.get("l4t_release"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"malformed engines section in {MANIFEST} ({type(exc).__name__}: {exc})") from None

    def same_target(self, other: "EngineEnvironment") -> bool:
        """Whether an engine built in one environment deserialises and runs as tuned in the other."""
        return (self.tensorrt_version, self.compute_capability, self.gpu_name, self.sm_count) == (
            other.tensorrt_version,
            other.compute_capability,
            other.gpu_name,
            other.sm_count,
        )


@dataclass(frozen=True)
class EngineRecord:
    """One built engine, as `manifest["engines"][precision]["graphs"][graph]` records it."""

    graph: str
    file: str  # bundle-relative .plan path
    sha256: str
    bytes: int
    source: str  # the graph file it was built from
    source_sha256: Optional[str]
    quantized: bool
    strongly_typed: bool
    flags: tuple[str, ...]
    pinned_fp32_layers: int  # layers the build constrained to FP32 (requests, see layer_precisions)
    build_seconds: float
    io: tuple[TensorSpec, ...]
    profile: Optional[Mapping[str, Sequence[Sequence[int]]]] = None  # input -> [min, opt, max]
    layer_precisions: Optional[Mapping[str, int]] = None  # precision -> layers, as the engine inspector reports them

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "file": self.file,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "source": self.source,
            "source_sha256": self.source_sha256,
            "quantized": self.quantized,
            "strongly_typed": self.strongly_typed,
            "flags": list(self.flags),
            "pinned_fp32_layers": self.pinned_fp32_layers,
            "build_seconds": round(self.build_seconds, 1),
            "io": [t.to_json() for t in self.io],
        }
        if self.profile:
            data["profile"] = {k: [list(s) for s in v] for k, v in self.profile.items()}
        if self.layer_precisions is not None:
            data["layer_precisions"] = dict(self.layer_precisions)
        return data

    @classmethod
    def from_json(cls, graph: str, data: dict[str, Any]) -> "EngineRecord":
        if "file" not in data:
            raise ValueError(f"the engine of {graph} names no file")
        return cls(
            graph=graph, file=bundle_path(data["file"]), sha256=str(data["sha256"]), bytes=int(data["bytes"]),
            source=str(data["source"]), source_sha256=data["source_sha256"], quantized=bool(data["quantized"]),
            strongly_typed=bool(data["strongly_typed"]), flags=tuple(data["flags"]),
            pinned_fp32_layers=int(data["pinned_fp32_layers"]), build_seconds=float(data["build_seconds"]),
            io=tuple(TensorSpec.from_json(t) for t in data["io"]), profile=data.get("profile"),
            layer_precisions=data.get("layer_precisions"),
        )


@dataclass(frozen=True)
class EngineSection:
    """`rdvla build`'s record of one precision: the target the engines are tied to, and each engine."""

    environment: EngineEnvironment
    built_at: str
    builder: dict[str, Any]  # the build's settings
    log: str  # bundle-relative build.log
    graphs: dict[str, EngineRecord]

    def to_json(self) -> dict[str, Any]:
        return {**self.environment.to_json(), "built_at": self.built_at, "builder": self.builder, "log": self.log,
                "graphs": {graph: record.to_json() for graph, record in self.graphs.items()}}

    @classmethod
    def from_json(cls, precision: str, data: dict[str, Any]) -> "EngineSection":
        graphs = data.get("graphs") or {}
        if not isinstance(graphs, dict):
            raise ValueError(f"{precision}.graphs holds {json_kind(graphs)}, expected an object")
        return cls(
            environment=EngineEnvironment.from_section(data), built_at=str(data["built_at"]), builder=dict(data["builder"]),
            log=bundle_path(data["log"]),
            graphs={graph: EngineRecord.from_json(graph, record) for graph, record in _entries(graphs, f"{precision} engine").items()},
        )


@dataclass(frozen=True)
class Manifest:
    created: str
    tools: dict[str, str]  # versions of what made the bundle
    source: dict[str, Any]  # the checkpoint: its path and its files' SHA-256
    model: ModelDims
    prompt: PromptSpec
    preprocess: PreprocessConfig
    normalization: NormStats
    halting: HaltingDefaults
    horizon: dict[str, Any]
    graphs: dict[str, GraphSpec]  # the FP32 graphs `rdvla export` wrote
    golden: tuple[str, ...]
    files: dict[str, str]  # every file of the bundle but the manifest and its digest -> SHA-256
    calibrated: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # precision -> graph -> entry
    calibration: dict[str, Any] = field(default_factory=dict)  # `rdvla calibrate`'s record: data, report, ...
    engines: dict[str, EngineSection] = field(default_factory=dict)  # precision -> `rdvla build`'s section

    @classmethod
    def from_json(cls, data: Any) -> "Manifest":
        """The typed manifest; BundleError (without the path; `read` adds it) when anything is missing or mistyped."""
        if not isinstance(data, dict):
            raise BundleError(f"holds {json_kind(data)}, not a JSON object")
        schema, version = data.get("schema"), data.get("schema_version")
        if schema != SCHEMA:
            raise BundleError(f"unknown schema {schema!r} (this runtime reads {SCHEMA!r})")
        if version != SCHEMA_VERSION:
            raise BundleError(f"schema version {version!r} is not supported by this runtime (it reads version "
                              f"{SCHEMA_VERSION}); re-export the bundle with a matching rdvla")

        def section(key: str, kind: type, parse: Callable[[Any], T]) -> T:
            if key not in data:
                raise BundleError(f"lacks its {key!r} section")
            value = data[key]
            if not isinstance(value, kind):
                raise BundleError(f"{key!r} holds {json_kind(value)}, expected {'an object' if kind is dict else 'a list'}")
            try:
                return parse(value)
            except (KeyError, TypeError, ValueError) as exc:
                detail = f"lacks {exc}" if isinstance(exc, KeyError) else str(exc)
                raise BundleError(f"{key!r} is malformed: {detail}") from None

        def optional(key: str, parse: Callable[[dict[str, Any]], T]) -> T:
            return section(key, dict, parse) if data.get(key) is not None else parse({})

        files = section("files", dict, _file_hashes)
        if not files:
            raise BundleError("lists no files ('files' is empty): the bundle's contents cannot be checked")
        manifest = cls(
            created=str(data.get("created", "")),
            tools=section("tools", dict, dict),
            source=section("source", dict, dict),
            model=section("model", dict, ModelDims.from_json),
            prompt=section("prompt", dict, lambda v: PromptSpec(**v)),
            preprocess=section("preprocess", dict, PreprocessConfig.from_manifest),
            normalization=section("normalization", dict, lambda v: NormStats.from_dataset_statistics({v["key"]: v}, v["key"])),
            halting=section("halting", dict, lambda v: HaltingDefaults(**v)),
            horizon=section("horizon", dict, dict),
            graphs=section("graphs", dict, lambda v: {name: GraphSpec.from_json(name, g) for name, g in v.items()}),
            golden=section("golden", list, lambda v: tuple(bundle_path(p) for p in v)),
            files=files,
            calibrated={precision: graphs for precision, key in CALIBRATED_SECTIONS.items()
                        if (graphs := optional(key, _calibrated_graphs))},
            calibration=optional("calibration", _calibration_record),
            engines=optional("engines", _engine_sections),
        )
        for name, stats, dim in (("action", manifest.normalization.action_q01, manifest.model.action_dim),
                                 ("proprio", manifest.normalization.proprio_q01, manifest.model.proprio_dim)):
            if len(stats) != dim:
                raise BundleError(f"'normalization' holds {len(stats)} {name} statistics for model.{name}_dim {dim}: "
                                  "re-export the bundle")
        return manifest

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "tools": self.tools,
            "source": self.source,
            "model": self.model.to_json(),
            "prompt": self.prompt.__dict__,
            "preprocess": self.preprocess.to_manifest(),
            "normalization": self.normalization.to_json_dict(),
            "halting": self.halting.__dict__,
            "horizon": self.horizon,
            "graphs": {name: spec.to_json() for name, spec in self.graphs.items()},
            "golden": list(self.golden),
        }
        for precision, key in CALIBRATED_SECTIONS.items():
            if self.calibrated.get(precision):
                data[key] = self.calibrated[precision]
        if self.calibration:
            data["calibration"] = self.calibration
        data["engines"] = {precision: section.to_json() for precision, section in self.engines.items()}
        data["files"] = dict(sorted(self.files.items()))
        return data

    def referenced_files(self) -> set[str]:
        """Every bundle file the manifest points at (each must be listed, with its hash, in `files`)."""
        named = {TOKENIZER_FILE, *(spec.file for spec in self.graphs.values()), *self.golden}
        if self.calibration.get("report"):
            named.add(str(self.calibration["report"]))
        for entries in self.calibrated.values():
            named |= {str(entry["file"]) for entry in entries.values()}
        for section in self.engines.values():
            named |= {record.file for record in section.graphs.values()}
        return named

    def save(self, root: Path) -> None:
        """Write manifest.json and its digest, renamed into place together: a bundle never has one without the other."""
        text = json.dumps(self.to_json(), indent=2) + "\n"
        with atomic_writes(root / MANIFEST, root / MANIFEST_DIGEST) as (manifest, digest):
            manifest.write_text(text, encoding="utf-8")
            digest.write_text(f"{hashlib.sha256(text.encode()).hexdigest()}  {MANIFEST}\n", encoding="utf-8")


def bundle_path(rel: Any) -> str:
    """`rel` as a path inside the bundle, or a ValueError: the manifest never points outside its folder."""
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise ValueError(f"{rel!r} is not a path inside the bundle (it would point outside the bundle's folder)")
    return rel


def _file_hashes(listed: dict[str, Any]) -> dict[str, str]:
    for rel, digest in listed.items():
        bundle_path(rel)
        if not (isinstance(digest, str) and len(digest) == 64):
            raise ValueError(f"{rel}: {digest!r} is not a SHA-256")
    return dict(listed)


def json_kind(value: Any) -> str:
    """What a JSON value is, in the words of the format: null, true/false, a number, a string, a list, an object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _entries(section: dict[str, Any], what: str) -> dict[str, dict[str, Any]]:
    for name, entry in section.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{what} {name!r} holds {json_kind(entry)}, expected an object")
    return section


def _calibrated_graphs(section: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A precision's calibrated graphs: each entry a file inside the bundle, with the exported graph's inputs and
    outputs (as `rdvla calibrate` writes them) and how it was made."""
    for name, entry in _entries(section, "graph").items():
        bundle_path(entry["file"])
        for tensor in (*entry.get("inputs", []), *entry.get("outputs", [])):
            TensorSpec.from_json(tensor)
    return section


def _calibration_record(record: dict[str, Any]) -> dict[str, Any]:
    if "report" in record:
        bundle_path(record["report"])
    return record


def _engine_sections(sections: dict[str, Any]) -> dict[str, EngineSection]:
    return {precision: EngineSection.from_json(precision, section) for precision, section in _entries(sections, "precision").items()}


def read_manifest(root: Path) -> Manifest:
    """The manifest of the bundle at `root`, after checking it against its digest."""
    path, digest_path = root / MANIFEST, root / MANIFEST_DIGEST
    if root.exists() and not root.is_dir():
        raise BundleError(f"{root} is a file, not a bundle directory: give the folder that holds {MANIFEST}")
    if not root.is_dir():
        raise BundleError(f"bundle directory not found: {root}")
    if not path.is_file():
        raise BundleError(f"{root} is not a bundle: {MANIFEST} is missing")
    raw = path.read_bytes()
    if not digest_path.is_file():
        raise BundleError(f"{root}: {MANIFEST_DIGEST} is missing, so {MANIFEST} cannot be checked: re-export the bundle "
                          "(or copy it again, whole)")
    recorded = digest_path.read_text(errors="replace").split()
    if not recorded or recorded[0] != hashlib.sha256(raw).hexdigest():
        raise BundleError(f"{path} does not match {MANIFEST_DIGEST} (edited or corrupted): re-export the bundle, or rerun "
                          "the command that last wrote it")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc}); re-export the bundle") from None
    try:
        return Manifest.from_json(data)
    except BundleError as exc:
        way_out = "" if "re-export" in str(exc) else "; re-export the bundle (or copy it again, whole)"
        raise BundleError(f"{path}: {exc}{way_out}") from None
