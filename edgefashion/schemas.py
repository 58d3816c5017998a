"""The schema of every report and manifest edgefashion writes, in one TF-free module the device
reads too: config.json (train), export.json, layer_errors.json, verify.json, bench.json,
pipeline.json, a bundle's manifest.json, firmware.json and tune's pareto.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .console import printable
from .cpu import CpuInfo
from .formats import FORMATS
from .manifest import SCHEMA_VERSION, Manifest


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
    held_out: float | None = None        # the test set: this share of the training data, seeded
    indices_sha256: str | None = None    # of RUN/test_split.npz, the held-out rows


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
    image_shape: list[int] | None = None  # (H, W, C) of the data; None: Fashion-MNIST's (28, 28, 1)
    labels: list[str] | None = None       # class names in label order; None: Fashion-MNIST's
    schema_version: int = SCHEMA_VERSION

    @property
    def trained_on(self):
        """The training data as a Path (None: the local Fashion-MNIST)."""
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
    model_sha256: str | None = None  # of the model.keras the models were made from
    quantization: dict[str, Any] | None = None  # the int8 candidates tried and chosen (int8_search.py)
    ood_sha256: str | None = None  # of ood.npz: what predict calls an input unlike the training images
    schema_version: int = SCHEMA_VERSION

    def models(self) -> dict[str, Artifact]:
        return {a.format: a for a in self.artifacts if a.format in FORMATS}

    def made_by(self, fmt: str) -> str | None:
        """How the int8 model of `fmt` was made: the chosen candidate of export's int8 search."""
        chosen = next((c for c in (self.quantization or {}).get("candidates", [])
                       if c["format"] == fmt and c["chosen"]), None)
        if chosen is None:
            return None
        floats = f" ({', '.join(chosen['float_layers'])} in float)" if chosen["float_layers"] else ""
        base = f" on {chosen['base']}" if chosen.get("base") else ""  # older exports have no base
        return chosen["name"] + base + floats


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
    quantization: str | None = None  # how an int8 model was made (export's int8 search)


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
    quantization: dict[str, Any] | None = None  # export's int8 candidates (export.json), when verified on the host
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
    inputs: str | None = None  # what it ran on: test images, or random inputs of the model's own shape
    macs_per_image: int | None = None  # multiply-accumulates from the graph (device/macs.py)
    gmacs: float | None = None         # achieved at the p50 per image
    peak_gmacs: float | None = None    # this CPU's theoretical peak on `threads` cores, int8 or float32
    peak_share: float | None = None    # gmacs / peak_gmacs


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
    peaks: dict[str, Any] | None = None  # {int8|float32: the CPU's peak on one core and where it comes from}
    schema_version: int = SCHEMA_VERSION


@dataclass
class StageState:
    status: str
    seconds: float | None = None
    error: str | None = None
    outputs: dict[str, str] | None = None  # sha256 of each file the stage wrote, checked before it is skipped


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
    quantization: str | None = None  # how an int8 model was made (export's int8 search)


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


@dataclass(kw_only=True)
class ModelFit(Manifest):
    """`edgefashion firmware MODEL.tflite`: any full-int8 model on TensorFlow Lite Micro, without data:
    its arena, its ops and which microcontrollers it fits."""

    WHAT: ClassVar[str] = "model fit (edgefashion firmware MODEL)"
    tflm_version: str
    model: str
    model_sha256: str
    model_bytes: int
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
    schema_version: int = SCHEMA_VERSION


@dataclass(kw_only=True)
class FirmwareReport(ModelFit):
    """RUN/firmware/firmware.json: the run's int8 model on TensorFlow Lite Micro: what ModelFit says of
    any model, and its accuracy on the test set and its outputs against LiteRT's reference kernels."""

    WHAT: ClassVar[str] = "firmware report (edgefashion firmware RUN)"
    images: int
    test_source: str
    accuracy: float
    keras_accuracy: float | None
    accuracy_drop_pp: float | None
    agreement_vs_litert_reference: float
    differing_values_vs_litert_reference: int
    values: int
    max_diff_steps: int
    seconds: float
    labels: list[str] | None = None  # the class names, in the header's g_labels


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
    latency_spread: float | None = None  # (max - min) / min of its repeated latency measurements
    measured_on: str | None = None       # this machine, or the fleet device of --measure-on
    host: str | None = None              # the machine that ran it, and its tune folder (where its model is)
    folder: str | None = None
    first: dict[str, Any] | None = None  # with --first-epochs: float val accuracy, parameters, MACs then
    stopped_by: int | None = None        # the earlier trial that beat it then (state PRUNED)
    test_accuracy: float | None = None   # int8, on the test set: --final-epochs models only


