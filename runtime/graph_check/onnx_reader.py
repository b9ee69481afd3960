"""Read the structure of an ONNX model without the `onnx` package (the robot install has none).

A small decoder of the protobuf wire format for the parts of `onnx.proto` (ONNX 1.16+, IR 10) that
graph checks need: opset imports, nodes with their attributes (subgraphs included), initializers
(name, type, dims, external-data file), graph inputs/outputs and value_info types, and the names of local functions.
The file is memory-mapped and length-delimited fields are skipped by offset, so weights are never
read: inline in the graph (any size) or in external-data files, they cost nothing. Only tensors of
at most `SMALL_TENSOR_BYTES` keep their values (Q/DQ scales and zero points, shape constants).

`tensor_types` gives every tensor name its element type: initializers by their data, value_info and
graph I/O where the file records them, and a small forward propagation for the rest. `graph_io` describes
a graph's inputs and outputs in the manifest's vocabulary, `graph_files` names the files a graph
consists of (the .onnx file and its external-data files), and `stored_elements` counts its weights,
all from the structure alone.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional, Union

import numpy as np

# TensorProto.DataType (onnx.proto)
FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, STRING, BOOL, FLOAT16, DOUBLE = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
UINT32, UINT64, COMPLEX64, COMPLEX128, BFLOAT16 = 12, 13, 14, 15, 16
FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ, UINT4, INT4, FLOAT4E2M1 = 17, 18, 19, 20, 21, 22, 23
TYPE_NAMES = {
    0: "UNDEFINED", FLOAT: "FLOAT", UINT8: "UINT8", INT8: "INT8", UINT16: "UINT16", INT16: "INT16", INT32: "INT32",
    INT64: "INT64", STRING: "STRING", BOOL: "BOOL", FLOAT16: "FLOAT16", DOUBLE: "DOUBLE", UINT32: "UINT32",
    UINT64: "UINT64", COMPLEX64: "COMPLEX64", COMPLEX128: "COMPLEX128", BFLOAT16: "BFLOAT16",
    FLOAT8E4M3FN: "FLOAT8E4M3FN", FLOAT8E4M3FNUZ: "FLOAT8E4M3FNUZ", FLOAT8E5M2: "FLOAT8E5M2",
    FLOAT8E5M2FNUZ: "FLOAT8E5M2FNUZ", UINT4: "UINT4", INT4: "INT4", FLOAT4E2M1: "FLOAT4E2M1",
}
_NUMPY = {FLOAT: np.float32, UINT8: np.uint8, INT8: np.int8, UINT16: np.uint16, INT16: np.int16, INT32: np.int32,
          INT64: np.int64, BOOL: np.bool_, FLOAT16: np.float16, DOUBLE: np.float64, UINT32: np.uint32, UINT64: np.uint64}
SMALL_TENSOR_BYTES = 64 * 1024
# Bits per element of each stored type (onnx.proto); the 4-bit types pack two to a byte. STRING has no fixed size.
ELEMENT_BITS = {
    FLOAT: 32, UINT8: 8, INT8: 8, UINT16: 16, INT16: 16, INT32: 32, INT64: 64, BOOL: 8, FLOAT16: 16, DOUBLE: 64,
    UINT32: 32, UINT64: 64, COMPLEX64: 64, COMPLEX128: 128, BFLOAT16: 16, FLOAT8E4M3FN: 8, FLOAT8E4M3FNUZ: 8,
    FLOAT8E5M2: 8, FLOAT8E5M2FNUZ: 8, UINT4: 4, INT4: 4, FLOAT4E2M1: 4,
}

# AttributeProto.AttributeType -> the AttributeProto field holding the value (onnx.proto).
_ATTRIBUTE_FIELDS = {1: 2, 2: 3, 3: 4, 4: 5, 5: 6, 11: 22, 6: 7, 7: 8, 8: 9, 9: 10, 10: 11}
_LIST_FIELDS = {7, 8, 9, 10, 11}
_SCALAR_DEFAULTS: dict[int, Any] = {2: 0.0, 3: 0, 4: ""}  # proto2 defaults of f, i, s when a writer omits them

# Wire types of the protobuf encoding.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def onnx_dtype_name(elem_type: int) -> str:
    """The numpy name of an ONNX element type (FLOAT -> float32), the manifest's vocabulary."""
    return np.dtype(_NUMPY[elem_type]).name if elem_type in _NUMPY else TYPE_NAMES.get(elem_type, str(elem_type)).lower()


class OnnxReadError(ValueError):
    """The file is not an ONNX model this reader can decode."""


