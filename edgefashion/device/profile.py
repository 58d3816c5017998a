"""Where the time goes: per-operator latency of one model, for `bench --profile`.

ONNX models: ONNX Runtime's own profiler (SessionOptions.enable_profiling), the median kernel time
of each node over the timed runs.

TFLite models: LiteRT's Python package exposes no per-operator profiler, so the time of operator k
is measured as the difference between two truncated copies of the model, one ending after operator
k and one after operator k - 1 (same weights, same quantization, run by LiteRT with its XNNPACK
delegate, median of many runs). The differences are noisier than a profiler's counters and a
truncated graph may be delegated a little differently; the sum is checked against the whole model.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import cpu
from ..console import quiet
from ..errors import InputError, MissingDependency, Unsupported
from . import macs
from .feed import bench_input
from .runtime import Model
from .tflite_file import read as read_tflite

TFLITE_TYPES = {"int8": "int8", "uint8": "int8", "int32": "int32", "float32": "float32"}


def profile(path: Path, runs: int = 200, array: Path | None = None, shape: list | None = None,
            backend: str = "auto") -> dict:
    """{"ops": [{name, type, dtype, us, share}], "total_us": sum, "model_us": whole model, "method": ...},
    at batch 1 on what bench times (feed.py), on `backend` (the numpy backend times itself)."""
    model = Model(path, classifier=False, backend=backend)
    if len(model.inputs) > 1:
        raise Unsupported(f"{path.name}: {len(model.inputs)} inputs; bench --profile times models of one input")
    x = bench_input(model, 1, array, shape)
    if model.backend == "numpy":
        ops = _numpy_ops(model, path, x, runs)
    else:
        ops = _onnx_ops(path, x, runs) if model.format.startswith("onnx") else _tflite_ops(path, x, runs)
    model_us = median_us(lambda: model.run(x), runs)
    total = sum(op["us"] for op in ops)
    peak = macs.peak_gmacs(cpu.features(), macs.dtype_of(model.format, model.backend), 1)
    for op in ops:
        op["share"] = round(op["us"] / total, 4) if total > 0 else None
        op["gmacs"] = macs.achieved(op["macs"], op["us"])
        op["peak_share"] = round(op["gmacs"] / peak["gmacs"], 6) if peak and op["gmacs"] else None
    method = ("the numpy backend's own timer around each operator, median per operator" if model.backend == "numpy"
              else "ONNX Runtime profiler, median kernel time per node" if model.format.startswith("onnx") else
              "LiteRT, time of the model truncated after each operator minus the one before (no profiler API)")
    return {"format": model.format, "batch": 1, "ops": ops, "total_us": round(total, 2), "peak": peak,
            "macs": onnx_macs(path, x) if model.format.startswith("onnx") else sum(op["macs"] for op in ops),
            "model_us": round(model_us, 2), "sum_vs_model": round(total / model_us, 3) if model_us else None,
            "method": method}


def median_us(run, runs: int) -> float:
    for _ in range(10):
        run()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        run()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e3


def _onnx_events(path: Path, x: np.ndarray, runs: int, optimized: bool = True) -> list[dict]:
    """ONNX Runtime's profiler events of `10 + runs` runs on one thread (`optimized`: the graph as ORT
    runs it, fused and re-laid-out; else the file's own nodes)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependency("onnxruntime", "edge") from None
    with tempfile.TemporaryDirectory(prefix="edgefashion-profile-") as scratch:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(scratch, "ort")
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if not optimized:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(10 + runs):
            session.run(None, feed)
        return json.loads(Path(session.end_profiling()).read_text())


def _shapes(args: dict, key: str) -> list:
    return [shape for item in args.get(key, []) for shape in item.values()]


def _node_macs(event: dict) -> int:
    args = event.get("args", {})
    return macs.onnx_node_macs(args.get("op_name", "?"), _shapes(args, "input_type_shape"),
                               _shapes(args, "output_type_shape"))


