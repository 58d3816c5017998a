"""A bundle made from a freshly trained and exported run (the device tier checks the committed one)."""

from helpers import check_bundle


def test_bundle_contents_and_selftest(bundle_file):
    check_bundle(bundle_file, golden=50)


def test_predict_warns_of_inputs_unlike_the_training_images(bundle_file, tmp_path):
    """export fits what the training images look like, the bundle carries it, predict warns."""
    import json
    import tarfile

    import numpy as np
    from PIL import Image

    from helpers import cli

    with tarfile.open(bundle_file) as tar:
        assert "ood.npz" in tar.getnames()
    from sklearn.datasets import load_sample_images

    photos = []
    for i, photo in enumerate(load_sample_images().images):  # a temple and a flower, as a user sends photos
        photos.append(tmp_path / f"photo{i}.jpg")
        Image.fromarray(photo).save(photos[-1])
    noise = tmp_path / "noise.npy"
    np.save(noise, np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8))
    done = cli("predict", bundle_file, noise, check=0)
    assert "3 of 3 inputs are unlike the training images" in done.stderr and "unlike training" in done.stdout
    shown = cli("predict", bundle_file, *photos, "--json", check=0)
    assert "inputs are unlike the training images" in shown.stderr
    assert any(p["unusual"] for p in json.loads(shown.stdout)["predictions"])
