"""`edgefashion compare`: bench.json, verify.json and `selftest --json` files from several machines,
side by side (device-safe). Each file is recognised by its content."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..files import read_json
from .. import plots
from ..schemas import BenchReport, SelftestReport, VerifyReport
from ..formats import FLOAT_OF


def device_label(report: BenchReport, name: str) -> str:
    """Board or CPU, cores, machine, governor, and whether it was emulated: what the numbers belong to."""
    env = report.environment
    parts = [env.board_model or env.cpu_model or "unknown CPU", f"{env.cores or '?'} cores", env.machine,
             f"governor {env.cpu_governor or 'unknown'}"]
    if env.emulated:
        parts.append(f"EMULATED ({env.emulated})")
    runtimes = sorted({r.runtime for r in report.results})
    return f"{name}: " + ", ".join(parts) + f"; runtimes {', '.join(runtimes)}"


def file_names(paths: list[Path]) -> list[str]:
    """What to call each file: its name, or with its folder where two files share a name (two devices'
    bench.json)."""
    names = [p.name for p in paths]
    return [f"{p.parent.name or '.'}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def load(paths, names: list[str] | None = None) -> tuple[list, list, list]:
    """(bench, verify, selftest) files, each as (label, content); `names` label them (default: file_names)."""
    benches, verifies, selftests = [], [], []
    paths = [Path(p) for p in paths]
    for path, name in zip(paths, names or file_names(paths)):
        obj = read_json(path, "bench.json, verify.json or selftest --json output")
        if isinstance(obj, dict) and "results" in obj:
            report = BenchReport.from_json(obj, str(path))
            benches.append((device_label(report, name), report))
        elif isinstance(obj, dict) and "reference" in obj and "models" in obj:
            report = VerifyReport.from_json(obj, str(path))
            verifies.append((f"{name}: {report.cpu.model or 'unknown CPU'}, int8 path {report.cpu.int8_path}; "
                             f"{report.reference.samples} images of {report.reference.source}", report))
        elif isinstance(obj, dict) and "checks" in obj:
            report = SelftestReport.from_json(obj, str(path))
            selftests.append((f"{name}: {report.cpu.model or 'unknown CPU'}, {report.cpu.machine}, int8 path "
                              f"{report.cpu.int8_path}", report))
        else:
            raise InputError(f"{path}: not a bench.json, verify.json or selftest --json output")
    return benches, verifies, selftests


def accuracy_rows(verifies: list) -> list[dict]:
    """Per format: test accuracy on each device's verify.json."""
    accuracies = [r.accuracies() for _, r in verifies]  # once per file: linear in what was read
    formats = list(dict.fromkeys(f for a in accuracies for f in a))
    return [{"format": fmt, **{f"V{i + 1}": a.get(fmt) for i, a in enumerate(accuracies)}} for fmt in formats]


def selftest_rows(selftests: list) -> list[dict]:
    rows = []
    for i, (label, report) in enumerate(selftests):
        rows.append({"device": f"S{i + 1}", "passed": len(report.checks) - len(report.failed) - report.skipped,
                     "failed": len(report.failed), "skipped": report.skipped,
                     "result": "PASS" if report.passed else "FAIL"})
    return rows


def compare_rows(reports: list[tuple[str, BenchReport]], batch: int, threads: int) -> list[dict]:
    """Per format: p50 µs per image on each device; then the int8/float ratio of each family."""
    names = [f"D{i + 1}" for i in range(len(reports))]
    p50 = [{r.format: r.latency_per_image_us["p50"] for r in report.results
            if r.batch == batch and r.threads == threads} for _, report in reports]
    formats = [f for f in ("tflite-int8", "tflite-f32", "onnx-int8", "onnx-f32") if any(f in d for d in p50)]
    if not formats:
        raise InputError(f"no results at batch {batch} and {threads} thread(s) in these files (--batch, --threads)")
    rows = [{"format": fmt, **{n: d.get(fmt) for n, d in zip(names, p50)}} for fmt in formats]
    for q, f in FLOAT_OF.items():
        if q in formats and f in formats:
            rows.append({"format": f"{q.split('-')[0]} int8/f32",
                         **{n: round(d[q] / d[f], 3) if q in d and f in d else None for n, d in zip(names, p50)}})
    return rows


def plot(reports: list[tuple[str, BenchReport]], rows: list[dict], path: Path, batch: int, threads: int):
    return plots.save(plots.devices_figure([label for label, _ in reports],
                                           [bool(r.environment.emulated) for _, r in reports], rows, batch, threads),
                      path)


def plot_accuracy(verifies: list, rows: list[dict], path: Path):
    return plots.save(plots.accuracy_figure([label for label, _ in verifies], rows), path)
