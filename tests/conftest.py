"""Shared fixtures. Host fixtures train and export one tiny real model once per session."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefashion import data

ROOT = Path(__file__).resolve().parents[1]
HAS_TF = importlib.util.find_spec("tensorflow") is not None
LOOSE_GATES = ("--min-agreement", 0.9, "--max-drop", 5)
needs_tf = pytest.mark.skipif(not HAS_TF, reason="needs the host extra (TensorFlow)")


def cli(*args, check: int | None = None, env=None, cwd=None) -> subprocess.CompletedProcess:
    """Run `python -m edgefashion ARGS`; optionally assert the exit code."""
    done = subprocess.run([sys.executable, "-m", "edgefashion", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd)
    if check is not None:
        assert done.returncode == check, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


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
def tiny_run(tmp_path_factory, fashion_dir) -> Path:
    """The seed CNN trained 1 epoch on 3,000 real images, then exported (calibration 100)."""
    if not HAS_TF:
        pytest.skip("needs the host extra (TensorFlow)")
    run = tmp_path_factory.mktemp("run")
    cli("train", "--out", run, "--limit", 3000, "--epochs", 1, check=0)
    # Loose gates: one of 100 calibration images is a whole percent, and a barely trained model's
    # near-ties differ honestly between CPUs. This fixture tests the plumbing; the gates are tested
    # on known predictions (test_verify) and on the real model by `make demo`.
    cli("export", run, "--calibration", 100, *LOOSE_GATES, check=0)
    return run


@pytest.fixture(scope="session")
def bundle_file(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "b.tar.gz"
    cli("bundle", tiny_run, "--out", out, "--golden", 50, check=0)
    return out


def write_csv(path: Path, rows: list[list], header: bool = True, newline: str = "\n") -> Path:
    lines = []
    if header:
        lines.append(",".join(["label"] + [f"pixel{i}" for i in range(1, 785)]))
    lines += [",".join(str(v) for v in row) for row in rows]
    path.write_bytes((newline.join(lines) + newline).encode())
    return path


def sample_rows(n: int = 3, seed: int = 0) -> list[list]:
    rng = np.random.default_rng(seed)
    return [[int(rng.integers(0, 10))] + rng.integers(0, 256, 784).tolist() for _ in range(n)]
