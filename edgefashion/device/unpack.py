"""Opening a bundle on the device: safe extraction, every sha256, the golden arrays (host/bundle.py
makes bundles, device/selftest.py checks one).

A bundle is a flat .tar.gz. manifest.json lists every other file with its sha256 and size; nothing
else may be in the archive (but manifest.sig, its signature: device/trust.py), and nothing in it may
be a link, a folder, a device, absolute or leave the folder. The manifest describes; it never sets
how strict the device is: golden tolerances and floors are the device's own (selftest.Limits).
"""

from __future__ import annotations

import hashlib
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from ..console import printable
from ..errors import InputError
from ..files import read_json
from ..schemas import BundleManifest
from ..formats import FORMATS
from .trust import SIGNATURE, Provenance, Trust
from .trust import check as trust_check

MANIFEST = "manifest.json"
GOLDEN = "golden.npz"
# int8 TFLite goldens come from the reference kernels: bit-identical on every CPU. The fast kernels
# (XNNPACK on x86, NEON on Arm) round intermediate values differently, and one step early on can
# grow to several in the output (measured: 7 of 2,000 values, up to 7 steps, x86 vs aarch64).
REFERENCE_KERNELS = ("tflite-int8",)
# Budgets, checked before the bytes are read: no tar or zip bomb exhausts a small board.
MAX_MEMBERS = 32              # a bundle has 7-9 files
MAX_MEMBER_BYTES = 256 * 2**20
MAX_BUNDLE_BYTES = 512 * 2**20
MAX_MANIFEST_BYTES = 2**20
NAME_LIMIT = 120  # longest name shown in a message (a crafted one can be megabytes)
MAX_GOLDEN_BYTES = 64 * 2**20  # uncompressed arrays in golden.npz (200 images take 0.2 MB)


def input_spec(shape: tuple) -> dict:
    """What a bundle's manifest says of its models' input: (H, W, C) images, pixels scaled by 1/255."""
    h, w, c = shape
    return {"shape": [-1, h, w, c], "layout": "NHWC", "dtype": "uint8 pixels 0-255 or float32 in [0, 1]",
            "preprocessing": f"{h}x{w} {'grayscale' if c == 1 else 'RGB'}, scaled by 1/255",
            "input_scale": 1 / 255, "input_offset": 0.0}


def bundle_image_shape(manifest: BundleManifest) -> tuple[int, int, int]:
    """(H, W, C) of the bundle's images, from its manifest."""
    shape = manifest.input.get("shape") if isinstance(manifest.input, dict) else None
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[1:])
            and shape[3] in (1, 3)):
        raise InputError(f"{MANIFEST}: input shape {shape!r}, expected [-1, H, W, C] with C 1 or 3")
    return tuple(shape[1:])


# --- opening a bundle (device) -------------------------------------------------------------

def open_bundle(path, dest: Path, trust: Trust | None = None) -> tuple[Path, BundleManifest, Provenance]:
    """Extract `path` safely into `dest`, check every file against the manifest and the manifest
    against `trust` (default: the keys in this device's config folder).
    Returns (folder, manifest, provenance); raises InputError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: bundle not found")
    trust = Trust.load() if trust is None else trust
    hashes, digest = _extract(path, dest)
    if MANIFEST not in hashes:
        raise InputError(f"{path}: has no {MANIFEST}")
    if hashes[MANIFEST][1] > MAX_MANIFEST_BYTES:
        raise InputError(f"{path}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
    manifest_bytes = (dest / MANIFEST).read_bytes()
    provenance = trust_check(path, dest, manifest_bytes, trust, digest)
    manifest = BundleManifest.from_json(read_json(dest / MANIFEST, MANIFEST), f"{path}: {MANIFEST}")
    problems = check_files(hashes, manifest) + check_listing(manifest)
    if problems:
        raise InputError(f"{path}: " + _first(problems))
    return dest, manifest, provenance


def _first(problems: list[str], shown: int = 3) -> str:
    """A few problems on one line: a crafted bundle with 200,000 members must not print them all."""
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


def _extract(path: Path, dest: Path) -> tuple[dict[str, tuple[str, int]], str]:
    """Stream every member into `dest`, hashing as it goes: ({name: (sha256, bytes)}, the bundle file's
    sha256). The file is opened once: the digest is of the very bytes extracted, however the path
    is swapped meanwhile."""
    hashes = {}
    try:
        with open(path, "rb") as raw:
            reader = _HashingReader(raw)
            with tarfile.open(fileobj=reader, mode="r|gz") as tar:  # a stream: every byte read once, in order
                _extract_members(path, tar, dest, hashes)
            for _ in iter(lambda: reader.read(1 << 20), b""):  # what follows the archive counts too
                pass
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: not a readable .tar.gz bundle (truncated or corrupt: {printable(exc)})") from None
    except OSError as exc:
        if exc.filename is not None:  # writing failed: a full or read-only $TMPDIR, not a bad bundle
            raise InputError(f"cannot extract {path} into {dest}: {exc.strerror}") from None
        raise InputError(f"{path}: not a readable .tar.gz bundle (truncated or corrupt: {printable(exc)})") from None
    return hashes, reader.digest.hexdigest()


class _HashingReader:
    """A file's bytes as tarfile reads them, hashed on the way."""

    def __init__(self, raw):
        self.raw, self.digest = raw, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        block = self.raw.read(size)
        self.digest.update(block)
        return block


