"""Opening a device bundle safely, and the on-device self-test (host/bundle.py makes bundles).

A bundle is a flat .tar.gz. manifest.json lists every other file with its sha256 and size; nothing
else may be in the archive, and nothing in it may be a link, a device, absolute or leave the folder.
"""

from __future__ import annotations

import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from .. import IMAGE_SHAPE
from ..errors import InputError
from ..files import read_json, sha256_file
from ..rundir import FLOAT_OF, BundleManifest, ModelSpec
from .runtime import Model

MANIFEST = "manifest.json"
GOLDEN = "golden.npz"
FLOAT_TOLERANCE = 1e-4
# int8 TFLite goldens come from the reference kernels: bit-identical on every CPU. The fast kernels
# (XNNPACK on x86, NEON on Arm) round intermediate values differently, and one step early on can
# grow to several in the output (measured: 7 of 2,000 values, up to 7 steps, x86 vs aarch64).
REFERENCE_KERNELS = ("tflite-int8",)
FAST_MIN_MATCH = 0.99  # fast kernels: share of values within one step, and of identical top-1
MAX_BUNDLE_BYTES = 512 * 2**20  # refuse anything that unpacks bigger: no tar bombs on a small board
INPUT_SPEC = {"shape": [-1, *IMAGE_SHAPE], "layout": "NHWC", "dtype": "uint8 pixels 0-255 or float32 in [0, 1]",
              "preprocessing": "28x28 grayscale, light object on black, scaled by 1/255 (Fashion-MNIST)"}


# --- opening a bundle (device) -------------------------------------------------------------

def open_bundle(path, dest: Path) -> tuple[Path, dict]:
    """Extract `path` safely into `dest` and check every file against the manifest.
    Returns (folder, manifest); raises InputError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: bundle not found")
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = tar.getmembers()
            _check_members(path, members)
            for member in members:
                if member.isfile():
                    _extract_file(tar, member, dest)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise InputError(f"{path}: not a readable .tar.gz bundle (truncated or corrupt: {exc})") from None
    manifest_path = dest / MANIFEST
    if not manifest_path.is_file():
        raise InputError(f"{path}: has no {MANIFEST}")
    manifest = BundleManifest.from_json(read_json(manifest_path, MANIFEST), f"{path}: {MANIFEST}")
    problems = check_files(dest, manifest) + check_listing(manifest)
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))
    return dest, manifest


def _check_members(path: Path, members: list) -> None:
    total = 0
    for m in members:
        name = PurePosixPath(m.name)
        if name.is_absolute() or m.name.startswith(("/", "\\")):
            raise InputError(f"{path}: member {m.name!r} has an absolute path")
        if ".." in name.parts:
            raise InputError(f"{path}: member {m.name!r} leaves the bundle folder ('..')")
        if m.issym() or m.islnk():
            raise InputError(f"{path}: member {m.name!r} is a link to {m.linkname!r}; links are not allowed")
        if not (m.isfile() or m.isdir()):
            raise InputError(f"{path}: member {m.name!r} is a device or special file")
        total += m.size
    if total > MAX_BUNDLE_BYTES:
        raise InputError(f"{path}: unpacks to {total} bytes, more than the {MAX_BUNDLE_BYTES} allowed")


def _extract_file(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    """Copy one regular file's bytes; names were checked, so it stays inside `dest`."""
    target = dest / PurePosixPath(member.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(member)
    target.write_bytes(source.read())


def check_files(folder: Path, manifest: BundleManifest) -> list[str]:
    """Every listed file present with its sha256 and size, and nothing unlisted."""
    problems = []
    listed = manifest.files
    if not listed:
        return [f"{MANIFEST} lists no files"]
    for name, expected in listed.items():
        file = folder / name
        if PurePosixPath(name).name != name:
            problems.append(f"{name!r}: not a plain file name")
        elif not file.is_file():
            problems.append(f"{name}: missing")
        elif file.stat().st_size != expected.bytes:
            problems.append(f"{name}: {file.stat().st_size} bytes, expected {expected.bytes} (truncated?)")
        elif sha256_file(file) != expected.sha256:
            problems.append(f"{name}: sha256 mismatch (modified)")
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    problems.extend(f"{name}: not listed in the manifest" for name in sorted(present - set(listed) - {MANIFEST}))
    return problems


def check_listing(manifest: BundleManifest) -> list[str]:
    """Models and golden vectors are files the manifest lists (and so hashes), and there are models."""
    problems = [f"model {fmt} -> {name!r} is not a file listed in the bundle"
                for fmt, name in manifest.models.items() if name not in manifest.files]
    problems += [f"model {fmt} has no model_specs entry" for fmt in manifest.models if fmt not in manifest.model_specs]
    if manifest.golden.file not in manifest.files:
        problems.append(f"golden vectors {manifest.golden.file!r} are not a file listed in the bundle")
    if not manifest.models:
        problems.append("the bundle holds no models")
    return [f"{MANIFEST}: {problem}" for problem in problems]


# --- self-test (device) --------------------------------------------------------------------

@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    figures: dict = field(default_factory=dict)  # the numbers behind `detail`, for --json

    def as_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "detail": self.detail, "figures": self.figures}

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name}: {self.detail}"