@dataclass(frozen=True)
class Tensor:
    """An initializer or a tensor-valued attribute: what it is, and its values only when small."""

    name: str
    data_type: int
    dims: tuple[int, ...]
    external: bool  # the data lives in an external-data file
    data: Union[bytes, tuple[Any, ...], None] = None  # raw little-endian bytes, typed values, or None when large/external
    location: Optional[str] = None  # the external-data file, relative to the model's folder

    def array(self) -> np.ndarray | None:
        """The values, when they were small enough to keep and numpy has the type; else None."""
        dtype = _NUMPY.get(self.data_type)
        if self.data is None or dtype is None:
            return None
        if isinstance(self.data, bytes):
            values = np.frombuffer(self.data, dtype=np.dtype(dtype).newbyteorder("<"))
        elif self.data_type == FLOAT16:
            values = np.asarray(self.data, dtype=np.uint16).view(np.float16)
        else:
            values = np.asarray(self.data).astype(dtype)
        count = int(np.prod(self.dims)) if self.dims else 1
        return values.reshape(self.dims) if values.size == count else None


@dataclass(frozen=True)
class ValueInfo:
    name: str
    elem_type: int  # 0 when not a tensor or not recorded
    shape: tuple[Union[int, str, None], ...] | None  # None when the rank is unknown


@dataclass(frozen=True)
class Node:
    name: str
    op_type: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, Any]  # ints/floats/strings (str)/Tensor/Graph, or tuples of them


@dataclass(frozen=True)
class Graph:
    name: str
    nodes: tuple[Node, ...]
    initializers: dict[str, Tensor]
    inputs: tuple[ValueInfo, ...]
    outputs: tuple[ValueInfo, ...]
    value_info: tuple[ValueInfo, ...]

    def walk(self) -> Iterator[Node]:
        """Every node, those of subgraphs (If/Loop/Scan bodies) after the node that holds them."""
        for node in self.nodes:
            yield node
            for value in node.attributes.values():
                for sub in value if isinstance(value, tuple) else (value,):
                    if isinstance(sub, Graph):
                        yield from sub.walk()


@dataclass(frozen=True)
class Model:
    path: Path
    ir_version: int
    opset_imports: dict[str, int]  # domain ("" for the default domain) -> version
    graph: Graph
    functions: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (domain, name) of local functions


def read_model(path: Union[str, Path], name: Optional[str] = None) -> Model:
    """Decode `path`'s ModelProto (structure only; tensor data stays on disk). Errors call the file `name`
    (default: its path), so a graph checked in a folder about to be renamed is named as it will be found."""
    path = Path(path)
    name = name or str(path)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            raise OnnxReadError(f"graph {name}: the file is empty; export it again")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            buf = memoryview(mapped)
            try:
                return _Decoder(buf, path, name).model()
            except (IndexError, struct.error, UnicodeDecodeError) as exc:
                raise OnnxReadError(f"graph {name}: not a readable ONNX model ({exc}); export it again") from None
            finally:
                buf.release()


class TensorIO(NamedTuple):
    """A graph input or output as the manifest records it (`TensorSpec`'s name, dtype and shape)."""

    name: str
    dtype: str  # onnx_dtype_name of the element type
    shape: tuple[Union[int, str, None], ...] | None  # dimension sizes or names, None where unknown; None: rank unknown


def graph_io(path: Union[str, Path]) -> tuple[tuple[TensorIO, ...], tuple[TensorIO, ...]]:
    """The inputs and the outputs of the graph at `path`, in the order the file declares them."""
    graph = read_model(path).graph

    def describe(values: tuple[ValueInfo, ...]) -> tuple[TensorIO, ...]:
        return tuple(TensorIO(v.name, onnx_dtype_name(v.elem_type), v.shape) for v in values)

    return describe(graph.inputs), describe(graph.outputs)


def graph_files(path: Union[str, Path]) -> list[Path]:
    """The ONNX file at `path`, then the external-data files its tensors reference (sorted, beside it)."""
    path = Path(path)
    locations = {t.location for t in _tensors(read_model(path).graph) if t.location}
    return [path, *(path.parent / location for location in sorted(locations))]


def stored_elements(path: Union[str, Path]) -> dict[int, int]:
    """How many elements of each data type the graph at `path` stores (initializers and tensor attributes, inline
    or external): its weights, counted from their dims without reading them."""
    counts: dict[int, int] = {}
    for tensor in _tensors(read_model(path).graph):
        counts[tensor.data_type] = counts.get(tensor.data_type, 0) + math.prod(tensor.dims)
    return counts


