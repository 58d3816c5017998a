"""Image data readers: the seed's CSV format (any image size), the original IDX files, and image
folders (DIR/<class name>/*.png). numpy only (Pillow for image folders).

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

from . import LABELS
from .console import printable
from .errors import InputError, MissingDependency
from .files import write_bytes

IMG_ROWS, IMG_COLS = 28, 28
PIXELS = IMG_ROWS * IMG_COLS  # Fashion-MNIST's
MAX_LABEL = 255  # labels are stored as uint8: up to 256 classes
LABELS_FILE = "labels.txt"  # class names beside the data, one per line, in label order

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
    """uint8 images (N, H, W) for grey or (N, H, W, C), uint8 labels (N,) or None, the class names
    (None: not known, `class_names` numbers them), and where they came from."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str
    sha256: str
    classes: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return image_shape_of(self.images)

    @property
    def num_classes(self) -> int:
        if self.classes:
            return len(self.classes)
        return int(self.labels.max()) + 1 if self.labels is not None and len(self.labels) else 0

    def class_names(self) -> list[str]:
        return list(self.classes) if self.classes else numbered_classes(self.num_classes)

    def subset(self, indices) -> "Dataset":
        labels = None if self.labels is None else self.labels[indices]
        return Dataset(self.images[indices], labels, self.source, self.sha256, self.classes)


def numbered_classes(k: int) -> list[str]:
    """The names of classes nobody named: class 0 ... class K-1."""
    return [f"class {i}" for i in range(k)]


def image_shape_of(images: np.ndarray) -> tuple[int, int, int]:
    return (*images.shape[1:3], images.shape[3] if images.ndim == 4 else 1)


def parse_image_shape(text: str) -> tuple[int, int, int]:
    """'HxWxC' (or 'HxW': grey) -> (H, W, C), C 1 (grey) or 3 (RGB)."""
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) == 2:
        dims = (*dims, 1)
    if len(dims) != 3 or not all(1 <= d <= 4096 for d in dims[:2]) or dims[2] not in (1, 3):
        raise InputError(f"--image-shape {text!r}, expected HxWxC with C 1 (grey) or 3 (RGB), e.g. 32x32x3")
    return dims


def check_test_fits(test: Dataset, shape: tuple, classes: int, whose: str) -> None:
    """A test set measures the task only with labels, images of `shape` and labels below `classes`
    (`whose`: what they belong to, for the message: "the run's", "the bundle's models'")."""
    if test.labels is None:
        raise InputError(f"{test.source}: a test set needs a label column")
    if test.shape != tuple(shape):
        raise InputError(f"{test.source}: images are {'x'.join(map(str, test.shape))}, {whose} are "
                         f"{'x'.join(map(str, shape))}; give a test set of the same images")
    if len(test.labels) and int(test.labels.max()) >= classes:
        raise InputError(f"{test.source}: label {int(test.labels.max())}, but {whose} have {classes} classes")


def holdout(dataset: Dataset, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded held-out test split: `fraction` of each class (at least one row
    of every class with two or more), so a small data set's test set has every class."""
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(dataset.labels):
        rows = np.flatnonzero(dataset.labels == cls)
        take = min(len(rows) - 1, max(1, round(fraction * len(rows)))) if len(rows) > 1 else 0
        chosen.append(rng.permutation(rows)[:take])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


# --- preparation (as in the seed's prep_data) -------------------------------------------

def prepare(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W[, C]) -> float32 (N, H, W, C) scaled to [0, 1]."""
    return images.reshape(len(images), *image_shape_of(images)).astype(np.float32) / 255.0


def one_hot(labels: np.ndarray, num_classes: int = len(LABELS)) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[labels]


# --- CSV ---------------------------------------------------------------------------------

def read_csv(path, require_labels: bool = True, image_shape: tuple | None = None) -> Dataset:
    """Read the seed's CSV: a header row, then `label,pixel1..pixelP` (label optional when
    `require_labels` is False). The label column is found by its name, wherever it is. P pixels
    make a square grey image unless `image_shape` (H, W, C) says otherwise. Cells are ASCII digits.
    Every problem is an InputError naming file and line."""
    path = Path(path)
    raw = _read_file(path)
    text = raw.removeprefix(codecs.BOM_UTF8).replace(b"\r\n", b"\n")
    header, _, body = text.partition(b"\n")
    label_col, pixel_cols = _columns(path, header, require_labels)
    shape = _csv_image_shape(path, len(pixel_cols), image_shape)
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
    images = pixels.astype(np.uint8).reshape(-1, *shape[:2], *shape[2:] if shape[2] > 1 else ())
    return Dataset(images, None if labels is None else labels.astype(np.uint8),
                   str(path), hashlib.sha256(raw).hexdigest(), read_labels_beside(path))


def _csv_image_shape(path: Path, pixels: int, image_shape: tuple | None) -> tuple[int, int, int]:
    """The image shape of P pixel columns: the one given, else a square grey image."""
    if image_shape is not None:
        if math.prod(image_shape) != pixels:
            raise InputError(f"{path}: line 1: {pixels} pixel columns, but --image-shape "
                             f"{'x'.join(map(str, image_shape))} needs {math.prod(image_shape)}")
        return tuple(image_shape)
    side = math.isqrt(pixels)
    if side * side != pixels:
        raise InputError(f"{path}: line 1: {pixels} pixel columns are not a square grey image; give "
                         f"--image-shape HxWxC with H x W x C = {pixels}")
    return side, side, 1


def read_labels(path) -> tuple[str, ...]:
    """Class names, one per line in label order (blank lines and surrounding spaces ignored)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: labels file not found (or not a regular file)")
    if path.stat().st_size > 2**20:
        raise InputError(f"{path}: more than 1 MB, not a labels file (one class name per line)")
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError:
        raise InputError(f"{path}: labels file is not UTF-8 text") from None
    names = [printable(n)[:64] for n in names if n]
    if len(names) < 2 or len(set(names)) != len(names):
        raise InputError(f"{path}: {len(names)} class names ({len(set(names))} distinct), expected at least 2 "
                         f"distinct names, one per line in label order")
    return tuple(names)


