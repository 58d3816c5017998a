"""How much work a model is, and how much this CPU could do: multiply-accumulates per op counted
from the graph, and the CPU's theoretical peak, so that bench can say how close a latency is to it.

Counted per image: CONV_2D out_h * out_w * out_c * k_h * k_w * in_c (per group), DEPTHWISE_CONV_2D
out_h * out_w * out_c * k_h * k_w, FULLY_CONNECTED out * in, MatMul/Gemm M * K * N; pools count
their window (comparisons or adds) and element-wise ops one per output value, reported apart as
"other ops" since they use no multiplier.

The peak is cores x clock x MACs per cycle per core of the widest multiply the CPU has, from the
instruction throughputs in Intel's and AMD's optimization manuals, Arm's Cortex-A software
optimization guides and uops.info (two vector multiply pipes per core unless noted). They are
upper bounds no real kernel reaches: memory, im2col and requantization come on top.
"""

from __future__ import annotations

import math
from pathlib import Path


from .tflite_file import read as read_tflite

MULTIPLY_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "Conv", "QLinearConv", "ConvInteger", "MatMul",
                "Gemm", "QLinearMatMul", "MatMulInteger", "FusedConv", "FusedMatMul", "QGemm"}

# MACs per cycle per core: (int8, float32). Where the figures come from is in the module docstring.
PER_CYCLE = {
    "x86 AMX": (1024, 32),        # TMUL: a 16x64 by 64x16 int8 tile product every 16 cycles; AVX-512 FMA for float
    "x86 AVX-512 VNNI": (128, 32),  # vpdpbusd: 64 u8*s8 MACs per 512-bit op, two ports; FMA 2 x 16 float32
    "x86 AVX-VNNI": (64, 16),     # 256-bit vpdpbusd, two ports; FMA 2 x 8
    "x86 AVX2 without VNNI": (32, 16),  # vpmaddubsw + vpmaddwd on 256 bits: 32 u8*s8 MACs a cycle; FMA 2 x 8
    "x86 SSE": (16, 8),           # pmaddubsw on 128 bits, two ports; mul + add 4-wide
    "Arm dot product": (32, 8),   # sdot: 16 MACs per 128-bit op, two pipes (Cortex-A76/A78); FMA 2 x 4
    "Arm NEON without dot product": (16, 8),  # smlal: 8 MACs per op, two pipes (Cortex-A72/A53 one pipe)
}


def tflite_ops(content: bytes, name: str) -> list[dict]:
    """Per operator of a .tflite model, in graph order: {type, macs, other} per image."""
    graph = read_tflite(content, name)
    out = []
    for op in graph.operators:
        shape = lambda i: tuple(graph.tensors[i].shape)  # noqa: E731
        outputs = math.prod(shape(op.outputs[0])[1:]) if op.outputs else 0
        macs, other = 0, 0
        if op.op == "CONV_2D":
            _, kh, kw, cin = shape(op.inputs[1])
            macs = outputs * kh * kw * cin
        elif op.op == "DEPTHWISE_CONV_2D":
            _, kh, kw, _ = shape(op.inputs[1])
            macs = outputs * kh * kw
        elif op.op == "FULLY_CONNECTED":
            macs = outputs * shape(op.inputs[1])[-1]
        elif op.op in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            other = outputs * op.options.get("filter_height", 1) * op.options.get("filter_width", 1)
        elif op.op == "MEAN":
            other = math.prod(shape(op.inputs[0])[1:])
        elif op.op not in ("RESHAPE", "SHAPE", "STRIDED_SLICE", "PACK", "SQUEEZE"):
            other = outputs
        out.append({"type": op.op, "macs": int(macs), "other": int(other)})
    return out


def onnx_node_macs(op_type: str, inputs: list, outputs: list) -> int:
    """MACs of one ONNX node from the shapes ONNX Runtime's profiler records (per batch it ran)."""
    try:
        if op_type in ("Conv", "QLinearConv", "ConvInteger", "FusedConv"):
            weight = inputs[3] if op_type == "QLinearConv" else inputs[1]
            return math.prod(outputs[0]) * math.prod(weight[1:])  # N*Cout*OH*OW * Cin/g*KH*KW
        if op_type in ("MatMul", "Gemm", "QLinearMatMul", "MatMulInteger", "FusedMatMul", "QGemm"):
            a = inputs[0]
            return math.prod(outputs[0]) * a[-1]
    except (IndexError, TypeError):
        return 0
    return 0


def file_macs(path: Path) -> int | None:
    """Multiply-accumulates per image of a .tflite model (None for other files: see profile for ONNX)."""
    path = Path(path)
    if path.suffix.lower() != ".tflite":
        return None
    try:
        return sum(op["macs"] for op in tflite_ops(path.read_bytes(), path.name))
    except Exception:  # a model we cannot read is timed all the same, its work just not counted
        return None


def clock_ghz() -> tuple[float | None, str]:
    """The clock the peak is computed at, and where it was read."""
    for source in ("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq",
                   "/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq"):
        try:
            return int(Path(source).read_text().strip()) / 1e6, source
        except (OSError, ValueError):
            continue
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.split(":")[0].strip() == "cpu MHz":
                return float(line.split(":", 1)[1]) / 1e3, "/proc/cpuinfo cpu MHz (the current clock)"
    except (OSError, ValueError):
        pass
    return None, "unknown"


def widest(features: dict) -> str | None:
    """The PER_CYCLE row of a CPU with these features (cpu.features())."""
    if "avx2" in features:
        for flag, row in (("amx_int8", "x86 AMX"), ("avx512_vnni", "x86 AVX-512 VNNI"), ("avx_vnni", "x86 AVX-VNNI"),
                          ("avx2", "x86 AVX2 without VNNI")):
            if features.get(flag):
                return row
        return "x86 SSE"
    if "asimddp" in features:
        return "Arm dot product" if features.get("asimddp") else "Arm NEON without dot product"
    return None


def peak_gmacs(features: dict, dtype: str, threads: int) -> dict | None:
    """{gmacs, per_cycle, unit, clock_ghz, clock_source, cores} for `threads` cores, or None where unknown."""
    unit = widest(features)
    per_cycle = PER_CYCLE.get(unit)
    if unit == "x86 AVX2 without VNNI" and features.get("avx512f"):
        per_cycle = (per_cycle[0], 32)  # AVX-512 float FMA without VNNI
    ghz, source = clock_ghz()
    if per_cycle is None or ghz is None:
        return None
    n = per_cycle[0] if dtype == "int8" else per_cycle[1]
    return {"gmacs": round(n * ghz * threads, 1), "per_cycle": n, "unit": unit, "clock_ghz": round(ghz, 3),
            "clock_source": source, "cores": threads}


def achieved(macs: int | None, per_image_us: float | None) -> float | None:
    """GMAC/s at that latency per image."""
    if not macs or not per_image_us:
        return None
    return round(macs / per_image_us / 1e3, 3)


def dtype_of(fmt: str, runtime: str = "") -> str:
    """The arithmetic whose peak bounds a run: the numpy backend's int8 models are float32 products
    (of integer values), so their ceiling is the float32 peak."""
    return "int8" if fmt.endswith("int8") and runtime != "numpy" else "float32"


