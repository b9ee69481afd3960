"""The buffers the TensorRT backend allocates once, sized from the manifest, and the checks of engine I/O against it.

Only the prompt length may vary (`dynamic_dims`); every buffer is sized for the longest prompt.
An engine's I/O as TensorRT reports it (`engine_io`) must match the manifest's graph spec, with one
allowance: TensorRT may report -1 for an output whose size it derives from the dynamic prompt axis
even where the manifest's graph has a fixed size (shape analysis does not always prove that a slice
of a prompt-length axis is constant). Such outputs are accepted at load and checked once the input
shapes are set (`check_resolved_outputs`, fed by `execution_context.get_tensor_shape`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from rdvla.runtime import contract
from rdvla.runtime.backends.tensorrt.environment import rebuild_hint
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import DYNAMIC, BundleError, GraphSpec, TensorSpec

if TYPE_CHECKING:
    import tensorrt as trt

# mse and cosine live in one allocation, each at a 256-byte aligned offset, so one copy reads both.
SCALAR_STRIDE = 256
SCALAR_FLOATS = SCALAR_STRIDE // 4 + 1

# TensorRT DataType names -> numpy dtype names (the manifest's vocabulary).
_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "FP8": "float8_e4m3fn",
    "INT4": "int4",
    "FP4": "float4_e2m1fn",
}


def numpy_dtype_name(trt_name: str) -> str:
    """The numpy name of a TensorRT DataType name (FLOAT -> float32)."""
    if trt_name not in _DTYPES:
        raise BundleError(f"TensorRT data type {trt_name} has no counterpart in this runtime")
    return _DTYPES[trt_name]


def shape_of(dims: "trt.Dims") -> tuple[int, ...]:
    """A TensorRT Dims as a tuple of ints (-1 where TensorRT resolves a dimension at run time)."""
    return tuple(int(dims[k]) for k in range(len(dims)))


def engine_io(engine: "trt.ICudaEngine") -> list[TensorSpec]:
    """The I/O tensors of a deserialised engine, with their mode (-1 marks a dimension TensorRT resolves at run time)."""
    import tensorrt as trt

    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        dtype = numpy_dtype_name(engine.get_tensor_dtype(name).name)
        tensors.append(TensorSpec(name, dtype, shape_of(engine.get_tensor_shape(name)), mode))
    return tensors


def dynamic_dims(graphs: Mapping[str, GraphSpec], prompt_len: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """(min, max) of every named dynamic dimension; only the prompt length may vary.

    The prompt axis is recognised by position (the last axis of input_ids) as well as by the name
    "prompt_len", since exporters differ in how they name dynamic axes.
    """
    dims = {"prompt_len": prompt_len}
    for spec in graphs.values():
        for tensor in spec.inputs:
            if tensor.name == contract.INPUT_IDS and tensor.shape and isinstance(tensor.shape[-1], str):
                dims[tensor.shape[-1]] = prompt_len
    for graph, spec in graphs.items():
        for tensor in (*spec.inputs, *spec.outputs):
            for dim in tensor.shape:
                if isinstance(dim, str) and dim not in dims:
                    raise BundleError(
                        f"graph {graph}: tensor {tensor.name} has dynamic dimension {dim!r}; "
                        "only the prompt length (input_ids) may vary"
                    )
    return dims


@dataclass(frozen=True)
class BufferPlan:
    """Every buffer the backend allocates at load, sized from the manifest's graph specs.

    host_inputs  VLM+Prelude inputs at their largest shape: a pinned staging buffer and a device buffer each
    context      VLM+Prelude outputs, written once per query and read by every core iteration
    latent       two device buffers (ping-pong), plus pinned buffers to load S0 and read the latent back
    actions      two device buffers (ping-pong), plus pinned zeros and a pinned readback buffer
    scalars      mse and cosine, one device block of 2 x SCALAR_STRIDE bytes and its pinned mirror
    """

    host_inputs: tuple[TensorSpec, ...]
    context: tuple[TensorSpec, ...]
    latent: TensorSpec
    actions: TensorSpec
    scalars: tuple[TensorSpec, TensorSpec]
    dynamic: Mapping[str, tuple[int, int]]

    @property
    def device_bytes(self) -> int:
        once = sum(b.nbytes for b in (*self.host_inputs, *self.context))
        return once + 2 * (self.latent.nbytes + self.actions.nbytes) + 2 * SCALAR_STRIDE

    @property
    def pinned_bytes(self) -> int:
        return sum(b.nbytes for b in self.host_inputs) + 2 * (self.latent.nbytes + self.actions.nbytes) + 4 * SCALAR_FLOATS


def _fail(graph: str, problem: str) -> BundleError:
    return BundleError(f"graph {graph} breaks the bundle contract (runtime/bundle.py): {problem}")


def plan_buffers(bundle: Bundle) -> BufferPlan:
    """Size every buffer from the graphs `Bundle.open` held to the contract (`contract.CONTRACT`, at the manifest's
    model dimensions), refusing what these buffers cannot serve to TensorRT."""
    graphs = {g: bundle.graph(g) for g in contract.GRAPHS}
    dims = dynamic_dims(graphs, bundle.prompt_len)
    largest = {d: high for d, (_, high) in dims.items()}

    def buffer(t: TensorSpec) -> TensorSpec:
        return t.resolve(largest)

    vlm = graphs[contract.VLM_PRELUDE]
    context = {t.name: buffer(t) for t in vlm.outputs}
    specs: dict[str, TensorSpec] = {t.name: t for t in vlm.outputs}
    for graph in (contract.CORE_STEP, contract.CORE_STEP_DECODE, contract.DECODE):
        spec = graphs[graph]
        inputs, outputs = contract.CONTRACT[graph]
        # enqueueV3 runs only once every input and output has an address (NVIDIA/TensorRT v10.3.0
        # include/NvInferRuntime.h, IExecutionContext::setTensorAddress), and the backend has a buffer for the
        # contract's tensors and the context only: a tensor beyond them could not run.
        unknown = [t.name for t in spec.inputs if t.name not in context and t.name not in inputs]
        if unknown:
            raise _fail(graph, f"inputs {', '.join(unknown)} are neither {', '.join(sorted(inputs))} nor outputs of {contract.VLM_PRELUDE}")
        got = {t.name for t in spec.outputs}
        if got != outputs:
            raise _fail(graph, f"outputs {sorted(got)}, expected {sorted(outputs)}")
        # One buffer per name: every graph must see it with the same dtype and shape.
        for t in (*spec.inputs, *spec.outputs):
            seen = specs.setdefault(t.name, t)
            if buffer(seen) != buffer(t):
                raise _fail(graph, f"{t.name} is {t.dtype} {list(t.shape)} here but {seen.dtype} {list(seen.shape)} elsewhere")
    loop = [specs[n] for n in (contract.LATENT, contract.NEXT_LATENT, contract.PREV_ACTIONS, contract.ACTIONS, contract.MSE, contract.COSINE)]
    for t in loop:
        if t.dtype != "float32":
            raise _fail(contract.CORE_STEP_DECODE, f"{t.name} is {t.dtype}; latent, actions and halting scalars cross engines in float32")
    for t in loop[-2:]:
        if buffer(t).nbytes != 4:
            raise _fail(contract.CORE_STEP_DECODE, f"{t.name} has shape {list(t.shape)}; a halting scalar is one float32")
    return BufferPlan(
        host_inputs=tuple(buffer(t) for t in vlm.inputs),
        context=tuple(context.values()),
        latent=buffer(specs[contract.LATENT]),
        actions=buffer(specs[contract.PREV_ACTIONS]),
        scalars=(buffer(specs[contract.MSE]), buffer(specs[contract.COSINE])),
        dynamic=dims,
    )


def _dims_match(engine: int | str, spec: int | str, resolved_later: bool) -> bool:
    if isinstance(spec, str):
        return engine == DYNAMIC
    return engine == spec or (resolved_later and engine == DYNAMIC)


def check_engine_io(spec: GraphSpec, io: Sequence[TensorSpec], root: Path, precision: str) -> None:
    """Refuse an engine whose I/O names, modes, dtypes or shapes differ from the manifest's graph spec.

    A named (dynamic) dimension must be -1 in the engine and a fixed one equal, except that in a
    graph with dynamic inputs an output may report -1 where the spec is fixed: its size is derived
    from the prompt axis, and `check_resolved_outputs` checks it once the input shapes are set.
    """
    expected = {t.name: replace(t, mode=mode) for mode, group in (("input", spec.inputs), ("output", spec.outputs)) for t in group}
    got = {t.name: t for t in io}
    derived = any(t.is_dynamic for t in spec.inputs)
    problems = []
    for name in sorted(set(expected) ^ set(got)):
        problems.append(f"{name} is {'missing from the engine' if name in expected else 'not in the graph spec'}")
    for name in sorted(set(expected) & set(got)):
        want, have = expected[name], got[name]
        later = derived and want.mode == "output"
        shape_ok = len(have.shape) == len(want.shape) and all(_dims_match(h, w, later) for h, w in zip(have.shape, want.shape))
        if have.mode != want.mode or have.dtype != want.dtype or not shape_ok:
            problems.append(f"{name}: engine {have.mode} {have.dtype} {list(have.shape)}, spec {want.mode} {want.dtype} {list(want.shape)}")
    if problems:
        raise BundleError(
            f"{root}: the {precision} engine of {spec.name} does not match the bundle's graph ({'; '.join(problems)}): "
            f"{rebuild_hint(root, precision)}"
        )


def check_resolved_outputs(
    spec: GraphSpec, resolved: Mapping[str, Sequence[int]], dims: Mapping[str, int], root: Path, precision: str
) -> None:
    """Refuse output shapes, as the execution context reports them after `set_input_shape`, that differ from the spec's."""
    problems = []
    for tensor in spec.outputs:
        want = tensor.resolve(dims).shape
        have = tuple(int(d) for d in resolved[tensor.name])
        if have != want:
            problems.append(f"{tensor.name} is {list(have)}, expected {list(want)}")
    if problems:
        where = ", ".join(f"{d}={v}" for d, v in sorted(dims.items()))
        raise BundleError(
            f"{root}: with {where} the {precision} engine of {spec.name} makes outputs of other shapes than the "
            f"bundle's graph ({'; '.join(problems)}): {rebuild_hint(root, precision)}"
        )