def read_labels_beside(path: Path) -> tuple[str, ...] | None:
    """labels.txt in the data's folder, if there is one."""
    beside = Path(path).parent / LABELS_FILE
    return read_labels(beside) if beside.is_file() else None


MAX_CSV_BYTES = 2**30  # Fashion-MNIST's training CSV is 127 MB; a larger file is a mistake (or /dev/zero)


def _read_file(path: Path) -> bytes:
    """A CSV's bytes: a regular file (not a FIFO or a device) within MAX_CSV_BYTES, checked before reading."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a CSV file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file (a FIFO or a device?), expected a CSV file")
    if path.stat().st_size > MAX_CSV_BYTES:
        raise InputError(f"{path}: {path.stat().st_size / 2**30:.1f} GB, more than the {MAX_CSV_BYTES // 2**30} GB a "
                         f"CSV may have")
    raw = path.read_bytes()
    if not raw.strip():
        raise InputError(f"{path}: file is empty, expected a header row, then a label and the pixels per row")
    return raw


_NUMBER = re.compile(rb"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
_PIXEL_NAME = re.compile(r"^pixel(\d+)$")


def _columns(path: Path, header: bytes, require_labels: bool) -> tuple[int | None, list[int]]:
    """(label column or None, pixel columns in pixel order) from the header's names."""
    cells = header.split(b",")
    if all(_NUMBER.match(c) for c in cells):
        raise InputError(f"{path}: line 1: no header row (found numbers), expected column names "
                         f"such as label,pixel1,...,pixel{PIXELS}")
    names = [c.decode("utf-8", "replace").strip().strip('"').strip().lower() for c in cells]
    labels = [i for i, name in enumerate(names) if name == "label"]
    if len(labels) > 1:
        raise InputError(f"{path}: line 1: {len(labels)} columns named 'label', expected one")
    if require_labels and not labels:
        raise InputError(f"{path}: line 1: header has {len(cells)} columns but none is named 'label'; "
                         f"expected label,pixel1,...,pixelP")
    label_col = labels[0] if labels else None
    pixel_cols = [i for i in range(len(cells)) if i != label_col]
    if len(pixel_cols) < 4:
        raise InputError(f"{path}: line 1: {len(pixel_cols)} pixel columns, expected an image of at least 2x2")
    numbers = [_PIXEL_NAME.match(names[i]) for i in pixel_cols]
    if all(numbers):  # pixel1..pixelP (or pixel0..pixelP-1), in any order: put them in order
        index = [int(m.group(1)) for m in numbers]
        count = len(pixel_cols)
        if sorted(index) not in (list(range(1, count + 1)), list(range(count))):
            raise InputError(f"{path}: line 1: pixel columns are not pixel1..pixel{count} "
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
    kind, hi = ("label", MAX_LABEL) if is_label else ("pixel", 255)
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
        bad = np.flatnonzero((labels < 0) | (labels > MAX_LABEL))
        if bad.size:
            row = int(bad[0])
            raise InputError(f"{path}: line {row + 2}, column {label_col + 1}: label {int(labels[row])} "
                             f"is outside 0-{MAX_LABEL}")
    bad_rows = np.flatnonzero(((pixels < 0) | (pixels > 255)).any(axis=1))
    if bad_rows.size:
        row = int(bad_rows[0])
        col = int(np.flatnonzero((pixels[row] < 0) | (pixels[row] > 255))[0])
        raise InputError(f"{path}: line {row + 2}, column {pixel_cols[col] + 1}: pixel {int(pixels[row, col])} "
                         f"is outside 0-255")


def write_csv(dataset: Dataset, path) -> Path:
    """Write a dataset in the seed's CSV format (atomically)."""
    pixels = dataset.images.reshape(len(dataset), -1)
    names = [f"pixel{i}" for i in range(1, pixels.shape[1] + 1)]
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
    if path.suffix != ".gz" and path.stat().st_size > MAX_IDX_BYTES:
        raise InputError(f"{path}: more than {MAX_IDX_BYTES // 2**20} MB, more than any Fashion-MNIST file")
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
    if labels.max(initial=0) >= len(LABELS):
        raise InputError(f"{directory}: a {split} label is {labels.max()}, expected 0-9")
    return Dataset(images, labels, str(directory), digest.hexdigest(), LABELS)


def _idx_path(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise InputError(f"{directory}: {stem}.gz not found (expected the Fashion-MNIST IDX files, or an image "
                     f"folder DIR/<class name>/*.png)")


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


def load(path=None, split: str = "train", image_shape: tuple | None = None, classes: tuple | None = None) -> Dataset:
    """Load `split` from a CSV file, an IDX directory, an image folder, or (path None) the local
    Fashion-MNIST. `image_shape` (H, W, C): of a CSV's rows, or what an image folder is resized to;
    `classes`: the names an image folder's class folders must be among (a run's)."""
    if path is None:
        directory = default_dir()
        if directory is None:
            raise InputError("Fashion-MNIST not found in /usr/share/datasets/fashion-mnist or "
                             "~/.keras/datasets/fashion-mnist; run `make data` or pass --data")
        return read_idx_split(directory, split)
    path = Path(path)
    if path.is_dir():
        if has_idx(path, split) or not is_image_folder(path):
            return read_idx_split(path, split)
        return read_image_folder(path, split, image_shape, classes)
    return read_csv(path, image_shape=image_shape)


# --- image folders -----------------------------------------------------------------------

MAX_IMAGE_PIXELS = 50_000_000  # a 50 Mpx photo is plenty; Pillow's own limit is 178 Mpx


def open_image(path: Path):
    """A PIL image, read in full and turned upright (EXIF), or one InputError naming the file."""
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        raise MissingDependency("Pillow (for PNG/JPEG input)", "edge") from None
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with warnings.catch_warnings(), Image.open(path) as img:
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # an error, not a 2-line warning
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise InputError(f"{path}: {img.width}x{img.height} pixels, more than the "
                                 f"{MAX_IMAGE_PIXELS // 1_000_000} Mpx allowed; scale it down first")
            img.load()
            return ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError,
            ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: not a readable image ({str(exc)[:160]})") from None


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
DEFAULT_FOLDER_SIDE = 32  # an image folder's images are resized to 32x32 unless --image-shape says otherwise
MAX_FOLDER_IMAGES = 200_000


def is_image_folder(path) -> bool:
    """DIR/<class>/*.png, or DIR/train/<class>/*.png (with an optional DIR/test)."""
    path = Path(path)
    root = path / "train" if (path / "train").is_dir() else path
    return any(_class_dirs(root))


def image_folder_has_test(path) -> bool:
    return (Path(path) / "train").is_dir() and (Path(path) / "test").is_dir()


def _class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                  and any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir())) if root.is_dir() else []


