"""INT8 post-training quantisation into explicit Q/DQ graphs that TensorRT builds as they are.

Only the weight matrices' MatMul/Gemm nodes are quantised: INT8 weights per output channel (axis 1
of a [K, N] MatMul weight, the axis TensorRT can factor out of the dot product) and the activation
feeding them per tensor, both symmetric (TensorRT takes zero points of 0 only). Attention products
(activation x activation), norms, softmax, the residual additions and the halting statistics carry
no Q/DQ and stay in higher precision: on an Orin the win is fewer weight bytes per core iteration,
and these parts hold no weights.

Two quantisers produce that placement:
* `ort`: ONNX Runtime's static quantisation, always installed with the export tools;
* `modelopt`: NVIDIA ModelOpt's ONNX PTQ (the optional `calibration` extra), imported lazily.
Both calibrate with ONNX Runtime on CPU from the same samples.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np
import onnx
from onnx import numpy_helper

from rdvla.calibration.methods import DEFAULT_METHOD, METHODS, QUANTIZERS
from rdvla.calibration.probe import tensor_peaks
from rdvla.export.onnx_export import EXTERNAL_DATA_BYTES  # graphs over it keep their weights beside them, as export's do
from rdvla.runtime.graph_check.onnx_reader import graph_files

log = logging.getLogger(__name__)

MIN_DIM = 16  # TensorRT's INT8 tensor-core kernels need K and N of at least 16 (ModelOpt applies the same rule)


class QuantizationError(RuntimeError):
    """A graph could not be quantised (one-line message)."""


@dataclass(frozen=True)
class QuantizedGraph:
    path: Path
    quantizer: str
    method: str
    quantized_nodes: int  # weight MatMul/Gemm nodes given Q/DQ
    qdq_nodes: int  # QuantizeLinear + DequantizeLinear in the result


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul/Gemm nodes whose second operand is a weight matrix of at least MIN_DIM rows and columns.

    Smaller products (the 7-wide action projection) gain nothing in INT8 on tensor cores and would put
    the quantisation error straight onto the actions.
    """
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    return [
        n.name for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and len(shapes.get(n.input[1], ())) == 2
        and min(shapes[n.input[1]]) >= MIN_DIM
    ]


def constant_transposes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Transpose nodes that turn a 2-D initializer into a MatMul/Gemm weight. The exporter leaves one
    in front of every linear layer of the vision towers, whose weight both cameras' MatMuls share."""
    shapes = {i.name: len(i.dims) for i in model.graph.initializer}
    consumers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    return [
        n for n in model.graph.node
        if n.op_type == "Transpose" and shapes.get(n.input[0]) == 2
        and [list(a.ints) for a in n.attribute if a.name == "perm"] in ([], [[1, 0]])
        and consumers.get(n.output[0], set()) <= {"MatMul", "Gemm"}
    ]


