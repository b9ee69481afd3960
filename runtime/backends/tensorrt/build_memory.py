"""Whether `rdvla build` fits in this machine's memory, estimated from the graphs' weights before TensorRT starts.

On a Jetson the CPU and the GPU share one memory, and a build that outgrows it is ended by the kernel's
OOM killer without a message (NVIDIA/TensorRT issues 2712 and 3355: engine builds of large ONNX models
killed on Jetson boards). The graphs are built one at a time, each released before the next, so the
largest graph decides. While one graph builds, memory holds, per `_EngineBuilder.build`:

- W, the graph's weights at their stored types: the ONNX parser imports every weight into buffers it owns
  and keeps them alive until the parser and the network referring to them are deleted;
- E, the engine's weights at its precision, as the builder holds them for the engine it makes;
- E again, the serialized engine `build_serialized_network` returns while the parser still lives.

The builder then deletes the parser and the network before it deserialises the engine for the
inspector, so that phase holds the serialized engine and its deserialised copy, 2E, no more than the
first. The peak is therefore W + 2E, plus the tactic workspace when `--workspace` caps it (uncapped,
TensorRT skips a tactic whose allocation fails rather than failing the build). E counts floating-point
weights at 4 bytes for fp32 and 2 for fp16 and int8 (an int8 build runs the layers it does not quantise in
FP16), and a strongly typed graph as typed. The CUDA context and TensorRT's own libraries come on top,
so the estimate is a floor: a build it says does not fit will not fit.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from rdvla.runtime.backends.tensorrt.precision import BuildError, GraphSource
from rdvla.runtime.graph_check.onnx_reader import BFLOAT16, ELEMENT_BITS, FLOAT, FLOAT16, stored_elements

MEMINFO = Path("/proc/meminfo")
_FLOATS = (FLOAT, FLOAT16, BFLOAT16)
_MIB = 1 << 20
_GIB = 1 << 30


@dataclass(frozen=True)
class Memory:
    """What /proc/meminfo says, in bytes."""

    total: int
    available: int  # MemAvailable: what a new program can take without swapping
    swap_free: int


def parse_meminfo(text: str) -> Optional[Memory]:
    """The memory of /proc/meminfo's text (kB values), or None when it lacks MemTotal or MemAvailable."""
    fields = {name: int(kb) * 1024 for name, kb in re.findall(r"^(\w+):\s+(\d+) kB", text, re.MULTILINE)}
    if "MemTotal" not in fields or "MemAvailable" not in fields:
        return None
    return Memory(fields["MemTotal"], fields["MemAvailable"], fields.get("SwapFree", 0))


def read_memory(path: Path = MEMINFO) -> Optional[Memory]:
    """This machine's memory, or None where there is no /proc/meminfo to read."""
    try:
        return parse_meminfo(path.read_text())
    except OSError:
        return None


@dataclass(frozen=True)
class BuildFootprint:
    """The estimated peak of building one graph's engine (see the module's docstring for why W + 2E)."""

    precision: str
    graph: str
    file: str
    strongly_typed: bool  # built as typed (a calibrated graph)
    weight_bytes: int  # W: the graph's weights as stored
    engine_bytes: int  # E: those weights at the engine's precision
    workspace_bytes: int  # the --workspace cap, 0 when uncapped

    @property
    def peak(self) -> int:
        return self.weight_bytes + 2 * self.engine_bytes + self.workspace_bytes


def engine_element_bits(data_type: int, precision: str, strongly_typed: bool) -> int:
    """Bits an engine of `precision` keeps per element of a weight stored as `data_type`."""
    bits = ELEMENT_BITS.get(data_type, 0)
    if data_type not in _FLOATS or strongly_typed:
        return bits
    return min(bits, 32 if precision == "fp32" else 16)


def graph_footprint(root: Path, source: GraphSource, precision: str, workspace_mb: Optional[int]) -> BuildFootprint:
    elements = stored_elements(root / source.file)
    weights = sum(count * ELEMENT_BITS.get(dtype, 0) for dtype, count in elements.items()) // 8
    engine = sum(count * engine_element_bits(dtype, precision, source.strongly_typed) for dtype, count in elements.items()) // 8
    return BuildFootprint(precision, source.name, source.file, source.strongly_typed, weights, engine, (workspace_mb or 0) * _MIB)


def build_footprint(root: Path, sources: Sequence[GraphSource], precision: str, workspace_mb: Optional[int]) -> BuildFootprint:
    """The footprint of the graph whose build needs the most memory."""
    return max((graph_footprint(root, s, precision, workspace_mb) for s in sources), key=lambda f: f.peak)


class Fit(str, enum.Enum):
    FITS = "fits"
    SWAPS = "swaps"  # more than MemAvailable, within MemAvailable + SwapFree: slow, but it finishes
    TOO_BIG = "too big"


def fit(footprint: BuildFootprint, memory: Memory) -> Fit:
    if footprint.peak <= memory.available:
        return Fit.FITS
    return Fit.SWAPS if footprint.peak <= memory.available + memory.swap_free else Fit.TOO_BIG


def _gib(n: int) -> str:
    return f"{n / _GIB:.1f} GiB"


def describe(footprint: BuildFootprint, memory: Memory) -> str:
    """What the build needs against what this machine has, in words."""
    f = footprint
    need = (f"the {f.precision} build of {f.graph} needs about {_gib(f.peak)} at its peak ({_gib(f.weight_bytes)} of "
            f"weights in {f.file} held by the ONNX parser + 2 x {_gib(f.engine_bytes)} of engine"
            + (f" + {_gib(f.workspace_bytes)} of --workspace" if f.workspace_bytes else "") + ")")
    return f"{need}; this machine has {_gib(memory.available)} available and {_gib(memory.swap_free)} of free swap"


def ways_out(footprint: BuildFootprint, bundle_root: Path, verdict: Fit) -> str:
    """How to make the build fit (in memory alone when it already fits with swap), most effective first."""
    ways = []
    if footprint.precision == "fp32":
        ways.append("build fp16 instead")
    elif footprint.precision == "fp16" and not footprint.strongly_typed:
        ways.append(f"run `rdvla calibrate {bundle_root} --precision fp16` first (the build then reads its FP16 graphs, "
                    "half the weights)")
    if verdict is Fit.TOO_BIG:
        ways.append("add a swap file (docs/jetson.md, section 4)")
    else:
        ways.append("close other programs")
    ways.append("a smaller --workspace" if footprint.workspace_bytes else "cap tactic memory with --workspace 1024")
    return ", ".join(ways[:-1]) + ", or " + ways[-1]


def check_build_memory(bundle_root: Path, sources: Sequence[GraphSource], precision: str, workspace_mb: Optional[int],
                       memory: Optional[Memory]) -> Optional[str]:
    """Raise BuildError when the build cannot fit in memory and swap; the warning to give when it fits only with
    swap; None when it fits, or when the memory is unknown (no /proc/meminfo)."""
    if memory is None:
        return None
    footprint = build_footprint(bundle_root, sources, precision, workspace_mb)
    verdict = fit(footprint, memory)
    if verdict is Fit.TOO_BIG:
        raise BuildError(f"not enough memory to build: {describe(footprint, memory)}; the kernel would end the build "
                         f"without a message: {ways_out(footprint, bundle_root, verdict)}")
    if verdict is Fit.SWAPS:
        return (f"{describe(footprint, memory)}: the build will swap and take much longer; to avoid that, "
                f"{ways_out(footprint, bundle_root, verdict)}")
    return None
