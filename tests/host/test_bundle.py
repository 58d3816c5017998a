"""A bundle made from a freshly trained and exported run (the device tier checks the committed one)."""

from helpers import check_bundle


def test_bundle_contents_and_selftest(bundle_file):
    check_bundle(bundle_file, golden=50)


def test_predict_warns_of_inputs_unlike_the_training_images(bundle_file, tmp_path):
    """export fits what the training images look like, the bundle carries it, predict warns."""
    import tarfile

    import numpy as np
    from PIL import Image

    from helpers import cli

    with tarfile.open(bundle_file) as tar:
        assert "ood.npz" in tar.getnames()
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(noise)
    done = cli("predict", bundle_file, noise, check=0)
    assert "1 of 1 inputs are unlike the training images" in done.stderr and "unlike training" in done.stdout
