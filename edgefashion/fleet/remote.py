"""One device over SSH (asyncssh): connect with the inventory's key and known_hosts, run a command
with a timeout, upload a file atomically, fetch one. Every failure is a DeviceError whose text is the
one line `fleet` prints for that device."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingDependency
from ..files import TEMP_MARK
from .inventory import Device


class DeviceError(Exception):
    """Why one device failed: one line, the device's name is added by the caller."""


def _asyncssh():
    try:
        import asyncssh
    except ImportError:
        raise MissingDependency("asyncssh (for edgefashion fleet)", "fleet") from None
    return asyncssh


def quote(path: str) -> str:
    """A device path for its shell; a leading ~/ still means the login's home."""
    if path == "~" or path.startswith("~/"):
        return '"$HOME"' + (("/" + shlex.quote(path[2:])) if path[2:] else "")
    return shlex.quote(path)


@dataclass
class Result:
    exit: int
    stdout: str
    stderr: str


class Session:
    """An open connection to one device."""

    def __init__(self, device: Device, conn):
        self.device, self.conn = device, conn

    async def run(self, command: str, timeout: float, what: str) -> Result:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.device.env.items())
        full = f"env {env} {command}" if env else command
        try:
            done = await asyncio.wait_for(self.conn.run(full, check=False), timeout)
        except asyncio.TimeoutError:
            raise DeviceError(f"timed out after {timeout:g} s running {what}") from None
        except _asyncssh().Error as exc:
            raise DeviceError(f"connection lost running {what} ({exc.reason})") from None
        code = done.exit_status if done.exit_status is not None else 255
        return Result(code, str(done.stdout or ""), str(done.stderr or ""))

    async def cleanup(self, command: str) -> None:
        """`command` run to the end even while Ctrl-C cancels the task around it (5 s at most, errors
        ignored): what an interrupted step leaves on the device goes."""
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self.conn.run(command)), 5)

    async def put_atomic(self, local: Path, remote: str, sha256: str, timeout: float) -> None:
        """`local` to the absolute device path `remote`: written under a hidden temporary name, its sha256
        checked on the device, then renamed into place. Never a half-copied file under its real name."""
        folder, name = remote.rsplit("/", 1)
        part = f"{folder}/.{name}.{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}.part"
        asyncssh = _asyncssh()
        moved = False
        try:
            async with self.conn.start_sftp_client() as sftp:
                await asyncio.wait_for(sftp.put(str(local), part), timeout)
            check = (f"got=$(sha256sum -- {shlex.quote(part)} | cut -c1-64) && [ \"$got\" = {sha256} ] && "
                     f"mv -f -- {shlex.quote(part)} {shlex.quote(remote)} || {{ echo \"sha256 $got\"; exit 3; }}")
            result = await self.run(check, timeout, "the sha256 check of the upload")
            if result.exit != 0:
                raise DeviceError(f"{name}: the copy on the device has {result.stdout.strip() or 'no sha256'}, "
                                  f"expected {sha256} (sha256sum missing or the transfer corrupted)")
            moved = True
        except asyncio.TimeoutError:
            raise DeviceError(f"timed out after {timeout:g} s uploading {name}") from None
        except asyncssh.SFTPError as exc:
            reason = str(exc.reason)
            if "space" in reason.lower() or getattr(exc, "code", None) == 14:  # FX_NO_SPACE_ON_FILESYSTEM
                raise DeviceError(f"disk full on the device writing {folder} ({reason})") from None
            raise DeviceError(f"upload of {name} to {folder} failed: {reason}") from None
        except asyncssh.Error as exc:
            raise DeviceError(f"connection lost uploading {name} ({exc.reason})") from None
        finally:
            if not moved:  # also on Ctrl-C: the temporary name goes, the real name was never written
                await self.cleanup(f"rm -f -- {shlex.quote(part)}")

    async def fetch(self, remote: str, local: Path, timeout: float) -> None:
        asyncssh = _asyncssh()
        try:
            async with self.conn.start_sftp_client() as sftp:
                await asyncio.wait_for(sftp.get(remote, str(local)), timeout)
        except asyncio.TimeoutError:
            raise DeviceError(f"timed out after {timeout:g} s fetching {remote}") from None
        except asyncssh.Error as exc:
            raise DeviceError(f"could not fetch {remote} ({exc.reason})") from None


@contextlib.asynccontextmanager
async def session(device: Device, known_hosts: Path):
    """A connection to `device`, its host key checked against `known_hosts`; closed on leaving."""
    asyncssh = _asyncssh()
    if not device.identity.is_file():
        raise DeviceError(f"identity {device.identity} not found on this workstation")
    if not known_hosts.is_file():
        raise DeviceError(f"known_hosts {known_hosts} not found: add the device's host key "
                          f"(ssh-keyscan -p {device.port} {device.host} >> {known_hosts}, then check its fingerprint)")
    try:
        conn = await asyncio.wait_for(asyncssh.connect(
            device.host, port=device.port, username=device.user, client_keys=[str(device.identity)],
            known_hosts=str(known_hosts), agent_path=None, config=[], connect_timeout=device.connect_timeout,
            passphrase=None), device.connect_timeout + 5)
    except asyncssh.HostKeyNotVerifiable:
        raise DeviceError(_host_key_problem(device, known_hosts)) from None
    except asyncssh.PermissionDenied:
        raise DeviceError(f"authentication refused for {device.user}@{device.host}:{device.port}: the key "
                          f"{device.identity} is not accepted there") from None
    except asyncssh.KeyImportError as exc:
        raise DeviceError(f"identity {device.identity} cannot be read ({exc}; fleet takes keys without a "
                          f"passphrase)") from None
    except asyncio.TimeoutError:
        raise DeviceError(f"unreachable: no answer from {device.host}:{device.port} within "
                          f"{device.connect_timeout:g} s") from None
    except OSError as exc:
        why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise DeviceError(f"unreachable: {device.host}:{device.port}: {why}") from None
    except asyncssh.Error as exc:
        raise DeviceError(f"SSH to {device.host}:{device.port} failed: {exc.reason}") from None
    try:
        yield Session(device, conn)
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.wait_closed(), 5)


def _host_key_problem(device: Device, known_hosts: Path) -> str:
    asyncssh = _asyncssh()
    try:
        listed = asyncssh.read_known_hosts(str(known_hosts)).match(device.host, device.host, device.port)[0]
    except (OSError, ValueError, asyncssh.Error):
        listed = []
    if listed:
        return (f"HOST KEY CHANGED for {device.host}:{device.port}: it does not match {known_hosts} (a new "
                f"install, or someone in between); refused. If the device was reinstalled, remove its old line")
    return (f"host key of {device.host}:{device.port} is not in {known_hosts}: refused (add it with "
            f"ssh-keyscan -p {device.port} {device.host} >> {known_hosts} and check its fingerprint)")
