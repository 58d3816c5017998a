"""One model class for every exported model: .tflite or .onnx, float or int8. numpy + one interpreter.

TFLite models run on ai_edge_litert (LiteRT), else tflite_runtime, else edgefashion's own numpy
backend (int8 models, bit-exact with TFLite's reference kernels; device/numpy_interpreter.py), the
one choice where no interpreter wheel exists (32-bit Raspberry Pi OS). tf.lite runs them only when
asked for (backend="tensorflow"). ONNX models run on onnxruntime.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import IMAGE_SHAPE, LABELS, NUM_CLASSES
from ..console import quiet
from ..errors import InputError, MissingDependency, Unsupported
from ..options import max_threads, setting

EXAMPLE_DTYPES = ("int8", "uint8", "int16", "int32", "int64", "float16", "float32", "float64", "bool")
MAX_BATCH = 256  # images per call: inputs and activations of a batch stay small on a Pi
TFLITE_MAGIC = b"TFL3"  # flatbuffer file identifier at bytes 4..8
TFLITE_BACKENDS = ("ai_edge_litert", "tflite_runtime", "numpy", "tensorflow")
AUTO_BACKENDS = ("ai_edge_litert", "tflite_runtime", "numpy")  # tried in this order
BACKENDS = ("auto", *TFLITE_BACKENDS)
BACKEND_HELP = ("TFLite interpreter: auto (LiteRT, else tflite-runtime, else numpy), ai_edge_litert, tflite_runtime, "
                "numpy (int8 bit-exact with TFLite's reference kernels, needs only numpy) or tensorflow")


def backend_setting(in_run: bool | str = True):
    """The --backend option of a stage's settings (bench, verify)."""
    return setting("auto", BACKEND_HELP, choices=BACKENDS, in_run=in_run)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple
    scale: float | None = None
    zero_point: int | None = None

    def as_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "scale": self.scale, "zero_point": self.zero_point}


@dataclass
class Prediction:
    probabilities: np.ndarray  # float32 (N, 10)
    class_ids: np.ndarray      # int64 (N,)

    @property
    def labels(self) -> list[str]:
        return [LABELS[i] for i in self.class_ids]

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities[np.arange(len(self.class_ids)), self.class_ids]


