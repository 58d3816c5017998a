import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from edgefashion import data
from helpers import cli


def test_seed_cnn_shapes_and_parameters():
    from edgefashion.host.model import PARAMETERS, build_model

    model = build_model()
    shapes = [tuple(layer.output.shape) for layer in model.layers]
    assert shapes == [(None, 26, 26, 12), (None, 24, 24, 20), (None, 22, 22, 20), (None, 9680),
                      (None, 100), (None, 10)]
    assert model.count_params() == PARAMETERS == 975_030
    assert model.loss == "categorical_crossentropy"
    assert model.layers[-1].activation.__name__ == "softmax"


def test_short_training_learns(tiny_run):
    config = json.loads((tiny_run / "config.json").read_text())
    history = json.loads((tiny_run / "history.json").read_text())
    assert config["test"]["samples"] == 10000
    assert config["test"]["accuracy"] > 0.6  # chance is 0.1
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "best_epoch"}
    assert config["dataset"]["sha256"] and config["versions"]["tensorflow"]
    assert (tiny_run / "training_curves.png").stat().st_size > 1000


def test_same_seed_same_result(tmp_path):
    for name in ("a", "b"):
        cli("train", "--out", tmp_path / name, "--limit", 500, "--epochs", 1, "--seed", 7, check=0)
    a, b = (json.loads((tmp_path / n / "history.json").read_text()) for n in ("a", "b"))
    assert a["loss"] == b["loss"] and a["val_accuracy"] == b["val_accuracy"]


def test_sgd_option_and_bad_values(tmp_path):
    cli("train", "--out", tmp_path / "sgd", "--limit", 300, "--epochs", 1, "--optimizer", "sgd",
        "--learning-rate", 0.05, check=0)
    settings = json.loads((tmp_path / "sgd" / "config.json").read_text())["settings"]
    assert settings["optimizer"] == "sgd" and settings["learning_rate"] == 0.05
    done = cli("train", "--out", tmp_path / "x", "--validation-split", 1.5)
    assert done.returncode == 2 and "validation-split 1.5" in done.stderr


def test_augmentation_moves_images_and_the_schedule_lowers_the_rate(tmp_path):
    from edgefashion.host import recipe

    images = np.zeros((50, 28, 28, 1), np.float32)
    images[:, 10:18, 12:16] = 1.0  # a bar of 32 pixels
    moved = recipe.shifted(images, np.random.default_rng(0), flip=True)
    assert moved.shape == images.shape and (moved.sum(axis=(1, 2, 3)) == 32).all()  # moved by <= 2 px: all inside
    assert len({m.tobytes() for m in moved}) > 5  # each image its own shift
    assert [round(recipe.cosine_factor(e, 4), 3) for e in range(4)] == [1.0, 0.854, 0.5, 0.146]
    cli("train", "--out", tmp_path / "aug", "--limit", 500, "--epochs", 2, "--lr-schedule", "cosine",
        "--augment", "shift+flip", check=0)
    history = json.loads((tmp_path / "aug" / "history.json").read_text())
    settings = json.loads((tmp_path / "aug" / "config.json").read_text())["settings"]
    assert len(history["val_accuracy"]) == 2 and settings["augment"] == "shift+flip"
    assert "--augment: invalid choice" in cli("train", "--out", tmp_path / "x", "--augment", "rotate", check=2).stderr


def test_ctrl_c_leaves_a_usable_model(tmp_path):
    run = tmp_path / "run"
    # SIG_DFL: a test runner started in the background hands SIGINT down ignored
    proc = subprocess.Popen([sys.executable, "-m", "edgefashion", "train", "--out", str(run), "--limit", "2000",
                             "--epochs", "200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:  # Keras prints a line per finished epoch: stop after the first
        if b"val_accuracy" in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    config = json.loads((run / "config.json").read_text())
    assert config["interrupted"] and config["epochs_finished"] >= 1
    from edgefashion.host.model import load_model

    model = load_model(run / "model.keras")
    assert model.predict(np.zeros((1, 28, 28, 1), np.float32), verbose=0).shape == (1, 10)


def test_own_data_is_never_tested_on_fashion_mnist(tmp_path, fashion_dir):
    """A 3-class CSV of the user's: a 3-class model, tested on a seeded held-out share of it (never on
    Fashion-MNIST's 10 classes); a test set with classes the training data lacks is refused;
    NAME_test.csv beside NAME_train.csv is found."""
    from edgefashion import data
    from helpers import labelled_rows, write_csv

    train = data.read_idx_split(fashion_dir, "train").subset(slice(0, 3000))
    keep = train.labels < 3
    own = write_csv(tmp_path / "three_train.csv", labelled_rows(train.images[keep][:300], train.labels[keep][:300]))
    done = cli("train", "--data", own, "--out", tmp_path / "run", "--epochs", 1, check=0)
    assert "holding out 60 of its 300 rows (--test-split 0.2, seed 0)" in done.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["test"]["samples"] == 60 and config["test"]["held_out"] == 0.2 and config["labels"] == [
        "class 0", "class 1", "class 2"] and config["image_shape"] == [28, 28, 1]
    with np.load(tmp_path / "run" / "test_split.npz") as split:
        held = split["indices"]
    counts = np.bincount(train.labels[keep][:300])
    assert len(held) == 60 and np.bincount(train.labels[keep][:300][held]).tolist() == [round(0.2 * n) for n in counts]
    other = write_csv(tmp_path / "other.csv", labelled_rows(train.images[~keep][:20], train.labels[~keep][:20]))
    refused = cli("train", "--data", own, "--test-data", other, "--out", tmp_path / "run2")
    assert refused.returncode == 2 and "do not occur in the training data" in refused.stderr
    write_csv(tmp_path / "three_test.csv", labelled_rows(train.images[keep][300:400], train.labels[keep][300:400]))
    beside = cli("train", "--data", own, "--out", tmp_path / "run3", "--epochs", 1, check=0)
    config = json.loads((tmp_path / "run3" / "config.json").read_text())
    assert config["test"]["source"].endswith("three_test.csv") and "test accuracy" in beside.stdout
    assert config["test"]["held_out"] is None and not (tmp_path / "run3" / "test_split.npz").exists()


def test_rows_sorted_by_class_are_named_before_training(capsys):
    """Keras validates on the last rows: a CSV sorted by class would validate on its last classes only."""
    from edgefashion.host.train import TrainConfig, _check_validation_split

    images = np.zeros((10, 28, 28), np.uint8)
    _check_validation_split(TrainConfig(), data.Dataset(images, np.array([0] * 5 + [1] * 5, np.uint8), "sorted.csv", "x"))
    assert "holds no row of classes [0]: are the rows sorted by class?" in capsys.readouterr().err
    _check_validation_split(TrainConfig(), data.Dataset(images, np.array([0, 1] * 5, np.uint8), "mixed.csv", "x"))
    assert capsys.readouterr().err == ""