def _extract_members(path: Path, tar: tarfile.TarFile, dest: Path, hashes: dict) -> None:
    total = 0
    for count, member in enumerate(tar, start=1):
        _check_member(path, member, count)
        total += member.size
        if total > MAX_BUNDLE_BYTES:
            raise InputError(f"{path}: unpacks to more than {MAX_BUNDLE_BYTES // 2**20} MB")
        if member.name in hashes:
            raise InputError(f"{path}: member {printable(member.name, NAME_LIMIT)!r} appears twice")
        hashes[member.name] = _extract_file(path, tar, member, dest)


def _check_member(path: Path, m: tarfile.TarInfo, count: int) -> None:
    name = printable(m.name, NAME_LIMIT)
    if count > MAX_MEMBERS:
        raise InputError(f"{path}: more than {MAX_MEMBERS} members; a bundle has a handful of files")
    if m.name.startswith(("/", "\\")) or PurePosixPath(m.name).is_absolute():
        raise InputError(f"{path}: member {name!r} has an absolute path")
    if ".." in PurePosixPath(m.name).parts:
        raise InputError(f"{path}: member {name!r} leaves the bundle folder ('..')")
    if m.issym() or m.islnk():
        raise InputError(f"{path}: member {name!r} is a link to {printable(m.linkname, NAME_LIMIT)!r}; "
                         f"links are not allowed")
    if not m.isfile():
        raise InputError(f"{path}: member {name!r} is a folder, device or special file; a bundle holds files only")
    if "/" in m.name or m.name in ("", ".") or m.name.startswith("."):
        raise InputError(f"{path}: member {name!r} is not a plain file name; a bundle is flat")
    if m.size > MAX_MEMBER_BYTES:
        raise InputError(f"{path}: member {name!r} is {m.size} bytes, more than {MAX_MEMBER_BYTES // 2**20} MB")


def _extract_file(path: Path, tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> tuple[str, int]:
    """Copy one regular file's bytes in blocks, hashing them; names were checked, so it stays in `dest`."""
    digest, size = hashlib.sha256(), 0
    source = tar.extractfile(member)
    target = dest / member.name
    with open(target, "xb") as out:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
            try:
                out.write(block)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, str(target)) from None
    return digest.hexdigest(), size


def check_files(hashes: dict[str, tuple[str, int]], manifest: BundleManifest) -> list[str]:
    """Every listed file present with its sha256 and size, and nothing unlisted."""
    problems = []
    listed = manifest.files
    if not listed:
        return [f"{MANIFEST} lists no files"]
    for name, expected in listed.items():
        shown = printable(name, NAME_LIMIT)
        if PurePosixPath(name).name != name or name in (MANIFEST, SIGNATURE):
            problems.append(f"{shown!r}: not a plain file name")
        elif name not in hashes:
            problems.append(f"{shown}: missing")
        elif hashes[name][1] != expected.bytes:
            problems.append(f"{shown}: {hashes[name][1]} bytes, expected {expected.bytes} (truncated?)")
        elif hashes[name][0] != expected.sha256:
            problems.append(f"{shown}: sha256 mismatch (modified)")
    extra = sorted(set(hashes) - set(listed) - {MANIFEST, SIGNATURE})
    problems.extend(f"{printable(name, NAME_LIMIT)}: not listed in the manifest" for name in extra)
    return problems


def check_listing(manifest: BundleManifest) -> list[str]:
    """Models and golden vectors are files the manifest lists (and so hashes), and there are models."""
    problems = [f"model {printable(fmt)} -> {printable(name)!r} is not a file listed in the bundle"
                for fmt, name in manifest.models.items() if name not in manifest.files]
    problems += [f"model {printable(fmt)} is not one of {', '.join(FORMATS)}"
                 for fmt in manifest.models if fmt not in FORMATS]
    if manifest.golden.file not in manifest.files:
        problems.append(f"golden vectors {printable(manifest.golden.file)!r} are not a file listed in the bundle")
    if not manifest.models:
        problems.append("the bundle holds no models")
    return [f"{MANIFEST}: {problem}" for problem in problems]


def load_golden(path: Path, manifest: BundleManifest) -> dict[str, np.ndarray]:
    """The golden arrays, checked before use: sizes from the zip directory before anything is
    inflated, then names, shapes and dtypes. No pickles."""
    where = f"{GOLDEN} in the bundle"
    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
        if inflated > MAX_GOLDEN_BYTES:
            raise InputError(f"{where}: unpacks to {inflated} bytes, more than {MAX_GOLDEN_BYTES // 2**20} MB")
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError(f"{where}: not a readable .npz of plain arrays ({printable(str(exc)[:100])})") from None
    h, w, c = bundle_image_shape(manifest)
    k = len(manifest.labels)
    needed = {"images": (np.uint8, (h, w) if c == 1 else (h, w, c)), "labels": (None, ())}
    for fmt in manifest.models:
        needed[f"raw_{fmt}"] = (None, (k,))
        if fmt in REFERENCE_KERNELS:
            needed[f"fast_{fmt}"] = (None, (k,))
    count = len(arrays["images"]) if "images" in arrays and arrays["images"].ndim else 0
    for name, (dtype, shape) in needed.items():
        array = arrays.get(name)
        if array is None:
            raise InputError(f"{where}: has no array {name!r}")
        if array.shape != (count, *shape) or count == 0 or (dtype and array.dtype != dtype) \
                or array.dtype.kind not in "uif":
            raise InputError(f"{where}: {name} is {array.dtype} {array.shape}, expected {count or 'N'} "
                             f"rows of shape {shape} (N >= 1)")
    labels = arrays["labels"]
    if labels.dtype.kind not in "ui" or labels.min() < 0 or labels.max() >= k:
        raise InputError(f"{where}: labels must be integers 0-{k - 1} (the manifest names {k} classes)")
    return arrays
