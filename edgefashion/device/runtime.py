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

from .. import data
from . import blas
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
    probabilities: np.ndarray  # float32 (N, K)
    class_ids: np.ndarray      # int64 (N,)
    class_names: list[str]     # K

    @property
    def labels(self) -> list[str]:
        return [self.class_names[i] for i in self.class_ids]

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities[np.arange(len(self.class_ids)), self.class_ids]


class Model:
    """An image classifier: .tflite or .onnx, float or int8, NHWC or NCHW (as PyTorch exports), grey
    or RGB, any size, K classes. `predict` takes uint8 pixels (0-255) or floats in [0, 1], one image
    (H, W[, C]) or a batch (N, H, W[, C]), channels last whatever the model's layout; grey and RGB
    images are converted to the model's channels. A pixel p reaches a float model as
    p * input_scale + input_offset (edgefashion's models: p / 255), an int8 model quantized with its
    own input scale and zero point. Class names: `labels`, else a label file packed in the .tflite
    (TFLite metadata), else class 0 ... class K-1.

    `classifier=False` opens any model (another shape, a model that is not a classifier, several
    inputs and outputs) for `run` on `example_input`: what bench and profile time.

    `kernels="reference"` runs TFLite's reference kernels: slow, but bit-identical on every CPU,
    which the bundle's golden check relies on. The default is the fast kernels (XNNPACK etc.).
    `backend` picks the TFLite interpreter (None or "auto": the first installed of AUTO_BACKENDS);
    "numpy" is reference-exact whatever `kernels` says."""

    def __init__(self, source: str | Path | bytes, threads: int = 1, backend: str | None = None,
                 name: str | None = None, kernels: str = "default", classifier: bool = True,
                 labels: list[str] | None = None, input_scale: float = 1 / 255, input_offset: float = 0.0):
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
            raise Unsupported(f"{self.name}: the numpy backend runs .tflite models (int8 and float), not ONNX")
        else:
            self._runner = _OnnxRunner(content, threads, self.name)
        self.backend = self._runner.backend
        self.inputs, self.outputs = self._runner.inputs, self._runner.outputs
        self.input, self.output = self.inputs[0], self.outputs[0]
        self.layout = image_layout(self.input) if len(self.inputs) == 1 else None
        if classifier:
            self._check_classifier()
        for spec in self.inputs:
            if not classifier and spec.dtype not in EXAMPLE_DTYPES:
                raise InputError(f"{self.name}: input {spec.name!r} dtype {spec.dtype}, expected one of "
                                 f"{', '.join(EXAMPLE_DTYPES)}")
        if not (np.isfinite(input_scale) and input_scale > 0 and np.isfinite(input_offset)):
            raise InputError(f"{self.name}: input scale {input_scale}, offset {input_offset}: expected a positive "
                             f"scale and a finite offset")
        self.input_scale, self.input_offset = float(input_scale), float(input_offset)
        self.quantized = self.input.dtype in ("int8", "uint8") or self._runner.quantized
        self.format = f"{self._runner.kind}-{'int8' if self.quantized else 'f32'}"
        self.labels = self._class_names(labels, content)
        self._from_uint8 = self._uint8_converter()
        self._to_float = self._dequantize_table()

    def __repr__(self) -> str:
        return f"Model({self.name!r}, format={self.format}, backend={self.backend}, threads={self.threads})"

    # --- the public path ------------------------------------------------------------

    def predict(self, images: np.ndarray) -> Prediction:
        """Classes and probabilities (a model that outputs logits gets their softmax)."""
        probabilities = as_probabilities(self.predict_proba(images))
        return Prediction(probabilities, probabilities.argmax(axis=1), self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(H, W, C) of the images the model takes, None when it does not take images."""
        if self.layout is None:
            return None
        dims = tuple(self.input.shape[1:])
        return {"NHWC": dims, "NCHW": (*dims[1:], dims[0]), "NHW": (*dims, 1)}[self.layout]

    @property
    def num_classes(self) -> int:
        return int(self.output.shape[-1])

    def predict_proba(self, images: np.ndarray, batch_size: int = MAX_BATCH) -> np.ndarray:
        """float32 (N, K) outputs (probabilities for edgefashion's models); large inputs run in
        batches of `batch_size`."""
        x = self._as_batch(images)
        batch_size = min(batch_size, self._runner.max_batch)
        if len(x) > batch_size:
            return np.concatenate([self.predict_proba(x[i:i + batch_size], batch_size)
                                   for i in range(0, len(x), batch_size)])
        return self.dequantize(self.outputs_of(self._convert(x)))

    # --- the pieces, for verify / bench / golden vectors --------------------------------

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """Validate images and convert them to the model's input tensor."""
        return self._convert(self._as_batch(images))

    def _convert(self, x: np.ndarray) -> np.ndarray:
        """(N, H, W, C) uint8 pixels or floats in [0, 1] -> the model's input tensor, in its layout."""
        if x.dtype == np.uint8:
            x = self._from_uint8(x)
        else:
            x = x.astype(np.float32, copy=False)
            if (self.input_scale, self.input_offset) != (1 / 255, 0.0):
                x = x * np.float32(255 * self.input_scale) + np.float32(self.input_offset)
            if self.input.dtype in ("int8", "uint8"):
                x = self._quantize(x)
        if self.layout == "NCHW":
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return x[..., 0] if self.layout == "NHW" else x

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        """float inputs -> int8 (uint8) with the model's own input scale and zero point."""
        info = np.iinfo(self.input.dtype)
        return np.clip(np.round(x / self.input.scale + self.input.zero_point), info.min, info.max).astype(info.dtype)

    def run(self, prepared) -> np.ndarray:
        """The model's raw (first) output for an already prepared input (int8 for int8 TFLite): what
        bench times, so nothing else happens here."""
        return self._runner.run(prepared)

    def outputs_of(self, prepared: np.ndarray) -> np.ndarray:
        """`run`, checked: a classifier's output has one row of K per input row, so answers never pair
        with the wrong images."""
        out = self._runner.run(prepared)
        if self.is_image_classifier and out.shape != (len(prepared), self.num_classes):
            raise InputError(f"{self.name}: gave output {list(out.shape)} for {len(prepared)} images, expected "
                             f"[{len(prepared)}, {self.num_classes}] (a malformed model)")
        return out

    def dequantize(self, raw: np.ndarray) -> np.ndarray:
        """float32 probabilities from the raw output (int8 via a 256-entry table)."""
        if self._to_float is not None:
            return self._to_float[raw.view(np.uint8)]
        return raw.astype(np.float32, copy=False)

    @property
    def is_image_classifier(self) -> bool:
        """Does it take grey or RGB images (NHWC or NCHW) of a fixed size to K >= 2 classes?"""
        return self.layout is not None and len(self.outputs) == 1 and len(self.output.shape) == 2 \
            and self.output.shape[1] >= 2 \
            and self.input.dtype in CLASSIFIER_DTYPES and (self.input.dtype == "float32" or self.input.scale)

    def example_input(self, batch: int, seed: int = 0, shape: tuple | None = None):
        """A seeded random input tensor of the declared shape (batch `batch`; `shape`, the dimensions
        after the batch, for a model that leaves some open) and dtype, as LiteRT's benchmark_model
        feeds a model: int8/uint8 over their whole range, floats in [0, 1). A model of several inputs
        gets a tuple, one per input (`shape` is for a model of one input)."""
        if len(self.inputs) > 1:
            if shape:
                raise InputError(f"{self.name}: {len(self.inputs)} inputs; --input-shape is for a model of one input")
            return tuple(_example(self.name, spec, batch, seed + i, None) for i, spec in enumerate(self.inputs))
        return _example(self.name, self.input, batch, seed, shape)

    def info(self) -> dict:
        return {"format": self.format, "backend": self.backend, "bytes": self.size_bytes,
                "input": self.input.as_dict(), "output": self.output.as_dict(),
                **({"inputs": [t.as_dict() for t in self.inputs]} if len(self.inputs) > 1 else {}),
                **({"outputs": [t.as_dict() for t in self.outputs]} if len(self.outputs) > 1 else {})}

    # --- internals -------------------------------------------------------------------------

    def _uint8_converter(self):
        """Pixel -> model input (channels last) in one numpy op: a table lookup, or a sign-bit flip
        when the int8 input is the usual scale 1/255, zero point -128 (then q = pixel - 128 exactly)."""
        if self.input.dtype in ("int8", "uint8") and self.input.scale is None:
            return None  # not an image input edgefashion knows how to fill from pixels
        values = np.arange(256, dtype=np.float32) * np.float32(self.input_scale) + np.float32(self.input_offset)
        if self.input.dtype not in ("int8", "uint8"):
            if (self.input_scale, self.input_offset) == (1 / 255, 0.0):
                return lambda pixels: np.divide(pixels, np.float32(255), dtype=np.float32)
            return lambda pixels: np.take(values, pixels)
        table = self._quantize(values)
        if self.input.dtype == "int8" and np.array_equal(table.astype(np.int16), np.arange(256, dtype=np.int16) - 128):
            flip = np.uint8(0x80)
            return lambda pixels: (pixels ^ flip).view(np.int8)
        return lambda pixels: np.take(table, pixels)

    def _as_batch(self, images) -> np.ndarray:
        """One image or a batch as (N, H, W, C) of the model's size and channels (grey <-> RGB)."""
        h, w, c = self.image_shape
        x = np.asarray(images)
        if x.ndim in (2, 3) and x.shape[:2] == (h, w) and (x.ndim == 2 or x.shape[2] in (1, 3)):
            x = x[None]
        if x.ndim == 3 and x.shape[1:] == (h, w):
            x = x[..., None]
        if not (x.ndim == 4 and x.shape[1:3] == (h, w) and x.shape[3] in (1, 3)):
            raise InputError(f"input shape={x.shape}, expected ({h}, {w}[, C]) or (N, {h}, {w}[, C]) with C 1 or 3: "
                             f"the images {self.name} takes")
        if x.shape[3] != c:
            x = to_channels(x, c)
        return _checked_pixels(x)

    def _class_names(self, given, content: bytes) -> list[str]:
        if not self.is_image_classifier:
            return []
        k = self.num_classes
        if given is not None:
            if len(given) != k:
                raise InputError(f"{self.name}: {len(given)} class names for a model of {k} classes")
            return list(given)
        return embedded_labels(content, k) or data.numbered_classes(k)

    def _dequantize_table(self) -> np.ndarray | None:
        """Raw int8/uint8 output (viewed as uint8) -> float32, or None for float outputs."""
        if self.output.dtype not in ("int8", "uint8") or self.output.scale is None:
            return None
        q = np.arange(256, dtype=np.uint8).view(np.dtype(self.output.dtype)).astype(np.float32)
        return ((q - self.output.zero_point) * self.output.scale).astype(np.float32)

    def _check_classifier(self) -> None:
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise InputError(f"{self.name}: {len(self.inputs)} inputs and {len(self.outputs)} outputs, not an image "
                             f"classifier (one input, one output); bench, bench --profile and firmware take any model")
        if not self.is_image_classifier:
            in_shape, out_shape = tuple(self.input.shape[1:]), tuple(self.output.shape[1:])
            raise InputError(f"{self.name}: a {self.input.dtype} {in_shape} -> {out_shape} model, not an image "
                             f"classifier (images (H, W, C) or (C, H, W) with C 1 or 3, int8, uint8 or float32, "
                             f"-> K >= 2 classes); bench, bench --profile and firmware take any model")


CLASSIFIER_DTYPES = ("int8", "uint8", "float32")


def _example(name: str, spec: TensorSpec, batch: int, seed: int, shape: tuple | None) -> np.ndarray:
    """Seeded random values of one input's shape (batch `batch`, `shape` for its open dimensions) and dtype."""
    declared = tuple(spec.shape[1:])
    dims = tuple(shape) if shape else declared
    if len(dims) != len(declared) or any(0 < d != g for d, g in zip(declared, dims)) or any(d < 1 for d in dims):
        given = f"--input-shape {','.join(map(str, shape))} does not fit" if shape else "has dynamic dimensions"
        raise InputError(f"{name}: input {spec.name!r} {list(spec.shape)}: {given}; give the "
                         f"dimensions after the batch with --input-shape (e.g. "
                         f"{','.join(str(d) if d > 0 else '224' for d in declared)})")
    rng, dtype = np.random.default_rng(seed), np.dtype(spec.dtype)
    if dtype.kind == "f":
        return rng.random((batch, *dims), dtype=np.float32).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, (batch, *dims)).astype(bool)
    info = np.iinfo(dtype)
    high = info.max if dtype.itemsize == 1 else min(info.max, 9)  # wider ints are usually indices: small
    return rng.integers(max(info.min, -128), high, (batch, *dims), dtype=dtype, endpoint=True)


def image_layout(spec: TensorSpec) -> str | None:
    """NHWC, NCHW (as PyTorch exports) or NHW (grey, no channel axis) for an image input of fixed
    height and width; None for anything else. (N, 3, H, 3) reads as NHWC."""
    dims = tuple(spec.shape[1:])
    if len(dims) == 2 and min(dims) > 1:
        return "NHW"
    if len(dims) != 3 or min(dims) < 1:
        return None
    if dims[2] in (1, 3) and min(dims[:2]) > 1:
        return "NHWC"
    if dims[0] in (1, 3) and min(dims[1:]) > 1:
        return "NCHW"
    return None


def to_channels(x: np.ndarray, c: int) -> np.ndarray:
    """(N, H, W, 1|3) -> (N, H, W, c): grey repeated to RGB, RGB to grey as Pillow's "L"
    (ITU-R 601-2 luma) does."""
    if c == 3:
        return np.repeat(x, 3, axis=3)
    if x.dtype == np.uint8:
        wide = x.astype(np.uint32)
        luma = (wide[..., 0] * 19595 + wide[..., 1] * 38470 + wide[..., 2] * 7471 + 0x8000) >> 16
        return luma.astype(np.uint8)[..., None]
    return (x @ np.array([0.299, 0.587, 0.114], dtype=x.dtype))[..., None]


def as_probabilities(out: np.ndarray) -> np.ndarray:
    """Outputs as probabilities: as they are when they already are, else their softmax (logits)."""
    if out.size and out.min() >= 0 and np.allclose(out.sum(axis=1), 1, atol=0.02):
        return out
    shifted = np.exp(out - out.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


def embedded_labels(content: bytes, k: int) -> list[str] | None:
    """The class names of a .tflite whose TFLite metadata packs a label file (a zip appended to the
    flatbuffer, as the metadata writer makes it): the first .txt file of K lines."""
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(content)) as packed:
            for name in packed.namelist():
                if name.lower().endswith(".txt"):
                    lines = [line.strip() for line in packed.read(name).decode("utf-8", "replace").splitlines()]
                    lines = [line for line in lines if line]
                    if len(lines) == k:
                        return lines
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    return None


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


def _checked_pixels(x: np.ndarray) -> np.ndarray:
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

        self.name, self.threads = name, threads
        self.interpreter = NumpyInterpreter(content, name)
        self.quantized = _int8_inside(t.dtype for t in self.interpreter.graph.tensors)
        self.inputs, self.outputs = [_numpy_spec(self.interpreter.input)], [_numpy_spec(self.interpreter.output)]
        # the LiteRT path's budget, on the same tensors (the numpy steps' own scratch comes on top)
        self.max_batch = min(MAX_BATCH, _batch_budget(name, [(t.shape, t.dtype) for t in self.interpreter.graph.tensors]))

    def run(self, x: np.ndarray) -> np.ndarray:
        blas.limit(self.threads)  # a no-op after the first call, unless another model set another count
        try:
            return self.interpreter.run(x)
        except InputError:
            raise
        except Exception as exc:  # a malformed graph that compiled: shapes that do not fit, ...
            raise InputError(f"{self.name}: the model failed to run ({type(exc).__name__}: "
                             f"{_first_line(exc)})") from None


def _int8_inside(dtypes) -> bool:
    """An int8 tensor anywhere: int8 behind a float input and output (the int8 search's float head),
    16x8 and dynamic-range models count as int8 too, so verify never takes one as the float reference."""
    return any(np.dtype(d) == np.int8 for d in dtypes)


def _numpy_spec(t) -> TensorSpec:
    quantized = t.scale is not None and t.dtype is np.int8
    return TensorSpec(t.name, np.dtype(t.dtype).name, tuple(t.shape), float(t.scale[0]) if quantized else None,
                      int(t.zero_point[0]) if quantized else None)


class _TFLiteRunner:
    kind = "tflite"

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
                self.max_batch = _batch_budget(name, [(t["shape"], t["dtype"]) for t in self.interpreter.get_tensor_details()])
                self.interpreter.allocate_tensors()
            inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"{name}: not a valid TFLite model ({_first_line(exc)})") from None
        if not inputs or not outputs:
            raise InputError(f"{name}: {len(inputs)} inputs and {len(outputs)} outputs, expected at least one of each")
        self.inputs, self.outputs = [_tflite_spec(d) for d in inputs], [_tflite_spec(d) for d in outputs]
        self.quantized = _int8_inside(t["dtype"] for t in self.interpreter.get_tensor_details())
        self._in, self._out = [d["index"] for d in inputs], outputs[0]["index"]
        self._shapes = [tuple(int(d) for d in detail["shape"]) for detail in inputs]

    def run(self, x) -> np.ndarray:
        """The first output for `x`, one array or (several inputs) a tuple of them."""
        xs = x if isinstance(x, tuple) else (x,)
        try:  # a model can load and still fail when it runs (XNNPACK, null tensor data, ...)
            shapes = [a.shape for a in xs]
            if shapes != self._shapes:  # resize once per new input shape (a batch size), not per call
                for index, shape in zip(self._in, shapes):
                    self.interpreter.resize_tensor_input(index, list(shape))
                self.interpreter.allocate_tensors()
                self._shapes = shapes
            for index, a in zip(self._in, xs):
                self.interpreter.set_tensor(index, a)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self._out)
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"{self.name}: the model failed to run ({_first_line(exc)})") from None


