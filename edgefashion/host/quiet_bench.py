"""Latency measured while no other tune worker on this machine computes: two workers on two cores,
and one would measure its model while the other trains on both cores. One lock file per machine: a
worker about to measure takes it exclusively; a training worker passes through it before each batch
(shared, released at once), so it pauses while another measures and never holds it long enough to
keep a measurement waiting; a conversion or prediction of a few seconds holds it shared throughout."""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
import weakref
from contextlib import contextmanager
from pathlib import Path

LOCK = Path(tempfile.gettempdir()) / "edgefashion-tune-bench.lock"
SETTLE_S = 0.25  # for the batches other workers had started to finish


def _open(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)


@contextmanager
def _held(path: Path, mode: int):
    handle = _open(path)
    try:
        fcntl.flock(handle, mode)
        yield
    finally:
        os.close(handle)  # releases the lock


@contextmanager
def measuring(path: Path = LOCK):
    """Hold the machine's training workers at their next batch while the block runs."""
    with _held(path, fcntl.LOCK_EX):
        time.sleep(SETTLE_S)
        yield


def working(path: Path = LOCK):
    """Keep other workers' measurements waiting while the block computes (a conversion, a prediction)."""
    return _held(path, fcntl.LOCK_SH)


def training_gate(keras, path: Path = LOCK):
    """A Keras callback that waits at each training and validation batch while a worker measures. Its
    file is closed when the training ends, or when the callback is collected (a training that raised)."""
    handle = _open(path)

    class Gate(keras.callbacks.Callback):
        def on_train_batch_begin(self, *_, **__):  # a method: the gate, so its file, lives while it waits
            fcntl.flock(handle, fcntl.LOCK_SH)
            fcntl.flock(handle, fcntl.LOCK_UN)

        on_test_batch_begin = on_train_batch_begin

        def on_train_end(self, logs=None):
            self.close()
    gate = Gate()
    gate.close = weakref.finalize(gate, os.close, handle)  # runs once, whichever comes first
    return gate
