"""fleet check / deploy / bench / verify: one coroutine per device, at most `jobs` at a time. A device's
failure is its own line; the others carry on.

On a device, DIR holds the deployed bundle under its own name and `deployed.json` (its sha256 and the
selftest that passed); a bundle is uploaded into DIR/incoming/, selftested there by the device (with
the device's own trusted keys) and only then renamed into DIR. Results go to DIR/results/ and are
fetched into FLEET_DIR/<device>/.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..files import atomic_path, sha256_file
from ..schemas import DeviceRun, SelftestReport
from .inventory import Device, Inventory
from .remote import DeviceError, Session, quote, session

MARKER = "deployed.json"
SETTLE_BYTES = 1_000_000  # free space kept beyond the bundle itself


@dataclass
class Job:
    """What every device of one fleet command shares."""

    inventory: Inventory
    timeout: float = 900.0                 # seconds per command on a device
    bundle: Path | None = None
    sha256: str | None = None
    install: Path | None = None            # a wheel to install or upgrade first
    extras: str = "edge"
    again: bool = False                    # deploy and selftest even where already deployed
    out: Path | None = None                # FLEET_DIR: results fetched into FLEET_DIR/<device>/
    flags: list[str] = field(default_factory=list)  # bench/verify flags, as given
    data: Path | None = None               # verify --data: uploaded to the device


async def for_each(devices: list[Device], work: Callable, jobs: int, on_done: Callable[[DeviceRun], None]):
    """`work(device)` on every device, `jobs` at a time; each result passed to `on_done` as it ends."""
    limit = asyncio.Semaphore(jobs)

    async def one(device: Device) -> DeviceRun:
        async with limit:
            started = time.monotonic()
            try:
                result = await work(device)
            except DeviceError as exc:
                result = DeviceRun(device.name, device.address, ok=False, cause=str(exc))
            result.seconds = round(time.monotonic() - started, 2)
            on_done(result)
            return result

    return await asyncio.gather(*(one(d) for d in devices))


# --- steps shared by the commands ---------------------------------------------------------

async def prepare(s: Session) -> str:
    """The device's DIR, made if missing, as an absolute path."""
    result = await s.run(f"mkdir -p -- {quote(s.device.dir)} && cd -- {quote(s.device.dir)} && pwd", 30,
                         "mkdir of the device folder")
    if result.exit != 0:
        raise DeviceError(f"cannot make {s.device.dir} on the device: {_last_line(result.stderr)}")
    return result.stdout.strip().splitlines()[-1]


def edgefashion(s: Session, *args: str) -> str:
    return " ".join([quote(s.device.edgefashion), *map(shlex.quote, args)])


async def info(s: Session, folder: str, timeout: float) -> dict:
    """`edgefashion info --json` on the device, with the clock skew against this workstation (from `date`,
    a command quick enough that its round trip bounds the error)."""
    before = time.time()
    clock = await s.run("date +%s.%N", 30, "date")
    after = time.time()
    result = await s.run(edgefashion(s, "info", "--json", "--dir", folder), timeout, "edgefashion info")
    if result.exit == 127:
        raise DeviceError(f"edgefashion not found at {s.device.edgefashion} on the device "
                          f"(fleet deploy --install WHEEL installs it)")
    if result.exit != 0:
        raise DeviceError(f"edgefashion info failed (exit {result.exit}): {_last_line(result.stderr)} "
                          f"(an edgefashion older than fleet? fleet deploy --install WHEEL upgrades it)")
    found = _json(result.stdout, "edgefashion info")
    try:
        found["clock_skew_s"] = round(float(clock.stdout.strip()) - (before + after) / 2, 3)
    except ValueError:  # a date without %N (busybox): whole seconds from edgefashion's own clock
        found["clock_skew_s"] = round(found["time"] - after, 1)
    return found


async def remote_sha256(s: Session, path: str) -> str | None:
    result = await s.run(f"sha256sum -- {shlex.quote(path)} 2>/dev/null | cut -c1-64", 120, "sha256sum")
    return result.stdout.strip() or None


async def upload(s: Session, local: Path, remote: str, sha256: str, free_bytes: int | None, timeout: float) -> None:
    """`local` to `remote` on the device, refused up front when the device's disk cannot hold it."""
    size = local.stat().st_size
    if free_bytes is not None and free_bytes < size + SETTLE_BYTES:
        raise DeviceError(f"disk full: {free_bytes / 1e6:.1f} MB free in {posixpath.dirname(remote)}, "
                          f"{local.name} needs {(size + SETTLE_BYTES) / 1e6:.1f} MB")
    await s.run(f"mkdir -p -- {shlex.quote(posixpath.dirname(remote))}", 30, "mkdir")
    await s.put_atomic(local, remote, sha256, timeout)


