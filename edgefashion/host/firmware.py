"""The int8 model on the real TensorFlow Lite Micro interpreter: accuracy on the test set, outputs
against LiteRT's reference kernels, the arena TFLM allocates, the operators to register, and which
microcontrollers it fits. Writes RUN/firmware/ (firmware.json, model_int8_data.h/.cc).

TFLM comes from the `tflite-micro` package: TFLM built for the host with a Python interpreter
around it. Its wheels are x86_64 Linux only, so this is a workstation step.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import shutil
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import mcu
from ..console import Progress, capture_fd, quiet
from ..device.isolate import Crashed, in_worker
from ..device.runtime import Model
from ..device.tflite_file import read as read_tflite
from .. import rundata
from ..errors import InputError, MissingDependency
from ..files import check_replaceable, replace_dir, sha256_bytes, staging_dir, write_text
from ..options import positive_int, setting
from ..render import table
from ..stage import Stage
from ..rundir import FirmwareDir, Run, clean_leftovers
from ..schemas import FirmwareReport, ModelFit, TargetVerdict, TensorInfo, TrainReport, VerifyReport

ARENA_NOTE = ("measured on a 64-bit host: the smallest arena that runs the model there (one 16-byte step less "
              "fails), searched from TFLM's RecordingMicroAllocator total up; 32-bit targets need slightly less for "
              "TFLM's structs")
UNCOUNTED = (f"not counted: TFLM's code and the application in flash (typically >= {mcu.FLASH_RESERVE // mcu.KB} KB), "
             f"the stack, interpreter objects and I/O buffers in RAM (typically >= {mcu.RAM_RESERVE // mcu.KB} KB); "
             f"'tight' means the model fits but leaves less than that")


@dataclass
class FirmwareConfig:
    data: Path | None = setting(None, "test CSV (with labels) or IDX folder (default: the run's test set)", type=Path,
                                flag="--test-data", in_run="test_data")
    images: int | None = setting(None, "test images to run on TFLM (default all; TFLM runs one image at a time: "
                                       "a few ms each for the seed CNN on a workstation, with progress shown)", type=positive_int, flag="--firmware-images",
                                in_run="firmware_images")
    target: str | None = setting(None, "check one microcontroller: " + ", ".join(mcu.TARGET_NAMES) + " (exit 1 if the "
                                       "model does not fit)", choices=mcu.TARGET_NAMES, in_run=False)
    ram_kb: int | None = setting(None, "check your own budget: RAM in KB (with --flash-kb)", type=positive_int,
                                 in_run=False)
    flash_kb: int | None = setting(None, "check your own budget: flash in KB (with --ram-kb)", type=positive_int,
                                   in_run=False)

    def validate(self) -> None:
        if (self.ram_kb is None) != (self.flash_kb is None):
            raise InputError("--ram-kb and --flash-kb go together")

    def checked(self) -> list[mcu.Target]:
        """The targets the user asked about (exit 1 if one does not fit)."""
        chosen = [mcu.target_named(self.target)] if self.target else []
        if self.ram_kb is not None:
            chosen.append(mcu.Target("custom", "your budget", self.ram_kb * mcu.KB, self.flash_kb * mcu.KB,
                                    "--ram-kb / --flash-kb"))
        return chosen


def tflm_runtime():
    try:
        with quiet():
            from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise MissingDependency("tflite-micro (TensorFlow Lite Micro for the host; x86_64 Linux wheels only)",
                                "host") from None
    return runtime


def firmware(config: FirmwareConfig, run: Run) -> FirmwareReport:
    """Run RUN/export/model_int8.tflite on TFLM over the test set; write RUN/firmware/."""
    config.validate()
    runtime = tflm_runtime()
    clean_leftovers(run)  # a killed firmware's staging folder, among others
    check_replaceable(run.firmware.folder, FirmwareDir.NAMES)  # before minutes of TFLM, not after
    path = run.firmware_model()
    if path is None:
        raise InputError(f"{run.export_manifest}: no tflite-int8 model (export it with --formats tflite-int8)")
    test = rundata.test_set(run, config.data)
    if config.images:
        test = test.subset(slice(0, config.images))
    started = time.monotonic()
    fit = model_fit(config, path)  # what TFLM says of any model: arena, ops, targets
    reference = Model(path, kernels="reference")
    prepared = reference.prepare(test.images)  # the same int8 input for TFLM and for LiteRT
    tflm_raw = run_tflm(runtime, path, prepared)
    litert_raw = np.concatenate([reference.run(prepared[i:i + 500]) for i in range(0, len(test), 500)])
    seconds = time.monotonic() - started
    delta = np.abs(tflm_raw.astype(np.int64) - litert_raw.astype(np.int64))
    accuracy = float((tflm_raw.argmax(1) == test.labels).mean())
    keras = _keras_accuracy(run, len(test))
    report = FirmwareReport(
        **{f.name: getattr(fit, f.name) for f in dataclasses.fields(ModelFit)},
        images=len(test), test_source=test.source, accuracy=accuracy, keras_accuracy=keras,
        labels=run.read_export().labels,
        accuracy_drop_pp=None if keras is None else round((keras - accuracy) * 100, 3),
        agreement_vs_litert_reference=float((tflm_raw.argmax(1) == litert_raw.argmax(1)).mean()),
        differing_values_vs_litert_reference=int((delta > 0).sum()), values=int(delta.size),
        max_diff_steps=int(delta.max()), seconds=round(seconds, 1))
    content = path.read_bytes()
    write_firmware_dir(report, content, run)
    return report


def model_fit(config: FirmwareConfig, path: Path) -> ModelFit:
    """Any full-int8 .tflite model on TFLM, without data: its arena, ops and target verdicts."""
    config.validate()
    tflm_runtime()  # installed, or one MissingDependency line before anything runs
    model = Model(path, classifier=False)
    if model.format != "tflite-int8" or "int8" not in (model.input.dtype, model.output.dtype):
        raise InputError(f"{path}: {model.format}, {model.input.dtype} input and {model.output.dtype} output; "
                         f"TFLM runs full-integer int8 .tflite models")
    content = path.read_bytes()
    arena = measure_arena_isolated(path)
    return ModelFit(tflm_version=importlib.metadata.version("tflite-micro"), model=path.name,
                    model_sha256=sha256_bytes(content), model_bytes=len(content), arena_bytes=arena["total"],
                    arena_head_bytes=arena["head"], arena_tail_bytes=arena["tail"],
                    arena_recommended_bytes=mcu.recommended_arena(arena["total"]), arena_note=ARENA_NOTE,
                    ops=dict(Counter(op.op for op in read_tflite(content, path.name).operators)),
                    input=TensorInfo(**model.input.as_dict()), output=TensorInfo(**model.output.as_dict()),
                    targets=[TargetVerdict(**v) for v in _verdicts(config, len(content), arena["total"])],
                    uncounted=UNCOUNTED, ms_per_image=round(arena["ms_per_image"], 2))


def _verdicts(config: FirmwareConfig, model_bytes: int, arena_bytes: int) -> list[dict]:
    extra = [t for t in config.checked() if t not in mcu.TARGETS]  # a custom budget
    return [mcu.verdict(t, model_bytes, arena_bytes) for t in mcu.TARGETS + extra]


def render_fit(report: ModelFit) -> str:
    return "\n".join([
        f"tflite-micro {report.tflm_version}: {report.model} ({report.model_bytes / mcu.KB:,.0f} KB), "
        f"{report.input.dtype} {report.input.shape} -> {report.output.dtype} {report.output.shape}, "
        f"{report.ms_per_image} ms per inference on TFLM",
        *_arena_and_ops(report), target_table(report), textwrap.fill(report.uncounted, 100), "accuracy: not measured (a model file; give a run for that)"])


def measure_arena(runtime, path: Path) -> dict:
    """The arena TFLM's recording allocator reports, checked: it runs with exactly that many bytes."""
    with quiet():
        interpreter = runtime.Interpreter.from_file(str(path))
    detail = interpreter.get_input_details(0)
    zeros = np.zeros(tuple(detail["shape"]), detail["dtype"])  # int8, or float for TFLM's float examples
    interpreter.set_input(zeros, 0)
    started = time.perf_counter()
    interpreter.invoke()
    ms = (time.perf_counter() - started) * 1e3
    text = capture_fd(interpreter.print_allocations, fd=2)
    figures = {}
    for key in ("total", "head", "tail"):
        marker = f"Arena allocation {key} "
        line = next((l for l in text.splitlines() if marker in l), None)
        if line is None:
            raise InputError(f"tflite-micro printed no '{marker}' line; cannot measure the arena")
        figures[key] = int(line.split(marker)[1].split()[0])
    reported = figures["total"]
    figures["total"] = smallest_arena(runtime, path, reported)
    return {**figures, "reported": reported, "ms_per_image": ms}


