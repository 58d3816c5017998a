"""The fleet inventory: a TOML file of devices (stdlib tomllib), checked key by key.

    known_hosts = "fleet_known_hosts"          # optional; else ~/.ssh/known_hosts
    [devices.pi-lab-1]
    host = "192.168.1.20"
    port = 22                                   # optional
    user = "pi"
    identity = "~/.ssh/id_ed25519"
    edgefashion = "/home/pi/ef/bin/edgefashion" # the command on the device
    dir = "/home/pi/edgefashion"                # where bundles and results go on the device
    tags = ["lab"]                              # optional: --tag picks devices
    trust = ["/home/pi/keys/release.pub"]       # optional: --trust for selftest, paths on the device
    env = { EDGEFASHION_EMULATED = "qemu-aarch64" }  # optional: environment of its commands

Paths on the workstation (known_hosts, identity) are relative to the inventory's folder.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
REQUIRED = {"host": str, "user": str, "identity": str, "edgefashion": str, "dir": str}
OPTIONAL = {"port": int, "tags": list, "trust": list, "env": dict, "connect_timeout": (int, float)}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")  # a device name is also a folder name


@dataclass(frozen=True)
class Device:
    name: str
    host: str
    user: str
    identity: Path           # on the workstation
    edgefashion: str         # the command on the device
    dir: str                 # on the device
    port: int = 22
    tags: tuple[str, ...] = ()
    trust: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    connect_timeout: float = 10.0

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Inventory:
    path: Path
    known_hosts: Path
    devices: list[Device]

    def select(self, names: list[str] | None = None, tags: list[str] | None = None) -> list[Device]:
        """The devices named (--device) and tagged (--tag); all of them when neither is given."""
        known = {d.name for d in self.devices}
        unknown = [n for n in names or [] if n not in known]
        if unknown:
            raise InputError(f"{self.path}: no device {unknown[0]!r} (devices: {', '.join(sorted(known))})")
        chosen = [d for d in self.devices if (not names or d.name in names) and (not tags or set(tags) & set(d.tags))]
        if not chosen:
            raise InputError(f"{self.path}: no device has tag {', '.join(tags or [])}")
        return chosen


def load(path: Path) -> Inventory:
    """The inventory at `path`, or InputError naming the file and the key that is wrong."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: inventory not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the inventory ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    extra = set(raw) - {"known_hosts", "devices"}
    if extra:
        raise InputError(f"{path}: unknown top-level key {sorted(extra)[0]!r} (expected known_hosts and [devices.NAME])")
    devices = raw.get("devices")
    if not isinstance(devices, dict) or not devices:
        raise InputError(f"{path}: no devices (expected at least one [devices.NAME] table)")
    known_hosts = raw.get("known_hosts", str(DEFAULT_KNOWN_HOSTS))
    if not isinstance(known_hosts, str):
        raise InputError(f"{path}: known_hosts is {type(known_hosts).__name__}, expected a file path")
    return Inventory(path, _local(path, known_hosts), [_device(path, name, entry) for name, entry in devices.items()])


def _local(inventory: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else inventory.parent / p


def _device(path: Path, name: str, entry) -> Device:
    where = f"{path}: devices.{name}"
    if not NAME.match(name):
        raise InputError(f"{where}: a device name is letters, digits, '.', '_' and '-' (it names a result folder)")
    if not isinstance(entry, dict):
        raise InputError(f"{where} is not a table (expected [devices.{name}] with host, user, ...)")
    unknown = set(entry) - set(REQUIRED) - set(OPTIONAL)
    if unknown:
        raise InputError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join([*REQUIRED, *OPTIONAL])})")
    for key, kind in REQUIRED.items():
        if key not in entry:
            raise InputError(f"{where}: {key} is missing")
    for key, kind in {**REQUIRED, **OPTIONAL}.items():
        if key in entry and (not isinstance(entry[key], kind) or isinstance(entry[key], bool)):
            raise InputError(f"{where}.{key} = {entry[key]!r:.60}: expected {_kind(kind)}")
        if key in REQUIRED and not entry[key].strip():
            raise InputError(f"{where}.{key} is empty")
    port = entry.get("port", 22)
    if not 0 < port < 65536:
        raise InputError(f"{where}.port = {port}: expected 1 to 65535")
    for key in ("tags", "trust"):
        if not all(isinstance(v, str) for v in entry.get(key, [])):
            raise InputError(f"{where}.{key}: expected a list of strings")
    env = entry.get("env", {})
    if not all(isinstance(v, str) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k) for k, v in env.items()):
        raise InputError(f"{where}.env: expected NAME = \"value\" pairs")
    timeout = float(entry.get("connect_timeout", 10.0))
    if timeout <= 0:
        raise InputError(f"{where}.connect_timeout = {timeout}: expected seconds > 0")
    return Device(name=name, host=entry["host"], user=entry["user"], identity=_local(path, entry["identity"]),
                  edgefashion=entry["edgefashion"], dir=entry["dir"], port=port, tags=tuple(entry.get("tags", [])),
                  trust=tuple(entry.get("trust", [])), env=dict(env), connect_timeout=timeout)


def _kind(kind) -> str:
    names = {str: "a string", int: "an integer", list: "a list", dict: "a table", (int, float): "a number"}
    return names[kind]
