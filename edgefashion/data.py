"""Fashion-MNIST readers: the seed's CSV format and the original IDX files. numpy only.

The device side uses this module too, so it never imports TensorFlow.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import math
import os
import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import NUM_CLASSES
from .console import printable
from .errors import InputError
from .files import write_bytes

IMG_ROWS, IMG_COLS = 28, 28
PIXELS = IMG_ROWS * IMG_COLS

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# sha256 of the *uncompressed* IDX files: stable however the .gz was recompressed.
IDX_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DOWNLOAD_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
DEFAULT_DIRS = (
    Path("/usr/share/datasets/fashion-mnist"),  # Debian: apt-get install dataset-fashion-mnist
    Path("~/.keras/datasets/fashion-mnist"),
)


@dataclass
class Dataset:
    """uint8 images (N, 28, 28), uint8 labels (N,) or None, and where they came from."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str
    sha256: str

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices) -> "Dataset":
        labels = None if self.labels is None else self.labels[indices]
        return Dataset(self.images[indices], labels, self.source, self.sha256)


# --- preparation (as in the seed's prep_data) -------------------------------------------

def prepare(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) scaled to [0, 1]."""
    return (images.reshape(len(images), IMG_ROWS, IMG_COLS, 1).astype(np.float32) / 255.0)


def one_hot(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[labels]


# --- CSV ---------------------------------------------------------------------------------

def read_csv(path, require_labels: bool = True) -> Dataset:
    """Read the seed's CSV: a header row, then `label,pixel1..pixel784` (label optional
    when `require_labels` is False). The label column is found by its name, wherever it is.
    Cells are ASCII digits. Every problem is an InputError naming file and line."""
    path = Path(path)
    raw = _read_file(path)
    text = raw.removeprefix(codecs.BOM_UTF8).replace(b"\r\n", b"\n")
    header, _, body = text.partition(b"\n")
    label_col, pixel_cols = _columns(path, header, require_labels)
    ncols = len(pixel_cols) + (label_col is not None)
    body = body.rstrip(b"\n")
    if not body.strip():
        raise InputError(f"{path}: line 2: no data rows after the header")
    values = _parse_fast(body, ncols)
    if values is None:  # something unusual: find and name the first bad line
        values = _parse_slow(path, body, ncols, label_col)
    labels = None if label_col is None else values[:, label_col]
    pixels = values[:, pixel_cols]
    _check_ranges(path, labels, pixels, label_col, pixel_cols)
    images = pixels.astype(np.uint8).reshape(-1, IMG_ROWS, IMG_COLS)
    return Dataset(images, None if labels is None else labels.astype(np.uint8),
                   str(path), hashlib.sha256(raw).hexdigest())


def _read_file(path: Path) -> bytes:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a CSV file")
    raw = path.read_bytes()
    if not raw.strip():
        raise InputError(f"{path}: file is empty, expected a header row and {PIXELS + 1} columns per row")
    return raw


_NUMBER = re.compile(rb"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
_PIXEL_NAME = re.compile(r"^pixel(\d+)$")


def _columns(path: Path, header: bytes, require_labels: bool) -> tuple[int | None, list[int]]:
    """(label column or None, pixel columns in pixel order) from the header's names."""
    cells = header.split(b",")
    if all(_NUMBER.match(c) for c in cells):
        raise InputError(f"{path}: line 1: no header row (found numbers), expected column names "
                         f"such as label,pixel1,...,pixel{PIXELS}")
    allowed = (PIXELS + 1,) if require_labels else (PIXELS + 1, PIXELS)
    if len(cells) not in allowed:
        want = " or ".join(str(a) for a in allowed)
        raise InputError(f"{path}: line 1: header has {len(cells)} columns, expected {want} "
                         f"(label then {PIXELS} pixels)")
    names = [c.decode("utf-8", "replace").strip().strip('"').strip().lower() for c in cells]
    labels = [i for i, name in enumerate(names) if name == "label"]
    if len(labels) > 1 or (labels and len(cells) == PIXELS):
        raise InputError(f"{path}: line 1: {len(labels)} column(s) named 'label' among {len(cells)}, "
                         f"expected one label and {PIXELS} pixel columns")
    if len(cells) == PIXELS + 1 and not labels:
        raise InputError(f"{path}: line 1: header has {len(cells)} columns but none is named 'label'; "
                         f"expected label,pixel1,...,pixel{PIXELS}")
    label_col = labels[0] if labels else None
    pixel_cols = [i for i in range(len(cells)) if i != label_col]
    numbers = [_PIXEL_NAME.match(names[i]) for i in pixel_cols]
    if all(numbers):  # pixel1..pixel784 (or pixel0..pixel783), in any order: put them in order
        index = [int(m.group(1)) for m in numbers]
        if sorted(index) not in (list(range(1, PIXELS + 1)), list(range(PIXELS))):
            raise InputError(f"{path}: line 1: pixel columns are not pixel1..pixel{PIXELS} "
                             f"(duplicates or gaps)")
        pixel_cols = [c for _, c in sorted(zip(index, pixel_cols))]
    return label_col, pixel_cols


