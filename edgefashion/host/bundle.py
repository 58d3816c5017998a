"""Packing a run for a device: models, labels, golden vectors (test images with this machine's
outputs) and a manifest with the sha256 of every file. device/unpack.py opens it, device/selftest.py checks it."""

from __future__ import annotations

import io
import json
import platform
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from ..files import atomic_path, check_output, remove_leftovers, sha256_bytes
from ..options import positive_int, setting
from ..rundir import Run
from ..schemas import (Artifact, BenchReport, BundleManifest, CrossCheck, FileEntry, Golden, HostAccuracy,
                       ModelSpec, TensorInfo, VerifyReport)
from ..stage import Stage
from ..device.selftest import agreements
from ..device.unpack import GOLDEN, MANIFEST, REFERENCE_KERNELS, input_spec
from ..device.trust import SIGNATURE, sign
from ..device.runtime import Model
from ..device import ood
from .. import rundata


@dataclass
class BundleConfig:
    golden_count: int = setting(200, "golden test images, with this machine's outputs for the device to match",
                                flag="--golden", type=positive_int)
    sign: Path | None = setting(None, "Ed25519 private key (from `edgefashion keygen`) to sign the manifest "
                                      "with; devices that trust its .pub refuse bundles not signed by it",
                                type=Path, metavar="KEY")


def make_bundle(config: BundleConfig, run: Run, out: Path, force: bool = False) -> BundleManifest:
    """Pack RUN's exported models, labels, golden vectors and summaries into `out` (.tar.gz); `force`
    replaces a file there that is not a bundle."""
    out, golden_count = Path(out), config.golden_count
    if golden_count < 1:
        raise InputError(f"--golden {golden_count}, expected a positive integer")
    check_output(out, ".tar.gz", [run.root], ours=_is_bundle, force=force)
    remove_leftovers(out.parent, of=out.name)  # of a bundle killed while it wrote this file
    if config.sign is not None and not config.sign.is_file():
        raise InputError(f"{config.sign}: signing key not found (make one with `edgefashion keygen`)")
    models = run.exported_models()
    _refuse_links(run, models.values())
    export = run.read_export()
    test = rundata.test_set(run, None)
    seed = 0
    pick = np.sort(np.random.default_rng(seed).choice(len(test), min(golden_count, len(test)), replace=False))
    golden = {"images": test.images[pick], "labels": test.labels[pick]}
    specs, fast_probs = {}, {}
    for fmt, path in models.items():
        model = Model(path)
        fast = model.outputs_of(model.prepare(golden["images"]))
        fast_probs[fmt] = model.dequantize(fast)
        if fmt in REFERENCE_KERNELS:
            reference = Model(path, kernels="reference")
            golden[f"raw_{fmt}"] = reference.outputs_of(reference.prepare(golden["images"]))
            golden[f"fast_{fmt}"] = fast
        else:
            golden[f"raw_{fmt}"] = fast
        specs[fmt] = _model_spec(model, export.models()[fmt], export.made_by(fmt))
    files = {path.name: path.read_bytes() for path in models.values()}
    files["labels.json"] = json.dumps(list(export.labels), indent=2).encode()
    files[GOLDEN] = _npz_bytes(golden)
    usual = run.ood_model()  # predict on the device warns of inputs unlike the training images
    if usual is not None:
        files[ood.FILE] = usual.read_bytes()
    for summary, kind in ((run.verify, VerifyReport), (run.bench, BenchReport)):
        if summary.is_file():  # checked as the manifest it claims to be: a bundle ships no stray file
            kind.read(summary)
            files[f"host_{summary.name}"] = summary.read_bytes()
    cross_check = {family: CrossCheck(**figures) for family, figures in agreements(golden, fast_probs).items()}
    manifest = BundleManifest(
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        created_on={"machine": platform.machine(), "python": platform.python_version()},
        files={name: FileEntry(sha256=sha256_bytes(blob), bytes=len(blob)) for name, blob in files.items()},
        models={fmt: path.name for fmt, path in models.items()},
        model_specs=specs, labels=list(export.labels), input=input_spec(model.image_shape),
        golden=Golden(file=GOLDEN, count=len(pick), seed=seed, source=test.source, host_cross_check=cross_check),
        host_accuracy=_host_accuracies(run),
        versions={"edgefashion": __version__, **export.versions})
    files[MANIFEST] = json.dumps(manifest.to_json(), indent=2).encode()
    if config.sign is not None:
        files[SIGNATURE] = sign(config.sign, files[MANIFEST])
    _write_tar(out, files)
    return manifest


def _is_bundle(path: Path) -> bool:
    """An existing bundle of edgefashion's (a manifest.json member that reads as one), replaced on request."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            member = tar.getmember(MANIFEST)
            if member.size > 2**20:
                return False
            BundleManifest.from_json(json.loads(tar.extractfile(member).read()), str(path))
        return True
    except (tarfile.TarError, KeyError, ValueError, OSError, EOFError, InputError):
        return False


def _refuse_links(run: Run, models) -> None:
    """Everything packed is a regular file inside the run: a link could ship any file of this machine."""
    for path in [*models, run.export_manifest, run.verify, run.bench]:
        if path.is_symlink():
            raise InputError(f"{path}: is a symbolic link; a bundle packs only the run's own files")


def _model_spec(model: Model, entry: Artifact, made_by: str | None = None) -> ModelSpec:
    output = entry.output or TensorInfo(**model.output.as_dict())
    return ModelSpec(file=entry.file, input=TensorInfo(**model.input.as_dict()), output=output, quantization=made_by)


def _host_accuracies(run: Run) -> HostAccuracy | None:
    if not run.verify.is_file():
        return None
    report = VerifyReport.read(run.verify)
    return HostAccuracy(samples=report.reference.samples, accuracy=report.accuracies(),
                        min_agreement=report.gates.get("min_agreement"))


def _npz_bytes(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _write_tar(out: Path, files: dict[str, bytes]) -> None:
    with atomic_path(out, suffix=".tar.gz") as tmp, tarfile.open(tmp, "w:gz") as tar:
        for name, blob in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(blob), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(blob))


def bundle_run(config: BundleConfig, run: Run) -> BundleManifest:
    """The bundle stage of a run: RUN/edgefashion-bundle.tar.gz."""
    return make_bundle(config, run, run.bundle)


def render(manifest: BundleManifest) -> str:
    return (f"{len(manifest.files) + 1} files, {manifest.golden.count} golden images, "
            f"models: {', '.join(manifest.models)}")


STAGE = Stage(
    name="bundle", help="pack a run's models, labels and golden vectors for a device",
    description="Write one .tar.gz with the int8 and float models (TFLite and ONNX), labels, golden vectors "
                "(test images with the host's outputs), the host's verify and bench summaries, and manifest.json "
                "(sha256 of every file).",
    settings=BundleConfig, run=bundle_run, report=BundleManifest, render=render, output=lambda run: run.bundle)