def measure_arena_isolated(path: Path) -> dict:
    """measure_arena in a worker process (device/isolate.py): TFLM aborts the whole process (SIGABRT) on
    some models (an op it cannot prepare, MobileNetV2's arena); here that is one InputError naming the model."""
    result = in_worker(_arena_job, [(str(path),)])[0]
    if isinstance(result, Crashed):
        raise InputError(f"{path}: TensorFlow Lite Micro crashed on this model ({result.how}); it cannot run it "
                         f"(an operator or tensor it does not support)")
    if isinstance(result, str):
        raise InputError(result)
    return result


def _arena_job(path: str) -> dict | str:
    """The arena, or why TFLM refused the model (a message: it crosses the process boundary as text)."""
    try:
        return measure_arena(tflm_runtime(), Path(path))
    except (InputError, MissingDependency, RuntimeError, ValueError) as exc:
        return str(exc)


def smallest_arena(runtime, path: Path, reported: int) -> int:
    """The smallest arena (16-byte steps) TFLM runs the model in, from the recorded total up: on a small
    model the recorder leaves out some of the memory planner's own buffers (measured: 4,800 reported,
    5,248 needed for an 8x8 digits CNN; the seed CNN runs in exactly what it reports)."""
    def runs(size: int) -> bool:
        try:
            with quiet():
                exact = runtime.Interpreter.from_file(str(path), arena_size=size)
                detail = exact.get_input_details(0)
                exact.set_input(np.zeros(tuple(detail["shape"]), detail["dtype"]), 0)
                exact.invoke()
            return True
        except RuntimeError:
            return False

    if runs(reported):
        return reported
    low, high = reported, reported + max(1024, reported // 8)
    while not runs(high):
        low, high = high, high * 2
        if high > 64 * reported:
            raise InputError(f"{path}: TFLM did not run in {high} bytes, {reported} reported")
    while high - low > 16:
        middle = low + max(16, (high - low) // 32 * 16)
        low, high = (low, middle) if runs(middle) else (middle, high)
    return high


def run_tflm(runtime, path: Path, prepared: np.ndarray) -> np.ndarray:
    """Raw int8 outputs of TFLM for already prepared int8 inputs, one image at a time (batch 1)."""
    with quiet():
        interpreter = runtime.Interpreter.from_file(str(path))
    outputs = []
    with Progress(len(prepared), "firmware: TFLM") as progress:
        for i in range(len(prepared)):
            interpreter.set_input(prepared[i:i + 1], 0)
            interpreter.invoke()
            outputs.append(interpreter.get_output(0)[0].copy())
            if i % 100 == 99:
                progress.update(100)
        progress.update(len(prepared) % 100)
    return np.stack(outputs)


def _keras_accuracy(run: Run, images: int) -> float | None:
    """The float model's test accuracy, where verify or train measured it on the same images."""
    if run.verify.is_file():
        report = VerifyReport.read(run.verify)
        if report.reference.format == "keras" and report.reference.samples == images:
            return report.reference.accuracy
    if run.config.is_file():
        test = TrainReport.read(run.config).test
        if test and test.accuracy is not None and test.samples == images:
            return test.accuracy
    return None


def write_firmware_dir(report: FirmwareReport, content: bytes, run: Run) -> None:
    """firmware.json, the header and the C array, swapped in as RUN/firmware/ whole."""
    dest = run.firmware.folder
    staging = staging_dir(dest)
    try:
        folder = FirmwareDir(staging)
        _, source = mcu.c_array_source(content, report.labels)
        write_text(folder.c_header, mcu.firmware_header(report))
        write_text(folder.c_source, source)
        report.write(folder.report)
        replace_dir(staging, dest, FirmwareDir.NAMES)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def summary_lines(report: FirmwareReport) -> list[str]:
    keras = (f" (Keras {report.keras_accuracy:.4f}, drop {report.accuracy_drop_pp:.2f} pp)"
             if report.keras_accuracy is not None else "")
    return [
        f"tflite-micro {report.tflm_version}: {report.model} ({report.model_bytes / mcu.KB:,.0f} KB) on "
        f"{report.images:,} test images in {report.seconds} s ({report.ms_per_image} ms per image on TFLM)",
        f"accuracy {report.accuracy:.4f}{keras}; vs LiteRT reference kernels: "
        f"{report.differing_values_vs_litert_reference:,} of {report.values:,} values differ (max "
        f"{report.max_diff_steps} steps), top-1 agreement {report.agreement_vs_litert_reference:.2%}",
        *_arena_and_ops(report)]


def _arena_and_ops(report: ModelFit) -> list[str]:
    return [f"arena {report.arena_bytes:,} bytes measured (head {report.arena_head_bytes:,}, tail "
            f"{report.arena_tail_bytes:,}) -> kTensorArenaSize {report.arena_recommended_bytes:,} with a "
            f"{mcu.ARENA_MARGIN:.0%} margin",
            "ops: " + ", ".join(f"{op} x{n}" for op, n in report.ops.items())]


def target_rows(report: FirmwareReport) -> list[dict]:
    return [{"target": t.target, "RAM_KB": t.ram_bytes // mcu.KB, "flash_KB": t.flash_bytes // mcu.KB,
             "needs_RAM_KB": round(t.ram_needed / mcu.KB, 1), "needs_flash_KB": round(t.flash_needed / mcu.KB, 1),
             "verdict": t.verdict} for t in report.targets]


def target_table(report: ModelFit) -> str:
    """The targets' table, narrow enough for a terminal; why, under it, for each that does not simply fit
    (every reason is in firmware.json)."""
    notes = [f"  {t.target}: {t.why}" for t in report.targets if t.verdict != "fits"]
    return "\n".join([table(target_rows(report)), *notes])


def failures(config: FirmwareConfig, report: FirmwareReport) -> list[str]:
    """The targets the user asked about (--target, --ram-kb/--flash-kb) that the model does not fit."""
    checked = {t.name for t in config.checked()}
    return [f"{t.target}: does not fit ({t.why})" for t in report.targets
            if t.target in checked and t.verdict == "does not fit"]


def render(report: FirmwareReport) -> str:
    return "\n".join([*summary_lines(report), target_table(report), textwrap.fill(report.uncounted, 100)])


STAGE = Stage(
    name="firmware", help="run the int8 model on TensorFlow Lite Micro; arena, ops, targets (host)",
    description="Run RUN/export/model_int8.tflite on the real TensorFlow Lite Micro interpreter (the tflite-micro "
                "package, x86_64 only) over the test set: accuracy, outputs against LiteRT's reference kernels, the "
                "tensor arena TFLM allocates, the operators to register, and which microcontrollers it fits. Writes "
                "RUN/firmware/firmware.json and a model_int8_data.h/.cc a firmware can use as they are. In `run`, "
                "skipped where tflite-micro is not installed.",
    settings=FirmwareConfig, run=firmware, report=FirmwareReport, render=render, failures=failures,
    skip_when=(MissingDependency,), output=lambda run: run.firmware.folder)
