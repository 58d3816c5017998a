"""The data a run was trained and tested on, as its config.json records it: the user's own data
(any image shape, its class names), its test set or the seeded held-out share of its rows. TF-free."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import IMAGE_SHAPE, LABELS, data
from .errors import InputError
from .files import atomic_path
from .rundir import Run, indices_sha256, read_indices
from .schemas import TrainReport


def recorded(run: Run) -> TrainReport | None:
    return TrainReport.read(run.config) if run.config.is_file() else None


def image_shape(run: Run) -> tuple[int, int, int]:
    """(H, W, C) of the run's images (Fashion-MNIST's for a run that recorded none)."""
    config = recorded(run)
    return tuple(config.image_shape) if config and config.image_shape else IMAGE_SHAPE


def class_names(run: Run) -> list[str]:
    config = recorded(run)
    return list(config.labels) if config and config.labels else list(LABELS)


def load(run: Run, source, split: str) -> data.Dataset:
    """`source` (None: the local Fashion-MNIST) read as the run's images are shaped."""
    config = recorded(run)
    shape = tuple(config.image_shape) if config and config.image_shape else None
    classes = tuple(config.labels) if config and config.labels else None
    return data.load(source, split, shape, classes) if source is not None else data.load(None, split)


def save_held_out(run: Run, indices: np.ndarray) -> str:
    """Write RUN/test_split.npz (the held-out rows); returns the indices' sha256 for config.json."""
    with atomic_path(run.test_split, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, indices=np.asarray(indices, dtype=np.int64))
    return indices_sha256(indices)


def held_out(run: Run) -> np.ndarray | None:
    """The held-out test rows of the run's training data, checked against config.json; None when the
    run has a test set of its own."""
    config = recorded(run)
    if config is None or config.test is None or config.test.indices_sha256 is None:
        return None
    return read_indices(run.test_split, config.test.indices_sha256, run.config)


def training_rows(run: Run, source=None) -> data.Dataset:
    """The run's training data (or `source`) without its held-out test rows: what calibrates int8."""
    config = recorded(run)
    if source is None and config is not None:
        source = config.trained_on
    train_set = load(run, source, "train")
    indices = held_out(run) if config is not None and source == config.trained_on else None
    if indices is not None:
        keep = np.ones(len(train_set), dtype=bool)
        keep[indices] = False
        train_set = train_set.subset(np.flatnonzero(keep))
    return train_set


def test_set(run: Run, path: Path | None = None) -> data.Dataset:
    """The test set given, else the run's: its test file, its held-out rows, or Fashion-MNIST's only
    for a run trained on Fashion-MNIST. A run on the user's data without a test set is refused."""
    config = recorded(run)
    if path is not None:
        dataset = load(run, path, "test")
    elif (indices := held_out(run)) is not None:
        dataset = load(run, config.trained_on, "train").subset(indices)
        dataset.source = f"{dataset.source} (held-out {config.test.held_out:.0%}, {len(indices)} rows, seed " \
                         f"{config.settings.get('seed', 0)})"
    elif config is not None and config.test is not None and Path(config.test.source).exists():
        dataset = load(run, config.test.source, "test")
    elif config is not None and config.trained_on is not None:
        raise InputError(f"{run.config}: the run was trained on {config.trained_on} without a test set; give one "
                         f"with --data (run: --test-data)")
    else:
        dataset = data.load(None, "test")
    check_matches(run, dataset)
    return dataset


def check_matches(run: Run, dataset: data.Dataset) -> None:
    """A test set of another image shape or more classes than the run's measures another task: refused."""
    data.check_test_fits(dataset, image_shape(run), len(class_names(run)), "the run's")
