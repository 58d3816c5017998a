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
            metavar: str | None = None, in_run: bool | str = True):
    """A dataclass field that is also a command-line option. `in_run`: offered by `edgefashion run`
    under its own name (True), not offered there (False: the stage's default), or the name of the
    run option it takes its value from (verify's --data is the run's --test-data)."""
    metadata = {"help": help, "flag": flag, "type": type, "choices": choices, "metavar": metavar, "in_run": in_run}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def option_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def nested_settings(cls) -> list[dataclasses.Field]:
    """Fields that are settings classes of their own (export's and verify's Gates)."""
    return [f for f in dataclasses.fields(cls) if f.default_factory is not MISSING
            and dataclasses.is_dataclass(f.default_factory) and option_fields(f.default_factory)]


def default_of(f: dataclasses.Field):
    return f.default if f.default is not MISSING else f.default_factory()


def run_name(f: dataclasses.Field) -> str | None:
    """The dest of a setting among `edgefashion run`'s options, or None where run does not offer it."""
    in_run = f.metadata["in_run"]
    return None if in_run is False else f.name if in_run is True else in_run


def add_options(parser: argparse.ArgumentParser, cls, *, for_run: bool = False, seen: set | None = None) -> None:
    """One option per `setting` field of `cls` and of its nested settings, default and help from the
    field. `for_run`: only what `run` offers, under its run name, and absent from the parsed
    arguments unless given (so a resumed run can tell a given setting from a default); `seen`:
    names already added by another stage, shared rather than repeated."""
    seen = set() if seen is None else seen
    for f in option_fields(cls):
        dest = run_name(f) if for_run else f.name
        if dest is None or dest in seen:
            continue
        seen.add(dest)
        meta, default = f.metadata, default_of(f)
        flag = meta["flag"] or "--" + dest.replace("_", "-")
        shown = f" (default {_show(default)})" if default is not None else ""
        kwargs = {"dest": dest, "default": argparse.SUPPRESS if for_run else default, "help": meta["help"] + shown}
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", **kwargs)
            continue
        kwargs["type"] = meta["type"] or DEFAULT_TYPES.get(type(default), str)
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        kwargs["metavar"] = meta["metavar"] or flag.lstrip("-").replace("-", "_").upper()
        parser.add_argument(flag, **kwargs)
    for f in nested_settings(cls):
        add_options(parser, f.default_factory, for_run=for_run, seen=seen)


def from_args(cls, args: argparse.Namespace, **overrides):
    """An instance of `cls` from the parsed options it declares (its nested settings too), plus `overrides`."""
    return cls(**{**given(cls, vars(args)), **overrides})


def given(cls, values: dict, for_run: bool = False) -> dict:
    """The fields of `cls` that `values` holds, keyed by option dest; nested settings are built whole,
    or, `for_run`, left as {field: value} of what was given (the rest keeps the run's recorded values)."""
    out = {}
    for f in option_fields(cls):
        dest = run_name(f) if for_run else f.name
        if dest is not None and dest in values:
            out[f.name] = values[dest]
    for f in nested_settings(cls):
        inner = given(f.default_factory, values, for_run)
        if inner:
            out[f.name] = inner if for_run else f.default_factory(**inner)
    return out


def plain(config) -> dict:
    """A config as JSON-ready values (paths as strings), for config.json and pipeline.json."""
    return {k: _plain(v) for k, v in dataclasses.asdict(config).items()}


def settings_of(config) -> dict:
    """What a stage was run with, as JSON: its settings and nested settings (no paths, no verbosity)."""
    names = {f.name for f in option_fields(type(config))} | {f.name for f in nested_settings(type(config))}
    return {k: v for k, v in plain(config).items() if k in names}


def from_plain(cls, values: dict):
    """The inverse of `settings_of`: an instance of `cls` from recorded JSON values (unknown keys of
    an older edgefashion are left out; what is missing takes its default)."""
    kwargs = {}
    nested = {f.name: f.default_factory for f in nested_settings(cls)}
    for f in option_fields(cls) + [f for f in dataclasses.fields(cls) if f.name in nested]:
        if f.name not in values:
            continue
        value, default = values[f.name], default_of(f)
        if f.name in nested:
            value = from_plain(nested[f.name], value or {})
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        elif isinstance(value, str) and "Path" in str(f.type):
            value = Path(value)
        kwargs[f.name] = value
    return cls(**kwargs)


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


THREADS_HELP = "interpreter threads"


def threads_setting(in_run: bool | str = True):
    """The --threads option of a stage's settings (verify, selftest, predict): one interpreter thread count."""
    return setting(1, THREADS_HELP, type=thread_count, in_run=in_run)


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


def to_flags(config, skip: tuple[str, ...] = ()) -> list[str]:
    """The command-line flags that give `config` again (only the settings that differ from their
    defaults): for running the same command elsewhere, e.g. on a device of the fleet."""
    flags = []
    for f in option_fields(type(config)):
        value = getattr(config, f.name)
        if f.name in skip or value == default_of(f):
            continue
        flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            flags += [flag] if value else []
        else:
            flags += [flag, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    for f in nested_settings(type(config)):
        flags += to_flags(getattr(config, f.name), skip)
    return flags
