"""Names of the exported models and how to find them in a run directory (device-safe)."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .files import read_json, sha256_file

FORMATS = ("tflite-int8", "tflite-f32", "onnx-f32", "onnx-int8")
FILES = {"tflite-int8": "model_int8.tflite", "tflite-f32": "model_f32.tflite",
         "onnx-f32": "model_f32.onnx", "onnx-int8": "model_int8.onnx"}
FLOAT_OF = {"tflite-int8": "tflite-f32", "onnx-int8": "onnx-f32"}
BUNDLE_SUFFIXES = (".tar.gz", ".tgz")


def export_dir(run) -> Path:
    return Path(run) / "export"


def exported_models(run) -> dict[str, Path]:
    """{format: path} for every model listed in RUN/export/export.json that exists."""
    manifest = read_json(export_dir(run) / "export.json", "export manifest (run `edgefashion export RUN`)")
    found = {}
    for entry in manifest.get("artifacts", []):
        if entry.get("format") in FORMATS:
            path = export_dir(run) / entry["file"]
            if not path.is_file():
                raise InputError(f"{path}: listed in export.json but missing")
            if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
                raise InputError(f"{path}: does not match its sha256 in export.json (changed after export?); "
                                 f"run `edgefashion export {run}` again")
            found[entry["format"]] = path
    if not found:
        raise InputError(f"{export_dir(run) / 'export.json'}: lists no models")
    return found


def models_at(path: Path, scratch: Path) -> dict[str, Path] | None:
    """{format: path} for a run directory (or its export/) or a bundle, which is checked and
    extracted into `scratch`; None when `path` is neither."""
    if path.is_dir():
        return exported_models(path.parent if (path / "export.json").is_file() else path)
    if path.is_file() and path.name.endswith(BUNDLE_SUFFIXES):
        from .bundle import open_bundle

        folder, manifest = open_bundle(path, scratch)
        return {fmt: folder / name for fmt, name in manifest["models"].items()}
    return None