class Model:
    """An exported classifier. `predict` takes uint8 pixels (0-255) or floats in [0, 1],
    one image (28, 28[, 1]) or a batch (N, 28, 28[, 1]).

    `classifier=False` opens any model with one input and one output (another shape, a model that
    is not a classifier) for `run` on `example_input`: what bench and profile time.

    `kernels="reference"` runs TFLite's reference kernels: slow, but bit-identical on every CPU,
    which the bundle's golden check relies on. The default is the fast kernels (XNNPACK etc.).
    `backend` picks the TFLite interpreter (None or "auto": the first installed of AUTO_BACKENDS);
    "numpy" is reference-exact whatever `kernels` says."""

    def __init__(self, source: str | Path | bytes, threads: int = 1, backend: str | None = None,
                 name: str | None = None, kernels: str = "default", classifier: bool = True):
        if not isinstance(threads, int) or not 1 <= threads <= max_threads():
            raise InputError(f"threads={threads!r}, expected 1-{max_threads()} (4 per CPU)")
        if kernels not in ("default", "reference"):
            raise InputError(f"kernels={kernels!r}, expected 'default' or 'reference'")
        content, self.name = _read_model(source, name)
        self.threads = threads
        self.size_bytes = len(content)
        backend = None if backend == "auto" else backend
        if backend not in (None, *TFLITE_BACKENDS):
            raise InputError(f"backend {backend!r}, expected one of {', '.join(BACKENDS)}")
        if content[4:8] == TFLITE_MAGIC:
            backend = backend or _first_installed()
            runner = _NumpyRunner if backend == "numpy" else _TFLiteRunner
            self._runner = runner(content, threads, backend, self.name, kernels)
        elif backend == "numpy":
            raise Unsupported(f"{self.name}: the numpy backend runs .tflite int8 models, not ONNX")
        else:
            self._runner = _OnnxRunner(content, threads, self.name)
        self.backend = self._runner.backend
        self.input, self.output = self._runner.input, self._runner.output
        if classifier:
            self._check_classifier()
        elif self.input.dtype not in EXAMPLE_DTYPES:
            raise InputError(f"{self.name}: input dtype {self.input.dtype}, expected one of {', '.join(EXAMPLE_DTYPES)}")
        self.quantized = self.input.dtype == "int8" or self._runner.quantized
        self.format = f"{self._runner.kind}-{'int8' if self.quantized else 'f32'}"
        self._from_uint8 = self._uint8_converter()
        self._to_float = self._dequantize_table()

    def __repr__(self) -> str:
        return f"Model({self.name!r}, format={self.format}, backend={self.backend}, threads={self.threads})"

    # --- the public path ------------------------------------------------------------

    def predict(self, images: np.ndarray) -> Prediction:
        probabilities = self.predict_proba(images)
        return Prediction(probabilities, probabilities.argmax(axis=1))

    def predict_proba(self, images: np.ndarray, batch_size: int = MAX_BATCH) -> np.ndarray:
        """float32 (N, 10) probabilities; large inputs run in batches of `batch_size`."""
        x = _as_batch(images)
        batch_size = min(batch_size, self._runner.max_batch)
        if len(x) > batch_size:
            return np.concatenate([self.predict_proba(x[i:i + batch_size], batch_size)
                                   for i in range(0, len(x), batch_size)])
        return self.dequantize(self._runner.run(self._convert(x)))

    # --- the pieces, for verify / bench / golden vectors --------------------------------

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """Validate images and convert them to the model's input tensor (N, 28, 28, 1)."""
        return self._convert(_as_batch(images))

    def _convert(self, x: np.ndarray) -> np.ndarray:
        if x.dtype == np.uint8:
            return self._from_uint8(x)
        x = x.astype(np.float32, copy=False)
        return self._quantize(x) if self.input.dtype == "int8" else x

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        """float images in [0, 1] -> int8 with the model's own input scale and zero point."""
        return np.clip(np.round(x / self.input.scale + self.input.zero_point), -128, 127).astype(np.int8)

    def run(self, prepared: np.ndarray) -> np.ndarray:
        """The model's raw output for an already prepared input (int8 for int8 TFLite)."""
        return self._runner.run(prepared)

    def dequantize(self, raw: np.ndarray) -> np.ndarray:
        """float32 probabilities from the raw output (int8 via a 256-entry table)."""
        if self._to_float is not None:
            return self._to_float[raw.view(np.uint8)]
        return raw.astype(np.float32, copy=False)

    @property
    def is_image_classifier(self) -> bool:
        """Does it take edgefashion's (28, 28, 1) images to 10 classes (the models export makes)?"""
        return tuple(self.input.shape[1:]) == IMAGE_SHAPE and tuple(self.output.shape[1:]) == (NUM_CLASSES,) \
            and self.input.dtype in ("int8", "float32")

    def example_input(self, batch: int, seed: int = 0, shape: tuple | None = None) -> np.ndarray:
        """A seeded random input tensor of the declared shape (batch `batch`; `shape`, the dimensions
        after the batch, for a model that leaves some open) and dtype, as LiteRT's benchmark_model
        feeds a model: int8/uint8 over their whole range, floats in [0, 1)."""
        declared = tuple(self.input.shape[1:])
        dims = tuple(shape) if shape else declared
        if len(dims) != len(declared) or any(0 < d != g for d, g in zip(declared, dims)) or any(d < 1 for d in dims):
            given = f"--input-shape {','.join(map(str, shape))} does not fit" if shape else "has dynamic dimensions"
            raise InputError(f"{self.name}: input {self.input.name!r} {list(self.input.shape)}: {given}; give the "
                             f"dimensions after the batch with --input-shape (e.g. "
                             f"{','.join(str(d) if d > 0 else '224' for d in declared)})")
        rng, dtype = np.random.default_rng(seed), np.dtype(self.input.dtype)
        if dtype.kind == "f":
            return rng.random((batch, *dims), dtype=np.float32).astype(dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, (batch, *dims)).astype(bool)
        info = np.iinfo(dtype)
        high = info.max if dtype.itemsize == 1 else min(info.max, 9)  # wider ints are usually indices: small
        return rng.integers(max(info.min, -128), high, (batch, *dims), dtype=dtype, endpoint=True)

    def info(self) -> dict:
        return {"format": self.format, "backend": self.backend, "bytes": self.size_bytes,
                "input": self.input.as_dict(), "output": self.output.as_dict()}

    # --- internals -------------------------------------------------------------------------

    def _uint8_converter(self):
        """Pixel -> model input in one numpy op: a table lookup, or a sign-bit flip when the
        int8 input is the usual scale 1/255, zero point -128 (then q = pixel - 128 exactly)."""
        if self.input.dtype == "int8" and self.input.scale is None:
            return None  # not an image input edgefashion knows how to fill from pixels
        if self.input.dtype != "int8":
            return lambda pixels: np.divide(pixels, np.float32(255), dtype=np.float32)
        table = self._quantize(np.arange(256, dtype=np.float32) / 255.0)
        if np.array_equal(table.astype(np.int16), np.arange(256, dtype=np.int16) - 128):
            flip = np.uint8(0x80)
            return lambda pixels: (pixels ^ flip).view(np.int8)
        return lambda pixels: np.take(table, pixels)

    def _dequantize_table(self) -> np.ndarray | None:
        """Raw int8 output (viewed as uint8) -> float32, or None for float outputs."""
        if self.output.dtype != "int8" or self.output.scale is None:
            return None
        q = np.arange(256, dtype=np.uint8).view(np.int8).astype(np.float32)
        return ((q - self.output.zero_point) * self.output.scale).astype(np.float32)

    def _check_classifier(self) -> None:
        in_shape, out_shape = tuple(self.input.shape[1:]), tuple(self.output.shape[1:])
        if in_shape != IMAGE_SHAPE or out_shape != (NUM_CLASSES,):
            raise InputError(f"{self.name}: model maps {in_shape} -> {out_shape}, "
                             f"expected a {IMAGE_SHAPE} -> ({NUM_CLASSES},) classifier (bench, bench --profile and "
                             f"firmware take any model)")
        if self.input.dtype not in ("int8", "float32"):
            raise InputError(f"{self.name}: input dtype {self.input.dtype}, expected int8 or float32")


