"""A corpus of hostile and unlucky inputs fed to the command line, in process (no TensorFlow).

Every case must end in its exit code (2 bad input, 1 failed check) with a one-line message: no
traceback, nothing written outside the case's own folder, no leftovers in $TMPDIR. The cases are
grouped by class; `test_corpus_size` keeps the count honest.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgefashion import cli
from edgefashion.device import trust
from edgefashion.device.locate import is_bundle
from edgefashion.device.runtime import Model
from edgefashion.files import sha256_bytes
from edgefashion.rundir import Run, clean_leftovers
from helpers import FIXTURES
from helpers import cli as run_cli

BUNDLE = FIXTURES / "tiny-bundle.tar.gz"
EXPORT = FIXTURES / "run" / "export"
SEED_INT8 = FIXTURES.parent.parent / "firmware_assets" / "model_int8.tflite"  # another model: the seed CNN


# --- building hostile bundles ------------------------------------------------------------

def members(bundle=BUNDLE) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def pack(path: Path, files: dict[str, bytes], extra=()) -> Path:
    """Write a .tar.gz of `files` (name -> bytes) plus raw (TarInfo, bytes) members."""
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for info, blob in extra:
            tar.addfile(info, io.BytesIO(blob) if blob else None)
    return path


def consistent(path: Path, change=None, replace=None, sign_with=None) -> Path:
    """A bundle whose manifest was rebuilt to match its (changed) files: hashes all agree."""
    files = members()
    files.update(replace or {})
    manifest = json.loads(files["manifest.json"])
    if change:
        change(manifest)
    for name, blob in files.items():
        if name in manifest["files"]:
            manifest["files"][name] = {"sha256": sha256_bytes(blob), "bytes": len(blob)}
    files["manifest.json"] = json.dumps(manifest).encode()
    if sign_with:
        files[trust.SIGNATURE] = trust.sign(sign_with, files["manifest.json"])
    return pack(path, files)


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def golden() -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(members()["golden.npz"])) as saved:
        return {k: saved[k] for k in saved.files}


def info(name, kind=tarfile.REGTYPE, size=0, link="") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.size, member.linkname = kind, size, link
    return member


def bundle_cases(d: Path, keys: Path) -> list:
    files, g = members(), golden()
    cases = []

    def add(cls, name, path, code, text, commands=("selftest",)):
        for command in commands:
            argv = [command, str(path)]
            if command == "predict":
                argv.append(str(d / "one.npy"))
            elif command == "bench":
                argv += ["--runs", "1", "--warmup", "0", "--min-time", "0", "--out", str(d / "b.json")]
            cases.append((cls, f"{name} [{command}]", argv, code if command == "selftest" else 2, text))

    every = ("selftest", "predict", "bench")
    # 1. tampered but hash-consistent: wrong labels everywhere (a model that answers "Bag"), host figures rebuilt
    wrong = {**g, "labels": (g["labels"] + 1) % 10}
    add("tampered", "every answer wrong, manifest rebuilt", consistent(
        d / "wrong.tar.gz", replace={"golden.npz": npz(**wrong)},
        change=lambda m: [v.update(int8_accuracy=0.0, f32_accuracy=0.0)
                          for v in m["golden"]["host_cross_check"].values()]),
        1, "below it")
    # the manifest cannot loosen the device's tolerances
    noisy = {**g, "raw_tflite-f32": g["raw_tflite-f32"][::-1]}
    add("tampered", "golden_tolerance 1e9 with other float outputs", consistent(
        d / "loose.tar.gz", replace={"golden.npz": npz(**noisy)},
        change=lambda m: [s.update(golden_tolerance=1e9) for s in m["model_specs"].values()]), 1, "(limit 0.0001)")
    # 2. a mixed set (interrupted export): another int8 model, its golden outputs, host agreement rebuilt
    other = Model(SEED_INT8, kernels="reference")
    mixed = {**g, "raw_tflite-int8": other.run(other.prepare(g["images"])),
             "fast_tflite-int8": Model(SEED_INT8).run(other.prepare(g["images"]))}
    add("tampered", "int8 model of another training, goldens rebuilt", consistent(
        d / "mixed.tar.gz", replace={"model_int8.tflite": SEED_INT8.read_bytes(), "golden.npz": npz(**mixed)},
        change=lambda m: m["golden"]["host_cross_check"]["tflite"].update(agreement=0.1)), 1, "floor 98%")
    # 3. manifest paths that leave the bundle
    for target in ("../../../../../../etc/hostname", "/etc/hostname", "labels.json/../../x"):
        add("paths", f"model -> {target}", consistent(d / f"path{len(cases)}.tar.gz",
            change=lambda m, t=target: m["models"].update({"tflite-int8": t})), 1, "not a file listed", every)
    add("paths", "golden -> /etc/passwd", consistent(d / "gpath.tar.gz",
        change=lambda m: m["golden"].update(file="/etc/passwd")), 1, "not a file listed")
    add("paths", "files lists ../x", consistent(d / "fpath.tar.gz",
        change=lambda m: m["files"].update({"../x": {"sha256": "0" * 64, "bytes": 1}})), 1, "not a plain file name")
    # 4. no models
    add("no models", "models {}", consistent(d / "none.tar.gz",
        change=lambda m: (m["models"].clear(), m["model_specs"].clear())), 1, "holds no models", every)
    add("no models", "unknown format", consistent(d / "fmt.tar.gz",
        change=lambda m: m["models"].update({"tflite-int4": "model_int8.tflite"})), 1, "is not one of")
    # 5. budgets
    add("budgets", "golden.npz of 100 MB zeros", consistent(d / "zbomb.tar.gz",
        replace={"golden.npz": npz(images=np.zeros((130_000, 28, 28), np.uint8))}), 1, "more than 64 MB")
    add("budgets", "40 members", pack(d / "many.tar.gz", {**files, **{f"x{i}": b"" for i in range(40)}}),
        1, "more than 32 members", every)
    add("budgets", "member claims 300 MB", pack(d / "huge.tar.gz", files, [(info("big.bin", size=300 << 20), b"")]),
        1, "more than 256 MB")
    # 8. malformed but hash-consistent manifests and goldens
    for label, change, text in [
            ("files is a list", lambda m: m.update(files=[]), "files is list"),
            ("models is a string", lambda m: m.update(models="x"), "models is str"),
            ("golden missing", lambda m: m.pop("golden"), "golden is missing"),
            ("schema_version text", lambda m: m.update(schema_version="x"), "schema_version"),
            ("host_cross_check list", lambda m: m["golden"].update(host_cross_check=[1]), "host_cross_check"),
            ("spec is null", lambda m: m["model_specs"].update({"tflite-int8": None}), "model_specs")]:
        add("malformed", label, consistent(d / f"m{len(cases)}.tar.gz", change=change), 1, text)
    add("malformed", "manifest is a JSON list", pack(d / "list.tar.gz", {**files, "manifest.json": b"[1, 2]"}),
        1, "expected an object")
    add("malformed", "manifest not UTF-8", pack(d / "utf.tar.gz", {**files, "manifest.json": b"\xff\xfe{"}),
        1, "not valid JSON")
    pickled = io.BytesIO()
    np.savez(pickled, images=np.array([{"a": 1}], dtype=object), labels=g["labels"])
    for label, arrays, text in [
            ("no labels", {k: v for k, v in g.items() if k != "labels"}, "no array 'labels'"),
            ("wrong shape", {**g, "raw_onnx-f32": g["raw_onnx-f32"][:, :5]}, "raw_onnx-f32"),
            ("labels out of range", {**g, "labels": g["labels"] + 20}, "labels must be"),
            ("zero images", {k: v[:0] for k, v in g.items()}, "N >= 1")]:
        add("malformed", f"golden: {label}", consistent(d / f"g{len(cases)}.tar.gz",
            replace={"golden.npz": npz(**arrays)}), 1, text)
    add("malformed", "golden: pickled object array", consistent(d / "pickle.tar.gz",
        replace={"golden.npz": pickled.getvalue()}), 1, "not a readable .npz")
    add("malformed", "golden not a zip", consistent(d / "gz.tar.gz", replace={"golden.npz": b"PK\x03\x04 junk"}),
        1, "not a readable .npz")
    # members: structure, links, names
    deep = "/".join(["d"] * 2000) + "/x"
    for label, extra, text in [
            ("2,000 nested folders", [(info(deep, size=1), b"x")], "not a plain file name"),
            ("folder member", [(info("sub", tarfile.DIRTYPE), b"")], "folder, device or special"),
            ("dot-dot", [(info("../evil", size=4), b"evil")], "leaves the bundle folder"),
            ("absolute", [(info("/tmp/evil", size=4), b"evil")], "absolute path"),
            ("symlink", [(info("l", tarfile.SYMTYPE, link="/etc/passwd"), b"")], "is a link"),
            ("hard link", [(info("h", tarfile.LNKTYPE, link="/etc/passwd"), b"")], "is a link"),
            ("fifo", [(info("f", tarfile.FIFOTYPE), b"")], "special file"),
            ("char device", [(info("c", tarfile.CHRTYPE), b"")], "special file"),
            ("duplicate name", [(info("labels.json", size=2), b"[]")], "appears twice"),
            ("hidden name", [(info(".x", size=1), b"x")], "not a plain file name"),
            ("escape in name", [(info("\x1b[2K\rPASS  all good", size=1), b"x")], "\\x1b[2K\\rPASS")]:
        add("members", label, pack(d / f"t{len(cases)}.tar.gz", files, extra), 1, text)
    # not a bundle at all
    (d / "empty.tar.gz").write_bytes(b"")
    (d / "trunc.tar.gz").write_bytes(BUNDLE.read_bytes()[:3000])
    (d / "text.tar.gz").write_text("hello")
    for name in ("empty", "trunc", "text"):
        add("not a bundle", name, d / f"{name}.tar.gz", 1, "not a readable .tar.gz", every)
    # signatures
    key, pub = keys / "ws.key", keys / "ws.pub"
    signed = consistent(d / "signed.tar.gz", sign_with=key)
    cases.append(("signature", "signed, another key trusted",
                  ["selftest", str(signed), "--trust", str(keys / "other.pub")], 1, "does not trust"))
    cases.append(("signature", "unsigned, key trusted", ["selftest", str(BUNDLE), "--trust", str(pub)], 1, "not signed"))
    cases.append(("signature", "unsigned, key trusted [predict]",
                  ["predict", str(BUNDLE), str(d / "one.npy"), "--trust", str(pub)], 2, "not signed"))
    after = members(signed)
    after["manifest.json"] = after["manifest.json"].replace(b'"count": 40', b'"count": 41')
    cases.append(("signature", "manifest changed after signing",
                  ["selftest", str(pack(d / "resigned.tar.gz", after)), "--trust", str(pub)], 1,
                  "changed after signing"))
    forged = {**members(signed), trust.SIGNATURE: b'{"algorithm": "ed25519", "key": 5}'}
    cases.append(("signature", "garbage signature record",
                  ["selftest", str(pack(d / "forged.tar.gz", forged)), "--trust", str(pub)], 1,
                  "not a signature record"))
    cases.append(("signature", "pin mismatch", ["selftest", str(BUNDLE), "--pin", "0" * 64], 1, "not the pinned"))
    cases.append(("signature", "pin not hex", ["predict", str(BUNDLE), str(d / "one.npy"), "--pin", "xyz"], 2,
                  "64 hex digits"))
    cases.append(("signature", "trust a missing key", ["selftest", str(BUNDLE), "--trust", str(d / "no.pub")], 2,
                  "public key not found"))
    (d / "notakey.pub").write_text("hello\n")
    cases.append(("signature", "trust a file that is no key", ["selftest", str(BUNDLE), "--trust", str(d / "notakey.pub")],
                  2, "not an Ed25519 public key"))
    cases.append(("signature", "trust a file far too large for a key", ["selftest", str(BUNDLE), "--trust", str(BUNDLE)],
                  2, "a public key file may have"))
    return cases


# --- models, data, flags, outputs -----------------------------------------------------------

def model_cases(d: Path) -> list:
    cases = []
    tflite = (EXPORT / "model_int8.tflite").read_bytes()
    variants = {"empty.tflite": b"", "short.tflite": b"TFL3", "random.tflite": os.urandom(4000),
                "truncated.tflite": tflite[: len(tflite) // 3], "garbage.onnx": b"\x08\x07" + os.urandom(500),
                "text.onnx": b"ir_version: 7"}
    rng = np.random.default_rng(0)
    for i in range(12):  # flipped bytes in the flatbuffer: load or run may fail, never crash the CLI
        blob = bytearray(tflite)
        for pos in rng.integers(0, len(blob), 8):
            blob[pos] = int(rng.integers(0, 256))
        variants[f"mutant{i}.tflite"] = bytes(blob)
    # 1.9 KB that tiles the image to 5600 x 5600 x 4 floats (made with tf.tile; tools/hostile_tile.py)
    cases.append(("models", "Tile op needing 479 MB per image",
                  ["predict", str(FIXTURES / "tile-479mb.tflite"), str(d / "one.npy")], 2, "for one image"))
    for name, blob in variants.items():
        (d / name).write_bytes(blob)
        code = None if name.startswith("mutant") else 2  # a mutant may still load and run: 0 or 2
        for backend in ("auto", "numpy"):  # LiteRT's flatbuffer reader, and edgefashion's own
            cases.append(("models", f"{name} [{backend}]",
                          ["predict", str(d / name), str(d / "one.npy"), "--backend", backend], code, None))
    return cases


def data_cases(d: Path) -> list:
    header = ",".join(["label"] + [f"pixel{i}" for i in range(1, 785)])
    row = ",".join(["3"] + ["0"] * 784)
    csvs = {
        "wrapped.csv": header + "\n" + row.replace("3,0,", "3,4294967301,", 1),
        "underscores.csv": header + "\n" + row.replace("3,0,", "3,2_5_5,", 1),
        "arabic.csv": header + "\n" + "\u0663" + row[1:],
        "nan.csv": header + "\n" + row.replace("3,0,", "3,nan,", 1),
        "ragged.csv": header + "\n" + row + ",0",
        "header-only.csv": header,
        "no-label-name.csv": ",".join(f"c{i}" for i in range(785)) + "\n" + row,
        "two-labels.csv": header.replace("pixel1,", "label,", 1) + "\n" + row,
        "binary.csv": "\x00\xff" * 50,
        "huge-value.csv": header + "\n" + row.replace("3,0,", "3," + "9" * 400 + ",", 1),
        "bom-headerless.csv": "\ufeff" + row + "\n" + row,
    }
    cases = []
    for name, text in csvs.items():
        (d / name).write_text(text + "\n", encoding="utf-8")
        cases.append(("data", f"csv {name}", ["predict", str(BUNDLE), str(d / name)], 2, name))
    # IDX folders for verify
    for label, images in [("corrupt deflate", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage-not-deflate"),
                          ("overflowing dimensions", gz_bytes(b"\x00\x00\x08\x03" + b"\xff\xff\xff\xff" * 3)),
                          ("bad magic", gz_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20))]:
        folder = d / f"idx-{label.replace(' ', '-')}"
        folder.mkdir()
        (folder / "t10k-images-idx3-ubyte.gz").write_bytes(images)
        (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gz_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x00"))
        cases.append(("data", f"idx {label}", ["verify", str(FIXTURES / "run"), "--reference", "tflite-f32",
                                               "--data", str(folder)], 2, "t10k-images"))
    # .npy
    def npy_header(shape, descr="|u1"):
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
        return buffer.getvalue()
    npys = {"huge-header.npy": npy_header((10 ** 12, 28, 28)), "short-body.npy": npy_header((5, 28, 28)) + b"\0" * 10,
            "object.npy": None, "not-npy.npy": b"hello", "wrong-shape.npy": None, "floats-out-of-range.npy": None}
    for name, blob in npys.items():
        if blob is None:
            array = {"object.npy": np.array([{"a": 1}], dtype=object), "wrong-shape.npy": np.zeros((3, 5), np.uint8),
                     "floats-out-of-range.npy": np.full((1, 28, 28), 7.0)}[name]
            np.save(d / name, array, allow_pickle=True)
        else:
            (d / name).write_bytes(blob)
        cases.append(("data", f"npy {name}", ["predict", str(BUNDLE), str(d / name)], 2, name))
    # images: a PNG header claiming 20,000 x 20,000 pixels (no pixels needed to be refused), a truncated one
    (d / "bomb.png").write_bytes(png(20000, 20000))
    (d / "wide.png").write_bytes(png(60000, 1000))
    (d / "truncated.png").write_bytes(png(28, 28)[:30])
    (d / "empty.png").write_bytes(b"")
    for name in ("bomb.png", "wide.png", "truncated.png", "empty.png"):
        cases.append(("data", f"image {name}", ["predict", str(BUNDLE), str(d / name)], 2, name))
    return cases


def gz_bytes(blob: bytes) -> bytes:
    import gzip
    return gzip.compress(blob)


def png(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def flag_cases(d: Path) -> list:
    npy = str(d / "one.npy")
    flags = [
        ["predict", str(BUNDLE), npy, "--threads", "100000"], ["predict", str(BUNDLE), npy, "--threads", "0"],
        ["predict", str(BUNDLE), npy, "--threads", "-1"], ["selftest", str(BUNDLE), "--threads", "32768"],
        ["bench", str(BUNDLE), "--threads", "1,99999"], ["bench", str(BUNDLE), "--warmup", "-1"],
        ["bench", str(BUNDLE), "--min-time", "nan"], ["bench", str(BUNDLE), "--runs", "0"],
        ["verify", str(FIXTURES / "run"), "--max-drop", "nan"], ["verify", str(FIXTURES / "run"), "--max-drop", "inf"],
        ["verify", str(FIXTURES / "run"), "--min-agreement", "150"],
        ["verify", str(FIXTURES / "run"), "--min-agreement", "nan"],
        ["train", "--out", str(d / "r"), "--seed", "-1"], ["train", "--out", str(d / "r"), "--learning-rate", "nan"],
        ["train", "--out", str(d / "r"), "--learning-rate", "-1"], ["train", "--out", str(d / "r"), "--epochs", "0"],
        ["export", str(d / "r"), "--seed", "-5"], ["bundle", str(FIXTURES / "run"), "--out", "x.tar.gz", "--golden", "0"],
        ["selftest", str(BUNDLE), "--min-accuracy", "250"], ["selftest", str(BUNDLE), "--reference-steps", "-1"],
        ["train", "--out", str(d / "r"), "--arch", "huge"], ["train", "--out", str(d / "r"), "--arch", '{"blocks": [0]}'],
        ["train", "--out", str(d / "r"), "--arch", '{"layers": 3}'], ["tune", "--out", str(d / "t"), "--jobs", "0"],
        ["tune", "--out", str(d / "t"), "--min-accuracy", "nan"], ["firmware", str(d / "r"), "--target", "z80"],
        ["predict", str(BUNDLE)], ["no-such-command"],
        ["selftest", str(d / "missing.tar.gz")],
    ]
    return [("flags", " ".join(argv[:1] + argv[2:] if len(argv) > 2 else argv), argv, 2, None) for argv in flags]


def output_cases(d: Path) -> list:
    run = d / "linked-run"
    shutil.copytree(FIXTURES / "run", run)
    (run / "bench.json").symlink_to("/etc/passwd")
    junk = d / "junk-run"
    shutil.copytree(FIXTURES / "run", junk)
    (junk / "bench.json").write_text('{"not": "a bench report"}')
    (d / "dir.tar.gz").mkdir()
    (d / "b2.json").write_text("{}")
    model = d / "model.tflite"
    shutil.copy(EXPORT / "model_int8.tflite", model)
    return [
        ("outputs", "bench --out the model itself", ["bench", str(model), "--out", str(model)], 2, "expected a .json"),
        ("outputs", "bench --out the input", ["bench", str(d / "b2.json"), "--out", str(d / "b2.json")], 2,
         "refusing to overwrite"),
        ("outputs", "bench --out not .json", ["bench", str(model), "--out", str(d / "x.txt")], 2, "expected a .json"),
        ("outputs", "bench --out a folder", ["bench", str(model), "--out", str(d)], 2, "expected a .json"),
        ("outputs", "bundle --out a model", ["bundle", str(run), "--out", str(run / "export" / "model_int8.tflite")],
         2, "expected a .tar.gz"),
        ("outputs", "bundle --out a folder", ["bundle", str(FIXTURES / "run"), "--out", str(d / "dir.tar.gz")],
         2, "is a directory"),
        ("outputs", "bundle ships a symlink", ["bundle", str(run), "--out", str(d / "o1.tar.gz")], 2, "symbolic link"),
        ("outputs", "bundle ships a junk bench.json", ["bundle", str(junk), "--out", str(d / "o2.tar.gz")], 2,
         "bench.json"),
        ("outputs", "bundle --sign a missing key", ["bundle", str(FIXTURES / "run"), "--out", str(d / "o3.tar.gz"),
                                                    "--sign", str(d / "none.key")], 2, "signing key not found"),
    ]


# --- the test ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    np.save(d / "one.npy", golden()["images"][:1])
    keys = d / "keys"
    trust.generate_key(keys / "ws.key", "test")
    trust.generate_key(keys / "other.key", "test")
    cases = bundle_cases(d, keys) + model_cases(d) + data_cases(d) + flag_cases(d) + output_cases(d)
    return d, cases


INFO_LINES = ("bundle ", "warning: ", "note: ", "bench: ", "qemu-")  # qemu-: emulator notes under make test-device-isa


def run_case(argv, workdir: Path, capfd) -> tuple[int, str, str]:
    scratch = workdir / "tmp"
    scratch.mkdir(exist_ok=True)
    home, tempdir = os.getcwd(), tempfile.tempdir
    tempfile.tempdir = str(scratch)
    os.chdir(workdir)
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    finally:
        os.chdir(home)
        tempfile.tempdir = tempdir
    out, err = capfd.readouterr()
    leftovers = list(scratch.iterdir())
    assert not leftovers, f"{argv}: left {leftovers} in $TMPDIR"
    return code, out, err


def test_hostile_corpus(corpus, tmp_path, capfd):
    d, cases = corpus
    before = sorted(p.name for p in d.iterdir())
    failures = []
    for cls, name, argv, code, text in cases:
        workdir = tmp_path / "cwd"
        workdir.mkdir(exist_ok=True)
        got, out, err = run_case(argv, workdir, capfd)
        problems = []
        if "Traceback" in out + err:
            problems.append("traceback")
        if code is not None and got != code:
            problems.append(f"exit {got}, expected {code}")
        if code is None and got not in (0, 2):
            problems.append(f"exit {got}, expected 0 or 2")
        message = err.strip() if got == 2 else out
        # besides the error, stderr may hold the bundle's origin, its warning and progress lines
        errors = [line for line in err.splitlines() if not line.startswith(INFO_LINES)]
        if got == 2 and len(errors) != 1:
            problems.append(f"{len(errors)} error lines on stderr")
        if got == 1 and not any(line.startswith("FAIL") for line in out.splitlines()):
            problems.append("no FAIL line")
        if text and text not in message:
            problems.append(f"message lacks {text!r}")
        if "\x1b" in out + err:
            problems.append("raw escape character printed")
        if sorted(p.name for p in workdir.iterdir()) not in ([], ["tmp"]):
            problems.append(f"wrote {sorted(p.name for p in workdir.iterdir())} into the working folder")
        if problems:
            failures.append(f"[{cls}] {name}: {', '.join(problems)} | {(err or out).strip()[-300:]}")
        shutil.rmtree(workdir)
    assert sorted(p.name for p in d.iterdir()) == before, "a case wrote beside its inputs"
    assert not failures, "\n".join(failures)


def test_corpus_size(corpus):
    _, cases = corpus
    by_class = {}
    for cls, *_ in cases:
        by_class[cls] = by_class.get(cls, 0) + 1
    print(by_class, sum(by_class.values()))
    assert sum(by_class.values()) >= 130 and len(by_class) >= 10


def test_sigterm_removes_the_extracted_bundle(tmp_path):
    """A killed selftest (SIGTERM, as systemd or `timeout` sends) leaves nothing in $TMPDIR."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    command = [sys.executable, "-m", "edgefashion", "selftest", str(BUNDLE)]
    process = subprocess.Popen(command, env={**os.environ, "TMPDIR": str(scratch)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(scratch.glob("edgefashion-selftest-*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("selftest finished before the signal arrived")
    assert process.returncode == 143 and "interrupted (SIGTERM)" in err and "Traceback" not in err
    assert [p.name for p in scratch.iterdir() if "edgefashion" in p.name] == []  # (onnxruntime leaves its .ses)


def test_leftovers_of_a_killed_run_are_removed(fixture_run, capsys):
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = [fixture_run / f".model.keras.tmp-pid{dead}-x1.keras",
             fixture_run / "export" / f".export.json.tmp-pid{dead}-y.part"]
    for path in stale:
        path.write_text("half")
    staging = fixture_run / f".export.tmp-pid{dead}-z"
    staging.mkdir()
    live = fixture_run / f".verify.json.tmp-pid{os.getpid()}-w.part"
    live.write_text("being written")
    clean_leftovers(Run(fixture_run))
    assert not any(p.exists() for p in [*stale, staging]) and live.exists()
    assert "removed 3 leftover(s) of an interrupted run" in capsys.readouterr().err


def test_names_in_tables_are_escaped_and_compare_plots_only_when_asked(tmp_path):
    """An escape sequence or a newline in a file name reaches the terminal as text, not as a cleared
    screen or a forged row; compare writes no compare.png unless --plot names it."""
    from edgefashion.render import table

    shown = table([{"input": "a\x1b[2J\nALL PASS", "class": 1}])
    assert "\x1b" not in shown and shown.count("\n") == 2 and "\\x1b" in shown
    np.save(tmp_path / "x.npy", np.zeros((1, 28, 28), np.uint8))
    evil = tmp_path / "a\x1b[2Jb.npy"
    shutil.copy(tmp_path / "x.npy", evil)
    done = run_cli("predict", SEED_INT8, evil, check=0)
    assert "\x1b" not in done.stdout and "\\x1b" in done.stdout
    bench = tmp_path / "bench.json"
    run_cli("bench", SEED_INT8, "--runs", 5, "--warmup", 1, "--min-time", 0, "--out", bench, check=0)
    run_cli("compare", bench, bench, check=0, cwd=tmp_path)
    assert not (tmp_path / "compare.png").exists()


def test_inputs_are_read_with_a_bound(tmp_path):
    """A FIFO named .csv, a .csv link to /dev/zero and a sparse 2 GB CSV are one line each, read never
    (or only to the cap); tune --jobs beyond twice the CPUs is refused."""
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    with open(tmp_path / "sparse.csv", "wb") as f:
        f.truncate(2 * 2**30)
    for name in ("pipe.csv", "zero.csv", "sparse.csv"):
        done = run_cli("predict", SEED_INT8, tmp_path / name, check=2)
        assert done.stderr.count("\n") == 1 and ("not a regular file" in done.stderr or "GB a CSV may have"
                                                  in done.stderr), done.stderr
    jobs = run_cli("tune", "--out", tmp_path / "tune", "--jobs", 1000, check=2)
    assert "--jobs 1000: more than twice this machine's" in jobs.stderr and not (tmp_path / "tune").exists()


def test_keys_are_written_whole_and_read_with_a_bound(tmp_path):
    """keygen: never a private key named .pub, never through a dangling link, both halves or neither (a
    retry works); a key file over 64 KB is refused before reading; a broken key in the trusted folder is
    a warning, not the end of a command that needs no trust."""
    keys = tmp_path / "keys"
    keys.mkdir()
    assert "ends in .pub" in run_cli("keygen", keys / "release.pub", check=2).stderr
    (keys / "a.pub").symlink_to(tmp_path / "nowhere")
    assert "already exists" in run_cli("keygen", keys / "a.key", check=2).stderr
    assert not (tmp_path / "nowhere").exists() and not (keys / "a.key").exists()
    (keys / "b.pub").mkdir()  # the public half cannot be placed: the private half must not stay behind
    run_cli("keygen", keys / "b.key", check=2)
    assert sorted(p.name for p in keys.iterdir()) == ["a.pub", "b.pub"]
    (keys / "b.pub").rmdir()
    run_cli("keygen", keys / "b.key", check=0)
    assert {"b.key", "b.pub"} <= {p.name for p in keys.iterdir()}
    wrong_half = run_cli("selftest", FIXTURES / "tiny-bundle.tar.gz", "--trust", keys / "b.key", check=2).stderr
    assert "is a private key; give its public half (b.pub" in wrong_half and wrong_half.count("\n") == 1
    with open(keys / "huge.pub", "wb") as f:
        f.truncate(2**30)
    assert "more than the 65536 a public key file may have" in run_cli(
        "selftest", FIXTURES / "tiny-bundle.tar.gz", "--trust", keys / "huge.pub", check=2).stderr
    config = tmp_path / "config"
    (config / "trusted-keys").mkdir(parents=True)
    (config / "trusted-keys" / "junk.pub").write_text("not a key\n")
    np.save(tmp_path / "x.npy", np.zeros((1, 28, 28), np.uint8))
    done = run_cli("predict", SEED_INT8, tmp_path / "x.npy", check=0, env={**os.environ, "EDGEFASHION_CONFIG": str(config)})
    assert "warning: ignoring a trusted key" in done.stderr


def test_a_killed_bundle_leaves_nothing_behind_the_next_one(tmp_path, fashion_dir):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run", run)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    leftover = tmp_path / f".b.tar.gz.tmp-pid{dead}-x1.part"
    leftover.write_bytes(b"half a bundle")
    other = tmp_path / f".notes.txt.tmp-pid{dead}-x2.part"  # not the bundle's: left alone
    other.write_bytes(b"")
    run_cli("bundle", run, "--out", tmp_path / "b.tar.gz", "--golden", 5, check=0)
    assert not leftover.exists() and other.exists() and (tmp_path / "b.tar.gz").is_file()


def test_a_model_that_kills_its_interpreter_is_a_fail_line(tmp_path):
    """A self-consistent bundle whose int8 model has a negative softmax beta: LiteRT's reference kernels
    abort (SIGABRT). selftest names the model and the signal, checks the other models, exits 1, and
    leaves no extracted bundle in $TMPDIR."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(members()["model_int8.tflite"]))
    for op in model.subgraphs[0].operators:
        if op.builtinOptions is not None and hasattr(op.builtinOptions, "beta"):
            op.builtinOptions.beta = -1.0
    bad = consistent(tmp_path / "beta.tar.gz",
                     replace={"model_int8.tflite": bytes(flatbuffer_utils.convert_object_to_bytearray(model))})
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = run_cli("selftest", bad, check=1, env={**os.environ, "TMPDIR": str(scratch)})
    assert "FAIL  load model_int8.tflite: the model killed its interpreter (signal SIGABRT)" in done.stdout
    assert "PASS  golden model_f32.tflite" in done.stdout and "Traceback" not in done.stderr
    assert [p.name for p in scratch.iterdir() if "edgefashion" in p.name] == []  # (onnxruntime leaves its .ses)


def test_an_older_signed_bundle_is_a_rollback(tmp_path):
    """Signed by the trusted key and intact, but older than the newest this device accepted from that key:
    refused unless --allow-downgrade (a replayed old bundle)."""
    keys = tmp_path / "keys"
    trust.generate_key(keys / "ws.key", "test")
    dated = lambda when: (lambda m: m.update(created=when))  # noqa: E731
    new = consistent(tmp_path / "new.tar.gz", change=dated("2026-11-30T10:00:00+0000"), sign_with=keys / "ws.key")
    old = consistent(tmp_path / "old.tar.gz", change=dated("2026-01-01T10:00:00+0000"), sign_with=keys / "ws.key")
    env = {**os.environ, "EDGEFASHION_CONFIG": str(tmp_path / "config")}
    with_key = ("--trust", keys / "ws.pub")
    run_cli("selftest", new, *with_key, check=0, env=env)
    done = run_cli("selftest", old, *with_key, check=1, env=env)
    assert "FAIL  bundle:" in done.stdout and "older than the newest bundle this device accepted from key" in done.stdout
    refused = run_cli("predict", old, FIXTURES / "test_images.npz", *with_key, env=env, check=2)
    assert "--allow-downgrade accepts it" in refused.stderr
    run_cli("selftest", old, *with_key, "--allow-downgrade", check=0, env=env)
    run_cli("selftest", new, *with_key, check=0, env=env)  # the newest is still the newest


def test_no_output_replaces_a_file_that_is_not_its_own(tmp_path):
    """bench --out, verify BUNDLE --out, bundle --out and compare --plot over a user's file (or beside it,
    bench's .csv): refused, the file untouched; over their own earlier output: replaced."""
    user = {"tsconfig.json": "{\"compilerOptions\": {}}", "results.csv": "a,b\n", "package.json": "{}",
            "archive.tar.gz": "not a bundle", "photo.png": "png"}
    for name, text in user.items():
        (tmp_path / name).write_text(text)
    quick = ("--runs", 5, "--warmup", 1, "--min-time", 0)
    assert "not an edgefashion output" in run_cli("bench", SEED_INT8, *quick, "--out", tmp_path / "tsconfig.json",
                                                  check=2).stderr
    assert "results.csv: exists and is not an edgefashion output" in run_cli(
        "bench", SEED_INT8, *quick, "--out", tmp_path / "results.json", check=2).stderr
    run_cli("bench", SEED_INT8, *quick, "--out", tmp_path / "bench.json", check=0)
    run_cli("bench", SEED_INT8, *quick, "--out", tmp_path / "bench.json", check=0)  # its own: replaced
    assert "not an edgefashion output" in run_cli("verify", BUNDLE, "--out", tmp_path / "package.json",
                                                  check=2).stderr
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run", run)
    assert "not an edgefashion output" in run_cli("bundle", run, "--out", tmp_path / "archive.tar.gz", "--golden", 5,
                                                  check=2).stderr
    run_cli("bundle", run, "--out", tmp_path / "b.tar.gz", "--golden", 5, check=0)
    run_cli("bundle", run, "--out", tmp_path / "b.tar.gz", "--golden", 5, check=0)  # its own: replaced
    assert "not an edgefashion output" in run_cli("compare", tmp_path / "bench.json", tmp_path / "bench.json",
                                                  "--plot", tmp_path / "photo.png", check=2).stderr
    assert {name: (tmp_path / name).read_text() for name in user} == user

    # --force: the user asks for their file to be replaced; a link or an input stays refused
    (tmp_path / "link.json").symlink_to(tmp_path / "package.json")
    assert "symbolic link" in run_cli("bench", SEED_INT8, *quick, "--out", tmp_path / "link.json", "--force",
                                      check=2).stderr
    assert "is an input of this command" in run_cli("bench", tmp_path / "package.json", "--out",
                                                    tmp_path / "package.json", "--force", check=2).stderr
    run_cli("bench", SEED_INT8, *quick, "--out", tmp_path / "results.json", "--force", check=0)
    run_cli("verify", BUNDLE, "--out", tmp_path / "package.json", "--force", check=0)
    run_cli("bundle", run, "--out", tmp_path / "archive.tar.gz", "--golden", 5, "--force", check=0)
    assert (tmp_path / "results.csv").read_text() != user["results.csv"]
    assert json.loads((tmp_path / "package.json").read_text())["models"]
    assert is_bundle(tmp_path / "archive.tar.gz")
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "package.json").exists()