def _tensors(graph: Graph) -> Iterator[Tensor]:
    """Every tensor stored in `graph`: initializers and tensor attributes, those of subgraphs included."""
    yield from graph.initializers.values()
    for node in graph.nodes:
        for value in node.attributes.values():
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, Tensor):
                    yield item
                elif isinstance(item, Graph):
                    yield from _tensors(item)


class _Decoder:
    def __init__(self, buf: memoryview, path: Path, name: str) -> None:
        self.buf = buf
        self.path = path
        self.name = name  # what error messages call the file

    # --- wire format -------------------------------------------------------------------------
    def _varint(self, pos: int) -> tuple[int, int]:
        buf = self.buf
        result = shift = 0
        while True:
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7
            if shift > 63:
                raise OnnxReadError(f"graph {self.name}: malformed varint at byte {pos}; export it again")

    def fields(self, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
        """(field number, wire type, value) of a message: ints for varints, (begin, end) spans for
        length-delimited fields, byte offsets for fixed-width ones."""
        if end > len(self.buf):
            raise OnnxReadError(f"graph {self.name}: truncated file ({len(self.buf)} bytes, a field ends at {end})")
        pos = start
        value: Any
        while pos < end:
            key, pos = self._varint(pos)
            number, wire = key >> 3, key & 7
            if wire == _VARINT:
                value, pos = self._varint(pos)
            elif wire == _LEN:
                length, pos = self._varint(pos)
                value = (pos, pos + length)
                pos += length
            elif wire == _I64:
                value, pos = pos, pos + 8
            elif wire == _I32:
                value, pos = pos, pos + 4
            else:
                raise OnnxReadError(f"graph {self.name}: unsupported protobuf wire type {wire} at byte {pos}")
            if pos > end:
                raise OnnxReadError(f"graph {self.name}: truncated file (a field runs past byte {end})")
            yield number, wire, value

    def text(self, span: tuple[int, int]) -> str:
        return bytes(self.buf[span[0]:span[1]]).decode("utf-8")

    @staticmethod
    def signed(value: int) -> int:
        return value - (1 << 64) if value >= 1 << 63 else value

    def ints(self, wire: int, value: Any) -> list[int]:
        """A repeated int64/int32 field's items from one occurrence, packed or not."""
        if wire == _VARINT:
            return [self.signed(value)]
        out, pos = [], value[0]
        while pos < value[1]:
            item, pos = self._varint(pos)
            out.append(self.signed(item))
        return out

    def floats(self, wire: int, value: Any, fmt: str = "f") -> list[float]:
        width = struct.calcsize("<" + fmt)
        if wire in (_I32, _I64):
            return [struct.unpack_from("<" + fmt, self.buf, value)[0]]
        count = (value[1] - value[0]) // width
        return list(struct.unpack_from(f"<{count}{fmt}", self.buf, value[0]))

    # --- messages ----------------------------------------------------------------------------
    def model(self) -> Model:
        ir_version = 0
        opsets: dict[str, int] = {}
        graph = None
        functions = set()
        for number, wire, value in self.fields(0, len(self.buf)):
            if number == 1 and wire == _VARINT:
                ir_version = value
            elif number == 8 and wire == _LEN:
                domain, version = "", 0
                for n, w, v in self.fields(*value):
                    if n == 1 and w == _LEN:
                        domain = self.text(v)
                    elif n == 2 and w == _VARINT:
                        version = self.signed(v)
                opsets["" if domain == "ai.onnx" else domain] = version
            elif number == 7 and wire == _LEN:
                graph = self.graph(value)
            elif number == 25 and wire == _LEN:
                name = domain = ""
                for n, w, v in self.fields(*value):
                    if n == 1 and w == _LEN:
                        name = self.text(v)
                    elif n == 10 and w == _LEN:
                        domain = self.text(v)
                functions.add((domain, name))
        if graph is None:
            raise OnnxReadError(f"graph {self.name}: no graph in the file; is it an ONNX model?")
        return Model(self.path, ir_version, opsets, graph, frozenset(functions))

    def graph(self, span: tuple[int, int]) -> Graph:
        name = ""
        nodes: list[Node] = []
        initializers: dict[str, Tensor] = {}
        inputs: list[ValueInfo] = []
        outputs: list[ValueInfo] = []
        value_info: list[ValueInfo] = []
        for number, wire, value in self.fields(*span):
            if wire != _LEN:
                continue
            if number == 1:
                nodes.append(self.node(value))
            elif number == 2:
                name = self.text(value)
            elif number == 5:
                tensor = self.tensor(value)
                initializers[tensor.name] = tensor
            elif number == 11:
                inputs.append(self.value_info(value))
            elif number == 12:
                outputs.append(self.value_info(value))
            elif number == 13:
                value_info.append(self.value_info(value))
        return Graph(name, tuple(nodes), initializers, tuple(inputs), tuple(outputs), tuple(value_info))

    def node(self, span: tuple[int, int]) -> Node:
        name = op_type = domain = ""
        inputs: list[str] = []
        outputs: list[str] = []
        attributes: dict[str, Any] = {}
        for number, wire, value in self.fields(*span):
            if wire != _LEN:
                continue
            if number == 1:
                inputs.append(self.text(value))
            elif number == 2:
                outputs.append(self.text(value))
            elif number == 3:
                name = self.text(value)
            elif number == 4:
                op_type = self.text(value)
            elif number == 7:
                domain = self.text(value)
            elif number == 5:
                key, attr = self.attribute(value)
                attributes[key] = attr
        return Node(name, op_type, "" if domain == "ai.onnx" else domain, tuple(inputs), tuple(outputs), attributes)

    def attribute(self, span: tuple[int, int]) -> tuple[str, Any]:
        """(name, value): the value of the field its `type` names, or of the one field present."""
        name = ""
        kind = 0
        scalars: dict[int, Any] = {}
        lists: dict[int, list[Any]] = {}
        for number, wire, value in self.fields(*span):
            if number == 1 and wire == _LEN:
                name = self.text(value)
            elif number == 20 and wire == _VARINT:
                kind = value
            elif number == 2:
                scalars[2] = self.floats(wire, value)[0]
            elif number == 3 and wire == _VARINT:
                scalars[3] = self.signed(value)
            elif number == 4 and wire == _LEN:
                scalars[4] = bytes(self.buf[value[0]:value[1]]).decode("utf-8", "replace")
            elif number == 5 and wire == _LEN:
                scalars[5] = self.tensor(value)
            elif number == 6 and wire == _LEN:
                scalars[6] = self.graph(value)
            elif number == 22 and wire == _LEN:
                scalars[22] = "sparse_tensor"
            elif number == 7:
                lists.setdefault(7, []).extend(self.floats(wire, value))
            elif number == 8:
                lists.setdefault(8, []).extend(self.ints(wire, value))
            elif number == 9 and wire == _LEN:
                lists.setdefault(9, []).append(bytes(self.buf[value[0]:value[1]]).decode("utf-8", "replace"))
            elif number == 10 and wire == _LEN:
                lists.setdefault(10, []).append(self.tensor(value))
            elif number == 11 and wire == _LEN:
                lists.setdefault(11, []).append(self.graph(value))
        chosen = _ATTRIBUTE_FIELDS.get(kind)
        if chosen is None:  # files older than IR 2 may omit `type`: take the field that is present
            chosen = next(iter(scalars), None) or next(iter(lists), None)
        if chosen is None:
            return name, None
        if chosen in _LIST_FIELDS:
            return name, tuple(lists.get(chosen, ()))
        return name, scalars.get(chosen, _SCALAR_DEFAULTS.get(chosen))

    def tensor(self, span: tuple[int, int]) -> Tensor:
        name = ""
        data_type = 0
        dims: list[int] = []
        external = False
        location: Optional[str] = None
        raw: tuple[int, int] | None = None
        typed: list[Any] = []
        for number, wire, value in self.fields(*span):
            if number == 1:
                dims.extend(self.ints(wire, value))
            elif number == 2 and wire == _VARINT:
                data_type = self.signed(value)
            elif number == 8 and wire == _LEN:
                name = self.text(value)
            elif number == 9 and wire == _LEN:
                raw = value
            elif number == 14 and wire == _VARINT:
                external = value == 1
            elif number == 13:  # external_data: StringStringEntryProto (key 1, value 2)
                external = True
                if wire == _LEN:
                    entry = {n: self.text(v) for n, w, v in self.fields(*value) if w == _LEN and n in (1, 2)}
                    if entry.get(1) == "location":
                        location = entry.get(2)
            elif number in (4, 5, 7, 10, 11) and self._small(wire, value):
                typed.extend(self.floats(wire, value) if number == 4 else
                             self.floats(wire, value, "d") if number == 10 else self.ints(wire, value))
        data: Union[bytes, tuple[Any, ...], None] = None
        if raw is not None and not external and raw[1] - raw[0] <= SMALL_TENSOR_BYTES:
            data = bytes(self.buf[raw[0]:raw[1]])
        elif raw is None and not external and typed:
            if data_type == UINT64:
                typed = [v & 0xFFFFFFFFFFFFFFFF for v in typed]
            data = tuple(typed)
        return Tensor(name, data_type, tuple(dims), external, data, location)

    @staticmethod
    def _small(wire: int, value: Any) -> bool:
        return wire != _LEN or value[1] - value[0] <= SMALL_TENSOR_BYTES

    def value_info(self, span: tuple[int, int]) -> ValueInfo:
        name = ""
        elem_type = 0
        shape: tuple[Union[int, str, None], ...] | None = None
        for number, wire, value in self.fields(*span):
            if number == 1 and wire == _LEN:
                name = self.text(value)
            elif number == 2 and wire == _LEN:
                for n, w, v in self.fields(*value):
                    if n == 1 and w == _LEN:  # TypeProto.tensor_type
                        elem_type, shape = self.tensor_type(v)
        return ValueInfo(name, elem_type, shape)

    def tensor_type(self, span: tuple[int, int]) -> tuple[int, tuple[Union[int, str, None], ...] | None]:
        elem_type = 0
        shape: list[Union[int, str, None]] | None = None
        for number, wire, value in self.fields(*span):
            if number == 1 and wire == _VARINT:
                elem_type = self.signed(value)
            elif number == 2 and wire == _LEN:
                shape = []
                for n, w, v in self.fields(*value):
                    if n == 1 and w == _LEN:
                        dim: Union[int, str, None] = None
                        for dn, dw, dv in self.fields(*v):
                            if dn == 1 and dw == _VARINT:
                                dim = self.signed(dv)
                            elif dn == 2 and dw == _LEN:
                                dim = self.text(dv)
                        shape.append(dim)
        return elem_type, tuple(shape) if shape is not None else None


# --- element types ---------------------------------------------------------------------------
_BOOL_RESULT = {"Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf"}
_INT64_RESULT = {"Shape", "Size", "NonZero", "ArgMax", "ArgMin", "NonMaxSuppression"}


def _constant_type(node: Node) -> int:
    value = node.attributes
    if isinstance(value.get("value"), Tensor):
        return int(value["value"].data_type)
    if "value_float" in value or "value_floats" in value:
        return FLOAT
    if "value_int" in value or "value_ints" in value:
        return INT64
    if "value_string" in value or "value_strings" in value:
        return STRING
    return 0


def _output_types(node: Node, known: dict[str, int]) -> list[int]:
    """Element types of a node's outputs from its op and its inputs' types (0: unknown)."""
    def of(i: int) -> int:
        return known.get(node.inputs[i], 0) if i < len(node.inputs) and node.inputs[i] else 0

    op, attrs, count = node.op_type, node.attributes, len(node.outputs)
    if op in _BOOL_RESULT:
        return [BOOL] * count
    if op in _INT64_RESULT:
        return [INT64] * count
    if op == "Cast":
        return [int(attrs.get("to", 0))] * count
    if op == "CastLike":
        return [of(1)] * count
    if op == "Constant":
        return [_constant_type(node)] * count
    if op == "ConstantOfShape":
        value = attrs.get("value")
        return [value.data_type if isinstance(value, Tensor) else FLOAT] * count
    if op == "Where":
        return [of(1)] * count
    if op == "TopK":
        return [of(0), INT64][:count]
    if op == "QuantizeLinear":
        return [of(2) or int(attrs.get("output_dtype", 0)) or UINT8] * count
    if op == "DequantizeLinear":
        return [of(1)] * count
    # Shape-preserving and arithmetic ops (Reshape, Expand, Unsqueeze, Squeeze, Transpose, Trilu, Identity,
    # Concat, Slice, Gather, Split, Add, MatMul, ...): the type of their data input, input 0.
    return [of(0)] * count


def tensor_types(graph: Graph) -> dict[str, int]:
    """Element type of every tensor name of `graph` (top level) that the file records or that follows
    from its producer: initializers by their data, then value_info and graph I/O, then propagation."""
    known: dict[str, int] = {}
    for info in (*graph.value_info, *graph.outputs, *graph.inputs):
        if info.elem_type:
            known[info.name] = info.elem_type
    # An initializer's type is that of its data, whatever a value_info entry says (converters leave stale ones).
    known.update({name: t.data_type for name, t in graph.initializers.items()})
    for node in graph.nodes:  # ONNX requires topological order
        for name, elem_type in zip(node.outputs, _output_types(node, known)):
            if name and elem_type and name not in known:
                known[name] = elem_type
    return known
