"""Typed JSON: a manifest is a dataclass with a schema_version, and `read` checks every field
against its annotation, turning a missing key or a wrong type into one error naming the file and
the field. The schemas themselves are in schemas.py; the run's paths in rundir.py."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

from .errors import InputError
from .files import read_json, write_json

SCHEMA_VERSION = 1


class ManifestError(InputError):
    """A manifest with a missing key, a wrong type or an unknown schema version."""


def _load(value, tp, where: str):
    """`value` checked against the annotation `tp` (dataclasses built from dicts), or ManifestError."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _load(value, option, where)
            except ManifestError:
                continue
        raise ManifestError(f"{where} is {_kind(value)}, expected {_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ManifestError(f"{where} is {_kind(value)}, expected an object")
        return _build(tp, value, where)
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise ManifestError(f"{where} is {_kind(value)}, expected a list")
        return [_load(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ManifestError(f"{where} is {_kind(value)}, expected an object")
        return {k: _load(v, args[1], f"{where}.{k}") for k, v in value.items()} if args else value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ManifestError(f"{where} is {_kind(value)}, expected {_name(tp)}")


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    """A schema class's resolved annotations: once per class, not once per object read."""
    return typing.get_type_hints(cls)


def _build(cls, obj: dict, where: str):
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in obj:
            kwargs[f.name] = _load(obj[f.name], hints[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ManifestError(f"{where}.{f.name} is missing")
    return cls(**kwargs)


def _kind(value) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r:.40}"


def _name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


class Manifest:
    """Base of the JSON manifests: to_json / from_json / read / write, with schema_version."""

    WHAT: ClassVar[str] = "manifest"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj, source: str):
        version = obj.get("schema_version", SCHEMA_VERSION) if isinstance(obj, dict) else None
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise ManifestError(f"{source}: schema_version {version} is newer than this edgefashion reads "
                                f"({SCHEMA_VERSION}); upgrade edgefashion")
        try:
            return _load(obj, cls, "")
        except ManifestError as exc:
            problem = str(exc).lstrip(".")
            where = "the whole file" if problem.startswith(" is ") else "field "
            raise ManifestError(f"{source}: {cls.WHAT}: {where}{problem}") from None

    @classmethod
    def read(cls, path):
        return cls.from_json(read_json(path, cls.WHAT), str(path))

    @classmethod
    def written_at(cls, path) -> bool:
        """Is `path` one of these, written by edgefashion (so replacing it replaces its own output)?"""
        try:
            cls.read(path)
            return True
        except InputError:
            return False

    def write(self, path) -> Path:
        return write_json(path, self.to_json())