def onnx_macs(path: Path, x: np.ndarray) -> int | None:
    """Multiply-accumulates per image of an ONNX model, from the shapes of one profiled run of its
    unoptimized graph (the optimized one blocks channels, NCHWc pads 12 to 16, and omits the shapes of
    prepacked weights, so its nodes are not counted one by one)."""
    counted = {}
    for event in _onnx_events(path, x, -9, optimized=False):  # 10 - 9 = one run
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            counted[event["name"]] = _node_macs(event)
    return sum(counted.values()) // max(len(x), 1) or None


def _onnx_ops(path: Path, x: np.ndarray, runs: int) -> list[dict]:
    events = _onnx_events(path, x, runs)
    per_node: dict[str, dict] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        args = event.get("args", {})
        name = event["name"].removesuffix("_kernel_time")
        entry = per_node.setdefault(name, {"type": args.get("op_name", "?"), "dtype": _onnx_dtype(args), "times": []})
        entry["times"].append(event["dur"])
    return [{"name": name, "type": e["type"], "dtype": e["dtype"], "macs": None,
             "us": round(statistics.median(e["times"][-runs:]), 2)} for name, e in per_node.items()]


def _onnx_dtype(args: dict) -> str:
    """The element type of a node's first input, as the profiler records it ('uint8', 'float', ...)."""
    for item in args.get("input_type_shape", []):
        for dtype in item:
            return {"float": "float32"}.get(dtype, dtype)
    return "?"


def _numpy_ops(model: Model, path: Path, x: np.ndarray, runs: int) -> list[dict]:
    """The numpy backend's operators, timed by its interpreter as it runs them (operators that follow
    from the input's shape alone run once per shape and so are not listed)."""
    interpreter = model._runner.interpreter
    work = macs.tflite_ops(path.read_bytes(), path.name)
    model.run(x)  # sets the BLAS threads, and the shape-only values for this input
    times: dict[int, list] = {}
    for _ in range(10 + runs):
        timings: list = []
        interpreter.run(x, timings)
        for index, ns in timings:
            times.setdefault(index, []).append(ns)
    ops = []
    for index, ns in times.items():
        op = interpreter.graph.operators[index]
        output = interpreter.graph.tensors[op.outputs[0]]
        ops.append({"name": output.name.split(";")[0][-60:], "type": op.op,
                    "dtype": TFLITE_TYPES.get(np.dtype(output.dtype).name, np.dtype(output.dtype).name),
                    "macs": work[index]["macs"], "us": round(statistics.median(ns[10:]) / 1e3, 2)})
    return ops


def _tflite_ops(path: Path, x: np.ndarray, runs: int) -> list[dict]:
    try:
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_litert.tools import flatbuffer_utils
    except ImportError:
        raise MissingDependency("ai-edge-litert (for a per-operator TFLite profile)", "edge") from None
    content = path.read_bytes()
    graph = read_tflite(content, path.name)
    work = macs.tflite_ops(content, path.name)
    previous, ops = 0.0, []
    for k, op in enumerate(graph.operators, start=1):
        model = flatbuffer_utils.read_model_from_bytearray(content)
        subgraph = model.subgraphs[0]
        subgraph.operators = subgraph.operators[:k]
        subgraph.outputs = list(op.outputs)
        truncated = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
        try:
            with quiet(fds=(2,)):
                interpreter = Interpreter(model_content=truncated, num_threads=1)
                interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"{path.name}: cannot time the model cut after {op.op} ({exc})") from None
        index = interpreter.get_input_details()[0]["index"]

        def run():
            interpreter.set_tensor(index, x)
            interpreter.invoke()
        elapsed = median_us(run, runs)
        output = graph.tensors[op.outputs[0]]
        ops.append({"name": output.name.split(";")[0][-60:], "type": op.op,
                    "dtype": TFLITE_TYPES.get(np.dtype(output.dtype).name, np.dtype(output.dtype).name),
                    "macs": work[k - 1]["macs"], "us": round(max(elapsed - previous, 0.0), 2)})
        previous = elapsed
    return ops