def _parse_fast(body: bytes, ncols: int) -> np.ndarray | None:
    """One C-level parse when every cell is 1-3 ASCII digits; None otherwise (slow path explains)."""
    if body.translate(None, b"0123456789, \n") or re.search(rb"\d{4}", body):
        return None
    nrows = body.count(b"\n") + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            values = np.fromstring(body.replace(b"\n", b","), dtype=np.int32, sep=",")
        except (ValueError, DeprecationWarning):
            return None
    if values.size != nrows * ncols:
        return None
    return values.reshape(nrows, ncols)


def _parse_slow(path: Path, body: bytes, ncols: int, label_col: int | None) -> np.ndarray:
    rows = []
    for lineno, line in enumerate(body.split(b"\n"), start=2):
        cells = line.split(b",")
        if len(cells) != ncols:
            raise InputError(f"{path}: line {lineno}: {len(cells)} columns, expected {ncols}")
        rows.append([_parse_cell(path, lineno, col, cell, col - 1 == label_col)
                     for col, cell in enumerate(cells, start=1)])
    return np.asarray(rows, dtype=np.int32)


_CELL = re.compile(rb"^[ \t]*(\d+)(?:\.0*)?[ \t]*$")  # bytes: \d is ASCII 0-9 only


def _parse_cell(path: Path, lineno: int, col: int, cell: bytes, is_label: bool) -> int:
    where = f"{path}: line {lineno}, column {col}"
    kind, hi = ("label", 9) if is_label else ("pixel", 255)
    match = _CELL.match(cell)
    if match is None:
        shown = printable(cell.decode("utf-8", "replace").strip()[:20])
        raise InputError(f"{where}: {kind} {shown!r} is not an integer 0-{hi} in ASCII digits")
    digits = match.group(1)
    if int(digits) > hi:
        shown = digits.decode() if len(digits) <= 20 else f"of {len(digits)} digits"
        raise InputError(f"{where}: {kind} {shown} is outside 0-{hi}")
    return int(digits)


def _check_ranges(path: Path, labels, pixels: np.ndarray, label_col, pixel_cols) -> None:
    if labels is not None:
        bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
        if bad.size:
            row = int(bad[0])
            raise InputError(f"{path}: line {row + 2}, column {label_col + 1}: label {int(labels[row])} "
                             f"is outside 0-9")
    bad_rows = np.flatnonzero(((pixels < 0) | (pixels > 255)).any(axis=1))
    if bad_rows.size:
        row = int(bad_rows[0])
        col = int(np.flatnonzero((pixels[row] < 0) | (pixels[row] > 255))[0])
        raise InputError(f"{path}: line {row + 2}, column {pixel_cols[col] + 1}: pixel {int(pixels[row, col])} "
                         f"is outside 0-255")


def write_csv(dataset: Dataset, path) -> Path:
    """Write a dataset in the seed's CSV format (atomically)."""
    pixels = dataset.images.reshape(len(dataset), PIXELS)
    names = [f"pixel{i}" for i in range(1, PIXELS + 1)]
    table = pixels if dataset.labels is None else np.column_stack([dataset.labels, pixels])
    if dataset.labels is not None:
        names.insert(0, "label")
    lines = [",".join(names)]
    # One ASCII table per row, built with numpy string joins: fast enough for 60,000 rows.
    digits = np.char.mod("%d", table.astype(np.int32))
    lines.extend(",".join(row) for row in digits.tolist())
    return write_bytes(path, ("\n".join(lines) + "\n").encode("ascii"))


