"""`edgefashion compare`: bench.json files from several machines, side by side (device-safe)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..report import _pyplot, _save
from ..rundir import FLOAT_OF, BenchReport


def device_label(report: BenchReport, path: Path) -> str:
    """Board or CPU, cores, machine, governor, and whether it was emulated: what the numbers belong to."""
    env = report.environment
    parts = [env.board_model or env.cpu_model or "unknown CPU", f"{env.cores or '?'} cores", env.machine,
             f"governor {env.cpu_governor or 'unknown'}"]
    if env.emulated:
        parts.append(f"EMULATED ({env.emulated})")
    runtimes = sorted({r.runtime for r in report.results})
    return f"{path.name}: " + ", ".join(parts) + f"; runtimes {', '.join(runtimes)}"


def load(paths) -> list[tuple[str, BenchReport]]:
    if len(paths) < 1:
        raise InputError("compare needs at least one bench.json")
    return [(device_label(report, Path(p)), report) for p in paths for report in [BenchReport.read(p)]]


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
    plt = _pyplot()
    if plt is None:
        return None
    latency = [r for r in rows if "/" not in r["format"]]
    fig, ax = plt.subplots(figsize=(max(7, 1.8 * len(latency)), 4.5))
    width = 0.8 / len(reports)
    for i, (label, report) in enumerate(reports):
        values = [r[f"D{i + 1}"] or 0 for r in latency]
        xs = [x + (i - (len(reports) - 1) / 2) * width for x in range(len(latency))]
        ax.bar(xs, values, width=width, label=f"D{i + 1} {label}", hatch="//" if report.environment.emulated else None)
    ax.set_xticks(list(range(len(latency))), [r["format"] for r in latency])
    ax.set_yscale("log")
    ax.set_ylabel(f"p50 µs per image (batch {batch}, {threads} thread)")
    ax.set_title("devices side by side (hatched: emulated, not a device number)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