def _read_model(source, name) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        content, label = bytes(source), name or "<bytes>"
    else:
        path = Path(source)
        label = name or str(path)
        if not path.is_file():
            raise InputError(f"{path}: model file not found")
        content = path.read_bytes()
    if not content:
        raise InputError(f"{label}: model file is empty")
    if len(content) < 16:
        raise InputError(f"{label}: {len(content)} bytes is too short to be a model (truncated?)")
    return content, label


def _as_batch(images) -> np.ndarray:
    x = np.asarray(images)
    if x.shape in ((28, 28), IMAGE_SHAPE):
        x = x.reshape(1, *IMAGE_SHAPE)
    elif x.ndim == 3 and x.shape[1:] == (28, 28):
        x = x.reshape(len(x), *IMAGE_SHAPE)
    elif not (x.ndim == 4 and x.shape[1:] == IMAGE_SHAPE):
        raise InputError(f"input shape={x.shape}, expected (28, 28), (28, 28, 1), (N, 28, 28) or (N, 28, 28, 1)")
    if len(x) == 0:
        raise InputError("input holds no images")
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind != "f":
        raise InputError(f"input dtype={x.dtype}, expected uint8 pixels (0-255) or float images in [0, 1]")
    if not np.isfinite(x).all():
        raise InputError("input contains NaN or infinity, expected float images in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"input values in [{lo:g}, {hi:g}], expected float images in [0, 1] "
                         f"(pass uint8 for 0-255 pixels)")
    return x


