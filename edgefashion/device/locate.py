"""What a path names: a model file, a run directory (or its export/), or a bundle."""

from __future__ import annotations

from pathlib import Path

from ..rundir import Run
from .bundle import open_bundle

BUNDLE_SUFFIXES = (".tar.gz", ".tgz")
MODEL_SUFFIXES = (".tflite", ".onnx")


def models_at(path: Path, scratch: Path) -> dict[str, Path] | None:
    """{format: path} for a run directory (or its export/) or a bundle, which is checked and
    extracted into `scratch`; None when `path` is neither."""
    path = Path(path)
    if path.is_dir():
        return Run.at(path).exported_models()
    if path.is_file() and path.name.endswith(BUNDLE_SUFFIXES):
        folder, manifest = open_bundle(path, scratch)
        return {fmt: folder / name for fmt, name in manifest.models.items()}
    return None


def is_model_file(path: Path) -> bool:
    return path.is_file() and path.suffix in MODEL_SUFFIXES
