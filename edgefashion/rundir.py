"""The run directory's paths: the one place that spells RUN's file names.

    RUN/ model.keras  config.json  history.json  training_curves.png  pipeline.json  test_split.npz
         export/  model_int8.tflite  model_f32.tflite  model_f32.onnx  model_int8.onnx
                  model_int8_data.cc/.h  calibration.npz  layer_errors.json  export.json
         verify.json  verify.md  confusion_FORMAT.png  bench.json/.csv/.png
         firmware/  firmware.json  model_int8_data.cc/.h   (the int8 model on TFLM)
         edgefashion-bundle.tar.gz  isa-check.json

Paths only: the reports' schemas are in schemas.py, the typed-JSON loader in manifest.py.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from .console import printable
from .errors import InputError
from .files import remove_leftovers, sha256_file
from .formats import FIRMWARE_FORMAT
from .manifest import ManifestError
from .schemas import ExportReport

FILES = {"tflite-int8": "model_int8.tflite", "tflite-f32": "model_f32.tflite",
         "onnx-f32": "model_f32.onnx", "onnx-int8": "model_int8.onnx"}
BENCH_FILE = "bench.json"  # RUN/bench.json, or in the working folder when benchmarking loose files
RUN_MARKERS = ("config.json", "pipeline.json")  # what makes a folder an edgefashion run (train writes them)
TUNE_MARKERS = ("study.journal", "pareto.json", "seed-cnn", "trials")


def indices_sha256(indices) -> str:
    """What export.json records of the calibration indices (int64, in order)."""
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def read_indices(path: Path, sha256: str, recorded_in: Path) -> np.ndarray:
    """Row indices saved in an .npz (calibration, held-out test rows), checked against the sha256 the
    manifest `recorded_in` holds for them."""
    try:
        with np.load(path) as saved:
            indices = saved["indices"]
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: not readable indices ({exc})") from None
    if indices_sha256(indices) != sha256:
        raise InputError(f"{path}: indices do not match indices_sha256 in {recorded_in}")
    return indices


class TuneDir:
    """DIR of `edgefashion tune`: the study journal, each trial's models, the front and the choice."""

    def __init__(self, root):
        self.root = Path(root)

    journal = property(lambda self: self.root / "study.journal")
    report = property(lambda self: self.root / "pareto.json")
    plot = property(lambda self: self.root / "pareto.png")
    seed_run = property(lambda self: Run(self.root / "seed-cnn"))  # the seed CNN, same data, epochs, bench
    best_run = property(lambda self: Run(self.root / "best"))      # the chosen model, a normal run directory

    def trial(self, number: int) -> Path:
        return self.root / "trials" / f"{number:04d}"

    def final(self, number: int | None, epochs: int) -> Path:
        """--final-epochs: trial `number`'s architecture (None: the seed CNN) trained again for `epochs`."""
        name = "seed-cnn" if number is None else f"trial-{number:04d}"
        return self.root / "final" / f"{name}-{epochs}-epochs"

    def trial_model(self, number: int, fmt: str = "keras") -> Path:
        return self.model_paths(self.trial(number))[0 if fmt == "keras" else 1]

    @staticmethod
    def model_paths(folder: Path) -> tuple[Path, Path]:
        """(model.keras, model_int8.tflite) of one trial (or of the seed CNN's folder)."""
        return Path(folder) / "model.keras", Path(folder) / FILES["tflite-int8"]


class FirmwareDir:
    """RUN/firmware/: firmware.json and the header and C array a firmware includes."""

    def __init__(self, folder):
        self.folder = Path(folder)

    report = property(lambda self: self.folder / "firmware.json")
    c_header = property(lambda self: self.folder / "model_int8_data.h")
    c_source = property(lambda self: self.folder / "model_int8_data.cc")
    NAMES = frozenset({"firmware.json", "model_int8_data.h", "model_int8_data.cc"})  # all it ever writes


class ExportDir:
    """Named paths in an export folder: RUN/export, or the private folder export builds it in."""

    def __init__(self, folder):
        self.folder = Path(folder)

    manifest = property(lambda self: self.folder / "export.json")
    calibration = property(lambda self: self.folder / "calibration.npz")
    layer_errors = property(lambda self: self.folder / "layer_errors.json")
    layer_errors_onnx = property(lambda self: self.folder / "layer_errors_onnx.json")
    c_header = property(lambda self: self.folder / "model_int8_data.h")
    c_source = property(lambda self: self.folder / "model_int8_data.cc")
    ood = property(lambda self: self.folder / "ood.npz")  # what the training images look like (device/ood.py)
    # the full-int8 model for TFLM when model_int8.tflite keeps layers in float
    firmware_model = property(lambda self: self.folder / "model_int8_firmware.tflite")
    NAMES = frozenset({"export.json", "calibration.npz", "layer_errors.json", "layer_errors_onnx.json",
                       "model_int8_data.h", "model_int8_data.cc", "model_int8_firmware.tflite", "ood.npz",
                       *FILES.values()})  # all export ever writes

    def model(self, fmt: str) -> Path:
        return self.folder / FILES[fmt]