# --- TFLite ---------------------------------------------------------------------------------

def tflite_interpreter_class(backend: str):
    """(Interpreter class, backend name) of one compiled interpreter."""
    try:
        return _import_interpreter(backend), backend
    except ImportError as exc:
        raise MissingDependency(f"the {backend} TFLite interpreter ({exc})", "edge") from None


def _first_installed() -> str:
    """The first of AUTO_BACKENDS that imports; numpy always does."""
    for name in AUTO_BACKENDS[:-1]:
        try:
            _import_interpreter(name)
            return name
        except ImportError:
            continue
    return "numpy"



def _import_interpreter(name: str):
    if name == "ai_edge_litert":
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    if name == "tflite_runtime":
        import importlib.metadata as md

        from tflite_runtime.interpreter import Interpreter
        version = md.version("tflite-runtime")
        if int(np.__version__.split(".")[0]) >= 2 and tuple(map(int, version.split(".")[:2])) <= (2, 14):
            raise ImportError(f"tflite-runtime {version} was built for numpy 1 and crashes with numpy "
                              f"{np.__version__}; install ai-edge-litert instead")
        return Interpreter
    import tensorflow as tf  # last resort: heavy, only when nothing lighter is installed
    return tf.lite.Interpreter


class _NumpyRunner:
    """edgefashion's numpy interpreter: full-integer int8 models, TFLite reference arithmetic."""

    kind = "tflite"
    backend = "numpy"

    def __init__(self, content: bytes, threads: int, backend: str, name: str, kernels: str):
        from .numpy_interpreter import NumpyInterpreter

        self.name = name
        self.interpreter = NumpyInterpreter(content, name)
        self.quantized = self.interpreter.input.dtype is np.int8
        self.input, self.output = (_numpy_spec(t) for t in (self.interpreter.input, self.interpreter.output))
        self.max_batch = MAX_BATCH

    def run(self, x: np.ndarray) -> np.ndarray:
        try:
            return self.interpreter.run(x)
        except InputError:
            raise
        except Exception as exc:  # a malformed graph that compiled: shapes that do not fit, ...
            raise InputError(f"{self.name}: the model failed to run ({type(exc).__name__}: "
                             f"{_first_line(exc)})") from None


def _numpy_spec(t) -> TensorSpec:
    quantized = t.scale is not None and t.dtype is np.int8
    return TensorSpec(t.name, np.dtype(t.dtype).name, tuple(t.shape), float(t.scale[0]) if quantized else None,
                      int(t.zero_point[0]) if quantized else None)


class _TFLiteRunner:
    kind = "tflite"
    quantized = False

    def __init__(self, content: bytes, threads: int, backend: str, name: str, kernels: str):
        interpreter_class, self.backend = tflite_interpreter_class(backend)
        options = {}
        if kernels == "reference":
            resolvers = sys.modules[interpreter_class.__module__].OpResolverType
            options["experimental_op_resolver_type"] = resolvers.BUILTIN_REF
        self.name = name
        try:  # ValueError covers UnicodeDecodeError from tensor names
            with quiet(fds=(2,)):  # LiteRT prints an INFO line for its XNNPACK delegate
                self.interpreter = interpreter_class(model_content=content, num_threads=threads, **options)
                self.max_batch = _batch_budget(name, self.interpreter.get_tensor_details())
                self.interpreter.allocate_tensors()
            inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"{name}: not a valid TFLite model ({_first_line(exc)})") from None
        if len(inputs) != 1 or len(outputs) != 1:
            raise InputError(f"{name}: {len(inputs)} inputs and {len(outputs)} outputs, expected 1 and 1")
        self.input, self.output = _tflite_spec(inputs[0]), _tflite_spec(outputs[0])
        self._in, self._out = inputs[0]["index"], outputs[0]["index"]
        self._shape = tuple(int(d) for d in inputs[0]["shape"])

    def run(self, x: np.ndarray) -> np.ndarray:
        try:  # a model can load and still fail when it runs (XNNPACK, null tensor data, ...)
            if x.shape != self._shape:  # resize once per new input shape (a batch size), not per call
                self.interpreter.resize_tensor_input(self._in, list(x.shape))
                self.interpreter.allocate_tensors()
                self._shape = x.shape
            self.interpreter.set_tensor(self._in, x)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self._out)
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"{self.name}: the model failed to run ({_first_line(exc)})") from None


