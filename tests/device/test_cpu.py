"""The CPU's int8 path, from cpuid via numpy (right under emulation), in every report."""

import platform

from edgefashion import cpu


def test_int8_paths():
    assert cpu.int8_path({"avx2": True, "avx512f": True, "avx512_vnni": True}) == ("x86 VNNI (vpdpbusd)", True)
    assert cpu.int8_path({"avx2": True, "avx512f": False, "avx512_vnni": False, "avx_vnni": True})[1]
    assert cpu.int8_path({"avx2": True, "avx512_vnni": False, "avx_vnni": None})[0].startswith(
        "x86 AVX2 without VNNI")
    assert cpu.int8_path({"avx2": False, "avx512_vnni": False}) == ("x86 SSE (no 8-bit dot product)", False)
    assert cpu.int8_path({"asimd": True, "asimddp": True, "i8mm": True})[0] == "Arm dot product (sdot/udot) + i8mm"
    assert cpu.int8_path({"asimd": True, "asimddp": False}) == ("Arm NEON without dot product", False)


def test_this_machine_is_described():
    described = cpu.describe()
    assert described.machine == platform.machine() and described.int8_path
    if platform.machine() == "x86_64":
        assert set(described.features) == set(cpu.X86)


def test_proc_cpuinfo_is_ignored_where_it_disagrees_with_cpuid(monkeypatch):
    # under qemu -cpu Haswell, /proc/cpuinfo is the host's (AVX-512) while cpuid says AVX2 only
    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu, "_numpy_features", lambda: {"AVX2": True, "AVX512F": False, "AVX512VNNI": False})
    monkeypatch.setattr(cpu, "_proc_flags", lambda: {"avx2", "avx512f", "avx512_vnni", "avx_vnni"})
    assert cpu.features() == {"avx2": True, "avx512f": False, "avx512_vnni": False, "avx_vnni": None,
                              "amx_int8": None}
    monkeypatch.setattr(cpu, "_proc_flags", lambda: {"avx2", "avx_vnni"})
    assert cpu.features()["avx_vnni"] is True
