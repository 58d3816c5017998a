"""Every plot edgefashion draws, as a matplotlib figure: saved as PNG by the stage that makes it, and
inlined as SVG in report.html. matplotlib is imported only when a plot is drawn (not on a device
without it: the figure functions then return None)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from .files import atomic_path

LOG_SPAN = 20  # values spanning more than this factor get a log axis, with plain labelled ticks


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None where it is not installed (a device)."""
    try:
        import matplotlib
    except ImportError:
        print("note: matplotlib not installed, plot skipped", file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


SOFTWARE = b"edgefashion plot"  # in each PNG's Software field: a later command knows the file is its own


def save(fig, path) -> Path | None:
    """Write `fig` as a PNG at `path` (atomically) and close it; None when there is no figure."""
    if fig is None:
        return None
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Software": SOFTWARE.decode()})
    _close(fig)
    return Path(path)


def is_ours(path) -> bool:
    """Whether the PNG at `path` was written by `save` (its text chunks come before the image data)."""
    with open(path, "rb") as f:
        return SOFTWARE in f.read(4096)


def svg(fig) -> str:
    """`fig` as an inline <svg> element (text kept as paths: no font needed where it is viewed)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "edgefashion"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight")
    _close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # without the XML prolog and doctype: it goes inside HTML


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def plain_log_axis(ax, which: str, values) -> None:
    """A log scale on `ax`'s "x" or "y" axis with ticks at 1-2-5 steps written as plain numbers
    (20, 50, 100, not 2×10¹), where `values` span more than LOG_SPAN; else linear from zero."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    values = [v for v in values if v and v > 0]
    if not values or max(values) / min(values) <= LOG_SPAN:
        return
    getattr(ax, f"set_{which}scale")("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def history_figure(history: dict, best_epoch: int | None = None):
    """Loss and accuracy per epoch (whole epochs on the axis), the kept (best) epoch marked; accuracy
    never drawn past 1, and one epoch shown as its values rather than an axis around one dot."""
    plt = pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import MaxNLocator

    epochs = list(range(1, len(history["loss"]) + 1))
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
        series = [(f"train {key}", history[key], "o-")]
        if history.get(f"val_{key}"):
            series.append((f"validation {key}", history[f"val_{key}"], "s-"))
        for label, values, style in series:
            ax.plot(epochs, values, style, label=label)
            if len(epochs) == 1:
                ax.annotate(f"{values[0]:.4f}", (1, values[0]), textcoords="offset points", xytext=(8, 0),
                            va="center")
        if best_epoch and len(epochs) > 1:
            ax.axvline(best_epoch, color="#2ca02c", linestyle="--", label=f"kept: epoch {best_epoch}")
        values = [v for _, vs, _ in series for v in vs]
        low, high = min(values), max(values)
        pad = max((high - low) * 0.1, 0.02 if key == "accuracy" else 0.05 * max(abs(high), 1e-3))
        ax.set_ylim(max(low - pad, 0), min(high + pad, 1.0) if key == "accuracy" else high + pad)
        ax.set_xlim(0.5, len(epochs) + 0.5)
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(key + (" (validation: the split held out of training)" if len(series) > 1 else ""),
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_figure(matrix, labels, title: str, float_matrix=None, float_name: str = ""):
    """The confusion matrix of one model; beside it, for an int8 model, int8 minus its float model:
    red where int8 puts more images in a cell, blue where fewer (on the diagonal, red is more right)."""
    plt = pyplot()
    if plt is None:
        return None
    matrix = np.asarray(matrix)
    panels = [(matrix, "Blues", title, "images")]
    if float_matrix is not None:
        panels.append((matrix - np.asarray(float_matrix), "RdBu_r",
                       f"int8 minus {float_name}\nred: more images with int8, blue: fewer; diagonal = correct",
                       f"images, int8 − {float_name}"))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 6.3), squeeze=False)
    for ax, (values, cmap, name, unit) in zip(axes[0], panels):
        limit = max(int(np.abs(values).max()), 1)
        im = ax.imshow(values, cmap=cmap, vmin=-limit if cmap == "RdBu_r" else 0, vmax=limit)
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name, fontsize=10)
        for (i, j), value in np.ndenumerate(values):
            if value or cmap == "Blues":
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                        color="white" if abs(value) > limit / 2 else "black")
        fig.colorbar(im, ax=ax, label=unit)
    return fig