MAX_TENSOR_BYTES = 256 * 2**20  # per batch: a Pi Zero 2 W has 512 MB in all


def _batch_budget(name: str, tensors: list[dict]) -> int:
    """The largest batch whose tensors fit MAX_TENSOR_BYTES, from the shapes at batch 1 (an upper
    bound: weights are counted per image too). A model that does not fit one image is refused."""
    per_image = sum(math.prod(int(d) for d in t["shape"]) * np.dtype(t["dtype"]).itemsize for t in tensors)
    if per_image > MAX_TENSOR_BYTES:
        raise InputError(f"{name}: its tensors need {per_image / 2**20:.0f} MB for one image, more than the "
                         f"{MAX_TENSOR_BYTES // 2**20} MB allowed (not a small image classifier)")
    return max(1, MAX_TENSOR_BYTES // max(per_image, 1))


def _tflite_spec(detail: dict) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = np.dtype(detail["dtype"]) == np.int8 and scale
    return TensorSpec(detail["name"], np.dtype(detail["dtype"]).name, tuple(int(d) for d in detail["shape"]),
                      float(scale) if quantized else None, int(zero_point) if quantized else None)


# --- ONNX -----------------------------------------------------------------------------------

class _OnnxRunner:
    kind = "onnx"
    backend = "onnxruntime"

    def __init__(self, content: bytes, threads: int, name: str):
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependency("onnxruntime", "edge") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InputError(f"{name}: not a valid TFLite or ONNX model ({_first_line(exc)})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise InputError(f"{name}: {len(inputs)} inputs and {len(outputs)} outputs, expected 1 and 1")
        self.input, self.output = _onnx_spec(inputs[0]), _onnx_spec(outputs[0])
        self._in_name, self._out_names = inputs[0].name, [outputs[0].name]
        self.name = name
        # QDQ models keep float inputs; their QuantizeLinear nodes mark them as int8.
        self.quantized = bool(onnx_op_types(content) & {"QuantizeLinear", "QLinearConv", "QLinearMatMul"})
        self.max_batch = MAX_BATCH  # ONNX Runtime does not show intermediate shapes before running

    def run(self, x: np.ndarray) -> np.ndarray:
        try:
            return self.session.run(self._out_names, {self._in_name: x})[0]
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InputError(f"{self.name}: the model failed to run ({_first_line(exc)})") from None


def onnx_op_types(content: bytes) -> set[str]:
    """The op types of an ONNX model's main graph, read from the protobuf itself (ModelProto.graph = 7,
    GraphProto.node = 1, NodeProto.op_type = 4), so a doc string that mentions an op does not count."""
    ops = set()
    for _, graph in _fields(content, 7):
        for _, node in _fields(graph, 1):
            ops.update(op.decode("utf-8", "replace") for _, op in _fields(node, 4))
    return ops


def _fields(buffer: bytes, wanted: int):
    """(number, bytes) of the length-delimited fields numbered `wanted` in one protobuf message."""
    pos, end = 0, len(buffer)
    while pos < end:
        key, pos = _varint(buffer, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buffer, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(buffer, pos)
            if number == wanted:
                yield number, buffer[pos:pos + size]
            pos += size
        else:  # groups (3, 4) are not used by ONNX: stop rather than guess
            return


def _varint(buffer: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(buffer):
        byte = buffer[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return value, len(buffer)


ONNX_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
              "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(int32)": "int32",
              "tensor(int64)": "int64", "tensor(bool)": "bool"}


def _onnx_spec(arg) -> TensorSpec:
    dtype = ONNX_TYPES.get(arg.type, arg.type)
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    return TensorSpec(arg.name, dtype, shape)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