async def install(s: Session, job: Job, folder: str, timeout: float) -> str:
    """Install or upgrade edgefashion from the wheel, into the venv the inventory's command lives in
    (made with python3 -m venv where it is missing). Returns what pip said last."""
    bin_dir = posixpath.dirname(s.device.edgefashion)
    if posixpath.basename(bin_dir) != "bin":
        raise DeviceError(f"--install needs edgefashion = \"VENV/bin/edgefashion\" in the inventory, not "
                          f"{s.device.edgefashion}")
    venv, python = posixpath.dirname(bin_dir), posixpath.join(bin_dir, "python")
    wheel = f"{folder}/incoming/{job.install.name}"
    await upload(s, job.install, wheel, sha256_file(job.install), None, timeout)
    spec = f"{wheel}[{job.extras}]" if job.extras else wheel
    script = (f"[ -x {quote(python)} ] || python3 -m venv {quote(venv)} || exit 4; "
              f"{quote(python)} -m pip install -q --no-deps --force-reinstall {shlex.quote(wheel)} && "
              f"{quote(python)} -m pip install -q {shlex.quote(spec)}; rc=$?; rm -f -- {shlex.quote(wheel)}; exit $rc")
    result = await s.run(script, timeout, "pip install of the wheel")
    if result.exit != 0:
        raise DeviceError(f"installing {job.install.name} failed (exit {result.exit}): {_last_line(result.stderr)}")
    return f"installed {job.install.name}" + (f"[{job.extras}]" if job.extras else "")


async def deployed(s: Session, job: Job, folder: str) -> dict | None:
    """The device's record of this bundle, if it holds it (same sha256 under its name) and its selftest passed."""
    result = await s.run(f"cat -- {shlex.quote(folder + '/' + MARKER)} 2>/dev/null", 30, "reading deployed.json")
    try:
        record = json.loads(result.stdout) if result.stdout.strip() else None
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("sha256") != job.sha256 or not record.get("selftest_passed"):
        return None
    if await remote_sha256(s, f"{folder}/{job.bundle.name}") != job.sha256:
        return None
    return record


async def selftest(s: Session, bundle: str, timeout: float) -> tuple[SelftestReport | None, str, int]:
    """The device's selftest of `bundle`: (report, the command, exit). A refusal (exit 2) has no report."""
    command = edgefashion(s, "selftest", bundle, "--json", *_trust(s.device))
    result = await s.run(command, timeout, "selftest")
    if result.exit in (0, 1) and result.stdout.strip():
        return SelftestReport.from_json(_json(result.stdout, "selftest --json"), "selftest --json"), command, result.exit
    if result.exit == 127:
        raise DeviceError(f"edgefashion not found at {s.device.edgefashion} on the device")
    raise DeviceError(f"selftest refused the bundle: {_last_line(result.stderr) or f'exit {result.exit}'}")


