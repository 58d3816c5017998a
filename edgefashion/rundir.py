"""The run directory and its manifests, typed: the one place that spells RUN's file names and keys.

    RUN/ model.keras  config.json  history.json  training_curves.png  pipeline.json
         export/  model_int8.tflite  model_f32.tflite  model_f32.onnx  model_int8.onnx
                  model_int8_data.cc/.h  calibration.npz  layer_errors.json  export.json
         verify.json  verify.md  confusion_FORMAT.png  bench.json/.csv/.png
         firmware/  firmware.json  model_int8_data.cc/.h   (the int8 model on TFLM)
         edgefashion-bundle.tar.gz  isa-check.json

Every manifest is a dataclass with a schema_version. `read` checks every field against its type
and turns a missing key or a wrong type into one error naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .cpu import CpuInfo
from .errors import InputError
from .console import printable
from .files import read_json, remove_leftovers, sha256_file, write_json

SCHEMA_VERSION = 1
FORMATS = ("tflite-int8", "tflite-f32", "onnx-f32", "onnx-int8")
FILES = {"tflite-int8": "model_int8.tflite", "tflite-f32": "model_f32.tflite",
         "onnx-f32": "model_f32.onnx", "onnx-int8": "model_int8.onnx"}
FLOAT_OF = {"tflite-int8": "tflite-f32", "onnx-int8": "onnx-f32"}
BENCH_FILE = "bench.json"  # RUN/bench.json, or in the working folder when benchmarking loose files


def indices_sha256(indices) -> str:
    """What export.json records of the calibration indices (int64, in order)."""
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


class ManifestError(InputError):
    """A manifest with a missing key, a wrong type or an unknown schema version."""


# --- typed JSON --------------------------------------------------------------------------

def _load(value, tp, where: str):
    """`value` checked against the annotation `tp` (dataclasses built from dicts), or ManifestError."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _load(value, option, where)
            except ManifestError:
                continue
        raise ManifestError(f"{where} is {_kind(value)}, expected {_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ManifestError(f"{where} is {_kind(value)}, expected an object")
        return _build(tp, value, where)
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise ManifestError(f"{where} is {_kind(value)}, expected a list")
        return [_load(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ManifestError(f"{where} is {_kind(value)}, expected an object")
        return {k: _load(v, args[1], f"{where}.{k}") for k, v in value.items()} if args else value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ManifestError(f"{where} is {_kind(value)}, expected {_name(tp)}")


def _build(cls, obj: dict, where: str):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in obj:
            kwargs[f.name] = _load(obj[f.name], hints[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ManifestError(f"{where}.{f.name} is missing")
    return cls(**kwargs)


def _kind(value) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r:.40}"


def _name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


class Manifest:
    """Base of the JSON manifests: to_json / from_json / read / write, with schema_version."""

    WHAT: ClassVar[str] = "manifest"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj, source: str):
        version = obj.get("schema_version", SCHEMA_VERSION) if isinstance(obj, dict) else None
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise ManifestError(f"{source}: schema_version {version} is newer than this edgefashion reads "
                                f"({SCHEMA_VERSION}); upgrade edgefashion")
        try:
            return _load(obj, cls, "")
        except ManifestError as exc:
            problem = str(exc).lstrip(".")
            where = "the whole file" if problem.startswith(" is ") else "field "
            raise ManifestError(f"{source}: {cls.WHAT}: {where}{problem}") from None

    @classmethod
    def read(cls, path):
        return cls.from_json(read_json(path, cls.WHAT), str(path))

    def write(self, path) -> Path:
        return write_json(path, self.to_json())


# --- the manifests -----------------------------------------------------------------------

@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[int]
    scale: float | None = None
    zero_point: int | None = None


@dataclass
class DatasetInfo:
    source: str
    sha256: str
    samples: int | None = None
    loss: float | None = None
    accuracy: float | None = None


@dataclass
class TrainReport(Manifest):
    """RUN/config.json: every training setting, the data, the result, the versions."""

    WHAT: ClassVar[str] = "run config (edgefashion train)"
    settings: dict[str, Any]
    dataset: DatasetInfo
    test: DatasetInfo | None
    best_epoch: int | None
    val_accuracy: float | None
    epochs_finished: int
    interrupted: bool
    fit_seconds: float
    versions: dict[str, Any]
    platform: dict[str, Any]
    schema_version: int = SCHEMA_VERSION

    @property
    def trained_on(self) -> Path | None:
        data = self.settings.get("data")
        return Path(data) if isinstance(data, str) else None


@dataclass
class Artifact:
    file: str
    format: str
    bytes: int
    sha256: str
    input: TensorInfo | None = None
    output: TensorInfo | None = None
    check: dict[str, float] | None = None
    seconds: float | None = None


@dataclass
class Calibration:
    count: int
    seed: int
    source: str
    dataset_sha256: str
    indices_sha256: str


@dataclass
class ExportReport(Manifest):
    """RUN/export/export.json: every artifact with its sha256, the calibration, gates and settings."""

    WHAT: ClassVar[str] = "export manifest (edgefashion export RUN)"
    source: str
    artifacts: list[Artifact]
    calibration: Calibration
    gates: dict[str, float]
    labels: list[str]
    versions: dict[str, Any]
    onnx_int8: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def models(self) -> dict[str, Artifact]:
        return {a.format: a for a in self.artifacts if a.format in FORMATS}


@dataclass
class LayerErrors(Manifest):
    """RUN/export/layer_errors.json: per quantized tensor, its error in units of its scale."""

    WHAT: ClassVar[str] = "per-layer int8 errors (edgefashion export)"
    model: str
    images: int
    rows: list[dict[str, Any]]
    schema_version: int = SCHEMA_VERSION


@dataclass
class Reference:
    format: str
    accuracy: float
    samples: int
    source: str
    sha256: str


@dataclass
class ModelResult:
    format: str
    file: str
    backend: str
    seconds: float
    accuracy: float
    accuracy_drop_pp: float
    top1_agreement: float
    per_class_accuracy: dict[str, float | None]
    per_class_drop_pp: dict[str, float | None]
    confusion_matrix: list[list[int]]
    mean_abs_diff: float
    max_abs_diff: float
    cosine_similarity_mean: float
    cosine_similarity_min: float
    failures: list[str]
    passed: bool
    warnings: list[str] = field(default_factory=list)  # far from float on some images, though not failing


@dataclass
class VerifyReport(Manifest):
    """RUN/verify.json: every exported model against the float reference on the test set."""

    WHAT: ClassVar[str] = "verify report (edgefashion verify RUN)"
    reference: Reference
    gates: dict[str, float]
    cpu: CpuInfo
    models: list[ModelResult]
    passed: bool
    seconds: float
    calibration_images: int | None = None
    layer_errors: dict[str, LayerErrors] | None = None  # per int8 format, from export
    schema_version: int = SCHEMA_VERSION

    def accuracies(self) -> dict[str, float]:
        """{format: accuracy} for the reference and every model."""
        return {self.reference.format: self.reference.accuracy, **{m.format: m.accuracy for m in self.models}}

    def model(self, fmt: str) -> ModelResult | None:
        return next((m for m in self.models if m.format == fmt), None)


@dataclass
class BenchResult:
    file: str
    path: str
    format: str
    runtime: str
    threads: int
    batch: int
    size_bytes: int
    init_ms: float
    first_ms: float
    runs: int
    latency_us: dict[str, float]
    latency_per_image_us: dict[str, float]
    throughput_ips: float
    peak_rss_mb: float
    spread_warning: bool


@dataclass
class Environment:
    """Where bench numbers came from. Anything unreadable is None."""

    machine: str
    cpu_model: str | None
    cpu: CpuInfo
    cores: int | None
    os: str
    python: str
    versions: dict[str, str | None]
    cpu_governor: str | None
    cpu_freq_mhz: int | None
    board_model: str | None
    soc_temp_c: float | None
    throttled: str | None
    load_average: list[float] | None
    emulated: str | None
    timestamp: str


@dataclass
class BenchReport(Manifest):
    """bench.json: where it ran and, per model x threads x batch, the latency figures."""

    WHAT: ClassVar[str] = "bench report (edgefashion bench)"
    environment: Environment
    warnings: list[str]
    settings: dict[str, Any]
    results: list[BenchResult]
    comparison: list[dict[str, Any]]
    profiles: dict[str, Any] | None = None  # bench --profile: per model file, its per-operator times
    schema_version: int = SCHEMA_VERSION


@dataclass
class StageState:
    status: str
    seconds: float | None = None
    error: str | None = None


@dataclass
class RunSummary:
    """The table `edgefashion run` ends with, and where its numbers came from."""

    rows: list[dict[str, Any]]
    samples: int
    cpu: CpuInfo
    bundle: str
    bundle_bytes: int | None
    firmware: str | None = None  # one line on the TFLM check, where it ran


@dataclass
class PipelineState(Manifest):
    """RUN/pipeline.json: which stages of `edgefashion run` finished, with which settings."""

    WHAT: ClassVar[str] = "pipeline state (edgefashion run)"
    settings: dict[str, Any]
    stages: dict[str, StageState] = field(default_factory=dict)
    summary: RunSummary | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass
class FileEntry:
    sha256: str
    bytes: int


@dataclass
class ModelSpec:
    file: str
    input: TensorInfo
    output: TensorInfo


@dataclass
class CrossCheck:
    agreement: float
    int8_accuracy: float
    f32_accuracy: float


@dataclass
class Golden:
    file: str
    count: int
    seed: int
    source: str
    host_cross_check: dict[str, CrossCheck]


@dataclass
class HostAccuracy:
    samples: int
    accuracy: dict[str, float]
    min_agreement: float | None = None


@dataclass
class BundleManifest(Manifest):
    """A bundle's manifest.json: every file with its sha256, the models, the golden vectors."""

    WHAT: ClassVar[str] = "bundle manifest"
    created: str
    created_on: dict[str, Any]
    files: dict[str, FileEntry]
    models: dict[str, str]
    model_specs: dict[str, ModelSpec]
    labels: list[str]
    input: dict[str, Any]
    golden: Golden
    versions: dict[str, Any]
    host_accuracy: HostAccuracy | None = None
    schema_version: int = SCHEMA_VERSION


# --- the directory -----------------------------------------------------------------------

@dataclass
class TargetVerdict:
    target: str
    description: str
    ram_bytes: int
    flash_bytes: int
    source: str
    ram_needed: int
    flash_needed: int
    ram_headroom: int
    flash_headroom: int
    verdict: str
    why: str


@dataclass
class FirmwareReport(Manifest):
    """RUN/firmware/firmware.json: the int8 model run on TensorFlow Lite Micro, its arena, its ops,
    and which microcontrollers it fits."""

    WHAT: ClassVar[str] = "firmware report (edgefashion firmware RUN)"
    tflm_version: str
    model: str
    model_sha256: str
    model_bytes: int
    images: int
    test_source: str
    accuracy: float
    keras_accuracy: float | None
    accuracy_drop_pp: float | None
    agreement_vs_litert_reference: float
    differing_values_vs_litert_reference: int
    values: int
    max_diff_steps: int
    arena_bytes: int
    arena_head_bytes: int
    arena_tail_bytes: int
    arena_recommended_bytes: int
    arena_note: str
    ops: dict[str, int]
    input: TensorInfo
    output: TensorInfo
    targets: list[TargetVerdict]
    uncounted: str
    ms_per_image: float
    seconds: float
    schema_version: int = SCHEMA_VERSION


@dataclass
class TrialResult:
    number: int
    state: str                      # COMPLETE, FAIL, RUNNING, ...
    arch: dict[str, Any] | None
    accuracy: float | None = None   # int8 accuracy on the validation rows (never the test set)
    latency_us: float | None = None  # int8 p50 at batch 1, 1 thread, on this machine (the bench worker)
    size_bytes: int | None = None
    arena_bytes: int | None = None   # TFLM, where tflite-micro is installed
    feasible: bool | None = None     # inside every budget
    on_front: bool = False
    seconds: float | None = None


@dataclass
class TuneReport(Manifest):
    """DIR/pareto.json of `edgefashion tune`: every trial, the budgets, the front and the choice."""

    WHAT: ClassVar[str] = "tune report (edgefashion tune)"
    study: str
    storage: str
    budgets: dict[str, Any]
    trials: list[TrialResult]
    seed_cnn: TrialResult | None
    chosen: int | None
    cpu: CpuInfo
    schema_version: int = SCHEMA_VERSION


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
        found = {}
        for fmt, entry in self.read_export().models().items():
            path = self.export_dir / entry.file
            if Path(entry.file).name != entry.file:
                raise ManifestError(f"{self.export_manifest}: artifact file {entry.file!r} is not a plain file name")
            if not path.is_file():
                raise InputError(f"{path}: listed in export.json but missing")
            if path.stat().st_size != entry.bytes or sha256_file(path) != entry.sha256:
                raise InputError(f"{path}: does not match its sha256 in export.json (changed after export?); "
                                 f"run `edgefashion export {self.root}` again")
            found[fmt] = path
        if not found:
            raise InputError(f"{self.export_manifest}: lists no models")
        return found

    def read_calibration(self):
        """The calibration indices export saved, checked against indices_sha256 in export.json."""
        recorded = self.read_export().calibration
        if not self.calibration.is_file():
            raise InputError(f"{self.calibration}: calibration indices not found (exported by an older edgefashion?); "
                             f"run `edgefashion export {self.root}` again")
        try:
            with np.load(self.calibration) as saved:
                indices = saved["indices"]
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{self.calibration}: not readable calibration indices ({exc})") from None
        if indices_sha256(indices) != recorded.indices_sha256:
            raise InputError(f"{self.calibration}: indices do not match indices_sha256 in {self.export_manifest}")
        return indices

    def test_source(self) -> Path | None:
        """The test set the run was evaluated on, if config.json names one that still exists."""
        if not self.config.is_file():
            return None
        test = TrainReport.read(self.config).test
        return Path(test.source) if test and Path(test.source).exists() else None

    def remove_leftovers(self) -> list[Path]:
        """Half-written files and staging folders a killed train/export/verify/bundle left behind."""
        return remove_leftovers(self.root) + remove_leftovers(self.export_dir)


def report_leftovers(run: Run) -> None:
    """Remove a killed run's leftovers, and say so on stderr."""
    removed = run.remove_leftovers()
    if removed:
        names = ", ".join(printable(p.name) for p in removed[:5]) + (" ..." if len(removed) > 5 else "")
        print(f"note: removed {len(removed)} leftover(s) of an interrupted run: {names}", file=sys.stderr)
