"""edgefashion: train a Fashion-MNIST CNN on a workstation, run it quantized on the edge.

The package root stays import-light: the device side must load without TensorFlow.
"""

import importlib.metadata as md

__version__ = "0.1.0"

LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = len(LABELS)


def package_versions(dists) -> dict:
    """{distribution: installed version or None}."""
    out = {}
    for dist in dists:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out