def latency_figure(results: list, device: str = ""):
    """p50 per image (bar), up to p90 (whisker) and p99 (marker) of bench results (objects with format,
    batch, threads, latency_per_image_us): one group per format, one colour per batch and threads, a
    log axis with plain ticks where the values span decades; the title names the device."""
    plt = pyplot()
    if plt is None:
        return None
    formats = list(dict.fromkeys(r.format for r in results))
    configs = sorted({(r.batch, r.threads) for r in results})
    fig, ax = plt.subplots(figsize=(max(6.5, 1.1 * len(formats) * max(len(configs), 2) * 0.55 + 2), 4.5))
    width = 0.8 / len(configs)
    colours = plt.get_cmap("tab10")
    by_key = {(r.format, r.batch, r.threads): r for r in results}
    for c, (batch, threads) in enumerate(configs):
        xs, p50, p90, p99 = [], [], [], []
        for x, fmt in enumerate(formats):
            r = by_key.get((fmt, batch, threads))
            if r is not None:
                xs.append(x + (c - (len(configs) - 1) / 2) * width)
                p50.append(r.latency_per_image_us["p50"])
                p90.append(r.latency_per_image_us["p90"])
                p99.append(r.latency_per_image_us["p99"])
        label = f"batch {batch}, {threads} thread{'s' if threads > 1 else ''}"
        ax.bar(xs, p50, width=width * 0.9, color=colours(c % 10), label=label)
        ax.errorbar(xs, p50, yerr=[[0] * len(xs), [b - a for a, b in zip(p50, p90)]], fmt="none", ecolor="k",
                    capsize=3, linewidth=1)
        ax.scatter(xs, p99, marker="v", color="k", s=14, zorder=3)
    ax.errorbar([], [], yerr=[], fmt="none", ecolor="k", capsize=3, label="whisker: up to p90")
    ax.scatter([], [], marker="v", color="k", s=14, label="p99")
    every = [v for r in results for v in (r.latency_per_image_us["p50"], r.latency_per_image_us["p99"])]
    plain_log_axis(ax, "y", every)
    if ax.get_yscale() == "log":
        ax.set_ylim(bottom=min(every) / 1.5)
    ax.set_xticks(range(len(formats)), formats)
    ax.set_ylabel("µs per image (p50 bar)" + (", log scale" if ax.get_yscale() == "log" else ""))
    ax.set_title("inference latency" + (f" on {device}" if device else ""), fontsize=10)
    ax.grid(axis="y", alpha=0.3, which="major")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def devices_figure(labels: list[str], emulated: list[bool], rows: list[dict], batch: int, threads: int):
    """compare: p50 µs per image per format, one bar per device (D1, D2, …), values written on the bars;
    hatched bars (and the title's word for them) only where a device was emulated."""
    plt = pyplot()
    if plt is None:
        return None
    latency = [r for r in rows if "/" not in r["format"]]
    fig, ax = plt.subplots(figsize=(max(7, 1.8 * len(latency)), 4.5 + 0.25 * len(labels)))
    width = 0.8 / len(labels)
    values_all = []
    for i, (label, emu) in enumerate(zip(labels, emulated)):
        values = [r.get(f"D{i + 1}") for r in latency]
        xs = [x + (i - (len(labels) - 1) / 2) * width for x in range(len(latency))]
        shown = [(x, v) for x, v in zip(xs, values) if v]
        bars = ax.bar([x for x, _ in shown], [v for _, v in shown], width=width * 0.9,
                      label=f"D{i + 1}: {label}", hatch="//" if emu else None)
        ax.bar_label(bars, [f"{v:.0f}" if v >= 10 else f"{v:.1f}" for _, v in shown], fontsize=7, padding=1)
        values_all.extend(v for _, v in shown)
    plain_log_axis(ax, "y", values_all)
    ax.set_ylim(bottom=min(values_all) / 2 if ax.get_yscale() == "log" else 0)
    ax.set_xticks(list(range(len(latency))), [r["format"] for r in latency])
    ax.set_ylabel(f"p50 µs per image, batch {batch}, {threads} thread{'s' if threads > 1 else ''}")
    ax.set_title("devices side by side" + (" (hatched: emulated, not a device's own speed)" if any(emulated) else ""),
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", alpha=0.3)
    return fig


def accuracy_figure(labels: list[str], rows: list[dict]):
    """compare of verify files: test accuracy per format, one bar per device (V1, V2, …)."""
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(max(7, 1.8 * len(rows)), 4.5 + 0.25 * len(labels)))
    width = 0.8 / len(labels)
    values_all = []
    for i, label in enumerate(labels):
        shown = [(x + (i - (len(labels) - 1) / 2) * width, r.get(f"V{i + 1}")) for x, r in enumerate(rows)]
        shown = [(x, v) for x, v in shown if v is not None]
        bars = ax.bar([x for x, _ in shown], [v for _, v in shown], width=width * 0.9, label=f"V{i + 1}: {label}")
        ax.bar_label(bars, [f"{v:.4f}" for _, v in shown], fontsize=7, padding=1)
        values_all.extend(v for _, v in shown)
    low = min(values_all, default=0)
    ax.set_ylim(max(0, low - 0.05), min(1.0, max(values_all, default=1) + 0.02))
    ax.set_xticks(list(range(len(rows))), [r["format"] for r in rows])
    ax.set_ylabel("test accuracy (axis starts above 0)" if low > 0.05 else "test accuracy")
    ax.set_title("accuracy per format on each device", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", alpha=0.3)
    return fig


def front_figure(trials: list, seed, chosen: int | None, max_latency_us: float | None, device: str):
    """tune: validation accuracy against latency; marker area = model size (with a key); the front
    numbered, the seed CNN and the chosen trial marked."""
    plt = pyplot()
    if plt is None:
        return None
    done = [t for t in trials if t.state == "COMPLETE" and t.accuracy is not None and t.latency_us]
    area = lambda size: max(size / 1024, 6) ** 0.5 * 6  # noqa: E731  (area ∝ √KB keeps 5 KB and 1 MB both visible)
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    for group, colour, label in (([t for t in done if not t.on_front], "#bbbbbb", "trial"),
                                 ([t for t in done if t.on_front and not t.feasible], "#ff7f0e",
                                  "Pareto front, outside a budget"),
                                 ([t for t in done if t.on_front and t.feasible], "#1f77b4",
                                  "Pareto front, inside the budgets")):
        if group:
            ax.scatter([t.latency_us for t in group], [t.accuracy for t in group], c=colour, label=label,
                       s=[area(t.size_bytes) for t in group], alpha=0.6, edgecolors="k", linewidths=0.4)
    for t in done:
        if t.on_front:
            ax.annotate(str(t.number), (t.latency_us, t.accuracy), textcoords="offset points", xytext=(5, 4),
                        fontsize=7)
    if seed is not None and seed.latency_us:
        ax.scatter([seed.latency_us], [seed.accuracy], marker="*", s=300, c="#d62728", edgecolors="k",
                   label=f"seed CNN ({seed.size_bytes / 1024:.0f} KB)" if seed.size_bytes else "seed CNN")
    pick = next((t for t in done if t.number == chosen), None)
    if pick is not None:
        ax.scatter([pick.latency_us], [pick.accuracy], s=area(pick.size_bytes) * 2.5, facecolors="none",
                   edgecolors="#2ca02c", linewidths=2, label=f"chosen: trial {pick.number}")
    if max_latency_us:
        ax.axvline(max_latency_us, color="#2ca02c", linestyle="--", label=f"latency budget {max_latency_us:g} µs")
    for kb in (10, 100, 1000):  # the size key
        ax.scatter([], [], s=area(kb * 1024), c="white", edgecolors="k", linewidths=0.4, label=f"{kb:g} KB model")
    xs = [t.latency_us for t in done] + ([seed.latency_us] if seed is not None and seed.latency_us else [])
    plain_log_axis(ax, "x", xs)
    ax.set_xlabel(f"int8 p50 latency, batch 1, 1 thread (µs, {device})")
    ax.set_ylabel("int8 validation accuracy")
    ax.set_title("tune: accuracy against latency; marker area = int8 model size; numbers = trials on the front",
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), labelspacing=1.3)
    ax.grid(alpha=0.3)
    return fig