# --- IDX ---------------------------------------------------------------------------------

MAX_IDX_BYTES = 256 * 2**20  # Fashion-MNIST's largest file is 47 MB; refuse gzip bombs early


def read_idx(path) -> np.ndarray:
    """Read one IDX file (optionally .gz) of unsigned bytes."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    data = _gunzip(path) if path.suffix == ".gz" else path.read_bytes()
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] != 0x08:
        raise InputError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InputError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)  # Python integers: a crafted header cannot overflow
    if len(data) - header != expected:
        raise InputError(f"{path}: IDX body has {len(data) - header} bytes, expected {expected} for shape {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _gunzip(path: Path) -> bytes:
    """Decompress at most MAX_IDX_BYTES; a corrupt or oversized stream is one error naming the file."""
    inflater = zlib.decompressobj(wbits=31)  # gzip framing
    try:
        data = inflater.decompress(path.read_bytes(), MAX_IDX_BYTES + 1)
    except zlib.error as exc:
        raise InputError(f"{path}: not a valid gzip file ({exc})") from None
    if len(data) > MAX_IDX_BYTES:
        raise InputError(f"{path}: decompresses to more than {MAX_IDX_BYTES // 2**20} MB, "
                         f"more than any Fashion-MNIST file")
    if not inflater.eof:
        raise InputError(f"{path}: not a valid gzip file (truncated)")
    return data


def read_idx_split(directory, split: str) -> Dataset:
    directory = Path(directory)
    arrays, digest = [], hashlib.sha256()
    for stem in IDX_FILES[split]:
        path = _idx_path(directory, stem)
        arrays.append(read_idx(path))
        digest.update(path.read_bytes())
    images, labels = arrays
    if images.ndim != 3 or images.shape[1:] != (IMG_ROWS, IMG_COLS):
        raise InputError(f"{directory}: {split} images have shape {images.shape}, expected (N, 28, 28)")
    if labels.shape != (len(images),):
        raise InputError(f"{directory}: {len(labels)} {split} labels for {len(images)} images")
    if labels.max(initial=0) >= NUM_CLASSES:
        raise InputError(f"{directory}: a {split} label is {labels.max()}, expected 0-9")
    return Dataset(images, labels, str(directory), digest.hexdigest())


def _idx_path(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise InputError(f"{directory}: {stem}.gz not found (expected the Fashion-MNIST IDX files)")


def has_idx(directory, split: str) -> bool:
    directory = Path(directory)
    return directory.is_dir() and all(
        (directory / (s + ".gz")).is_file() or (directory / s).is_file() for s in IDX_FILES[split])


# --- finding data ------------------------------------------------------------------------

def default_dir() -> Path | None:
    """The real Fashion-MNIST on this machine, or None."""
    env = os.environ.get("EDGEFASHION_DATA")
    candidates = ([Path(env)] if env else []) + [d.expanduser() for d in DEFAULT_DIRS]
    return next((d for d in candidates if has_idx(d, "train") and has_idx(d, "test")), None)


def load(path=None, split: str = "train") -> Dataset:
    """Load `split` from a CSV file, an IDX directory, or (path None) the local Fashion-MNIST."""
    if path is None:
        directory = default_dir()
        if directory is None:
            raise InputError("Fashion-MNIST not found in /usr/share/datasets/fashion-mnist or "
                             "~/.keras/datasets/fashion-mnist; run `make data` or pass --data")
        return read_idx_split(directory, split)
    path = Path(path)
    if path.is_dir():
        return read_idx_split(path, split)
    return read_csv(path)


def download(dest) -> Path:
    """Fetch the official IDX files into `dest`, checking each file's sha256."""
    import urllib.error
    import urllib.request

    dest = Path(dest).expanduser()
    for stem, want in IDX_SHA256.items():
        target = dest / (stem + ".gz")
        if target.is_file() and hashlib.sha256(gzip.decompress(target.read_bytes())).hexdigest() == want:
            continue
        url = DOWNLOAD_URL + stem + ".gz"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                blob = response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise InputError(f"download of {url} failed: {exc}") from None
        try:
            got = hashlib.sha256(gzip.decompress(blob)).hexdigest()
        except (OSError, EOFError):
            got = "not gzip"
        if got != want:
            raise InputError(f"{url}: sha256 {got}, expected {want}")
        write_bytes(target, blob)
    return dest
