"""A reader of .tflite files in pure Python: the FlatBuffer tables of TFLite's schema.fbs that a
full-integer classifier uses. No compiled dependency, so it runs wherever numpy does.

FlatBuffers in brief: a table starts with an int32 offset back to its vtable; the vtable lists,
per field number, the field's offset inside the table (0: absent, take the default). Vectors and
strings are a uint32 length followed by the items; references are uint32 offsets from where they
are stored. Field numbers below are the order of the fields in schema.fbs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

# TensorType
DTYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8, 6: np.bool_}
# BuiltinOperator codes this reader names (others are reported by number)
OPS = {0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
       6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL", 19: "RELU",
       21: "RELU6", 22: "RESHAPE", 25: "SOFTMAX", 28: "TANH", 34: "PAD", 39: "TRANSPOSE", 40: "MEAN", 41: "SUB",
       45: "STRIDED_SLICE", 69: "TILE", 77: "SHAPE", 83: "PACK", 114: "QUANTIZE", 117: "HARD_SWISH"}
# builtin options: (field, struct format) in schema order, per op; b = byte/bool, i = int32, f = float
_POOL = (("padding", "b"), ("stride_w", "i"), ("stride_h", "i"), ("filter_width", "i"), ("filter_height", "i"),
         ("fused_activation_function", "b"))
OPTIONS = {
    "CONV_2D": (("padding", "b"), ("stride_w", "i"), ("stride_h", "i"), ("fused_activation_function", "b"),
                ("dilation_w_factor", "i"), ("dilation_h_factor", "i")),
    "DEPTHWISE_CONV_2D": (("padding", "b"), ("stride_w", "i"), ("stride_h", "i"), ("depth_multiplier", "i"),
                          ("fused_activation_function", "b"), ("dilation_w_factor", "i"), ("dilation_h_factor", "i")),
    "AVERAGE_POOL_2D": _POOL,
    "MAX_POOL_2D": _POOL,
    "FULLY_CONNECTED": (("fused_activation_function", "b"), ("weights_format", "b"), ("keep_num_dims", "b")),
    "ADD": (("fused_activation_function", "b"),),
    "SOFTMAX": (("beta", "f"),),
    "MEAN": (("keep_dims", "b"),),
    "STRIDED_SLICE": (("begin_mask", "i"), ("end_mask", "i"), ("ellipsis_mask", "i"), ("new_axis_mask", "i"),
                      ("shrink_axis_mask", "i"), ("offset", "b")),
    "PACK": (("values_count", "i"), ("axis", "i")),
}
DEFAULTS = {"dilation_w_factor": 1, "dilation_h_factor": 1}


@dataclass
class Tensor:
    name: str
    shape: tuple
    dtype: type
    data: np.ndarray | None          # constant tensors (weights, bias, shapes); None for activations
    scale: np.ndarray | None = None  # per tensor (1 value) or per channel
    zero_point: np.ndarray | None = None
    quantized_dimension: int = 0


@dataclass
class Operator:
    op: str
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


@dataclass
class Graph:
    tensors: list[Tensor]
    inputs: list[int]
    outputs: list[int]
    operators: list[Operator]


class _Buffer:
    """Bounds-checked little-endian reads: a malformed file is an InputError, never a crash."""

    def __init__(self, data: bytes, name: str):
        self.data, self.name = data, name

    def read(self, fmt: str, pos: int):
        try:
            return struct.unpack_from("<" + fmt, self.data, pos)[0]
        except struct.error:
            raise InputError(f"{self.name}: malformed .tflite (offset {pos} outside the file)") from None

    def table(self, pos: int) -> "_Table":
        return _Table(self, pos)


class _Table:
    """One flatbuffer table, checked as the flatbuffers verifier checks it (alignment, vtable and
    table sizes, fields inside the table), so that a file LiteRT refuses is refused here too."""

    def __init__(self, buf: _Buffer, pos: int):
        self.buf, self.pos = buf, pos
        self.vtable = pos - buf.read("i", pos)
        self.vsize = buf.read("H", self.vtable)
        self.tsize = buf.read("H", self.vtable + 2)
        if (pos % 4 or self.vtable % 2 or self.vsize < 4 or self.vsize % 2 or self.tsize < 4
                or self.vtable + self.vsize > len(buf.data) or pos + self.tsize > len(buf.data)
                or any(o >= self.tsize for o in struct.unpack_from(f"<{self.vsize // 2 - 2}H", buf.data, self.vtable + 4))):
            raise InputError(f"{buf.name}: malformed .tflite (a table at offset {pos} fails the flatbuffer checks)")

    def _field(self, index: int) -> int | None:
        slot = 4 + 2 * index
        if slot >= self.vsize:
            return None
        offset = self.buf.read("H", self.vtable + slot)
        if offset >= self.tsize:
            raise InputError(f"{self.buf.name}: malformed .tflite (a field outside its table at offset {self.pos})")
        return self.pos + offset if offset else None

    def scalar(self, index: int, fmt: str, default=0):
        pos = self._field(index)
        return default if pos is None else self.buf.read(fmt, pos)

    def _target(self, index: int) -> int | None:
        pos = self._field(index)
        return None if pos is None else pos + self.buf.read("I", pos)

    def table(self, index: int) -> "_Table | None":
        pos = self._target(index)
        return None if pos is None else self.buf.table(pos)

    def vector(self, index: int) -> tuple[int, int]:
        """(start of items, count); (0, 0) when absent."""
        pos = self._target(index)
        if pos is None:
            return 0, 0
        count = self.buf.read("I", pos)
        if pos % 4:
            raise InputError(f"{self.buf.name}: malformed .tflite (a vector at offset {pos} is not aligned)")
        if pos + 4 + count > len(self.buf.data):  # every item takes at least one byte
            raise InputError(f"{self.buf.name}: malformed .tflite (vector of {count} items past the end)")
        return pos + 4, count

    def scalars(self, index: int, dtype) -> np.ndarray:
        start, count = self.vector(index)
        size = np.dtype(dtype).itemsize * count
        if start + size > len(self.buf.data):
            raise InputError(f"{self.buf.name}: malformed .tflite (array past the end of the file)")
        return np.frombuffer(self.buf.data, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=start)

    def tables(self, index: int) -> list["_Table"]:
        start, count = self.vector(index)
        if start + 4 * count > len(self.buf.data):
            raise InputError(f"{self.buf.name}: malformed .tflite (table vector past the end of the file)")
        return [self.buf.table(start + 4 * i + self.buf.read("I", start + 4 * i)) for i in range(count)]

    def string(self, index: int, strict: bool = False) -> str:
        """A string field; `strict`: refuse bytes that are not UTF-8 (as LiteRT does for input and output names)."""
        start, count = self.vector(index)
        if count == 0 and start == 0:
            return ""
        if start + count >= len(self.buf.data) or self.buf.data[start + count] != 0:
            raise InputError(f"{self.buf.name}: malformed .tflite (a string at offset {start} without its end)")
        try:
            return self.buf.data[start:start + count].decode("utf-8", "strict" if strict else "replace")
        except UnicodeDecodeError:
            raise InputError(f"{self.buf.name}: malformed .tflite (an input or output name that is not UTF-8 "
                             f"at offset {start})") from None


def read(content: bytes, name: str) -> Graph:
    """The first subgraph of a .tflite model."""
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise InputError(f"{name}: not a .tflite file (no TFL3 identifier)")
    buf = _Buffer(content, name)
    model = buf.table(buf.read("I", 0))
    codes = [max(code.scalar(0, "b"), code.scalar(3, "i")) for code in model.tables(1)]
    subgraphs = model.tables(2)
    if len(subgraphs) != 1:
        raise InputError(f"{name}: {len(subgraphs)} subgraphs; the numpy backend runs single-graph models")
    buffers = model.tables(4)
    graph = subgraphs[0]
    _walk_the_rest(model, graph)
    tables = graph.tables(0)
    tensors = [_tensor(t, buffers, name) for t in tables]
    operators = [_operator(op, codes, name) for op in graph.tables(3)]
    result = Graph(tensors, graph.scalars(1, np.int32).tolist(), graph.scalars(2, np.int32).tolist(), operators)
    used = result.inputs + result.outputs + [i for op in operators for i in op.inputs + op.outputs]
    if any(not -1 <= i < len(tensors) for i in used) or any(i < 0 for i in result.inputs + result.outputs):
        raise InputError(f"{name}: malformed .tflite (a tensor index outside the {len(tensors)} tensors)")
    if any(not op.outputs or op.outputs[0] < 0 for op in operators):
        raise InputError(f"{name}: malformed .tflite (an operator without output)")
    for index in result.inputs + result.outputs:  # LiteRT decodes these names strictly (its other names leniently)
        tables[index].string(3, strict=True)
    return result


def _walk_the_rest(model: _Table, graph: _Table) -> None:
    """Read the parts the numpy backend does not use (description, metadata, signatures, names),
    so that their damage is found: LiteRT's flatbuffer verifier refuses such a file too."""
    model.string(3)
    graph.string(4)
    for entry in model.tables(6):         # metadata: name, buffer index
        entry.string(0)
    for signature in model.tables(7):     # signature defs: input and output tensor maps, key
        for tensor_map in signature.tables(0) + signature.tables(1):
            tensor_map.string(0)
        signature.string(2)


