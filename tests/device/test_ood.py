"""predict's warning on inputs unlike the training images (device/ood.py), on real images."""

from __future__ import annotations

import numpy as np
import pytest

from edgefashion.device import ood


def test_flags_few_test_images_and_most_foreign_ones(test_set):
    model = ood.fit(test_set.images[:5000])
    rest = ood.unusual(model, test_set.images[5000:])
    assert rest.mean() < 0.03  # false alarms on Fashion-MNIST images it was not fitted on
    noise = np.random.default_rng(0).integers(0, 256, (100, 28, 28), dtype=np.uint8)
    assert ood.unusual(model, noise).all()
    sklearn = pytest.importorskip("sklearn.datasets")
    from PIL import Image
    photos = [Image.fromarray(p).convert("L").resize((28, 28)) for p in sklearn.load_sample_images().images]
    assert ood.unusual(model, np.stack([np.asarray(p) for p in photos])).all()  # two photographs, drawn whole
    loaded = ood.load(_saved(model, test_set), (28, 28, 1))
    assert np.array_equal(ood.unusual(loaded, test_set.images[5000:]), rest)
    assert ood.load(_saved(model, test_set), (32, 32, 3)) is None  # of other images: no warning, no error


def _saved(model, test_set):
    import tempfile
    from pathlib import Path
    path = Path(tempfile.mkdtemp()) / ood.FILE
    path.write_bytes(ood.to_bytes(model))
    return path
