"""Stage settings declared once: a dataclass field holds its default and help, and the command
line option is built from it (`add_options`), so a default is never said twice."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import MISSING, field
from pathlib import Path


def setting(default=None, help: str = "", *, flag: str | None = None, type=None, choices=None,
            metavar: str | None = None):
    """A dataclass field that is also a command-line option."""
    metadata = {"help": help, "flag": flag, "type": type, "choices": choices, "metavar": metavar}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def option_fields(cls, skip=()) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata and f.name not in skip]


def default_of(f: dataclasses.Field):
    return f.default if f.default is not MISSING else f.default_factory()


def add_options(parser: argparse.ArgumentParser, cls, skip=()) -> None:
    """One option per `setting` field of `cls` (except `skip`), its default and help from the field."""
    for f in option_fields(cls, skip):
        meta, default = f.metadata, default_of(f)
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        shown = f" (default {_show(default)})" if default is not None else ""
        kwargs = {"dest": f.name, "default": default, "help": meta["help"] + shown}
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", **kwargs)
            continue
        kwargs["type"] = meta["type"] or DEFAULT_TYPES.get(type(default), str)
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        kwargs["metavar"] = meta["metavar"] or flag.lstrip("-").replace("-", "_").upper()
        parser.add_argument(flag, **kwargs)


def from_args(cls, args: argparse.Namespace, **overrides):
    """An instance of `cls` from the parsed options it declares, plus `overrides`."""
    values = {f.name: getattr(args, f.name) for f in option_fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **overrides})


def plain(config) -> dict:
    """A config as JSON-ready values (paths as strings), for config.json and pipeline.json."""
    return {k: _plain(v) for k, v in dataclasses.asdict(config).items()}


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- argument types ------------------------------------------------------------------------

def _integer(text: str, minimum: int, refusal: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} {refusal}")
    return value


def positive_int(text: str) -> int:
    return _integer(text, 1, "is not a positive integer")


def non_negative_int(text: str) -> int:
    return _integer(text, 0, "is negative, expected 0 or more")


def _comma_list(text: str, item) -> list:
    """'1,8,32' -> [item('1'), item('8'), item('32')]; an empty list is item('') (its error)."""
    return [item(part) for part in text.split(",") if part.strip()] or [item(text)]


def int_list(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32], each a positive integer."""
    return _comma_list(text, positive_int)


def name_list(text: str) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b')."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def finite_float(text: str) -> float:
    """A number; NaN and infinity are refused (a NaN gate would pass everything)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative, expected 0 or more")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def fraction(text: str) -> float:
    """0.98 or 98 (a percentage) -> 0.98."""
    value = finite_float(text)
    value = value / 100 if 1 < value <= 100 else value
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction (0-1) or a percentage (0-100)")
    return value


MAX_THREADS_PER_CPU = 4


def max_threads() -> int:
    return MAX_THREADS_PER_CPU * (os.cpu_count() or 1)


def thread_count(text: str) -> int:
    """Interpreter threads: 1 to 4 per CPU. LiteRT crashes at 32,768; ONNX Runtime hangs far below."""
    value = positive_int(text)
    if value > max_threads():
        raise argparse.ArgumentTypeError(f"{value} threads, expected 1-{max_threads()} "
                                         f"({MAX_THREADS_PER_CPU} per CPU on this machine)")
    return value


def thread_list(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4], each a valid thread count."""
    return _comma_list(text, thread_count)


# Types for settings declared without one: numbers are finite, integers not negative (seeds, counts).
DEFAULT_TYPES = {float: finite_float, int: non_negative_int, Path: Path}
