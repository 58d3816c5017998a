import io
import json
import os
import tarfile

import numpy as np

from conftest import cli, needs_tf, write_csv

pytestmark = needs_tf


def test_bundle_contents_and_manifest(bundle_file):
    with tarfile.open(bundle_file) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))
    assert {"model_int8.tflite", "model_f32.tflite", "model_int8.onnx", "model_f32.onnx", "labels.json",
            "golden.npz", "manifest.json"} <= names
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in manifest["files"].values())
    assert manifest["labels"][9] == "Ankle boot" and manifest["input"]["layout"] == "NHWC"
    assert manifest["golden"]["count"] == 50 and manifest["versions"]["edgefashion"]


def test_selftest_passes(bundle_file):
    done = cli("selftest", bundle_file, check=0)
    lines = done.stdout.strip().splitlines()
    assert all(line.startswith("PASS") for line in lines[:-1]) and lines[-1].endswith("0 failed")
    assert sum(line.startswith("PASS  golden") for line in lines) == 5 and sum("int8 vs float" in line for line in lines) == 2


def _rewrite(src, dst, edit):
    """Copy a bundle, letting `edit(name, data)` return new bytes, None to drop, or extra members."""
    with tarfile.open(src) as tar_in, tarfile.open(dst, "w:gz") as tar_out:
        for member in tar_in.getmembers():
            blob = edit(member.name, tar_in.extractfile(member).read())
            if blob is not None:
                member.size = len(blob)
                tar_out.addfile(member, io.BytesIO(blob))
    return dst


def _add_member(path, info, blob=b""):
    with tarfile.open(path, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w:gz") as tar:
        for m, b in members:
            tar.addfile(m, io.BytesIO(b))
        tar.addfile(info, io.BytesIO(blob) if blob else None)


def _flip(name, blob):
    if name == "model_int8.tflite":
        blob = bytearray(blob)
        blob[len(blob) // 2] ^= 0xFF
        return bytes(blob)
    return blob


def test_tampered_bundles_refused(bundle_file, tmp_path):
    cases = {
        "flipped byte": (_rewrite(bundle_file, tmp_path / "flip.tar.gz", _flip), "model_int8.tflite: sha256 mismatch"),
        "missing file": (_rewrite(bundle_file, tmp_path / "miss.tar.gz",
                                  lambda n, b: None if n == "model_f32.onnx" else b), "model_f32.onnx: missing"),
    }
    dotdot = _rewrite(bundle_file, tmp_path / "dotdot.tar.gz", lambda n, b: b)
    info = tarfile.TarInfo("../evil.txt")
    info.size = 4
    _add_member(dotdot, info, b"evil")
    cases["dot-dot member"] = (dotdot, "leaves the bundle folder")
    link = _rewrite(bundle_file, tmp_path / "link.tar.gz", lambda n, b: b)
    info = tarfile.TarInfo("labels2.json")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _add_member(link, info)
    cases["symlink member"] = (link, "is a link to '/etc/passwd'")
    truncated = tmp_path / "trunc.tar.gz"
    truncated.write_bytes(bundle_file.read_bytes()[:100_000])
    cases["truncated"] = (truncated, "truncated or corrupt")
    scratch = tmp_path / "scratch"  # selftest extracts under $TMPDIR: '../evil.txt' would land here
    scratch.mkdir()
    for case, (path, message) in cases.items():
        done = cli("selftest", path, env={**os.environ, "TMPDIR": str(scratch)})
        assert done.returncode == 1, case
        assert done.stdout.startswith("FAIL  bundle:") and message in done.stdout, (case, done.stdout)
    assert list(scratch.iterdir()) == []


def test_predict_csv_with_and_without_labels(bundle_file, test_set, tmp_path):
    rows = [[int(l)] + img.ravel().tolist() for img, l in zip(test_set.images[:30], test_set.labels[:30])]
    labelled = write_csv(tmp_path / "l.csv", rows)
    result = json.loads(cli("predict", bundle_file, labelled, "--json", check=0).stdout)
    assert len(result["predictions"]) == 30 and result["accuracy"] > 0.5
    assert result["predictions"][0]["truth"] == "Ankle boot"
    unlabelled = tmp_path / "u.csv"
    unlabelled.write_text(",".join(f"pixel{i}" for i in range(1, 785)) + "\n"
                          + "\n".join(",".join(map(str, r[1:])) for r in rows) + "\n")
    result2 = json.loads(cli("predict", bundle_file, unlabelled, "--json", check=0).stdout)
    assert result2["accuracy"] is None and "truth" not in result2["predictions"][0]
    assert [p["label"] for p in result2["predictions"]] == [p["label"] for p in result["predictions"]]
    table = cli("predict", bundle_file, labelled, "--limit", 3, check=0).stdout
    assert "... 27 more" in table and "accuracy" in table


def test_predict_png_and_npy(bundle_file, test_set, tmp_path):
    from PIL import Image

    trouser = test_set.images[np.flatnonzero(test_set.labels == 1)[0]]
    # a bigger photo, dark trousers on a white background: resized and inverted like Fashion-MNIST
    Image.fromarray(255 - trouser).resize((112, 112)).save(tmp_path / "trouser.png")
    Image.fromarray(trouser).save(tmp_path / "trouser.jpg", quality=95)
    result = json.loads(cli("predict", bundle_file, tmp_path / "trouser.png", tmp_path / "trouser.jpg",
                            "--json", check=0).stdout)
    assert [p["label"] for p in result["predictions"]] == ["Trouser", "Trouser"]
    np.save(tmp_path / "x.npy", test_set.images[:4])
    result = json.loads(cli("predict", bundle_file, tmp_path / "x.npy", "--format", "onnx-int8", "--json",
                            check=0).stdout)
    assert len(result["predictions"]) == 4 and result["model"]["format"] == "onnx-int8"
    (tmp_path / "bad.png").write_bytes(b"not an image")
    done = cli("predict", bundle_file, tmp_path / "bad.png")
    assert done.returncode == 2 and "not a readable image" in done.stderr


def test_bench_accepts_a_bundle(bundle_file, tmp_path):
    out = tmp_path / "bench.json"
    cli("bench", bundle_file, "--runs", 5, "--warmup", 1, "--min-time", 0, "--out", out, check=0)
    assert len(json.loads(out.read_text())["results"]) == 4
