"""The train stage: fit the seed CNN (seed settings by default), keep the best epoch, and replace
RUN/model.keras only when training ends (Ctrl-C keeps the best finished epoch)."""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import cpu, data, rundata
from ..console import quiet, step
from ..errors import InputError
from ..files import atomic_path, check_tool_folder, is_manifest, write_json
from .. import plots
from ..stage import Stage
from ..options import positive_float, positive_int, setting, settings_of
from ..rundir import RUN_MARKERS, Run
from ..schemas import DatasetInfo, TrainReport
from . import import_tf, recipe, versions
from .arch import PRESETS
from .arch import parse as parse_arch
from .model import build_model, make_optimizer


MIN_ROWS = 10


@dataclass
class TrainConfig:
    data: Path | None = setting(None, "training data: a CSV (seed format, any image size), an IDX folder or an "
                                      "image folder DIR/<class name>/*.png (or DIR/train/..., DIR/test/...) "
                                      "(default: the local Fashion-MNIST)", type=Path)
    test_data: Path | None = setting(None, "test CSV, IDX or image folder (default: beside --data: the IDX or image "
                                           "folder's test split, or for NAME_train.csv a NAME_test.csv, else a "
                                           "held-out --test-split of --data; without --data the local "
                                           "Fashion-MNIST test set, never for your own data)", type=Path)
    test_split: float = setting(0.2, "share of --data held out as the test set (seeded by --seed, stratified, its "
                                     "rows recorded in RUN/test_split.npz) when your data has no test set")
    image_shape: str | None = setting(None, "HxWxC (C 1 grey or 3 RGB): the shape of a CSV's rows (default: a "
                                            "square grey image) or what an image folder is resized to (default "
                                            "32x32, RGB when any image is in colour)", metavar="HxWxC")
    labels: Path | None = setting(None, "class names, one per line in label order (default: labels.txt beside "
                                        "the data, an image folder's folder names, Fashion-MNIST's names; else "
                                        "class 0 ... class K-1)", type=Path, metavar="FILE")
    epochs: int = setting(4, "training epochs (the seed's)", type=positive_int)
    batch_size: int = setting(100, "mini-batch size (the seed's)", type=positive_int)
    validation_split: float = setting(0.2, "share of the training rows held out for validation (the seed's)")
    optimizer: str = setting("adam", "adam (the seed's) or mini-batch SGD with momentum", choices=("adam", "sgd"))
    learning_rate: float | None = setting(None, "learning rate (default: adam 0.001, sgd 0.01)",
                                          type=positive_float)
    momentum: float = setting(0.9, "SGD momentum")
    lr_schedule: str = setting("constant", "constant (the seed's) or cosine: the learning rate falls epoch by epoch "
                                           "along half a cosine", choices=recipe.SCHEDULES,
                               metavar="|".join(recipe.SCHEDULES))
    augment: str = setting("none", "none (the seed's), shift (each epoch, every training image moved by up to 2 "
                                   "pixels each way) or shift+flip (and half of them mirrored: for clothes, not "
                                   "for digits or text)", choices=recipe.AUGMENTS,
                           metavar="|".join(recipe.AUGMENTS))
    seed: int = setting(0, "random seed. The same seed, data, settings and package versions give the same "
                           "weights on the same CPU family; another CPU (AVX-512 vs AVX2, x86 vs Arm) rounds "
                           "float sums differently and trains a slightly different model (test accuracy "
                           "0.8988 vs 0.9029 for the defaults). An exported int8 model gives the same integers "
                           "on every CPU.")
    limit: int | None = setting(None, "train on the first N rows only (quick runs)", type=positive_int)
    arch: str = setting("seed", "the model: seed (the seed CNN, unchanged), a preset (" + ", ".join(PRESETS) + ") or "
                                "a JSON object of the architecture family's fields (edgefashion tune prints them)")
    verbose: bool = False

    def shape(self) -> tuple[int, int, int] | None:
        return None if self.image_shape is None else data.parse_image_shape(self.image_shape)

    def validate(self) -> None:
        parse_arch(self.arch)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)}, expected a positive integer")
        if not 0 < self.validation_split < 1:
            raise InputError(f"--validation-split {self.validation_split}, expected a value between 0 and 1")
        if not 0 < self.test_split < 1:
            raise InputError(f"--test-split {self.test_split}, expected a value between 0 and 1")
        self.shape()
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise InputError(f"--learning-rate {self.learning_rate}, expected a positive number")
        if self.limit is not None and self.limit < MIN_ROWS:
            raise InputError(f"--limit {self.limit}, expected at least {MIN_ROWS} rows")


