"""Tables for the terminal and plots (matplotlib is imported only when a plot is drawn)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .console import printable
from .files import atomic_path


def table(rows: list[dict]) -> str:
    """A plain aligned text table from a list of dicts."""
    if not rows:
        return "(nothing)"
    columns = list(rows[0])
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.rjust(w) if i else v.ljust(w)  # noqa: E731
                                    for i, (v, w) in enumerate(zip(values, widths)))
    out = [line(columns), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(nothing)\n"
    columns = list(rows[0])
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out.extend("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows)
    return "\n".join(out) + "\n"


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:.1f}"
    return printable(str(value))  # file names and fields read from files: no escape sequence reaches the terminal


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


def save_figure(fig, path) -> Path | None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return Path(path)


def plot_history(history: dict, path, best_epoch: int | None = None) -> Path | None:
    """Loss and accuracy per epoch (whole epochs on the axis), the kept (best) epoch marked."""
    plt = pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import MaxNLocator

    epochs = range(1, len(history["loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
        ax.plot(epochs, history[key], "o-", label=f"train {key}")
        if history.get(f"val_{key}"):
            ax.plot(epochs, history[f"val_{key}"], "s-", label=f"validation {key}")
        if best_epoch:
            ax.axvline(best_epoch, color="#2ca02c", linestyle="--", label=f"kept: epoch {best_epoch}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def plot_confusion(matrix, labels, title: str, path, float_matrix=None, float_name: str = "") -> Path | None:
    """The confusion matrix of one model; beside it, for an int8 model, int8 minus its float model
    (red: the int8 model puts more images in that cell, blue: fewer)."""
    plt = pyplot()
    if plt is None:
        return None
    matrix = np.asarray(matrix)
    panels = [(matrix, "Blues", title)]
    if float_matrix is not None:
        panels.append((matrix - np.asarray(float_matrix), "RdBu_r", f"int8 minus {float_name}"))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 6), squeeze=False)
    for ax, (values, cmap, name) in zip(axes[0], panels):
        limit = max(int(np.abs(values).max()), 1)
        im = ax.imshow(values, cmap=cmap, vmin=-limit if cmap == "RdBu_r" else 0, vmax=limit)
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
        for (i, j), value in np.ndenumerate(values):
            if value or cmap == "Blues":
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                        color="white" if abs(value) > limit / 2 else "black")
        fig.colorbar(im, ax=ax)
    return save_figure(fig, path)


def plot_latency(results: list, path, device: str = "") -> Path | None:
    """p50 per image with the p90 and p99 above it, for bench results (objects with format, batch,
    threads, latency_us); the title names the device."""
    plt = pyplot()
    if plt is None:
        return None
    names = [f"{r.format}\nb{r.batch} t{r.threads}" for r in results]
    p50 = [r.latency_us["p50"] / r.batch for r in results]
    p90 = [r.latency_us["p90"] / r.batch for r in results]
    p99 = [r.latency_us["p99"] / r.batch for r in results]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(results)), 4))
    xs = list(range(len(results)))
    ax.bar(xs, p50, width=0.6, label="p50")
    ax.errorbar(xs, p50, yerr=[[0] * len(xs), [b - a for a, b in zip(p50, p90)]], fmt="none", ecolor="k",
                capsize=4, label="up to p90")
    ax.scatter(xs, p99, marker="v", color="#d62728", zorder=3, label="p99")
    ax.set_xticks(xs, names, fontsize=8)
    ax.set_ylabel("µs per image")
    ax.set_title("inference latency" + (f" on {device}" if device else ""))
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
