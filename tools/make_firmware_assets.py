#!/usr/bin/env python3
"""Regenerate firmware_assets/ from a finished run (`edgefashion run` / `make demo`, with its
firmware stage): the int8 model, its C array and header for TensorFlow Lite Micro (measured arena,
quantization, labels, operator registration), firmware.json from `edgefashion firmware`, labels,
and manifest.json with sha256 and the accuracy measured by `edgefashion verify`."""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefashion import LABELS  # noqa: E402
from edgefashion.errors import InputError  # noqa: E402
from edgefashion.files import sha256_file, write_json, write_text  # noqa: E402
from edgefashion.rundir import Run  # noqa: E402
from edgefashion.schemas import TrainReport, VerifyReport  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="finished run directory")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "firmware_assets")
    args = parser.parse_args(argv)
    try:
        manifest = build(args.run, args.out)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {', '.join(manifest['files'])}; int8 accuracy {manifest['accuracy']['tflite-int8']:.4f}")
    return 0


def build(run_dir: Path, out: Path) -> dict:
    run = Run(run_dir)
    export = run.read_export()
    verify = VerifyReport.read(run.verify)
    config = TrainReport.read(run.config)
    int8, checked = export.models().get("tflite-int8"), verify.model("tflite-int8")
    if int8 is None or checked is None:
        raise InputError(f"{run.root}: no verified tflite-int8 model (run `edgefashion run --out {run.root}`)")
    if not run.firmware.report.is_file():
        raise InputError(f"{run.firmware.report}: missing (run `edgefashion firmware {run.root}` first)")
    sources = (run.export.model("tflite-int8"), run.firmware.c_source, run.firmware.c_header, run.firmware.report)
    out.mkdir(parents=True, exist_ok=True)
    for src in sources:
        if not src.is_file():
            raise InputError(f"{src}: missing")
        shutil.copyfile(src, out / src.name)
    write_text(out / "labels.txt", "\n".join(LABELS) + "\n")
    names = [src.name for src in sources] + ["labels.txt"]
    manifest = {
        "files": {name: {"sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size} for name in names},
        "labels": list(LABELS), "input": asdict(int8.input), "output": asdict(int8.output),
        "accuracy": verify.accuracies(), "test_samples": verify.reference.samples,
        "top1_agreement_with_float": checked.top1_agreement,
        "training": {k: config.settings[k] for k in ("epochs", "batch_size", "validation_split", "optimizer", "seed")},
        "calibration": asdict(export.calibration), "versions": export.versions, "cpu": asdict(verify.cpu),
    }
    write_json(out / "manifest.json", manifest)
    return manifest


if __name__ == "__main__":
    sys.exit(main())