def load_data(config: TrainConfig) -> data.Dataset:
    """The labelled training data, its class names settled: --labels, labels.txt beside it, an image
    folder's names, Fashion-MNIST's, else class 0 ... class K-1 (K: the largest label + 1)."""
    train_set = data.load(config.data, "train", config.shape())
    if train_set.labels is None:
        raise InputError(f"{train_set.source}: training data needs a label column")
    if config.labels is not None:
        train_set.classes = data.read_labels(config.labels)
    names = train_set.class_names()
    top = int(train_set.labels.max())
    if top >= len(names):
        where = config.labels or "its class names"
        raise InputError(f"{train_set.source}: label {top}, but {where} name {len(names)} classes (0-{len(names) - 1})")
    if len(names) < 2:
        raise InputError(f"{train_set.source}: every row has label {top}; a classifier needs at least 2 classes")
    train_set.classes = tuple(names)
    missing = sorted(set(range(len(names))) - set(np.unique(train_set.labels).tolist()))
    if missing:
        step(f"warning: classes {missing[:10]} of 0-{len(names) - 1} have no training rows")
    return train_set


def load_test_set(config: TrainConfig, train_set: data.Dataset | None = None) -> data.Dataset | None:
    """The held-out test set: never used for training, validation or calibration, and for the
    user's own data never Fashion-MNIST's (None: there is none beside the data; train holds out
    a share of it)."""
    shape = None if config.data is None else train_set.shape if train_set is not None else config.shape()
    classes = None if train_set is None else train_set.classes
    if config.test_data is not None:
        return data.load(config.test_data, "test", shape, classes)
    if config.data is None:
        return data.load(None, "test") if data.default_dir() is not None else None
    if Path(config.data).is_dir():
        if data.has_idx(config.data, "test"):
            return data.read_idx_split(config.data, "test")
        return data.read_image_folder(config.data, "test", shape, classes) \
            if data.image_folder_has_test(config.data) else None
    beside = Path(config.data).with_name(Path(config.data).name.replace("train", "test"))
    if beside != Path(config.data) and beside.is_file():
        return data.load(beside, "test", shape)
    return None


def check_test_set(train_set: data.Dataset, test_set: data.Dataset | None) -> None:
    """A test set of another image shape, or with classes the training data never shows, measures
    another task: refused."""
    if test_set is None:
        return
    if test_set.labels is not None:  # the more telling message first: which classes training never saw
        unseen = sorted(set(np.unique(test_set.labels).tolist()) - set(np.unique(train_set.labels).tolist()))
        if unseen:
            raise InputError(f"{test_set.source}: test labels {unseen} do not occur in the training data "
                             f"{train_set.source}; give the test set of the same classes (--test-data)")
    data.check_test_fits(test_set, train_set.shape, train_set.num_classes, "the training data's")


def split_data(config: TrainConfig, train_set: data.Dataset):
    """(training rows, test set, held-out indices or None): the test set beside the data, or a
    seeded, stratified share of the data itself."""
    test_set = load_test_set(config, train_set)
    if test_set is not None or config.data is None:
        return train_set, test_set, None
    indices = data.holdout(train_set, config.test_split, config.seed)
    step(f"no test set beside {config.data}: holding out {len(indices)} of its {len(train_set)} rows "
         f"(--test-split {config.test_split}, seed {config.seed}) as the test set")
    keep = np.ones(len(train_set), dtype=bool)
    keep[indices] = False
    return train_set.subset(np.flatnonzero(keep)), train_set.subset(indices), indices