async def deploy_bundle(s: Session, job: Job, folder: str, run: DeviceRun) -> None:
    """The bundle onto the device, selftested there before it takes its real name; skipped where the
    device already holds it and its selftest passed (unless --again)."""
    name = job.bundle.name
    if not job.again:
        record = await deployed(s, job, folder)
        if record is not None:
            counts = record.get("selftest") or {}
            run.skipped = (f"already holds {name} (sha256 {job.sha256[:12]}...), its selftest passed at "
                           f"{record.get('at', '?')} ({counts.get('passed', '?')} checks); nothing to do")
            run.details["selftest"] = record.get("selftest")
            return
    incoming = f"{folder}/incoming/{name}"
    try:  # from the upload on: a Ctrl-C between its rename on the device and the selftest leaves nothing
        await upload(s, job.bundle, incoming, job.sha256, run.details.get("info", {}).get("free_bytes"), job.timeout)
        report, run.command, run.exit = await selftest(s, incoming, job.timeout)
        counts = {"passed": len(report.checks) - len(report.failed) - report.skipped,
                  "failed": len(report.failed), "skipped": report.skipped}
        run.details["selftest"] = counts
        if job.out is not None:
            path = write_local(job.out, s.device.name, "selftest.json", json.dumps(report.to_json(), indent=2))
            run.files.append(str(path))
        if not report.passed:
            first = report.failed[0]
            raise DeviceError(f"selftest failed: {counts['failed']} of {len(report.checks)} checks "
                              f"(first: {first.name}: {first.detail})")
        record = json.dumps({"bundle": name, "sha256": job.sha256, "selftest_passed": True, "selftest": counts,
                             "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        final, marker = shlex.quote(f"{folder}/{name}"), shlex.quote(f"{folder}/{MARKER}")
        # the record is written before either rename, so the two renames run back to back
        place = (f"printf '%s' {shlex.quote(record)} > {marker}.part && mv -f -- {shlex.quote(incoming)} {final} "
                 f"&& mv -f -- {marker}.part {marker}")
        result = await s.run(place, 60, "placing the bundle")
        if result.exit != 0:
            raise DeviceError(f"could not move {name} into {folder}: {_last_line(result.stderr)}")
    finally:
        await s.cleanup(f"rm -f -- {shlex.quote(incoming)} {shlex.quote(f'{folder}/{MARKER}.part')}")


def write_local(out: Path, device: str, name: str, text: str) -> Path:
    """FLEET_DIR/<device>/<name>, written atomically."""
    path = out / device / name
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


async def fetch(s: Session, remote: str, out: Path, device: str, name: str, timeout: float) -> Path:
    path = out / device / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        await s.fetch(remote, tmp, timeout)
    return path


# --- the commands -------------------------------------------------------------------------

async def _on_device(job: Job, device: Device, steps=None) -> DeviceRun:
    """Connect, make the device's folder, install the wheel where asked, read `edgefashion info`, then
    `steps(session, folder, run)`: what every command does on one device."""
    run = DeviceRun(device.name, device.address, ok=False)
    async with session(device, job.inventory.known_hosts) as s:
        folder = await prepare(s)
        if job.install is not None:
            run.details["install"] = await install(s, job, folder, job.timeout)
        run.details["info"] = await info(s, folder, min(job.timeout, 120))
        if steps is not None:
            await steps(s, folder, run)
    run.ok = True
    return run


def checker(job: Job):
    return lambda device: _on_device(job, device)


def deployer(job: Job):
    return lambda device: _on_device(job, device, lambda s, folder, run: deploy_bundle(s, job, folder, run))


def runner(job: Job, command: str):
    """fleet bench / fleet verify: the bundle deployed (if it is not), then `edgefashion COMMAND` on the
    device, its JSON fetched into FLEET_DIR/<device>/COMMAND.json."""
    async def steps(s: Session, folder: str, run: DeviceRun) -> None:
        await deploy_bundle(s, job, folder, run)
        run.skipped = None  # deployed already is not "nothing done": the command still runs
        remote = f"{folder}/results/{command}.json"
        flags = list(job.flags)
        if job.data is not None:
            data = f"{folder}/incoming/{job.data.name}"
            await upload(s, job.data, data, sha256_file(job.data), None, job.timeout)
            flags += ["--data", data]
        await s.run(f"mkdir -p -- {shlex.quote(folder + '/results')} && rm -f -- {shlex.quote(remote)}", 30, "mkdir")
        run.command = edgefashion(s, command, f"{folder}/{job.bundle.name}", "--out", remote, *_trust(s.device),
                                  *flags)
        result = await s.run(run.command, job.timeout, command)
        run.exit = result.exit
        if result.exit not in (0, 1) or not (await s.run(f"[ -f {shlex.quote(remote)} ]", 30, "ls")).exit == 0:
            raise DeviceError(f"{command} failed (exit {result.exit}): {_last_line(result.stderr)}")
        run.files.append(str(await fetch(s, remote, job.out, s.device.name, f"{command}.json", job.timeout)))
        if result.exit == 1:
            raise DeviceError(f"{command} failed its checks: {_last_line(result.stderr)}")
    return lambda device: _on_device(job, device, steps)


def _trust(device: Device) -> list[str]:
    """--trust flags for the inventory's `trust = [...]` (paths on the device)."""
    return [a for key in device.trust for a in ("--trust", key)]


def _json(text: str, what: str) -> dict:
    try:
        found = json.loads(text)
    except ValueError:
        raise DeviceError(f"{what} printed no JSON: {_last_line(text)!r:.120}") from None
    if not isinstance(found, dict):
        raise DeviceError(f"{what} printed {type(found).__name__}, expected an object")
    return found


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""



async def _remote_p50(inventory: Inventory, device: Device, model: Path, flags: list[str], repeats: int,
                      timeout: float) -> list[float]:
    async with session(device, inventory.known_hosts) as s:
        folder = await prepare(s)
        sha = sha256_file(model)
        remote = f"{folder}/models/{sha[:16]}{model.suffix}"
        if await remote_sha256(s, remote) != sha:
            await upload(s, model, remote, sha, None, timeout)
        p50s = []
        for _ in range(repeats):  # each a fresh bench worker on the device
            result = await s.run(edgefashion(s, "bench", remote, "--json", *flags), timeout, "bench")
            if result.exit != 0:
                raise DeviceError(f"bench failed (exit {result.exit}): {_last_line(result.stderr)}")
            found = _json(result.stdout, "bench --json")
            p50s.append(float(found["results"][0]["latency_us"]["p50"]))
        return p50s


def remote_p50(inventory: Inventory, name: str, model: Path, flags: list[str], repeats: int,
               timeout: float = 600) -> list[float]:
    """The p50 latency of `model` measured `repeats` times on the inventory's device `name` (tune
    --measure-on), or InputError naming the device and why it could not."""
    device = inventory.select([name])[0]
    try:
        return asyncio.run(_remote_p50(inventory, device, model, flags, repeats, timeout))
    except DeviceError as exc:
        raise InputError(f"--measure-on {name}: {exc}") from None
