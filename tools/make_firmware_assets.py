#!/usr/bin/env python3
"""Regenerate firmware_assets/ from a finished run (`edgefashion run` / `make demo`):
the int8 model, its C array for TensorFlow Lite Micro, labels, and manifest.json with sha256
and the accuracy measured by `edgefashion verify`."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefashion import LABELS  # noqa: E402
from edgefashion.errors import InputError  # noqa: E402
from edgefashion.files import read_json, sha256_file, write_json, write_text  # noqa: E402
from edgefashion.verify import accuracies  # noqa: E402

FILES = ("model_int8.tflite", "model_int8_data.cc", "model_int8_data.h")


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


def build(run: Path, out: Path) -> dict:
    export = read_json(run / "export" / "export.json", "export manifest")
    verify = read_json(run / "verify.json", "verify report (run `edgefashion verify`)")
    config = read_json(run / "config.json", "run config")
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        src = run / "export" / name
        if not src.is_file():
            raise InputError(f"{src}: missing")
        shutil.copyfile(src, out / name)
    write_text(out / "labels.txt", "\n".join(LABELS) + "\n")
    int8 = next(a for a in export["artifacts"] if a["format"] == "tflite-int8")
    accuracy = accuracies(verify)
    manifest = {
        "files": {name: {"sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size}
                  for name in (*FILES, "labels.txt")},
        "labels": list(LABELS), "input": int8["input"], "output": int8["output"],
        "accuracy": accuracy, "test_samples": verify["reference"]["samples"],
        "top1_agreement_with_float": next(m["top1_agreement"] for m in verify["models"]
                                          if m["format"] == "tflite-int8"),
        "training": {k: config["settings"][k] for k in ("epochs", "batch_size", "validation_split",
                                                        "optimizer", "seed")},
        "calibration": export["calibration"], "versions": export["versions"],
    }
    write_json(out / "manifest.json", manifest)
    return manifest


if __name__ == "__main__":
    sys.exit(main())
