"""What a path names: a model file, a run directory (or its export/), or a bundle."""

from __future__ import annotations

import sys
from pathlib import Path

from ..rundir import ExportDir, Run
from ..schemas import ExportReport
from ..console import printable
from .unpack import open_bundle
from .trust import Trust

BUNDLE_SUFFIXES = (".tar.gz", ".tgz")
MODEL_SUFFIXES = (".tflite", ".onnx")


def models_at(path: Path, scratch: Path, trust: Trust | None = None) -> tuple[dict[str, Path], list[str]] | None:
    """({format: path}, class names) for a run directory (or its export/) or a bundle, which is
    checked against `trust` and extracted into `scratch`; None when `path` is neither. A bundle's
    origin is reported on stderr."""
    path = Path(path)
    if path.is_dir():
        run = Run.at(path)
        return run.exported_models(), run.read_export().labels
    if is_bundle(path):
        folder, manifest, provenance = open_bundle(path, scratch, trust)
        print_origin(path, provenance)
        return {fmt: folder / name for fmt, name in manifest.models.items()}, manifest.labels
    return None


def labels_beside(model: Path) -> list[str] | None:
    """The class names export.json records for a model file in a run's export/ folder."""
    manifest = ExportDir(Path(model).parent).manifest
    return ExportReport.read(manifest).labels if manifest.is_file() else None


def print_origin(path: Path, provenance) -> None:
    """The bundle's sha256 and signer on stderr, and a warning where its origin is not checked."""
    print(printable(f"bundle {Path(path).name}: {provenance.line()}"), file=sys.stderr)
    if provenance.warning:
        print(printable(f"warning: {provenance.warning}"), file=sys.stderr)


def is_bundle(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(BUNDLE_SUFFIXES)


def is_model_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in MODEL_SUFFIXES