def selftest(bundle, threads: int = 1, report=print) -> list[Check]:
    """Every check of a bundle on this device; `report` gets each one as it finishes."""
    checks: list[Check] = []

    def record(check: Check) -> None:
        checks.append(check)
        report(check.line())

    with tempfile.TemporaryDirectory() as scratch:
        try:
            folder, manifest = open_bundle(bundle, Path(scratch))
        except InputError as exc:
            record(Check("bundle", False, str(exc)))
            return checks
        record(Check("bundle", True, f"safe to extract; {len(manifest.files)} files match their sha256"))
        golden = np.load(folder / manifest.golden.file)
        outputs = {}
        for fmt, name in manifest.models.items():
            outputs[fmt] = _check_model(fmt, folder / name, manifest.model_specs[fmt], golden, threads, record)
        _cross_check(manifest, golden, outputs, record)
    return checks


def _check_model(fmt: str, path: Path, spec: ModelSpec, golden, threads: int, record) -> np.ndarray | None:
    """Load one model, compare it with the host's golden outputs; return its probabilities."""
    try:
        model = Model(path, threads=threads)
    except InputError as exc:
        record(Check(f"load {path.name}", False, str(exc)))
        return None
    record(Check(f"load {path.name}", True, f"{model.format} on {model.backend}"))
    raw = model.run(model.prepare(golden["images"]))
    tolerance = spec.golden_tolerance
    if fmt in REFERENCE_KERNELS:
        reference = Model(path, threads=threads, kernels="reference")
        exact = _diff(reference.run(reference.prepare(golden["images"])), golden[f"raw_{fmt}"])
        record(Check(f"golden {path.name} (reference kernels)", exact["max"] <= tolerance,
                     f"max {exact['max']:.3g} quantization steps (tolerance {tolerance:g}), "
                     f"{exact['differ']} of {exact['values']} values differ", exact))
        fast = _diff(raw, golden[f"fast_{fmt}"])
        passed = fast["within_one"] >= FAST_MIN_MATCH and fast["same_top1"] >= FAST_MIN_MATCH
        record(Check(f"golden {path.name} (fast kernels)", passed,
                     f"{fast['within_one']:.2%} of values within one step (>= {FAST_MIN_MATCH:.0%}), "
                     f"max {fast['max']:.3g} steps, same top-1 on {fast['same_top1']:.1%} of images", fast))
    else:
        result = _diff(raw, golden[f"raw_{fmt}"])
        record(Check(f"golden {path.name}", result["max"] <= tolerance,
                     f"max |diff| {result['max']:.3g} (tolerance {tolerance:.3g}), "
                     f"{result['differ']} of {result['values']} values differ", {**result, "tolerance": tolerance}))
    return model.dequantize(raw)


def _diff(here: np.ndarray, host: np.ndarray) -> dict:
    delta = np.abs(here.astype(np.float64) - host.astype(np.float64))
    return {"max": float(delta.max()), "differ": int((delta > 0).sum()), "values": int(delta.size),
            "within_one": float((delta <= 1).mean()),
            "same_top1": float((here.argmax(1) == host.argmax(1)).mean())}


def agreements(golden, probabilities: dict) -> dict:
    """Per family: int8-vs-float top-1 agreement and both accuracies on the golden images."""
    labels, out = golden["labels"], {}
    for q_fmt, f_fmt in FLOAT_OF.items():
        q, f = probabilities.get(q_fmt), probabilities.get(f_fmt)
        if q is not None and f is not None:
            out[q_fmt.split("-")[0]] = {"agreement": float((q.argmax(1) == f.argmax(1)).mean()),
                                        "int8_accuracy": float((q.argmax(1) == labels).mean()),
                                        "f32_accuracy": float((f.argmax(1) == labels).mean())}
    return out


def _cross_check(manifest: BundleManifest, golden, outputs: dict, record) -> None:
    """The host's int8-vs-float cross-check, repeated here: it must come out the same
    (one golden image of slack for the one-step int8 differences between CPUs)."""
    host = manifest.golden.host_cross_check
    slack = 1 / len(golden["labels"])
    device = agreements(golden, {k: v for k, v in outputs.items() if v is not None})
    for family, here in device.items():
        there = host.get(family)
        if there is None:
            continue
        passed = here["agreement"] >= there.agreement - slack - 1e-9 and \
            abs(here["int8_accuracy"] - there.int8_accuracy) <= slack + 1e-9
        record(Check(f"int8 vs float {family}", passed,
                     f"top-1 agreement {here['agreement']:.1%} (host {there.agreement:.1%}), int8 accuracy "
                     f"{here['int8_accuracy']:.3f} (host {there.int8_accuracy:.3f}), float "
                     f"{here['f32_accuracy']:.3f} on {len(golden['labels'])} golden images"))