def train(config: TrainConfig, run: Run) -> TrainReport:
    """Train, keep the best epoch in RUN/model.keras, write history, curves, config. Returns config.json."""
    config.validate()
    check_tool_folder(run.root, RUN_MARKERS, "run", is_marker=is_manifest)
    train_set, test_set, held_out = split_data(config, load_data(config))
    if config.limit:
        train_set = train_set.subset(slice(0, config.limit))
    if len(train_set) < MIN_ROWS:
        raise InputError(f"{train_set.source}: {len(train_set)} labelled row(s), training needs at least {MIN_ROWS} "
                         f"(validation takes {config.validation_split:.0%} of them)")
    check_test_set(train_set, test_set)
    _check_validation_split(config, train_set)
    h, w, c = train_set.shape
    step(f"training on {len(train_set)} {h}x{w}{'' if c == 1 else 'x3'} images of {train_set.num_classes} classes "
         f"from {train_set.source} "
         f"({validation_cut(len(train_set), config.validation_split)} train / validation split "
         f"{config.validation_split})")
    started = time.monotonic()
    interrupted = False
    keeper = BestKeeper()
    try:
        model = fit_model(config, train_set, keeper, verbose=1 if sys.stdout.isatty() else 2)
    except KeyboardInterrupt:
        interrupted = True
        model = keeper.model
        if keeper.best_epoch is None and (run.model.is_file() or model is None):
            print("\ninterrupted before the first epoch ended: the run is left as it was", file=sys.stderr)
            raise
        print("\ninterrupted: keeping the best finished epoch", file=sys.stderr)
    fit_seconds = time.monotonic() - started
    run.root.mkdir(parents=True, exist_ok=True)
    keeper.save(model, run.model)  # the one moment model.keras changes: training has ended

    history = keeper.history
    write_json(run.history, {**history, "best_epoch": keeper.best_epoch})
    if history["loss"]:
        plots.save(plots.history_figure(history, keeper.best_epoch), run.curves)
    result = _summary(config, train_set, test_set, keeper, fit_seconds, interrupted)
    if test_set is not None and not interrupted:
        with quiet(config.verbose):
            loss, accuracy = model.evaluate(data.prepare(test_set.images),
                                            data.one_hot(test_set.labels, train_set.num_classes),
                                            batch_size=500, verbose=0)
        result.test.samples, result.test.loss, result.test.accuracy = len(test_set), float(loss), float(accuracy)
    if held_out is not None:
        result.test.held_out, result.test.indices_sha256 = config.test_split, rundata.save_held_out(run, held_out)
    else:
        run.test_split.unlink(missing_ok=True)  # a split of an earlier training: no longer this run's
    result.write(run.config)
    return result


def validation_cut(rows: int, split: float) -> int:
    """How many of `rows` train (the rest validate), as Keras' validation_split cuts them."""
    return int(rows * (1 - split))


def _check_validation_split(config: TrainConfig, train_set: data.Dataset) -> None:
    """Keras validates on the last share of the rows: rows sorted by class leave classes out of it."""
    cut = validation_cut(len(train_set), config.validation_split)
    missing = sorted(set(np.unique(train_set.labels[:cut]).tolist()) - set(np.unique(train_set.labels[cut:]).tolist()))
    if missing:
        step(f"warning: the validation split (the last {config.validation_split:.0%} of the rows) holds no row of "
             f"classes {missing[:10]}: are the rows sorted by class? Shuffle them, or the best epoch is chosen "
             f"on the other classes only")


