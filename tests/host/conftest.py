"""Host tier: needs TensorFlow (the host extra). One tiny real model, trained and exported once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from helpers import LOOSE_GATES, cli

HAS_TF = importlib.util.find_spec("tensorflow") is not None


def pytest_collection_modifyitems(items):
    for item in items:
        if "/host/" in str(item.fspath):
            item.add_marker(pytest.mark.host)
            if not HAS_TF:
                item.add_marker(pytest.mark.skip(reason="needs the host extra (TensorFlow)"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, fashion_dir) -> Path:
    """The seed CNN trained 1 epoch on 3,000 real images, then exported (calibration 100)."""
    run = tmp_path_factory.mktemp("run")
    cli("train", "--out", run, "--limit", 3000, "--epochs", 1, check=0)
    cli("export", run, "--calibration", 100, *LOOSE_GATES, check=0)
    return run


@pytest.fixture(scope="session")
def bundle_file(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "b.tar.gz"
    cli("bundle", tiny_run, "--out", out, "--golden", 50, check=0)
    return out
