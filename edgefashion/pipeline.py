"""`edgefashion run`: the stages in order, in one run directory.

RUN/pipeline.json records each finished stage and the settings it ran with. A second run resumes:
a setting not given keeps its recorded value; a setting given with a new value redoes its stage and
every stage after it. This module and cli.py are the two that choose a side: they call host/ and
device/ alike.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time

from .console import step
from .device import bench, verify
from .errors import CheckFailed
from .formats import FLOAT_OF
from .host import bundle, export, firmware, train
from .host.model import keras_reference
from .files import check_tool_folder, fingerprint, is_manifest
from .rundir import RUN_MARKERS, Run
from .schemas import BenchReport, FirmwareReport, PipelineState, RunSummary, StageState, TrainReport, VerifyReport
from .stage import Stage, with_verbosity


def verify_on_host(settings: verify.VerifyConfig, run: Run) -> VerifyReport:
    """verify with Keras as the float reference where TensorFlow and model.keras are here (else
    model_f32.tflite, as a device does)."""
    return verify.verify(settings, run, float_reference(settings, run))


def float_reference(settings: verify.VerifyConfig, run: Run):
    if settings.reference == "tflite-f32" or not run.model.is_file() or importlib.util.find_spec("tensorflow") is None:
        return None
    return keras_reference(run.model, settings.batch_size, settings.verbose)


STAGES: tuple[Stage, ...] = (train.STAGE, export.STAGE, dataclasses.replace(verify.STAGE, run=verify_on_host),
                             bench.STAGE, bundle.STAGE, firmware.STAGE)


def stage_named(name: str) -> Stage:
    return next(s for s in STAGES if s.name == name)


def apply(settings, changes: dict):
    """`settings` with `changes` ({field: value}; nested settings as {field: {...}}) applied."""
    values = {}
    for name, value in changes.items():
        current = getattr(settings, name)
        values[name] = apply(current, value) if isinstance(value, dict) and dataclasses.is_dataclass(current) \
            else value
    return dataclasses.replace(settings, **values)


def plan(before: PipelineState | None, changes: dict[str, dict],
         run: Run | None = None) -> tuple[dict, dict[str, StageState], list[str]]:
    """Each stage's settings (recorded ones, with `changes` applied), the finished stages that stay
    finished, and a line per stage whose settings or outputs changed. The first stage that changed,
    whose outputs are not what it wrote, failed or never ran is redone, and every stage after it."""
    settings, kept, notes, redo = {}, {}, [], False
    for stage in STAGES:
        recorded = before.settings.get(stage.name) if before else None
        base = stage.restore(recorded) if isinstance(recorded, dict) else stage.defaults()
        settings[stage.name] = apply(base, changes.get(stage.name, {}))
        old, new = stage.recorded(base), stage.recorded(settings[stage.name])
        changed = [f"{key} {_show(old.get(key))} -> {_show(value)}" for key, value in new.items() if old.get(key) != value]
        state = before.stages.get(stage.name) if before else None
        if changed and state is not None:
            notes.append(f"{stage.name} settings changed since the last run: {', '.join(changed)}")
        altered = _altered(stage, state, run) if run is not None and not changed else []
        if altered and not redo:
            notes.append(f"{stage.name}: its output changed or went missing since it ran ({', '.join(altered[:3])}"
                         f"{' ...' if len(altered) > 3 else ''})")
        if not redo and state is not None and state.status == "done" and not changed and not altered:
            kept[stage.name] = state
        else:
            redo = True
    return settings, kept, notes


def _altered(stage: Stage, state: StageState | None, run: Run) -> list[str]:
    """The files a finished stage wrote that are gone or not the bytes it wrote (a pipeline.json of an
    older edgefashion recorded none: nothing to check)."""
    if state is None or state.status != "done" or state.outputs is None:
        return []
    now = fingerprint(stage.output(run))
    return sorted(name for name in {*state.outputs, *now} if state.outputs.get(name) != now.get(name))


def _show(value) -> str:
    return "default" if value is None else ",".join(map(str, value)) if isinstance(value, list) else str(value)


def run(root, changes: dict[str, dict] | None = None, restart: bool = False, verbose: bool = False) -> PipelineState:
    """Run every stage not finished with these settings in the run directory `root` (a path or a Run);
    return the state with its summary. Raises at the first failing stage.
    `changes`: {stage: {setting: value}}, e.g. {"train": {"epochs": 1}}."""
    run_dir = root if isinstance(root, Run) else Run(root)
    check_tool_folder(run_dir.root, RUN_MARKERS, "run", is_marker=is_manifest)
    before = PipelineState.read(run_dir.pipeline) if run_dir.pipeline.is_file() and not restart else None
    if before is None and not restart:
        before = adopted(run_dir)
    settings, kept, notes = plan(before, changes or {}, run_dir)
    for note in notes:
        step(note)
    for name, kept_state in kept.items():  # recorded by an older edgefashion: what is there now, from here on
        if kept_state.outputs is None:
            kept_state.outputs = fingerprint(stage_named(name).output(run_dir))
    state = PipelineState(settings={s.name: s.recorded(settings[s.name]) for s in STAGES}, stages=dict(kept))
    if notes and len(kept) < len(STAGES):
        step(f"redoing {STAGES[len(kept)].name} and what follows")
    for stage in STAGES:
        if stage.name in kept:
            step(f"{stage.name}: done before, skipped (same settings; --restart to redo)")
            continue
        step(f"stage {stage.name}")
        started = time.monotonic()
        try:
            outcome = _run_stage(stage, with_verbosity(settings[stage.name], verbose), run_dir)
            if outcome.status == "done":
                outcome.outputs = fingerprint(stage.output(run_dir))
        except BaseException as exc:  # recorded in pipeline.json, then raised (Ctrl-C too)
            outcome = StageState(status="failed", error=str(exc) or type(exc).__name__)
            raise
        finally:
            outcome.seconds = round(time.monotonic() - started, 1)
            state.stages[stage.name] = outcome
            state.write(run_dir.pipeline)
    state.summary = summarize(run_dir)
    state.write(run_dir.pipeline)
    return state


def adopted(run: Run) -> PipelineState | None:
    """A run directory trained by `train` or `tune` but never by `run`: its training, as config.json
    records it, counts as done, so `run` goes on from export instead of training over model.keras."""
    if not (run.model.is_file() and run.config.is_file()):
        return None
    config = TrainReport.read(run.config)
    if config.interrupted:
        return None
    step(f"{run.model} was trained by `edgefashion train` or `tune` ({run.config.name}): keeping it")
    settings = train.STAGE.recorded(train.STAGE.restore(config.settings))
    return PipelineState(settings={"train": settings}, stages={"train": StageState(status="done")})


def _run_stage(stage: Stage, settings, run_dir: Run) -> StageState:
    """One stage: done, or skipped where it cannot run here; a failed check raises CheckFailed."""
    try:
        report = stage.run(settings, run_dir)
    except stage.skip_when as exc:
        step(f"{stage.name}: skipped ({exc})")
        return StageState(status="skipped", error=str(exc))
    if getattr(report, "interrupted", False):  # train's Ctrl-C: the best epoch is kept, the run stops here
        raise KeyboardInterrupt
    failures = stage.failures(settings, report)
    if failures:
        raise CheckFailed(f"{stage.name}: " + " | ".join(failures))
    return StageState(status="done")


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
    fits = [t.target for t in report.targets if t.verdict == "fits"]
    tight = [t.target for t in report.targets if t.verdict == "tight"]
    return (f"TFLM: accuracy {report.accuracy:.4f} on {report.images} images, arena {report.arena_bytes:,} bytes, "
            f"model {report.model_bytes:,} bytes; fits {', '.join(fits) or 'none of the listed targets'}"
            + (f"; tight (little room left for TFLM and the application) on {', '.join(tight)}" if tight else ""))
