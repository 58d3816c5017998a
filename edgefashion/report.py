"""`edgefashion report RUN|TUNE_DIR|FLEET_DIR`: one self-contained report.html of everything a run,
a tune or a fleet command wrote, read back from its files.

Jinja2 fills templates/report.html (autoescaped: class names and paths are the user's); each plot is
matplotlib's SVG inlined in the page, so the file opens anywhere with no network and no plotting
library to ship: the page's only script is its table of contents and sortable tables. Its Content
Security Policy forbids every request that would leave the file.
"""

from __future__ import annotations

import re
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, plots
from .errors import InputError
from .fleet.command import REPORT as FLEET_REPORT
from .files import check_output, read_json, write_text
from .manifest import ManifestError
from .render import columns_text
from .rundir import TUNE_MARKERS, Run, TuneDir
from .schemas import (BenchReport, ExportReport, FirmwareReport, FleetReport, PipelineState,
                      TrainReport, TuneReport, VerifyReport)

REPORT = "report.html"
GENERATOR = '<meta name="generator" content="edgefashion report">'


@dataclass
class Section:
    id: str
    title: str
    blocks: list[dict] = field(default_factory=list)
    missing: str | None = None  # why there is nothing to show (the stage did not run here)

    def text(self, text: str, css: str = "") -> None:
        self.blocks.append({"kind": "text", "text": text, "css": css})

    def heading(self, text: str) -> None:
        self.blocks.append({"kind": "heading", "text": text})

    def figure(self, fig, what: str) -> None:
        if fig is not None:
            self.blocks.append({"kind": "figure", "svg": _clean_svg(plots.svg(fig)), "text": what})

    def table(self, rows: list[dict], css: str = "", judge=None) -> None:
        """`rows` as a table; `judge(column, value)` may give a cell the class good, warn or bad."""
        if not rows:
            return
        columns = list(dict.fromkeys(c for r in rows for c in r))
        cells = [[{"text": text, "sort": _number(r.get(c)),
                   "css": " ".join(filter(None, (judge(c, r.get(c)) if judge else "", "long" if len(text) > 48 else "",
                                                 "txt" if _number(r.get(c)) is None else "")))}
                  for c, text in zip(columns, texts)] for r, texts in zip(rows, columns_text(rows, columns))]
        self.blocks.append({"kind": "table", "columns": columns, "rows": cells, "css": css})

    def pairs(self, values: dict) -> None:
        self.table([{"": key, "value": value} for key, value in values.items() if value is not None], css="kv")


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _clean_svg(text: str) -> str:
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)  # matplotlib's comments (escaped, but not needed)


def write(folder, out=None, force: bool = False) -> Path:
    """Write FOLDER/report.html (or `out`) for a run, tune or fleet folder; returns its path. An existing
    file of that name is replaced only when it is a report of ours, or with `force`."""
    folder = Path(folder)
    kind = kind_of(folder)
    out = Path(out) if out is not None else folder / REPORT
    check_output(out, ".html", ours=_is_report, force=force)  # before any work
    title, subtitle, sections = {"run": run_sections, "tune": tune_sections, "fleet": fleet_sections}[kind](folder)
    html = _template().render(title=title, subtitle=subtitle, sections=sections,
                              footer=f"edgefashion {__version__} report of {folder.resolve()}, made "
                                     f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}. Self-contained: no request "
                                     f"leaves this file.")
    write_text(out, html)
    return out


def kind_of(folder: Path) -> str:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (expected a run, tune or fleet folder)")
    run, tune, fleet = Run(folder), TuneDir(folder), folder / FLEET_REPORT
    if run.config.is_file():  # train writes it first (RUN_MARKERS): a run stopped after training is a run
        return "run"
    if tune.report.is_file():
        return "tune"
    if fleet.is_file():
        return "fleet"
    if any((folder / m).exists() for m in TUNE_MARKERS):
        raise InputError(f"{folder}: a tune folder without {tune.report.name} yet (run `edgefashion tune` to the end)")
    raise InputError(f"{folder}: not a run ({run.config.name}), tune ({tune.report.name}) or fleet ({FLEET_REPORT}) "
                     f"folder")


def _is_report(path: Path) -> bool:
    with open(path, "rb") as f:
        return GENERATOR.encode() in f.read(4096)