def fold_weight_transposes(source: Path, target: Path) -> int:
    """Write `source` with each weight Transpose replaced by the transposed initializer (`<name>.T`), so
    that the MatMul reads an initializer directly and its weight is quantised per output channel like
    the others. Exact: only the layout changes. Returns the number of folded nodes."""
    model = onnx.load(str(source))
    folds = constant_transposes(model)
    initializers = {i.name: i for i in model.graph.initializer}
    renamed = {}
    for node in folds:
        weight = initializers[node.input[0]]
        folded = numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(weight).T), f"{weight.name}.T")
        model.graph.initializer.append(folded)
        renamed[node.output[0]] = folded.name
        model.graph.node.remove(node)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
    used = {name for node in model.graph.node for name in node.input}
    for weight in {n.input[0] for n in folds} - used:
        model.graph.initializer.remove(initializers[weight])
    save_graph(model, target)
    return len(folds)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over an iterable of feed dicts (re-iterable via rewind)."""

    def __init__(self, samples: Iterable[dict[str, np.ndarray]]) -> None:
        self._samples = list(samples)
        self._it: Iterator[dict[str, np.ndarray]] = iter(self._samples)

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        return next(self._it, None)

    def get_first(self) -> dict[str, np.ndarray]:  # ModelOpt's readers answer this too (it probes the graph with it)
        return self._samples[0]

    def rewind(self) -> None:
        self._it = iter(self._samples)

    def __len__(self) -> int:
        return len(self._samples)


def _large(path: Path) -> bool:
    return sum(f.stat().st_size for f in graph_files(path)) > EXTERNAL_DATA_BYTES


def _count_qdq(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def activation_ranges(source: Path, samples: Iterable[dict[str, np.ndarray]], nodes: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Symmetric min/max of each quantised node's activation input, as ONNX Runtime range overrides.

    ONNX Runtime's own min/max calibrator keeps every sample's activations until the end (its
    `CalibMaxIntermediateOutputs` option drops them without reducing in 1.32): about 1.3 GB per VLM
    query at full size. The probes reduce each sample as it runs; the ranges are the ones it would find.
    """
    model = onnx.load(str(source), load_external_data=False)
    wanted = set(nodes)
    tensors = sorted({n.input[0] for n in model.graph.node if n.name in wanted})
    peaks = tensor_peaks(model, source, samples, tensors)
    return {t: [{"rmin": np.float32(-p), "rmax": np.float32(p)}] for t, p in peaks.items()}


class _DropPreprocessAdvice(logging.Filter):
    """ONNX Runtime advises its pre-processing pass on every call. It re-optimises the graph, which
    would change the nodes that `nodes_to_quantize` names; our explicit node list is the point."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider")


def quantize_ort(source: Path, target: Path, samples: Iterable[dict[str, np.ndarray]], nodes: list[str], method: str) -> None:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}

    class Reader(_Reader, CalibrationDataReader):
        pass

    feeds = list(samples)
    overrides: dict[str, list[dict[str, Any]]] = {}
    if method == "minmax":
        overrides = activation_ranges(source, feeds, nodes)
        feeds = feeds[:1]  # the calibrator still runs; the overrides decide every range
    advice = _DropPreprocessAdvice()
    logging.getLogger().addFilter(advice)
    try:
        _quantize_static(source, target, Reader(feeds), nodes, methods[method], overrides)
    finally:
        logging.getLogger().removeFilter(advice)


def _quantize_static(source: Path, target: Path, reader: Any, nodes: list[str], method: Any,
                     overrides: dict[str, list[dict[str, Any]]]) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        str(source), str(target), reader,
        quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm"], nodes_to_quantize=nodes,
        per_channel=True, reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        calibrate_method=method, use_external_data_format=_large(source),
        extra_options={
            "ActivationSymmetric": True, "WeightSymmetric": True,
            # Without this ORT also quantises every MatMul's output, i.e. the residual stream it feeds.
            "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"],
            # TensorRT dequantises INT8 only; an INT32 Gemm bias stays FP32 and joins the GEMM's epilogue.
            "QuantizeBias": False,
            "CalibTensorRangeSymmetric": True,
            "TensorQuantOverrides": overrides,
        },
    )


def import_modelopt() -> Any:
    try:
        from modelopt.onnx import trt_utils
        from modelopt.onnx.quantization import quantize
    except ImportError as exc:
        raise QuantizationError(
            f"ModelOpt is not usable ({str(exc).splitlines()[0]}): pip install 'rdvla[calibration]', or use --quantizer ort"
        ) from None
    # tensorrt-stubs (the dev tools) leave an importable `tensorrt` namespace without bindings, which
    # ModelOpt takes for TensorRT and then fails on; only real bindings have a Builder.
    import sys

    trt = sys.modules.get("tensorrt")
    if trt_utils.TRT_PYTHON_AVAILABLE and not hasattr(trt, "Builder"):
        trt_utils.TRT_PYTHON_AVAILABLE = False
    return quantize


@contextmanager
def _ort_quantization_restored() -> Iterator[None]:
    """Undo, on exit, what ModelOpt rebinds in ONNX Runtime's quantisation modules: it replaces
    calibrator and quantiser methods process-wide when it runs, after which ONNX Runtime's own
    `quantize_static` no longer honours range overrides (an `ort` run in the same process fails)."""
    import inspect

    from onnxruntime.quantization import base_quantizer, calibrate, onnx_quantizer, qdq_quantizer, quantize

    modules = (base_quantizer, calibrate, onnx_quantizer, qdq_quantizer, quantize)
    owners: list[Any] = [*modules, *{c for m in modules for c in vars(m).values()
                                     if inspect.isclass(c) and c.__module__.startswith("onnxruntime.quantization")}]
    saved = [(owner, dict(vars(owner))) for owner in owners]
    try:
        yield
    finally:
        for owner, attributes in saved:
            for name in set(vars(owner)) - set(attributes):
                delattr(owner, name)
            for name, value in attributes.items():
                if name not in ("__dict__", "__weakref__") and vars(owner).get(name) is not value:
                    setattr(owner, name, value)


def quantize_modelopt(source: Path, target: Path, samples: Iterable[dict[str, np.ndarray]], nodes: list[str], method: str) -> None:
    quantize = import_modelopt()
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Reader, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="rdvla-modelopt-") as tmp, _ort_quantization_restored():
        quantize(
            str(source), quantize_mode="int8", calibration_data_reader=Reader(samples), calibration_method=method,
            calibration_eps=["cpu"], op_types_to_quantize=["MatMul", "Gemm"],
            # ModelOpt treats names as regular expressions: anchor them so node_linear_1 does not match node_linear_10.
            nodes_to_quantize=[f"^{n}$" for n in nodes], disable_mha_qdq=True, high_precision_dtype="fp32",
            use_external_data_format=_large(source), output_path=str(Path(tmp) / target.name), log_level="WARNING",
        )
        produced = Path(tmp) / target.name
        model = onnx.load(str(produced))
        save_graph(model, target)


def save_graph(model: onnx.ModelProto, target: Path) -> None:
    """Save `model`, its weights in `<target>.data` when they would pass protobuf's 2 GB limit."""
    external = sum(i.ByteSize() for i in model.graph.initializer) > EXTERNAL_DATA_BYTES
    onnx.save(model, str(target), save_as_external_data=external, location=target.name + ".data" if external else None)


