import gzip
import shutil
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, cli, sample_rows, write_csv
from edgefashion import data
from edgefashion.errors import InputError


def test_csv_reads_seed_format(tmp_path):
    rows = sample_rows(4)
    ds = data.read_csv(write_csv(tmp_path / "a.csv", rows))
    assert ds.images.shape == (4, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.tolist() == [r[0] for r in rows]
    assert ds.images[2].ravel().tolist() == rows[2][1:]


def test_csv_crlf_is_handled(tmp_path):
    rows = sample_rows(3)
    a = data.read_csv(write_csv(tmp_path / "unix.csv", rows))
    b = data.read_csv(write_csv(tmp_path / "dos.csv", rows, newline="\r\n"))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)


def test_prepare_scales_and_one_hot():
    images = np.array([[[0, 255] * 14] * 28], dtype=np.uint8)
    x = data.prepare(images)
    assert x.shape == (1, 28, 28, 1) and x.dtype == np.float32 and x.max() == 1.0 and x.min() == 0.0
    assert data.one_hot(np.array([3])).tolist()[0] == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]


def test_csv_without_labels_when_allowed(tmp_path):
    path = tmp_path / "nolabel.csv"
    header = ",".join(f"pixel{i}" for i in range(1, 785))
    path.write_text(header + "\n" + ",".join(["7"] * 784) + "\n")
    ds = data.read_csv(path, require_labels=False)
    assert ds.labels is None and ds.images.shape == (1, 28, 28) and ds.images[0, 0, 0] == 7
    with pytest.raises(InputError, match="header has 784 columns but none is named 'label'"):
        data.read_csv(path)


