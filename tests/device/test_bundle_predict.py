import io
import json
import os
import tarfile

import numpy as np

from helpers import check_bundle, cli, write_csv


def test_committed_bundle_contents_and_selftest(fixture_bundle):
    """Made on one CPU, checked here: golden vectors must hold on every CPU."""
    check_bundle(fixture_bundle, golden=40)


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


def test_tampered_bundles_refused(fixture_bundle, tmp_path):
    cases = {
        "flipped byte": (_rewrite(fixture_bundle, tmp_path / "flip.tar.gz", _flip), "model_int8.tflite: sha256 mismatch"),
        "missing file": (_rewrite(fixture_bundle, tmp_path / "miss.tar.gz",
                                  lambda n, b: None if n == "model_f32.onnx" else b), "model_f32.onnx: missing"),
    }
    dotdot = _rewrite(fixture_bundle, tmp_path / "dotdot.tar.gz", lambda n, b: b)
    info = tarfile.TarInfo("../evil.txt")
    info.size = 4
    _add_member(dotdot, info, b"evil")
    cases["dot-dot member"] = (dotdot, "leaves the bundle folder")
    link = _rewrite(fixture_bundle, tmp_path / "link.tar.gz", lambda n, b: b)
    info = tarfile.TarInfo("labels2.json")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _add_member(link, info)
    cases["symlink member"] = (link, "is a link to '/etc/passwd'")
    truncated = tmp_path / "trunc.tar.gz"
    truncated.write_bytes(fixture_bundle.read_bytes()[: fixture_bundle.stat().st_size // 2])
    cases["truncated"] = (truncated, "truncated or corrupt")
    scratch = tmp_path / "scratch"  # selftest extracts under $TMPDIR: '../evil.txt' would land here
    scratch.mkdir()
    for case, (path, message) in cases.items():
        done = cli("selftest", path, env={**os.environ, "TMPDIR": str(scratch)})
        assert done.returncode == 1, case
        assert done.stdout.startswith("FAIL  bundle:") and message in done.stdout, (case, done.stdout)
    assert list(scratch.iterdir()) == []


def test_predict_csv_with_and_without_labels(fixture_bundle, few_images, tmp_path):
    rows = [[int(l)] + img.ravel().tolist() for img, l in zip(few_images.images[:30], few_images.labels[:30])]
    labelled = write_csv(tmp_path / "l.csv", rows)
    result = json.loads(cli("predict", fixture_bundle, labelled, "--json", check=0).stdout)
    assert len(result["predictions"]) == 30 and result["accuracy"] > 0.5
    assert result["predictions"][0]["truth"] == "Ankle boot"
    unlabelled = tmp_path / "u.csv"
    unlabelled.write_text(",".join(f"pixel{i}" for i in range(1, 785)) + "\n"
                          + "\n".join(",".join(map(str, r[1:])) for r in rows) + "\n")
    result2 = json.loads(cli("predict", fixture_bundle, unlabelled, "--json", check=0).stdout)
    assert result2["accuracy"] is None and "truth" not in result2["predictions"][0]
    assert [p["label"] for p in result2["predictions"]] == [p["label"] for p in result["predictions"]]
    table = cli("predict", fixture_bundle, labelled, "--show", 3, check=0).stdout
    assert "... 27 more" in table and "accuracy" in table


def test_predict_png_and_npy(fixture_bundle, few_images, tmp_path):
    from PIL import Image

    trouser = few_images.images[np.flatnonzero(few_images.labels == 1)[0]]
    # a bigger photo, dark trousers on a white background: resized and inverted like Fashion-MNIST
    Image.fromarray(255 - trouser).resize((112, 112)).save(tmp_path / "trouser.png")
    Image.fromarray(trouser).save(tmp_path / "trouser.jpg", quality=95)
    result = json.loads(cli("predict", fixture_bundle, tmp_path / "trouser.png", tmp_path / "trouser.jpg",
                            "--json", check=0).stdout)
    assert [p["label"] for p in result["predictions"]] == ["Trouser", "Trouser"]
    np.save(tmp_path / "x.npy", few_images.images[:4])
    result = json.loads(cli("predict", fixture_bundle, tmp_path / "x.npy", "--format", "onnx-int8", "--json",
                            check=0).stdout)
    assert len(result["predictions"]) == 4 and result["model"]["format"] == "onnx-int8"
    (tmp_path / "bad.png").write_bytes(b"not an image")
    done = cli("predict", fixture_bundle, tmp_path / "bad.png")
    assert done.returncode == 2 and "not a readable image" in done.stderr


def test_bench_accepts_a_bundle(fixture_bundle, tmp_path):
    out = tmp_path / "bench.json"
    cli("bench", fixture_bundle, "--runs", 5, "--warmup", 1, "--min-time", 0, "--out", out, check=0)
    assert len(json.loads(out.read_text())["results"]) == 4


def _edit_manifest(src, dst, change):
    def edit(name, blob):
        if name != "manifest.json":
            return blob
        manifest = json.loads(blob)
        change(manifest)
        return json.dumps(manifest).encode()
    return _rewrite(src, dst, edit)


def test_malformed_manifests_are_one_clear_line(fixture_bundle, tmp_path):
    cases = {
        "missing key": (lambda m: m["golden"].pop("count"), "field golden.count is missing"),
        "wrong type": (lambda m: m["files"]["labels.json"].update(bytes="12"), "field files.labels.json.bytes is str"),
        "newer schema": (lambda m: m.update(schema_version=99), "schema_version 99 is newer"),
        "path out of the bundle": (lambda m: m["models"].update({"tflite-int8": "../../../../etc/hostname"}),
                                   "is not a file listed in the bundle"),
        "no models": (lambda m: (m["models"].clear(), m["model_specs"].clear()), "the bundle holds no models"),
    }
    for case, (change, message) in cases.items():
        bundle = _edit_manifest(fixture_bundle, tmp_path / f"{case}.tar.gz", change)
        done = cli("selftest", bundle)
        assert done.returncode == 1 and "Traceback" not in done.stderr, (case, done.stderr)
        first = done.stdout.splitlines()[0].replace(str(tmp_path), "TMP")  # the folder's name says manifest
        assert first.startswith("FAIL  bundle:") and message in first and "manifest" in first, (case, first)


def test_photos_on_a_light_background_look_like_fashion_mnist(fixture_models, few_images, tmp_path):
    """A garment photographed dark on a light, textured background, larger and off-centre: the
    preprocessing makes the background black and centres the garment, as the dataset does."""
    from PIL import Image

    from edgefashion.device.images import load_image
    from edgefashion.device.runtime import Model

    model = Model(fixture_models / "model_int8.tflite")
    rng = np.random.default_rng(0)
    same = 0
    for i in range(30):
        photo = np.full((160, 140), 225.0) + rng.normal(0, 6, (160, 140))
        garment = np.asarray(Image.fromarray(255 - few_images.images[i]).resize((100, 100)), dtype=np.float64)
        photo[20:120, 30:130] = np.where(garment < 200, garment * 0.9, photo[20:120, 30:130])
        Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(tmp_path / "photo.png")
        seen = load_image(tmp_path / "photo.png")
        border = np.concatenate([seen[0], seen[-1], seen[:, 0], seen[:, -1]])
        assert (border < 20).mean() > 0.5  # the background became black (the garment may touch an edge, as in the data)
        same += model.predict(seen).class_ids[0] == model.predict(few_images.images[i]).class_ids[0]
    assert same >= 24, f"{same} of 30 photos classified as their originals"


def test_predict_top_k_saved_inputs_and_low_confidence(fixture_bundle, few_images, tmp_path):
    np.save(tmp_path / "x.npy", few_images.images[:3])
    done = cli("predict", fixture_bundle, tmp_path / "x.npy", "--top", 3, "--save-input", tmp_path / "seen",
               "--min-confidence", 0.999, "--json", check=0)
    rows = json.loads(done.stdout)["predictions"]
    assert all(len(r["top"]) == 3 and r["top"][0][0] == r["label"] for r in rows)
    assert len(list((tmp_path / "seen").glob("*.28x28.png"))) == 3
    assert "3 of 3 predictions below confidence" in done.stderr
    cli("predict", fixture_bundle, tmp_path / "x.npy", "--save-input", tmp_path / "seen", check=0)  # its own folder
    user = tmp_path / "photos"
    user.mkdir()
    (user / "0000-x.npy[0].28x28.png").write_bytes(b"the user's")
    refused = cli("predict", fixture_bundle, tmp_path / "x.npy", "--save-input", user, check=2)
    assert "is not an edgefashion folder of saved inputs" in refused.stderr
    assert [p.name for p in user.iterdir()] == ["0000-x.npy[0].28x28.png"]
    assert (user / "0000-x.npy[0].28x28.png").read_bytes() == b"the user's"
