"""Tables for the terminal and for markdown (the plots are in plots.py)."""

from __future__ import annotations

from .console import printable


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