def fit_model(config: TrainConfig, train_set: data.Dataset, keeper: "BestKeeper | None" = None, verbose: int = 0,
              callbacks: tuple = ()):
    """The model of `config` fitted on `train_set` with its seed, optimizer, batch and validation split:
    what train does, and what tune does for each trial (`callbacks`: Keras callbacks of the caller's).
    Returns the fitted model."""
    tf = import_tf(config.verbose)
    from tensorflow import keras

    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()  # same seed, same weights
    model = build_model(make_optimizer(config.optimizer, config.learning_rate, config.momentum), config.verbose,
                        parse_arch(config.arch), train_set.shape, train_set.num_classes)
    if keeper is not None:
        keeper.model = model
    images, targets = data.prepare(train_set.images), data.one_hot(train_set.labels, train_set.num_classes)
    callbacks = ([keeper.callback(keras)] if keeper else []) + list(callbacks)
    if config.lr_schedule == "cosine":
        start = float(model.optimizer.learning_rate.numpy())
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch: start * recipe.cosine_factor(epoch, config.epochs)))
    if config.augment == "none":
        model.fit(images, targets, batch_size=config.batch_size, epochs=config.epochs,
                  validation_split=config.validation_split, callbacks=callbacks, verbose=verbose)
    else:  # validation: the same last rows validation_split takes, never augmented
        cut = validation_cut(len(images), config.validation_split)
        model.fit(recipe.batches(keras, images[:cut], targets[:cut], config.batch_size, config.augment, config.seed),
                  validation_data=recipe.batches(keras, images[cut:], targets[cut:], 500, "none", config.seed),
                  epochs=config.epochs, callbacks=callbacks, verbose=verbose)
    if keeper is not None:
        keeper.restore_best()
    return model


def _summary(config, train_set, test_set, keeper, fit_seconds, interrupted) -> TrainReport:
    return TrainReport(
        settings=settings_of(config),
        dataset=DatasetInfo(source=train_set.source, sha256=train_set.sha256, samples=len(train_set)),
        test=None if test_set is None else DatasetInfo(source=test_set.source, sha256=test_set.sha256),
        image_shape=list(train_set.shape), labels=train_set.class_names(),
        best_epoch=keeper.best_epoch, val_accuracy=keeper.best_value,
        epochs_finished=len(keeper.history["loss"]), interrupted=interrupted,
        fit_seconds=round(fit_seconds, 1), versions=versions(),
        platform={"machine": platform.machine(), "system": platform.platform(), "cpu": asdict(cpu.describe())})


class BestKeeper:
    """Keeps the weights of the epoch with the best val_accuracy (in memory: the file on disk changes
    only when training ends), and records history."""

    def __init__(self):
        self.model = None
        self.best_epoch: int | None = None
        self.best_value: float | None = None
        self.best_weights = None
        self.history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}

    def restore_best(self) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    def save(self, model, path: Path) -> None:
        """The best epoch's weights (or, before any epoch ended, the model as it is), written atomically."""
        self.restore_best()
        with atomic_path(path, suffix=".keras") as tmp:
            model.save(tmp)

    def on_epoch_end(self, model, epoch: int, logs: dict) -> None:
        for key in self.history:
            self.history[key].append(float(logs[key]) if key in logs else None)
        value = float(logs.get("val_accuracy", np.nan))
        if self.best_value is None or value > self.best_value:
            self.best_epoch, self.best_value = epoch + 1, value
            self.best_weights = model.get_weights()

    def callback(self, keras):
        keeper = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                keeper.on_epoch_end(self.model, epoch, logs or {})

        return _Callback()


def render(report: TrainReport) -> str:
    line = (f"best epoch {report.best_epoch}: val_accuracy {report.val_accuracy:.4f}"
            if report.best_epoch else "no epoch finished")
    if report.test and report.test.accuracy is not None:
        line += f", test accuracy {report.test.accuracy:.4f} on {report.test.samples} images"
    return f"{line} ({report.fit_seconds} s)"


STAGE = Stage(
    name="train", help="fit the seed CNN (or another --arch) on Fashion-MNIST or your own images (host)",
    description="Fit the seed CNN. Writes RUN/model.keras (best epoch by val_accuracy; replaced only when "
                "training ends, so Ctrl-C keeps the best finished epoch), history.json, training_curves.png "
                "and config.json, then evaluates on the held-out test set.",
    settings=TrainConfig, run=train, report=TrainReport, render=render, output=lambda run: run.model,
    makes_run=True)