class Run:
    """Named paths of one run directory."""

    BUNDLE_NAME = "edgefashion-bundle.tar.gz"

    def __init__(self, root):
        self.root = Path(root)

    @classmethod
    def at(cls, path) -> "Run":
        """The run a path names: the run directory itself or its export/ folder."""
        path = Path(path)
        return cls(path.parent if (path / "export.json").is_file() else path)

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    model = property(lambda self: self.root / "model.keras")
    config = property(lambda self: self.root / "config.json")
    history = property(lambda self: self.root / "history.json")
    curves = property(lambda self: self.root / "training_curves.png")
    pipeline = property(lambda self: self.root / "pipeline.json")
    test_split = property(lambda self: self.root / "test_split.npz")  # held-out test rows of the training data
    export = property(lambda self: ExportDir(self.root / "export"))
    export_dir = property(lambda self: self.export.folder)
    export_manifest = property(lambda self: self.export.manifest)
    calibration = property(lambda self: self.export.calibration)
    layer_errors = property(lambda self: self.export.layer_errors)
    verify = property(lambda self: self.root / "verify.json")
    verify_md = property(lambda self: self.root / "verify.md")
    bench = property(lambda self: self.root / BENCH_FILE)
    bundle = property(lambda self: self.root / self.BUNDLE_NAME)
    isa_check = property(lambda self: self.root / "isa-check.json")
    firmware = property(lambda self: FirmwareDir(self.root / "firmware"))

    def confusion(self, fmt: str) -> Path:
        return self.root / f"confusion_{fmt}.png"

    def read_export(self) -> ExportReport:
        return ExportReport.read(self.export_manifest)

    def exported_models(self) -> dict[str, Path]:
        """{format: path} of every model in export.json, each checked against its sha256 there:
        a set that was changed or mixed after export is refused."""
        export = self.read_export()
        self.check_export_source(export)
        found = {fmt: self._checked(entry) for fmt, entry in export.models().items()}
        if not found:
            raise InputError(f"{self.export_manifest}: lists no models")
        return found

    def firmware_model(self) -> Path | None:
        """The full-int8 model TFLM runs: model_int8.tflite, or the full-int8 one export kept beside
        it when model_int8.tflite keeps layers in float. Checked against export.json."""
        entry = next((a for a in self.read_export().artifacts if a.format == FIRMWARE_FORMAT), None)
        return self._checked(entry) if entry is not None else self.exported_models().get("tflite-int8")

    def _checked(self, entry) -> Path:
        path = self.export_dir / entry.file
        if Path(entry.file).name != entry.file:
            raise ManifestError(f"{self.export_manifest}: artifact file {entry.file!r} is not a plain file name")
        if not path.is_file():
            raise InputError(f"{path}: listed in export.json but missing")
        if path.stat().st_size != entry.bytes or sha256_file(path) != entry.sha256:
            raise InputError(f"{path}: does not match its sha256 in export.json (changed after export?); "
                             f"run `edgefashion export {self.root}` again")
        return path

    def check_export_source(self, export: ExportReport) -> None:
        """Refuse an export whose model.keras has changed since (trained again): its models and the
        run's would be of two trainings. A copy of a run without model.keras (a device) has nothing to check."""
        if export.model_sha256 is None or not self.model.is_file():
            return
        if sha256_file(self.model) != export.model_sha256:
            raise InputError(f"{self.model}: changed since {self.export_manifest} was made from it (trained "
                             f"again?); run `edgefashion export {self.root}` again")

    def ood_model(self) -> Path | None:
        """export/ood.npz where export wrote it and it is as export.json records it, else None."""
        recorded = self.read_export().ood_sha256
        path = self.export.ood
        return path if recorded and path.is_file() and sha256_file(path) == recorded else None

    def read_calibration(self):
        """The calibration indices export saved, checked against indices_sha256 in export.json."""
        recorded = self.read_export().calibration
        if not self.calibration.is_file():
            raise InputError(f"{self.calibration}: calibration indices not found (exported by an older edgefashion?); "
                             f"run `edgefashion export {self.root}` again")
        return read_indices(self.calibration, recorded.indices_sha256, self.export_manifest)

    def remove_leftovers(self) -> list[Path]:
        """Half-written files and staging folders a killed train/export/verify/bundle left behind."""
        return remove_leftovers(self.root) + remove_leftovers(self.export_dir)


def clean_leftovers(run: Run) -> None:
    """Remove a killed run's leftovers, and say so on stderr."""
    removed = run.remove_leftovers()
    if removed:
        names = ", ".join(printable(p.name) for p in removed[:5]) + (" ..." if len(removed) > 5 else "")
        print(f"note: removed {len(removed)} leftover(s) of an interrupted run: {names}", file=sys.stderr)