def _tensor(t: _Table, buffers: list[_Table], name: str) -> Tensor:
    type_code = t.scalar(1, "b")
    if type_code not in DTYPES:
        raise InputError(f"{name}: tensor type {type_code} is not supported by the numpy backend")
    dtype = DTYPES[type_code]
    shape = tuple(int(d) for d in t.scalars(0, np.int32))
    index = t.scalar(2, "I")
    data = None
    if 0 < index < len(buffers):
        buffer = buffers[index]
        if buffer.scalar(1, "Q") > 1:
            raise InputError(f"{name}: weights stored outside the flatbuffer are not supported")
        raw = buffer.scalars(0, np.uint8)
        if raw.size % np.dtype(dtype).itemsize:
            raise InputError(f"{name}: malformed .tflite (tensor {t.string(3)!r}: {raw.size} bytes of "
                             f"{np.dtype(dtype).name})")
        if raw.size:
            data = np.frombuffer(raw.tobytes(), dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
            if data.size != int(np.prod(shape)):
                raise InputError(f"{name}: tensor {t.string(3)!r} holds {data.size} values for shape {shape}")
            data = data.reshape(shape)
    tensor = Tensor(t.string(3), shape, dtype, data)
    quantization = t.table(4)
    if quantization is not None:
        scale = quantization.scalars(2, np.float32)
        if scale.size:
            tensor.scale = scale.copy()
            tensor.zero_point = quantization.scalars(3, np.int64).copy()
            tensor.quantized_dimension = quantization.scalar(6, "i")
            if not 0 <= tensor.quantized_dimension < max(len(shape), 1):
                raise InputError(f"{name}: tensor {tensor.name!r}: quantized dimension {tensor.quantized_dimension} "
                                 f"outside its {len(shape)} dimensions")
    return tensor


def _operator(op: _Table, codes: list[int], name: str) -> Operator:
    index = op.scalar(0, "I")
    if index >= len(codes):
        raise InputError(f"{name}: operator code {index} out of range")
    code = codes[index]
    opname = OPS.get(code, f"builtin operator {code}")
    options = {}
    table = op.table(4)
    for i, (key, fmt) in enumerate(OPTIONS.get(opname, ())):
        default = DEFAULTS.get(key, 0)
        options[key] = default if table is None else table.scalar(i, fmt, default)
    if opname == "RESHAPE" and table is not None:
        options["new_shape"] = table.scalars(0, np.int32).tolist()
    return Operator(opname, op.scalars(1, np.int32).tolist(), op.scalars(2, np.int32).tolist(), options)
