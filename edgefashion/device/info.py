"""`edgefashion info`: what this device is and can run, for `fleet check` and for a person at the
board: edgefashion and Python versions, machine, OS, the interpreters installed, the CPU's int8 path,
free disk in a folder, and the device's clock. No TensorFlow, nothing written."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import platform
import shutil
import time
from pathlib import Path

from .. import __version__, cpu, package_versions

INTERPRETERS = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime", "onnxruntime": "onnxruntime"}


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text(errors="replace").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def _free_bytes(folder: Path) -> int | None:
    """Free bytes where `folder` is (or would be: its nearest existing parent)."""
    folder = folder.expanduser().absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def device_info(folder: Path | None = None) -> dict:
    installed = [name for name in INTERPRETERS if importlib.util.find_spec(name) is not None]
    return {
        "edgefashion": __version__, "python": platform.python_version(), "machine": platform.machine(),
        "os": _os_name(), "cores": os.cpu_count(), "cpu": dataclasses.asdict(cpu.describe()),
        "interpreters": installed + ["numpy backend"],
        "versions": package_versions(("numpy", *INTERPRETERS.values(), "pillow", "cryptography")),
        "emulated": os.environ.get("EDGEFASHION_EMULATED") or None,
        "folder": str(folder) if folder else None, "free_bytes": _free_bytes(folder or Path.cwd()),
        "time": time.time(),
    }


def render(info: dict) -> str:
    free = info["free_bytes"]
    return "\n".join([
        f"edgefashion {info['edgefashion']}, Python {info['python']}, {info['machine']}, {info['os']}",
        f"CPU: {info['cpu']['model'] or 'unknown'}, {info['cores']} cores, int8 path {info['cpu']['int8_path']}"
        + (f" (EMULATED: {info['emulated']})" if info["emulated"] else ""),
        f"interpreters: {', '.join(info['interpreters'])}",
        f"free disk: {free / 1e6:.0f} MB" if free is not None else "free disk: unknown",
    ])