MAX_TENSOR_BYTES = 256 * 2**20  # per batch: a Pi Zero 2 W has 512 MB in all


def _batch_budget(name: str, tensors: list[tuple]) -> int:
    """The largest batch whose tensors (shape, dtype) fit MAX_TENSOR_BYTES, from the shapes at batch 1
    (an upper bound: weights are counted per image too). A model that does not fit one image is refused."""
    per_image = sum(math.prod(max(int(d), 1) for d in shape) * np.dtype(dtype).itemsize for shape, dtype in tensors)
    if per_image > MAX_TENSOR_BYTES:
        raise InputError(f"{name}: its tensors need {per_image // 2**20:,} MB for one image, more than the "
                         f"{MAX_TENSOR_BYTES // 2**20} MB allowed (not a small image classifier)")
    return max(1, MAX_TENSOR_BYTES // max(per_image, 1))


def _tflite_spec(detail: dict) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = np.dtype(detail["dtype"]) in (np.int8, np.uint8) and scale
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
        self.inputs, self.outputs = [_onnx_spec(a) for a in inputs], [_onnx_spec(a) for a in outputs]
        self._in_names = [a.name for a in inputs]
        self.name = name
        # QDQ models keep float inputs; their QuantizeLinear nodes mark them as int8.
        self.quantized = bool(onnx_op_types(content) & {"QuantizeLinear", "QLinearConv", "QLinearMatMul"})
        self.max_batch = MAX_BATCH  # ONNX Runtime does not show intermediate shapes before running

    def run(self, x) -> np.ndarray:
        """The first output (every output is computed) for `x`, one array or a tuple of them."""
        xs = x if isinstance(x, tuple) else (x,)
        try:
            return self.session.run(None, dict(zip(self._in_names, xs)))[0]
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
