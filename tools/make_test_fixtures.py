#!/usr/bin/env python3
"""Regenerate tests/fixtures/: what the TensorFlow-free test tier runs on.

A tiny CNN (Conv2D(4, 3, stride 2) -> Dense(10), 6,8 k parameters) trained for one epoch on 6,000
real Fashion-MNIST training images, exported by the real exporter (all four formats, calibration
200), and bundled with 40 golden images; plus the first 300 test images. Needs the host extra.

  python tools/make_test_fixtures.py [--out tests/fixtures]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefashion import IMAGE_SHAPE, NUM_CLASSES, data  # noqa: E402
from edgefashion.host import import_tf  # noqa: E402
from edgefashion.host.bundle import BundleConfig, make_bundle  # noqa: E402
from edgefashion.host.export import ExportConfig, export  # noqa: E402
from edgefashion.rundir import Run  # noqa: E402

TEST_IMAGES = 300
BUNDLE = "tiny-bundle.tar.gz"


def tiny_model(keras):
    return keras.Sequential([
        keras.Input(IMAGE_SHAPE, name="input"),
        keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities"),
    ], name="tiny_cnn")


def fit_briefly(keras, model, rows: int = 6000):
    """One epoch of adam on the first `rows` real training images: a small real model (the caller seeds
    Keras before building it)."""
    train_set = data.load(None, "train").subset(slice(0, rows))
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.prepare(train_set.images), data.one_hot(train_set.labels), batch_size=100, epochs=1, verbose=2)
    return train_set


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "fixtures")
    args = parser.parse_args(argv)
    keras = import_tf().keras
    keras.utils.set_random_seed(0)
    model = tiny_model(keras)
    fit_briefly(keras, model)
    with tempfile.TemporaryDirectory() as scratch:
        run = Run(scratch)
        model.save(run.model)
        export(ExportConfig(calibration_count=200, data=data.default_dir()), run)
        make_bundle(BundleConfig(golden_count=40), run, run.bundle)
        target = Run(args.out / "run")
        shutil.rmtree(target.root, ignore_errors=True)
        shutil.copytree(run.export_dir, target.export_dir)
        shutil.copyfile(run.bundle, args.out / BUNDLE)
    test = data.load(None, "test").subset(slice(0, TEST_IMAGES))
    np.savez_compressed(args.out / "test_images.npz", images=test.images, labels=test.labels)
    print(f"{args.out}: " + ", ".join(f"{p.relative_to(args.out)} {p.stat().st_size} B"
                                      for p in sorted(args.out.rglob("*")) if p.is_file()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