@dataclass
class FinalResult:
    """--final-epochs: the chosen trial's architecture and the seed CNN, both trained again for `epochs`."""

    epochs: int
    chosen: TrialResult
    seed_cnn: TrialResult


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
    verdict: str | None = None  # the chosen model against the seed CNN, in words
    final: FinalResult | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass
class Check:
    """One check of `edgefashion selftest`."""

    name: str
    passed: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)  # the numbers behind `detail`, for --json
    skipped: bool = False  # a model this device cannot run (no interpreter for it): not a failure

    def line(self) -> str:
        status = "SKIP" if self.skipped else "PASS" if self.passed else "FAIL"
        return printable(f"{status}  {self.name}: {self.detail}")


@dataclass
class SelftestReport(Manifest):
    """`edgefashion selftest --json`: every check of a bundle on one device, and that device's CPU."""

    WHAT: ClassVar[str] = "selftest report (edgefashion selftest --json)"
    passed: bool
    cpu: CpuInfo
    checks: list[Check]
    schema_version: int = SCHEMA_VERSION

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def skipped(self) -> int:
        return sum(c.skipped for c in self.checks)


@dataclass
class Prediction:
    """One input of `edgefashion predict`: its class, probability and, with labels, the truth."""

    input: str
    label: str
    probability: float
    class_id: int
    truth: str | None = None
    top: list[Any] | None = None  # [label, probability] of the K most likely classes
    unusual: bool | None = None  # unlike every training image (device/ood.py); None: no model of them


@dataclass
class PredictReport:
    """`edgefashion predict --json`: which model ran where, every prediction, the accuracy with labels.
    Printed, never read back."""

    model: dict[str, Any]
    predictions: list[Prediction]
    accuracy: float | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict:
        """As predict has always printed it: "class" for the class id, no "top" or "truth" when absent."""
        rows = [{"input": p.input, "class": p.class_id, "label": p.label, "probability": p.probability,
                 **({"top": [list(t) for t in p.top]} if p.top else {}),
                 **({"truth": p.truth} if p.truth is not None else {}),
                 **({"unusual": p.unusual} if p.unusual is not None else {})} for p in self.predictions]
        return {"model": self.model, "predictions": rows, "accuracy": self.accuracy,
                "schema_version": self.schema_version}


@dataclass
class DeviceRun:
    """One device's part of a `fleet` command."""

    device: str
    address: str
    ok: bool
    seconds: float = 0.0
    cause: str | None = None          # why it failed, one line
    skipped: str | None = None        # why nothing was done (already deployed; kept from the last run)
    command: str | None = None        # the last command run on the device
    exit: int | None = None
    files: list[str] = field(default_factory=list)      # fetched into FLEET_DIR/<device>/
    details: dict[str, Any] = field(default_factory=dict)  # `edgefashion info` of the device, selftest counts


@dataclass
class FleetReport(Manifest):
    """FLEET_DIR/fleet.json: what a `fleet` command did on each device."""

    WHAT: ClassVar[str] = "fleet report (edgefashion fleet)"
    command: str
    inventory: str
    bundle: str | None
    bundle_sha256: str | None
    settings: dict[str, Any]
    devices: list[DeviceRun]
    comparison: list[dict[str, Any]] = field(default_factory=list)  # compare's rows over the devices
    seconds: float = 0.0
    schema_version: int = SCHEMA_VERSION

    @property
    def failed(self) -> list[DeviceRun]:
        return [d for d in self.devices if not d.ok]
