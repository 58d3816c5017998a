"""Tables for the terminal and for markdown (the plots are in plots.py)."""

from __future__ import annotations

from .console import printable


def table(rows: list[dict]) -> str:
    """A plain aligned text table from a list of dicts."""
    if not rows:
        return "(nothing)"
    columns = list(rows[0])
    cells = columns_text(rows, columns)
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
    out.extend("| " + " | ".join(r) + " |" for r in columns_text(rows, columns))
    return "\n".join(out) + "\n"


def columns_text(rows: list[dict], columns: list) -> list[list[str]]:
    """Each row's cells as text, a column's plain fractions with one number of decimals (0.7800 beside
    0.7806, not 0.78)."""
    decimals = {c: _decimals([row.get(c) for row in rows]) for c in columns}
    return [[_fmt(row.get(c), decimals[c]) for c in columns] for row in rows]


def _plain(value) -> bool:
    return isinstance(value, float) and (value == 0 or 1e-3 <= abs(value) < 10)


def _decimals(values: list) -> int | None:
    """The decimals (up to 4) the plain floats of a column need; None when it has none."""
    plain = [f"{v:.4f}".rstrip("0").split(".")[1] for v in values if _plain(v)]
    return max(map(len, plain)) if plain else None


def _fmt(value, decimals: int | None = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if _plain(value) and decimals is not None:
            return f"{value + 0.0:.{decimals}f}"  # + 0.0: no "-0.00"
        if value == 0:
            return "0"
        if abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:.1f}"
    return printable(str(value))  # file names and fields read from files: no escape sequence reaches the terminal
