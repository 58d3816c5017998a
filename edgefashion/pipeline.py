"""`edgefashion run`: train -> export -> verify -> bench -> bundle -> firmware in one run directory.

RUN/pipeline.json records each finished stage, so a second run resumes after the last one.
This module and cli.py are the two that choose a side: they call host/ and device/ alike.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

from .console import step
from .device.bench import BenchConfig, bench
from .device.verify import FloatReference, VerifyConfig, gate_failure, verify
from .errors import CheckFailed, MissingDependency
from .host.bundle import BundleConfig, make_bundle
from .host.export import ExportConfig, export
from .host.firmware import FirmwareConfig, firmware
from .host.model import keras_reference as _keras_reference
from .host.train import TrainConfig, train
from .options import plain
from .rundir import Run
from .schemas import BenchReport, FirmwareReport, PipelineState, RunSummary, StageState, VerifyReport
from .formats import FLOAT_OF

STAGES = ("train", "export", "verify", "bench", "bundle", "firmware")


@dataclass
class RunConfig:
    """Every stage's own config; `edgefashion run` builds them all from one set of options."""

    out: Path
    train: TrainConfig
    export: ExportConfig
    verify: VerifyConfig
    bench: BenchConfig
    bundle: BundleConfig
    firmware: FirmwareConfig
    restart: bool = False

    def settings(self) -> dict:
        """What a finished stage was made with (verbosity aside): a change means starting over."""
        return {name: {k: v for k, v in plain(getattr(self, name)).items() if k != "verbose"} for name in STAGES}


def keras_reference(config: VerifyConfig) -> FloatReference | None:
    """verify's float reference from Keras, where TensorFlow and model.keras are here (else None:
    verify uses model_f32.tflite, as a device does)."""
    run = Run(config.run)
    if config.reference == "tflite-f32" or not run.model.is_file() or importlib.util.find_spec("tensorflow") is None:
        return None
    return _keras_reference(run.model, config.batch_size, config.verbose)


def run(config: RunConfig) -> PipelineState:
    """Run every unfinished stage; return the state with its summary. Raises at the first failing stage."""
    paths = Run(config.out)
    state = PipelineState(settings=config.settings())
    if paths.pipeline.is_file() and not config.restart:
        state.stages = _still_valid(PipelineState.read(paths.pipeline), state.settings)
    for name in STAGES:
        if name in state.stages and state.stages[name].status == "done":
            step(f"{name}: done before, skipped (--restart to redo)")
            continue
        step(f"stage {name}")
        started = time.monotonic()
        try:
            STAGE_FUNCS[name](config)
        except StageSkipped as exc:
            step(f"{name}: skipped ({exc})")
            state.stages[name] = StageState(status="skipped", error=str(exc))
            state.write(paths.pipeline)
            continue
        except BaseException as exc:
            state.stages[name] = StageState(status="failed", error=str(exc) or type(exc).__name__)
            state.write(paths.pipeline)
            raise
        state.stages[name] = StageState(status="done", seconds=round(time.monotonic() - started, 1))
        state.write(paths.pipeline)
    state.summary = summarize(paths)
    state.write(paths.pipeline)
    return state


def _still_valid(before: PipelineState, settings: dict) -> dict[str, StageState]:
    """The finished stages up to the first whose settings changed: that one and all after it rerun."""
    kept = {}
    for name in STAGES:
        if before.settings.get(name) != settings[name]:
            if name in before.stages:
                step(f"{name} settings changed since the last run: redoing {name} and what follows")
            break
        if name in before.stages:
            kept[name] = before.stages[name]
    return kept


class StageSkipped(Exception):
    """A stage that cannot run on this machine and is not a failure of the run."""


def _firmware(config: RunConfig) -> None:
    try:
        firmware(config.firmware)
    except MissingDependency as exc:  # TFLM has x86_64 wheels only
        raise StageSkipped(str(exc)) from None


def _train(config: RunConfig) -> None:
    if train(config.train).interrupted:
        raise KeyboardInterrupt


def _verify(config: RunConfig) -> None:
    report = verify(config.verify, keras_reference(config.verify))
    where = f"on {report.reference.samples} test images vs {report.reference.format}"
    failures = [gate_failure(m.file, m.failures, where) for m in report.models if m.failures]
    if failures:
        raise CheckFailed("verify: " + " | ".join(failures))


STAGE_FUNCS = {"train": _train, "export": lambda c: export(c.export), "verify": _verify,
               "bench": lambda c: bench(c.bench), "bundle": lambda c: make_bundle(c.bundle),
               "firmware": _firmware}


def summarize(run: Run) -> RunSummary:
    """Per format: accuracy, drop vs float, size, p50 latency at batch 1 / 1 thread."""
    checked = VerifyReport.read(run.verify)
    timed = BenchReport.read(run.bench)
    latency = {r.format: r for r in timed.results if r.batch == 1 and r.threads == 1}
    rows = [{"format": checked.reference.format, "accuracy": checked.reference.accuracy,
             "drop_pp": None, "agreement": None, "MB": None, "p50_us": None, "vs_f32": None}]
    for m in checked.models:
        r, f32 = latency.get(m.format), latency.get(FLOAT_OF.get(m.format))
        rows.append({"format": m.format, "accuracy": m.accuracy, "drop_pp": m.accuracy_drop_pp,
                     "agreement": m.top1_agreement, "MB": round(r.size_bytes / 1e6, 3) if r else None,
                     "p50_us": r.latency_us["p50"] if r else None,
                     "vs_f32": round(r.latency_us["p50"] / f32.latency_us["p50"], 3) if r and f32 else None})
    return RunSummary(rows=rows, samples=checked.reference.samples, cpu=checked.cpu, bundle=str(run.bundle),
                      bundle_bytes=run.bundle.stat().st_size if run.bundle.is_file() else None,
                      firmware=_firmware_line(run))


def _firmware_line(run: Run) -> str | None:
    if not run.firmware.report.is_file():
        return None
    report = FirmwareReport.read(run.firmware.report)
    fits = [t.target for t in report.targets if t.verdict != "does not fit"]
    return (f"TFLM: accuracy {report.accuracy:.4f} on {report.images} images, arena {report.arena_bytes:,} bytes, "
            f"model {report.model_bytes:,} bytes; fits {', '.join(fits) or 'none of the listed targets'}")
