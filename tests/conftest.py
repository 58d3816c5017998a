"""Fixtures for both tiers: the real Fashion-MNIST, and the committed tiny run and bundle."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from edgefashion import data
from helpers import FIXTURES

# The device's config folder (trusted keys, the newest bundle accepted per key) is the tests' own, never
# the user's ~/.config/edgefashion; every command the tests start inherits it.
_CONFIG = tempfile.mkdtemp(prefix="edgefashion-test-config-")
os.environ["EDGEFASHION_CONFIG"] = _CONFIG
atexit.register(shutil.rmtree, _CONFIG, True)


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    directory = data.default_dir()
    if directory is None:
        pytest.fail("real Fashion-MNIST not found: run `make data` (tools/get_data.py)")
    return directory


@pytest.fixture(scope="session")
def test_set(fashion_dir) -> data.Dataset:
    return data.read_idx_split(fashion_dir, "test")


@pytest.fixture(scope="session")
def few_images() -> data.Dataset:
    """The first 300 real test images, committed: what device tests classify."""
    with np.load(FIXTURES / "test_images.npz") as saved:
        return data.Dataset(saved["images"], saved["labels"], str(FIXTURES / "test_images.npz"), "fixture")


@pytest.fixture
def fixture_run(tmp_path) -> Path:
    """A copy of the committed tiny run (export/ of a 6.8 k-parameter CNN, all four formats)."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run", run)
    return run


@pytest.fixture(scope="session")
def fixture_models() -> Path:
    return FIXTURES / "run" / "export"


@pytest.fixture(scope="session")
def fixture_bundle() -> Path:
    return FIXTURES / "tiny-bundle.tar.gz"