def _template():
    try:
        import jinja2
    except ImportError:
        from .errors import MissingDependency
        raise MissingDependency("report needs jinja2: pip install 'edgefashion[host]'") from None
    env = jinja2.Environment(loader=jinja2.PackageLoader("edgefashion", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template(REPORT)


def _opened(id: str, title: str, cls, path: Path, command: str):
    """A section and the report file it shows, or the section saying how to make that file."""
    s, report = Section(id, title), _read(cls, path)
    if report is None:
        s.missing = f"{path} not found: `{command}`"
    return s, report


def _read(cls, path: Path):
    """A report file, or None where it is missing or unreadable (the section says which)."""
    try:
        return cls.read(path) if path.is_file() else None
    except (ManifestError, InputError, OSError):
        return None


# ---- a run -------------------------------------------------------------------------------------------

def run_sections(folder: Path):
    run = Run(folder)
    train = _read(TrainReport, run.config)
    state = _read(PipelineState, run.pipeline)
    sections = [overview(run, state), training(run, train), exported(run), accuracy(run), latency(run),
                firmware(run), bundled(run)]
    summary = state.summary if state and state.summary else None
    cpu = f" · CPU {summary.cpu.model or 'unknown'} ({summary.cpu.int8_path})" if summary else ""
    data = f"{train.dataset.source} ({train.dataset.samples} images)" if train else "no training record"
    return f"edgefashion run: {folder.name}", f"{data}{cpu}", sections


def overview(run: Run, state: PipelineState | None) -> Section:
    s = Section("overview", "Overview")
    if state is None or state.summary is None:
        s.missing = f"no finished `edgefashion run` here ({run.pipeline.name} missing or without a summary)"
    else:
        summary = state.summary
        s.text(f"Accuracy on {summary.samples} test images; p50 latency at batch 1, 1 thread on "
               f"{summary.cpu.model or 'an unknown CPU'} (int8 path: {summary.cpu.int8_path}).")
        s.table(summary.rows)
        if summary.firmware:
            s.text(summary.firmware)
    if state is not None:
        s.table([{"stage": name, "status": st.status, "seconds": st.seconds, "error": st.error}
                 for name, st in state.stages.items()],
                judge=lambda c, v: ("good" if v == "done" else "bad" if v == "failed" else "") if c == "status" else "")
    return s


def training(run: Run, train: TrainReport | None) -> Section:
    s = Section("training", "Data and training")
    if train is None:
        s.missing = f"{run.config} not found: `edgefashion train --out {run.root}`"
        return s
    shape = "×".join(map(str, train.image_shape or (28, 28, 1)))
    s.pairs({"data": train.dataset.source, "images": train.dataset.samples, "image shape": shape,
             "classes": len(train.labels) if train.labels else 10,
             "test set": f"{train.test.source} ({train.test.samples} images)" if train.test else None,
             "test accuracy (Keras)": train.test.accuracy if train.test else None,
             "best validation accuracy": train.val_accuracy, "kept epoch": train.best_epoch,
             "epochs finished": train.epochs_finished, "interrupted": "yes" if train.interrupted else None,
             "fit seconds": train.fit_seconds, "TensorFlow": train.versions.get("tensorflow")})
    s.heading("settings")
    s.pairs({k: v for k, v in train.settings.items()})
    history = _history(run)
    if history:
        s.figure(plots.history_figure(history, history.get("best_epoch")), "loss and accuracy per epoch")
    return s


def _history(run: Run) -> dict | None:
    try:
        history = read_json(run.history, "training history")
    except InputError:
        return None
    return history if isinstance(history, dict) and history.get("loss") else None


def exported(run: Run) -> Section:
    s, export = _opened("export", "Export", ExportReport, run.export_manifest, f"edgefashion export {run.root}")
    if export is None:
        return s
    s.table([{"format": a.format, "file": a.file, "KB": round(a.bytes / 1024, 1),
              "input": _tensor(a.input), "output": _tensor(a.output),
              "agreement vs float": (a.check or {}).get("top1_agreement"), "sha256": a.sha256[:16] + "…"}
             for a in export.artifacts])
    cal = export.calibration
    s.pairs({"calibration": f"{cal.count} images of {cal.source}, seed {cal.seed}",
             "gates": ", ".join(f"{k} {v}" for k, v in export.gates.items()),
             "ONNX int8": _onnx_settings(export)})
    candidates = (export.quantization or {}).get("candidates", [])
    if candidates:
        s.heading("int8 candidates tried (on the validation rows, never the test set)")
        s.table([{"format": c["format"], "candidate": c["name"], "detail": c.get("detail"),
                  "drop pp": c.get("accuracy_drop_pp"), "agreement": c.get("top1_agreement"),
                  "KB": round(c["bytes"] / 1024, 1) if c.get("bytes") else None, "p50 µs": c.get("p50_us"),
                  "float layers": ", ".join(c.get("float_layers") or []) or None,
                  "meets gates": "yes" if c.get("meets_gates") else "no", "chosen": "◀" if c.get("chosen") else ""}
                 for c in candidates],
                judge=lambda col, v: ("good" if v == "yes" else "bad") if col == "meets gates" else "")
    return s


def _tensor(t) -> str | None:
    if t is None:
        return None
    q = f", scale {t.scale:.3g}, zero {t.zero_point}" if t.scale else ""
    return f"{t.dtype} {list(t.shape)}{q}"


def _onnx_settings(export: ExportReport) -> str | None:
    if not export.onnx_int8:
        return None
    return ", ".join(f"{k} {v}" for k, v in export.onnx_int8.items() if k not in ("why", "nodes_to_exclude"))


def accuracy(run: Run) -> Section:
    s, report = _opened("accuracy", "Accuracy", VerifyReport, run.verify, f"edgefashion verify {run.root}")
    if report is None:
        return s
    ref = report.reference
    s.text(f"Reference {ref.format}: accuracy {ref.accuracy:.4f} on {ref.samples} images of {ref.source}; "
           f"verified on {report.cpu.model or 'an unknown CPU'} (int8 path {report.cpu.int8_path}). "
           f"Result: {'PASS' if report.passed else 'FAIL'}.", "pass" if report.passed else "fail")
    s.table([{"format": m.format, "backend": m.backend, "accuracy": m.accuracy, "drop pp": m.accuracy_drop_pp,
              "agreement": m.top1_agreement, "cosine min": m.cosine_similarity_min, "max |Δp|": m.max_abs_diff,
              "made by": m.quantization, "result": "PASS" if m.passed else "FAIL",
              "why": "; ".join(m.failures + m.warnings) or None} for m in report.models],
            judge=lambda c, v: ("good" if v == "PASS" else "bad") if c == "result" else "")
    s.heading("accuracy per class")
    labels = list(report.models[0].per_class_accuracy) if report.models else []
    s.table([{"class": label, **{m.format: m.per_class_accuracy.get(label) for m in report.models}}
             for label in labels])
    by_format = {m.format: m for m in report.models}
    from .formats import FLOAT_OF
    for m in report.models:
        paired = by_format.get(FLOAT_OF.get(m.format))
        if paired is not None:
            s.heading(f"{m.format}: confusion matrix, and where it differs from {paired.format}")
            s.figure(plots.confusion_figure(m.confusion_matrix, labels, f"{m.format}: accuracy {m.accuracy:.4f}",
                                            paired.confusion_matrix, paired.format), f"confusion of {m.format}")
    for fmt, layers in (report.layer_errors or {}).items():
        s.heading(f"{fmt}: int8 error per layer, worst first ({layers.images} calibration images)")
        s.table(layers.rows[:12])
    return s


def latency(run: Run) -> Section:
    s, report = _opened("latency", "Latency", BenchReport, run.bench, f"edgefashion bench {run.root}")
    if report is not None:
        bench_section(s, report)
    return s


def bench_section(s: Section, report: BenchReport) -> None:
    from .device.bench import device_name
    env = report.environment
    s.text(f"On {device_name(env)}, int8 path {env.cpu.int8_path}; governor {env.cpu_governor or 'unknown'}; "
           f"load average {', '.join(f'{v:.2f}' for v in env.load_average or []) or 'unknown'}; {env.timestamp}." + (" EMULATED: not a device's own speed."
                                                                   if env.emulated else ""))
    s.table([{"format": r.format, "runtime": r.runtime, "batch": r.batch, "threads": r.threads,
              "p50 µs/img": r.latency_per_image_us["p50"], "p90 µs/img": r.latency_per_image_us["p90"],
              "p99 µs/img": r.latency_per_image_us["p99"], "images/s": r.throughput_ips, "KB": round(r.size_bytes / 1024, 1),
              "RSS MB": r.peak_rss_mb, "GMAC/s": r.gmacs,
              "of peak": f"{r.peak_share:.1%}" if r.peak_share is not None else None,
              "spread": "wide" if r.spread_warning else ""} for r in report.results],
            judge=lambda c, v: "warn" if c == "spread" and v else "")
    s.figure(plots.latency_figure(report.results, device_name(env)), "latency per format, batch and threads")
    for warning in report.warnings:
        s.text(f"warning: {warning}", "warning")
    for name, profile in (report.profiles or {}).items():
        rows = profile.get("ops") if isinstance(profile, dict) else profile
        if isinstance(rows, list) and rows:
            s.heading(f"{name}: time per operator, batch 1")
            s.table(rows[:20])


def firmware(run: Run) -> Section:
    s, report = _opened("firmware", "Firmware (TFLite Micro)", FirmwareReport, run.firmware.report,
                        f"edgefashion firmware {run.root}")
    if report is None:
        return s
    s.pairs({"model": f"{report.model} ({report.model_bytes:,} bytes)",
             "arena": f"{report.arena_bytes:,} bytes measured, {report.arena_recommended_bytes:,} recommended",
             "accuracy on TFLM": f"{report.accuracy:.4f} on {report.images} images of {report.test_source}",
             "agreement with LiteRT's reference kernels": f"{report.agreement_vs_litert_reference:.4f} "
             f"({report.differing_values_vs_litert_reference} of {report.values} values differ, at most "
             f"{report.max_diff_steps} steps)",
             "time on this host": f"{report.ms_per_image} ms per image (TFLM's reference kernels)",
             "TFLM": report.tflm_version, "ops": ", ".join(f"{k}×{v}" for k, v in report.ops.items())})
    s.table([{"target": t.target, "board": t.description, "RAM needed": t.ram_needed, "RAM": t.ram_bytes,
              "flash needed": t.flash_needed, "flash": t.flash_bytes, "verdict": t.verdict, "why": t.why}
             for t in report.targets],
            judge=lambda c, v: {"fits": "good", "tight": "warn"}.get(v, "bad") if c == "verdict" else "")
    s.text(report.uncounted, "note")
    return s


def bundled(run: Run) -> Section:
    s = Section("bundle", "Bundle")
    if not run.bundle.is_file():
        s.missing = f"{run.bundle} not found: `edgefashion bundle {run.root}`"
        return s
    from .device.trust import SIGNATURE
    from .device.unpack import MANIFEST
    from .files import sha256_file
    try:
        with tarfile.open(run.bundle) as tar:
            members = {m.name: m.size for m in tar.getmembers() if m.isfile()}
            manifest = tar.extractfile(MANIFEST).read() if MANIFEST in members else b"{}"
    except (tarfile.TarError, OSError) as exc:
        s.missing = f"{run.bundle}: not readable ({exc})"
        return s
    import json
    try:
        files = json.loads(manifest).get("files", {})
    except ValueError:
        files = {}
    s.pairs({"file": f"{run.bundle.name} ({run.bundle.stat().st_size:,} bytes)", "sha256": sha256_file(run.bundle),
             "signed": "yes (Ed25519, manifest.sig)" if SIGNATURE in members else
             "no (`edgefashion bundle --sign KEY`)"})
    s.table([{"file": name, "bytes": size, "sha256": (files.get(name) or {}).get("sha256", "")[:16]}
             for name, size in members.items()])
    return s


# ---- a tune folder -------------------------------------------------------------------------------------

def tune_sections(folder: Path):
    from .host.tune import front_figure, front_rows
    tune = TuneDir(folder)
    result = _read(TuneReport, tune.report)
    if result is None:
        raise InputError(f"{tune.report}: not a readable tune report")
    s = Section("front", "Tune: the Pareto front")
    s.pairs({"study": result.study, "storage": result.storage, "trials": len(result.trials),
             "complete": sum(t.state == "COMPLETE" for t in result.trials),
             "budgets": ", ".join(f"{k} {v}" for k, v in result.budgets.items() if v is not None) or "none",
             "chosen": f"trial {result.chosen}" if result.chosen is not None else "none",
             "CPU": f"{result.cpu.model} ({result.cpu.int8_path})"})
    if result.verdict:
        s.text(result.verdict, "fail" if "WORSE" in result.verdict else "pass")
    s.figure(front_figure(result), "accuracy against latency of every trial")
    s.table(front_rows(result))
    trials = Section("trials", "Every trial")
    trials.table([{"trial": t.number, "state": t.state, "int8 val acc": t.accuracy, "p50 µs": t.latency_us,
                   "spread": t.latency_spread, "KB": round(t.size_bytes / 1024, 1) if t.size_bytes else None,
                   "inside budgets": {True: "yes", False: "no"}.get(t.feasible), "front": "yes" if t.on_front else "",
                   "measured on": t.measured_on, "host": t.host, "seconds": t.seconds} for t in result.trials])
    sections = [s, trials]
    if tune.best_run.config.is_file():
        _, _, best = run_sections(tune.best_run.root)
        for b in best:
            b.id, b.title = f"best-{b.id}", f"Chosen model: {b.title}"
        sections += [b for b in best if not b.missing]
    return f"edgefashion tune: {folder.name}", f"study {result.study} on {result.storage}", sections


# ---- a fleet folder ------------------------------------------------------------------------------------

def _device_of(details: dict) -> str | None:
    """CPU, machine, OS and int8 path from what `edgefashion info` said on the device."""
    info = (details or {}).get("info") or {}
    cpu = info.get("cpu") or {}
    parts = [cpu.get("model"), info.get("machine"), info.get("os"), cpu.get("int8_path") and f"int8 {cpu['int8_path']}"]
    return ", ".join(p for p in parts if p) or None


def fleet_sections(folder: Path):
    from .device import compare
    report = _read(FleetReport, folder / FLEET_REPORT)
    if report is None:
        raise InputError(f"{folder / FLEET_REPORT}: not a readable fleet report")
    s = Section("devices", f"Fleet: {report.command} on {len(report.devices)} device(s)")
    s.pairs({"inventory": report.inventory, "bundle": report.bundle, "bundle sha256": report.bundle_sha256,
             "seconds": report.seconds, "failed": len(report.failed)})
    s.table([{"device": d.device, "address": d.address, "result": "ok" if d.ok else "FAILED",
              "seconds": d.seconds, "what it is": _device_of(d.details), "why": d.cause or d.skipped}
             for d in report.devices],
            judge=lambda c, v: ("good" if v == "ok" else "bad") if c == "result" else "")
    sections = [s]
    files = [(d.device, folder / d.device / Path(f).name) for d in report.devices if d.ok for f in d.files]
    files = [(name, path) for name, path in files if path.is_file() and path.suffix == ".json"]
    if files:
        benches, verifies, _ = compare.load([p for _, p in files], [n for n, _ in files])
        if benches:
            c = Section("compare", "Devices side by side")
            batch, threads = min((r.batch, r.threads) for _, b in benches for r in b.results)
            rows = compare.compare_rows(benches, batch, threads)
            c.table([{"D": f"D{i + 1}", "device": label} for i, (label, _) in enumerate(benches)])
            c.table(rows)
            c.figure(plots.devices_figure([label for label, _ in benches],
                                          [bool(b.environment.emulated) for _, b in benches], rows, batch, threads),
                     "latency per device")
            sections.append(c)
            for label, bench in benches:
                d = Section(f"device-{len(sections)}", f"Latency on {label.split(':')[0]}")
                bench_section(d, bench)
                sections.append(d)
        if verifies:
            v = Section("accuracy", "Accuracy per device")
            rows = compare.accuracy_rows(verifies)
            v.table([{"V": f"V{i + 1}", "device": label} for i, (label, _) in enumerate(verifies)])
            v.table(rows)
            v.figure(plots.accuracy_figure([label for label, _ in verifies], rows), "accuracy per device")
            sections.append(v)
    return f"edgefashion fleet {report.command}: {folder.name}", f"inventory {report.inventory}", sections