def _bad(tmp_path, text: str) -> str:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        data.read_csv(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


HEADER = ",".join(["label"] + [f"pixel{i}" for i in range(1, 785)])
GOOD = ",".join(["3"] + ["0"] * 784)


@pytest.mark.parametrize("body, expected", [
    (GOOD + "\n" + ",".join(["3"] + ["0"] * 783) + "\n", "line 3: 784 columns, expected 785"),
    (GOOD + "\n" + ",".join(["3", "x"] + ["0"] * 783) + "\n", "line 3, column 2: pixel 'x' is not an integer 0-255"),
    (",".join(["300"] + ["0"] * 784) + "\n", "line 2, column 1: label 300 is outside 0-255"),
    (",".join(["1", "256"] + ["0"] * 783) + "\n", "line 2, column 2: pixel 256 is outside 0-255"),
    (",".join(["1", "-1"] + ["0"] * 783) + "\n", "line 2, column 2: pixel '-1' is not an integer"),
    (",".join(["1", "nan"] + ["0"] * 783) + "\n", "line 2, column 2: pixel 'nan' is not an integer"),
    (",".join(["1", "2.5"] + ["0"] * 783) + "\n", "line 2, column 2: pixel '2.5' is not an integer"),
    (",".join(["1", ""] + ["0"] * 783) + "\n", "line 2, column 2: pixel '' is not an integer"),
    # values that other parsers would wrap or read loosely
    (",".join(["1", "4294967301"] + ["0"] * 783) + "\n", "line 2, column 2: pixel 4294967301 is outside 0-255"),
    (",".join(["1", "2_5_5"] + ["0"] * 783) + "\n", "line 2, column 2: pixel '2_5_5' is not an integer"),
    (",".join(["\u0663", "0"] + ["0"] * 783) + "\n", "line 2, column 1: label '\u0663' is not an integer 0-255"),
])
def test_csv_bad_rows_name_line_and_problem(tmp_path, body, expected):
    assert expected in _bad(tmp_path, HEADER + "\n" + body)


def test_csv_bad_files(tmp_path):
    assert "file is empty" in _bad(tmp_path, "")
    assert "line 1: no header row" in _bad(tmp_path, GOOD + "\n")
    assert "line 2: no data rows" in _bad(tmp_path, HEADER + "\n")
    with pytest.raises(InputError, match="file not found"):
        data.read_csv(tmp_path / "missing.csv")


def _write_idx(path, array: np.ndarray):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_idx_reader(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    labels = np.array([0, 1, 2, 9, 4], dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    ds = data.read_idx_split(tmp_path, "test")
    assert np.array_equal(ds.images, images) and np.array_equal(ds.labels, labels)


def test_idx_bad_files(tmp_path):
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="not a valid gzip"):
        data.read_idx(tmp_path / "bad.gz")
    (tmp_path / "magic").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(InputError, match="bad magic"):
        data.read_idx(tmp_path / "magic")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x01" * 3)
    with pytest.raises(InputError, match="has 3 bytes, expected 10"):
        data.read_idx(tmp_path / "short")


def test_idx_to_csv_round_trip(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([5, 6, 7]))
    subprocess.run([sys.executable, str(ROOT / "tools" / "idx_to_csv.py"), "--idx-dir", tmp_path,
                    "--split", "test", "--out", tmp_path / "csv"], check=True, capture_output=True)
    ds = data.read_csv(tmp_path / "csv" / "fashion-mnist_test.csv")
    assert np.array_equal(ds.images, images) and ds.labels.tolist() == [5, 6, 7]


def test_real_dataset_found(fashion_dir):
    test = data.read_idx_split(fashion_dir, "test")
    assert test.images.shape == (10000, 28, 28) and np.bincount(test.labels).tolist() == [1000] * 10


def test_cli_bad_csv_is_one_line_exit_2(tmp_path):
    path = write_csv(tmp_path / "x.csv", [[311] + [0] * 784])
    done = cli("train", "--data", path, "--out", tmp_path / "run")
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {path}: line 2, column 1: label 311 is outside 0-255"
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


def test_download_checks_sha256(tmp_path, monkeypatch, fashion_dir):
    """The download path, served from file:// URLs: real files pass, altered ones are refused."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for stem in data.IDX_SHA256:
        (mirror / f"{stem}.gz").write_bytes((fashion_dir / f"{stem}.gz").read_bytes())
    monkeypatch.setattr(data, "DOWNLOAD_URL", mirror.as_uri() + "/")
    dest = data.download(tmp_path / "dest")
    assert data.read_idx_split(dest, "test").images.shape == (10000, 28, 28)
    (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 20))
    with pytest.raises(InputError, match=r"t10k-labels-idx1-ubyte.gz: sha256 [0-9a-f]{64}, expected 0402a96d"):
        data.download(tmp_path / "dest2")
    assert not (tmp_path / "dest2" / "t10k-labels-idx1-ubyte.gz").exists()


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DOWNLOAD_URL", "http://127.0.0.1:9/")  # nothing listens on the discard port
    with pytest.raises(InputError, match="download of http://127.0.0.1:9/train-images-idx3-ubyte.gz failed"):
        data.download(tmp_path)


def test_csv_label_column_is_found_by_name(tmp_path):
    """A header `pixel1..pixel784,label` must not train on label = pixel1."""
    rows = sample_rows(3)
    header = ",".join([f"pixel{i}" for i in range(1, 785)] + ["label"])
    body = "\n".join(",".join(map(str, row[1:] + row[:1])) for row in rows)
    (tmp_path / "swapped.csv").write_text(header + "\n" + body + "\n")
    dataset = data.read_csv(tmp_path / "swapped.csv")
    assert dataset.labels.tolist() == [row[0] for row in rows]
    assert dataset.images.reshape(3, -1).tolist() == [row[1:] for row in rows]


def test_csv_header_without_label_or_with_a_bom(tmp_path):
    header = ",".join([f"col{i}" for i in range(785)])
    (tmp_path / "nolabel.csv").write_text(header + "\n" + GOOD + "\n")
    assert "none is named 'label'" in _bad(tmp_path, header + "\n" + GOOD + "\n")
    # a UTF-8 BOM in front of a headerless file: the first row is data, not a header
    (tmp_path / "bad.csv").write_bytes(b"\xef\xbb\xbf" + (GOOD + "\n" + GOOD + "\n").encode())
    with pytest.raises(InputError, match="no header row"):
        data.read_csv(tmp_path / "bad.csv")
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (HEADER + "\n" + GOOD + "\n").encode())
    assert data.read_csv(tmp_path / "bom.csv").labels.tolist() == [3]


def test_csv_of_any_image_size_and_its_class_names(tmp_path):
    """8x8 grey rows are square; 4x4 RGB rows need --image-shape; labels.txt names the classes."""
    rows = [[i % 3] + [(i * 7 + j) % 256 for j in range(64)] for i in range(6)]
    path = write_csv(tmp_path / "digits.csv", rows)
    (tmp_path / "labels.txt").write_text("zero\n one \n\ntwo\n")
    ds = data.read_csv(path)
    assert ds.images.shape == (6, 8, 8) and ds.shape == (8, 8, 1) and ds.class_names() == ["zero", "one", "two"]
    assert ds.images[1].ravel().tolist() == rows[1][1:]
    with pytest.raises(InputError, match="64 pixel columns, but --image-shape 5x5x3 needs 75"):
        data.read_csv(path, image_shape=(5, 5, 3))
    odd = write_csv(tmp_path / "odd.csv", [[1] + [0] * 48])
    (tmp_path / "labels.txt").unlink()
    with pytest.raises(InputError, match="48 pixel columns are not a square grey image; give --image-shape"):
        data.read_csv(odd)
    colour = data.read_csv(odd, image_shape=(4, 4, 3))
    assert colour.images.shape == (1, 4, 4, 3) and colour.class_names() == ["class 0", "class 1"]
    for bad in ("4x4x2", "axb", "0x4"):
        with pytest.raises(InputError, match="expected HxWxC"):
            data.parse_image_shape(bad)
    assert data.parse_image_shape("8x8") == (8, 8, 1)


def test_holdout_is_seeded_stratified_and_disjoint():
    labels = np.repeat(np.arange(3), [10, 20, 1]).astype(np.uint8)
    ds = data.Dataset(np.zeros((31, 8, 8), np.uint8), labels, "x", "0")
    a, b = data.holdout(ds, 0.2, seed=0), data.holdout(ds, 0.2, seed=0)
    assert a.tolist() == b.tolist() and a.tolist() != data.holdout(ds, 0.2, seed=1).tolist()
    assert np.bincount(labels[a], minlength=3).tolist() == [2, 4, 0]  # a class of one row stays in training


def test_image_folder_classes_sizes_and_splits(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name, colour in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
            folder = tmp_path / "pets" / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                pixels = np.clip(rng.normal(colour, 20, (40 + i, 50, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    train = data.load(tmp_path / "pets", "train")
    assert train.images.shape == (6, 32, 32, 3) and train.class_names() == ["cat", "dog"]
    # classes interleaved, so that the last share of the rows (Keras' validation split) holds every class
    assert train.labels.tolist() == [0, 1, 0, 1, 0, 1] and train.images[0, ..., 0].mean() > 150
    test = data.load(tmp_path / "pets", "test", (16, 16, 1))
    assert test.images.shape == (6, 16, 16) and test.source.endswith("test")
    (tmp_path / "pets" / "test" / "bird").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "pets" / "test" / "bird" / "0.png")
    assert data.load(tmp_path / "pets", "test").class_names() == ["bird", "cat", "dog"]  # on its own: its folders
    with pytest.raises(InputError, match=r"class folders \['bird'\], expected some of \['cat', 'dog'\]"):
        data.load(tmp_path / "pets", "test", classes=("cat", "dog"))  # against a run's classes
    shutil.rmtree(tmp_path / "pets" / "test" / "cat")
    dogs = data.load(tmp_path / "pets" / "test", "test", classes=("bird", "cat", "dog", "emu"))  # a flat folder
    assert set(dogs.labels.tolist()) == {0, 2} and dogs.num_classes == 4