def quantize_graph(source: Path, target: Path, samples: Iterable[dict[str, np.ndarray]], quantizer: str = "ort",
                   method: Optional[str] = None) -> QuantizedGraph:
    """Write the Q/DQ version of the FP32 graph `source` to `target`, calibrated on `samples`."""
    if quantizer not in QUANTIZERS:
        raise QuantizationError(f"unknown quantizer {quantizer!r}: choose {', '.join(QUANTIZERS)}")
    method = method or DEFAULT_METHOD[quantizer]
    if method not in METHODS[quantizer]:
        raise QuantizationError(f"the {quantizer} quantizer calibrates with {', '.join(METHODS[quantizer])}; got {method!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    run = quantize_ort if quantizer == "ort" else quantize_modelopt
    with tempfile.TemporaryDirectory(prefix=".rdvla-folded-", dir=target.parent) as tmp:
        if constant_transposes(onnx.load(str(source), load_external_data=False)):
            folded = Path(tmp) / source.name
            log.info("%s: %d weight transposes folded into their initializers", source.name, fold_weight_transposes(source, folded))
            source = folded
        nodes = weight_matmuls(onnx.load(str(source), load_external_data=False))
        if not nodes:
            raise QuantizationError(f"{source.name} has no weight MatMul/Gemm to quantise")
        try:
            run(source, target, samples, nodes, method)
        except (QuantizationError, MemoryError):
            raise
        except Exception as exc:  # the quantisers raise anything from ValueError to onnxruntime's Fail
            raise QuantizationError(f"{quantizer} could not quantise {source.name}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    result = QuantizedGraph(target, quantizer, method, len(nodes), _count_qdq(target))
    log.info("%s: %d weight MatMuls quantised with %s (%s), %d Q/DQ nodes", source.name, len(nodes), quantizer, method, result.qdq_nodes)
    return result