def read_image_folder(path, split: str = "train", image_shape: tuple | None = None,
                      classes: tuple | None = None) -> Dataset:
    """An image folder's `split` (DIR/train, DIR/test; a folder without them is the split itself),
    each image resized to `image_shape` (default 32x32, RGB when any image is in colour). Class names
    are the folder names in sorted order, or `classes` (a run's) when given: then every folder must
    name one of them, and labels index them."""
    path = Path(path)
    root = path / split if image_folder_has_test(path) else path / "train" if (path / "train").is_dir() \
        and split == "train" else path
    folders = [d.name for d in _class_dirs(root)]
    if classes is None:
        if len(folders) < 2:
            raise InputError(f"{root}: {len(folders)} class folder(s) with images, expected at least 2 "
                             f"(DIR/<class name>/*.png)")
        classes = tuple(folders)
    unknown = [name for name in folders if name not in classes]
    if unknown or not folders:
        raise InputError(f"{root}: class folders {unknown or folders}, expected some of {list(classes)}")
    index = {name: i for i, name in enumerate(classes)}
    per_class = [[(index[name], f) for f in sorted((root / name).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
                 for name in folders]
    # classes interleaved (the first image of each, then the second, ...): a split that takes the
    # last share of the rows, as Keras' validation_split does, holds every class, not the last ones
    files = [item for rank in range(max(map(len, per_class), default=0))
             for items in per_class if rank < len(items) for item in [items[rank]]]
    if len(files) > MAX_FOLDER_IMAGES:
        raise InputError(f"{root}: {len(files)} images, more than the {MAX_FOLDER_IMAGES} an image folder may hold")
    opened = [open_image(f) for _, f in files]
    if image_shape is None:
        colour = any(img.mode not in ("L", "1", "I", "I;16", "LA") for img in opened)
        image_shape = (DEFAULT_FOLDER_SIDE, DEFAULT_FOLDER_SIDE, 3 if colour else 1)
    h, w, c = image_shape
    images = np.stack([np.asarray(img.convert("RGB" if c == 3 else "L").resize((w, h)), dtype=np.uint8)
                       for img in opened])
    digest = hashlib.sha256()
    for label, f in files:
        digest.update(f"{label}/{f.name}\n".encode())
        digest.update(f.read_bytes())
    labels = np.array([label for label, _ in files], dtype=np.uint8)
    return Dataset(images, labels, str(root), digest.hexdigest(), tuple(classes))


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
