"""The CPU features that decide how int8 runs here (device-safe: numpy and /proc only).

Features come from cpuid as numpy's runtime dispatch reads it, which stays right under emulation
(`qemu-x86_64 -cpu Haswell` shows AVX2 without AVX-512), where /proc/cpuinfo shows the host's.
/proc/cpuinfo fills in what numpy does not know (avx_vnni, amx, i8mm) when the two agree.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

# {our name: numpy's name (None: only in /proc/cpuinfo)}
X86 = {"avx2": "AVX2", "avx512f": "AVX512F", "avx512_vnni": "AVX512VNNI", "avx_vnni": None, "amx_int8": None}
ARM = {"asimd": "ASIMD", "asimddp": "ASIMDDP", "i8mm": None}


def _numpy_features() -> dict:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__
    return __cpu_features__


def _proc_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key = line.split(":")[0].strip()
        if key in ("flags", "Features") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


def features() -> dict[str, bool | None]:
    """{feature: True/False, or None when it cannot be read here}."""
    machine = platform.machine().lower()
    table = X86 if machine in ("x86_64", "amd64", "i686") else ARM if machine in ("aarch64", "arm64") else {}
    found, proc = _numpy_features(), _proc_flags()
    out = {name: bool(found.get(np_name)) for name, np_name in table.items() if np_name}
    # /proc/cpuinfo is trusted only where it agrees with cpuid (it is the host's under emulation)
    agrees = all((name in proc) == value for name, value in out.items()) and bool(proc)
    for name, np_name in table.items():
        if np_name is None:
            out[name] = (name in proc) if agrees else None
    return out


def int8_path(found: dict[str, bool | None]) -> tuple[str, bool]:
    """(which int8 dot-product path the kernels take here, whether it is a fast one)."""
    if "avx2" in found:
        if found.get("amx_int8"):
            return "x86 AMX", True
        if found.get("avx512_vnni") or found.get("avx_vnni"):
            return "x86 VNNI (vpdpbusd)", True
        if found.get("avx2"):
            return "x86 AVX2 without VNNI (vpmaddubsw, int16 pair sums)", False
        return "x86 SSE (no 8-bit dot product)", False
    if "asimddp" in found:
        if found.get("asimddp"):
            return "Arm dot product (sdot/udot)" + (" + i8mm" if found.get("i8mm") else ""), True
        return "Arm NEON without dot product", False
    return f"{platform.machine()} (unknown)", False


def model_name() -> str | None:
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        info = ""
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


@dataclass
class CpuInfo:
    """The CPU in bench.json, verify.json and selftest --json."""

    model: str | None
    machine: str
    features: dict[str, bool | None]
    int8_path: str
    int8_fast_path: bool
    source: str = "cpuid via numpy; /proc/cpuinfo where it agrees"


def describe() -> CpuInfo:
    """This CPU, its int8 features and the int8 path they give."""
    found = features()
    path, fast = int8_path(found)
    return CpuInfo(model=model_name(), machine=platform.machine(), features=found, int8_path=path,
                   int8_fast_path=fast)


NO_FAST_INT8 = ("this CPU has no int8 dot-product instructions ({path}): int8 models may be little or "
                "no faster than float here, and at larger batches even slower")
