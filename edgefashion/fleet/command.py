"""What `edgefashion fleet ...` prints and writes: a line per device as it finishes, a table at the
end, FLEET_DIR/fleet.json, and for bench/verify the devices compared side by side. A re-run into the
same FLEET_DIR with the same bundle and flags runs again only the devices that failed."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from ..console import printable
from ..device import compare
from ..files import check_tool_folder
from ..render import table
from ..schemas import DeviceRun, FleetReport
from .inventory import Device
from .jobs import Job, checker, deployer, for_each, runner

REPORT = "fleet.json"
PLOT = "compare.png"


def run_fleet(command: str, job: Job, devices: list[Device], jobs: int) -> FleetReport:
    """Run `command` (check, deploy, bench, verify) on `devices`; print and write what happened."""
    started = time.monotonic()
    previous = _previous(command, job)
    kept = [previous[d.name] for d in devices if d.name in previous]
    todo = [d for d in devices if d.name not in previous]
    for run in kept:
        run.skipped = "passed in the last run into this folder (--again runs it again)"
        print(printable(f"{run.device}: kept from the last run ({', '.join(Path(f).name for f in run.files)})"))
    work = {"check": checker, "deploy": deployer}.get(command)
    work = work(job) if work else runner(job, command)
    print(f"{command} on {len(todo)} device{'s' if len(todo) != 1 else ''}, {min(jobs, max(len(todo), 1))} at a time "
          f"...", file=sys.stderr)
    done = asyncio.run(for_each(todo, work, jobs, _say)) if todo else []
    runs = {r.device: r for r in [*kept, *done]}
    report = FleetReport(command=command, inventory=str(job.inventory.path),
                         bundle=str(job.bundle) if job.bundle else None, bundle_sha256=job.sha256,
                         settings={"flags": job.flags, "data": str(job.data) if job.data else None},
                         devices=[runs[d.name] for d in devices], seconds=round(time.monotonic() - started, 1))
    if command in ("bench", "verify"):
        report.comparison = _compare(command, report, job.out)
    if job.out is not None:
        report.write(job.out / REPORT)
    return report


def prepare_out(out: Path | None) -> None:
    """FLEET_DIR must be new, empty or a fleet folder (it holds fleet.json)."""
    if out is not None:
        check_tool_folder(out, (REPORT,), "fleet results")
        out.mkdir(parents=True, exist_ok=True)


def _previous(command: str, job: Job) -> dict[str, DeviceRun]:
    """The devices that passed the same command, bundle and flags in FLEET_DIR's last run."""
    if job.out is None or job.again or command not in ("bench", "verify") or not (job.out / REPORT).is_file():
        return {}
    try:
        last = FleetReport.read(job.out / REPORT)
    except Exception:  # an unreadable old report: run everything again
        return {}
    same = (last.command == command and last.bundle_sha256 == job.sha256 and last.settings.get("flags") == job.flags
            and last.settings.get("data") == (str(job.data) if job.data else None))
    return {r.device: r for r in last.devices if same and r.ok and all(Path(f).is_file() for f in r.files)}


def _say(run: DeviceRun) -> None:
    if run.ok:
        what = run.skipped or _done_text(run)
        print(printable(f"{run.device}: OK in {run.seconds:.1f} s: {what}"), flush=True)
    else:
        print(printable(f"{run.device}: FAILED after {run.seconds:.1f} s: {run.cause}"), file=sys.stderr, flush=True)


def _done_text(run: DeviceRun) -> str:
    info, parts = run.details.get("info") or {}, []
    if run.details.get("install"):
        parts.append(run.details["install"])
    if info:
        parts.append(f"{info['machine']}, edgefashion {info['edgefashion']}, {', '.join(info['interpreters'])}"
                     + (f", EMULATED ({info['emulated']})" if info.get("emulated") else ""))
    if run.details.get("selftest"):
        counts = run.details["selftest"]
        parts.append(f"selftest {counts['passed']} passed, {counts['failed']} failed"
                     + (f", {counts['skipped']} skipped" if counts.get("skipped") else ""))
    parts += [f"-> {f}" for f in run.files if not f.endswith("selftest.json")]
    return "; ".join(parts)


def check_rows(report: FleetReport) -> list[dict]:
    """fleet check's table: one row per device."""
    rows = []
    for run in report.devices:
        info = run.details.get("info") or {}
        free = info.get("free_bytes")
        rows.append({"device": run.device, "status": "ok" if run.ok else "FAILED", "machine": info.get("machine"),
                     "os": info.get("os"), "python": info.get("python"), "edgefashion": info.get("edgefashion"),
                     "interpreters": ", ".join(info.get("interpreters", [])) or None,
                     "int8 path": ((info.get("cpu") or {}).get("int8_path") or "").split(" (")[0] or None,
                     "free MB": round(free / 1e6) if free is not None else None,
                     "clock skew s": info.get("clock_skew_s"),
                     "emulated": info.get("emulated")})
    return rows


def _compare(command: str, report: FleetReport, out: Path) -> list[dict]:
    """compare over the fetched results: the table printed, the plot drawn (bench), the rows returned."""
    files = [(r.device, Path(f)) for r in report.devices if r.ok for f in r.files if f.endswith(f"{command}.json")]
    if not files:
        return []
    benches, verifies, _ = compare.load([f for _, f in files], [name for name, _ in files])
    print()
    if command == "bench":
        for i, (label, _) in enumerate(benches):
            print(printable(f"D{i + 1}: {label}"))
        batch, threads = min((r.batch, r.threads) for _, b in benches for r in b.results)
        rows = compare.compare_rows(benches, batch, threads)
        print(f"p50 µs per image at batch {batch}, {threads} thread{'s' if threads > 1 else ''}:")
        print(table(rows))
        if compare.plot(benches, rows, out / PLOT, batch, threads):
            print(f"-> {out / PLOT}")
        return rows
    for i, (label, _) in enumerate(verifies):
        print(printable(f"V{i + 1}: {label}"))
    rows = compare.accuracy_rows(verifies)
    print(table(rows))
    return rows

