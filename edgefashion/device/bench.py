"""Latency benchmark over the edge runtime only (no TensorFlow).

Each (model, thread count) is measured in a fresh worker process, so its load time, first
inference and peak RSS are its own and not left over from the model before it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import cpu, package_versions
from ..console import Progress
from ..errors import InputError, MissingDependency, Unsupported
from ..files import check_output, write_text
from ..options import int_list, non_negative_float, positive_int, setting, thread_list
from .. import plots
from ..render import table
from ..stage import Stage
from ..rundir import BENCH_FILE, Run
from ..schemas import BenchReport, BenchResult, Environment
from ..formats import FLOAT_OF
from .locate import is_model_file, models_at
from .feed import bench_input, rows
from .feed import describe as describe_feed
from . import macs
from .profile import onnx_macs
from .profile import profile as profile_model
from .trust import Trust
from .runtime import Model, backend_setting

SPREAD_WARNING = 3.0  # warn when p99 > 3 x p50


@dataclass
class BenchConfig:
    batches: list = setting([1], "batch sizes, comma-separated", flag="--batch", type=int_list)
    threads: list = setting([1], "thread counts, comma-separated", type=thread_list)
    warmup: int = setting(20, "untimed runs first")
    runs: int = setting(200, "timed runs, at least", type=positive_int)
    min_time: float = setting(1.0, "keep timing for at least this many seconds per configuration",
                              type=non_negative_float)
    profile: bool = setting(False, "also time each operator of every model at batch 1 (ONNX Runtime's profiler; "
                                   "for TFLite, truncated copies of the model run by LiteRT)")
    backend: str = backend_setting(in_run=False)
    input: Path | None = setting(None, "a .npy array to time every model on, of the model's own input shape and "
                                       "dtype (N, ...) (default: test images for edgefashion's classifiers, seeded "
                                       "random inputs for any other model)", type=Path, metavar="FILE.npy",
                                 in_run=False)
    input_shape: list | None = setting(None, "the input's dimensions after the batch, for a model that leaves some "
                                             "open (e.g. 3,224,224); seeded random inputs of that shape",
                                       type=int_list, metavar="D1,D2,...", in_run=False)

    def validate(self) -> None:
        for flag, values in (("--batch", self.batches), ("--threads", self.threads)):
            if any(not isinstance(v, int) or v < 1 for v in values):
                raise InputError(f"{flag} {','.join(map(str, values))}: expected positive integers")
        for flag, value, ok in (("--runs", self.runs, self.runs >= 1), ("--warmup", self.warmup, self.warmup >= 0),
                                ("--min-time", self.min_time, self.min_time >= 0)):
            if not ok:
                raise InputError(f"{flag} {value}: expected {'at least 1' if flag == '--runs' else '0 or more'}")


# --- what to benchmark ------------------------------------------------------------------

@contextlib.contextmanager
def resolve_models(paths, trust: Trust | None = None):
    """Yield the model paths named by model files, run directories and bundles."""
    with contextlib.ExitStack() as stack:
        found = []
        for path in map(Path, paths):
            if is_model_file(path):
                found.append(path)
                continue
            located = models_at(path, Path(stack.enter_context(tempfile.TemporaryDirectory())), trust)
            if located is not None:
                found.extend(located[0].values())
            elif path.exists():
                raise InputError(f"{path}: not a model (.tflite/.onnx), a run directory or a bundle (.tar.gz)")
            else:
                raise InputError(f"{path}: not found")
        yield found


# --- environment ------------------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip().strip("\x00") or None
    except OSError:
        return None


def _throttled() -> str | None:
    if not shutil.which("vcgencmd"):
        return None
    try:
        done = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5)
        return done.stdout.strip().split("=")[-1] or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> Environment:
    """Where the numbers came from. Anything unreadable is None, never an error."""
    freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    temp = _read("/sys/class/thermal/thermal_zone0/temp")
    return Environment(
        machine=platform.machine(), cpu_model=cpu.model_name(), cpu=cpu.describe(), cores=os.cpu_count(),
        os=platform.platform(), python=platform.python_version(),
        versions=package_versions(("numpy", "ai-edge-litert", "tflite-runtime", "onnxruntime", "edgefashion")),
        cpu_governor=_read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        cpu_freq_mhz=round(int(freq) / 1000) if freq and freq.isdigit() else None,
        board_model=_read("/proc/device-tree/model"),
        soc_temp_c=round(int(temp) / 1000, 1) if temp and temp.lstrip("-").isdigit() else None,
        throttled=_throttled(),
        load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        emulated=os.environ.get("EDGEFASHION_EMULATED") or None,
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def environment_warnings(env: Environment) -> list[str]:
    notes = []
    if env.cpu_governor and env.cpu_governor != "performance":
        notes.append(f"CPU governor is '{env.cpu_governor}', not 'performance': latencies may vary "
                     f"(sudo cpupower frequency-set -g performance)")
    if env.emulated:
        notes.append(f"running under emulation ({env.emulated}): these latencies are NOT device numbers")
    if not env.cpu.int8_fast_path:
        notes.append(cpu.NO_FAST_INT8.format(path=env.cpu.int8_path))
    if env.throttled not in (None, "0x0"):
        notes.append(f"the SoC reports throttling ({env.throttled}): results are not representative")
    return notes


# --- measuring --------------------------------------------------------------------------

def measure(path: Path, threads: int, batches: list, warmup: int, runs: int, min_time: float,
            backend: str = "auto", array: Path | None = None, shape: list | None = None) -> list[dict]:
    """Load one model with `threads` threads and time it at every batch size. Runs in the worker."""
    started = time.perf_counter()
    model = Model(path, threads=threads, backend=backend, classifier=False)
    init_ms = (time.perf_counter() - started) * 1e3
    fixed = model.input.shape[0] if model.format.startswith("onnx") else -1  # TFLite resizes any batch
    if fixed > 0 and set(batches) != {fixed}:
        raise InputError(f"{path.name}: input {model.input.name!r} has a fixed batch of {fixed} (ONNX cannot resize "
                         f"it); give --batch {fixed}")
    results, feed = [], bench_input(model, max(batches), array, shape)
    for batch in batches:
        x = rows(feed, batch)  # inputs ready before the clock starts
        run, clock = model.run, time.perf_counter_ns
        t0 = clock()
        run(x)
        first_ms = (clock() - t0) / 1e6
        for _ in range(warmup):
            run(x)
        deadline = time.perf_counter() + min_time
        times = []
        t0 = clock()
        while len(times) < runs or time.perf_counter() < deadline:
            run(x)
            t1 = clock()  # one clock read per run
            times.append(t1 - t0)
            t0 = t1
        results.append({**_stats(model, path, threads, batch, init_ms, first_ms, np.array(times) / 1e3),
                        "inputs": describe_feed(model, array, shape)})
    work = model_macs(path, model, feed)
    for r in results:
        r.update(macs_per_image=work, gmacs=macs.achieved(work, r["latency_per_image_us"]["p50"]))
    return results


def model_macs(path: Path, model, feed) -> int | None:
    """Multiply-accumulates per image: from the .tflite graph, or from ONNX Runtime's profiled shapes."""
    if model.format.startswith("tflite"):
        return macs.file_macs(path)
    try:
        return onnx_macs(path, rows(feed, 1))
    except Exception:  # the count is a remark beside the timing, never a reason to lose it
        return None


def add_peak_shares(results: list[BenchResult], peaks: dict) -> None:
    """Each result's share of the CPU's peak on its thread count (`peaks`: one core, per dtype)."""
    for r in results:
        peak = peaks.get(macs.dtype_of(r.format, r.runtime))
        if peak and r.gmacs:
            r.peak_gmacs = round(peak["gmacs"] * r.threads, 1)
            r.peak_share = round(r.gmacs / r.peak_gmacs, 6)


def _stats(model, path, threads, batch, init_ms, first_ms, us: np.ndarray) -> dict:
    p50, p90, p99 = (float(np.percentile(us, q)) for q in (50, 90, 99))
    latency = {"p50": p50, "p90": p90, "p99": p99, "mean": float(us.mean()), "std": float(us.std()),
               "min": float(us.min()), "max": float(us.max())}
    return {
        "file": path.name, "path": str(path), "format": model.format, "runtime": model.backend,
        "threads": threads, "batch": batch, "size_bytes": model.size_bytes,
        "init_ms": round(init_ms, 3), "first_ms": round(first_ms, 3), "runs": len(us),
        "latency_us": {k: round(v, 2) for k, v in latency.items()},
        "latency_per_image_us": {k: round(v / batch, 2) for k, v in latency.items()},
        "throughput_ips": round(batch * 1e6 / latency["mean"], 1),
        "peak_rss_mb": peak_rss_mb(),
        "spread_warning": p99 > SPREAD_WARNING * p50,
    }


def peak_rss_mb() -> float:
    """This process's own peak RSS. VmHWM belongs to the address space, which exec replaces;
    ru_maxrss would carry over the peak of the process that started the worker (TensorFlow's)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_worker(path: Path, threads: int, config: BenchConfig) -> list[dict] | dict:
    """One model at one thread count, measured in a fresh process: a list of results (one per batch
    size), or {"skipped": why} where no interpreter here runs it."""
    job = {"path": str(path), "threads": threads, "batches": config.batches, "warmup": config.warmup,
           "runs": config.runs, "min_time": config.min_time, "backend": config.backend,
           "input": str(config.input) if config.input else None, "input_shape": config.input_shape}
    done = subprocess.run([sys.executable, "-m", "edgefashion.device.bench", json.dumps(job)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        message = (done.stderr.strip().splitlines() or [f"worker exited {done.returncode}"])[-1]
        raise InputError(message.removeprefix("error: "))
    return json.loads(done.stdout)  # a list of results, or {"skipped": why}


def bench(config: BenchConfig, paths: list, out: Path | None = None, trust: Trust | None = None,
          write: bool = True, force: bool = False) -> tuple[BenchReport, Path | None]:
    """Benchmark every model x thread count x batch size of `paths` (model files, run directories,
    bundles: those signed by `trust`, default this device's trusted keys); write bench.json/.csv/.png
    at `out` (default RUN/bench.json or ./bench.json), unless not `write`; `force` replaces a user's file there."""
    config.validate()
    if not paths:
        raise InputError("no model, run directory or bundle given")
    if out is not None:
        check_output(out, ".json", paths, ours=BenchReport.written_at,
                     siblings=[out.with_suffix(".csv"), out.with_suffix(".png")], force=force)
    env = environment()
    results, skipped, profiles = [], [], {}
    with resolve_models(paths, trust) as models:
        with Progress(len(models) * len(config.threads), "bench") as progress:
            for path in models:
                for threads in config.threads:
                    measured = run_worker(path, threads, config)
                    if isinstance(measured, dict):
                        skipped.append(f"skipped {path.name}: {measured['skipped']}")
                    else:
                        results.extend(BenchResult(**r) for r in measured)
                    progress.update()
        if config.profile:
            for path in models:
                if any(r.path == str(path) for r in results):
                    try:
                        profiles[path.name] = profile_model(path, config.runs, config.input, config.input_shape,
                                                            config.backend)
                    except Unsupported as exc:
                        skipped.append(f"no profile of {exc}")
    if not results:
        raise InputError("nothing to benchmark: " + "; ".join(skipped))
    skipped = list(dict.fromkeys(skipped))
    peaks = {d: macs.peak_gmacs(env.cpu.features, d, 1) for d in ("int8", "float32")}
    add_peak_shares(results, peaks)
    report = BenchReport(environment=env, warnings=skipped + environment_warnings(env) + _spread_warnings(results),
                         settings={"warmup": config.warmup, "runs": config.runs, "min_time_s": config.min_time,
                                   "batches": config.batches, "threads": config.threads},
                         results=results, comparison=comparison(results), profiles=profiles or None, peaks=peaks)
    if not write:
        return report, None
    out = out or default_out(paths)
    report.write(out)
    write_text(out.with_suffix(".csv"), to_csv(results))
    plots.save(plots.latency_figure(results, device_name(env)), out.with_suffix(".png"))
    return report, out


def device_name(env) -> str:
    """What a plot's title calls the machine: board, CPU, cores, and whether it was emulated."""
    return ", ".join(v for v in (env.board_model, f"{env.cpu_model} ({env.cores} cores, {env.machine})",
                                 "emulated" if env.emulated else None) if v)


def default_out(paths) -> Path:
    first = Path(paths[0])
    if len(paths) == 1 and first.is_dir():
        run = Run.at(first)
        if run.export_dir.is_dir():
            return run.bench
    return Path(BENCH_FILE)


def _spread_warnings(results: list[BenchResult]) -> list[str]:
    return [f"{r.file} batch {r.batch} threads {r.threads}: wide spread, p99 "
            f"{r.latency_us['p99']:.0f} us > {SPREAD_WARNING:g} x p50 {r.latency_us['p50']:.0f} us"
            for r in results if r.spread_warning]


def comparison(results: list[BenchResult]) -> list[dict]:
    """int8 vs float, per family (tflite / onnx), batch and threads: speed-up and size ratio."""
    by_key = {(r.format, r.batch, r.threads): r for r in results}
    rows = []
    for (fmt, batch, threads), q in by_key.items():
        f = by_key.get((FLOAT_OF.get(fmt), batch, threads))
        if f is None:
            continue
        rows.append({"family": fmt.split("-")[0], "batch": batch, "threads": threads,
                     "int8_p50_us": q.latency_us["p50"], "f32_p50_us": f.latency_us["p50"],
                     "latency_ratio": round(q.latency_us["p50"] / f.latency_us["p50"], 3),
                     "speedup": round(f.latency_us["p50"] / q.latency_us["p50"], 3),
                     "size_ratio": round(q.size_bytes / f.size_bytes, 3)})
    return rows


CSV_COLUMNS = ["file", "format", "runtime", "threads", "batch", "size_bytes", "init_ms", "first_ms",
               "p50_us", "p90_us", "p99_us", "mean_us", "std_us", "min_us", "p50_per_image_us",
               "throughput_ips", "peak_rss_mb"]


def to_csv(results: list[BenchResult]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in results:
        writer.writerow({**asdict(r), **{f"{k}_us": v for k, v in r.latency_us.items()},
                         "p50_per_image_us": r.latency_per_image_us["p50"]})
    return buffer.getvalue()


def table_rows(results: list[BenchResult]) -> list[dict]:
    return [{"file": r.file, "runtime": r.runtime, "threads": r.threads, "batch": r.batch,
             "p50_us": r.latency_us["p50"], "p90_us": r.latency_us["p90"], "p99_us": r.latency_us["p99"],
             "us/image": r.latency_per_image_us["p50"], "images/s": r.throughput_ips,
             "init_ms": r.init_ms, "MB": round(r.size_bytes / 1e6, 2), "rss_MB": r.peak_rss_mb,
             "GMAC/s": r.gmacs, "of peak": f"{r.peak_share:.1%}" if r.peak_share is not None else None}
            for r in results]


def bench_run(config: BenchConfig, run: Run) -> BenchReport:
    """The bench stage of a run: its exported models, into RUN/bench.json."""
    return bench(config, [run.root], run.bench)[0]


def render(report: BenchReport) -> str:
    env = report.environment
    out = [f"{env.cpu_model} ({env.cores} cores, {env.machine}); int8 path: {env.cpu.int8_path}; "
           f"governor {env.cpu_governor or 'unknown'}" + (f"; board {env.board_model}" if env.board_model else ""),
           table(table_rows(report.results))]
    if report.comparison:
        out += ["\nint8 vs float (p50):", table(report.comparison)]
    for name, prof in (report.profiles or {}).items():
        out.append(f"\n{name} ({prof['format']}), per operator at batch 1: {prof['method']}")
        out.append(table([{"op": op["name"], "type": op["type"], "dtype": op["dtype"], "us": op["us"],
                           "share": f"{op['share']:.1%}" if op["share"] is not None else "-",
                           "MMAC": round(op["macs"] / 1e6, 3) if op.get("macs") else None, "GMAC/s": op.get("gmacs"),
                           "of peak": f"{op['peak_share']:.1%}" if op.get("peak_share") else None}
                          for op in prof["ops"]]))
        out.append(f"sum {prof['total_us']} us vs whole model {prof['model_us']} us (x{prof['sum_vs_model']})")
        out += _peak_lines(prof)
    out += _work_lines(report)
    return "\n".join(out)


def _peak_lines(prof: dict) -> list[str]:
    """The multiply ops furthest from the peak, with where the peak comes from."""
    timed = [op for op in prof["ops"] if op.get("peak_share")]
    if not timed:
        return [f"{(prof.get('macs') or 0) / 1e6:.2f} M MAC per image (ONNX Runtime fuses and re-lays-out nodes: "
                f"not counted per node)"] if prof.get("macs") else []
    worst = min((op for op in timed if op["macs"] >= 0.01 * prof["macs"]), key=lambda op: op["peak_share"],
                default=min(timed, key=lambda op: op["peak_share"]))
    return [f"{prof['macs'] / 1e6:.2f} M MAC per image; of the ops with 1 % of them or more, furthest from the "
            f"peak: {worst['name']} ({worst['type']}, {worst['gmacs']:.1f} GMAC/s, {worst['peak_share']:.1%} of it)"]


def _work_lines(report: BenchReport) -> list[str]:
    """One line per model: MACs, GMAC/s at batch 1 and the share of the peak, and the peak's sources."""
    lines, dtypes = [], set()
    for r in report.results:
        if r.batch != 1 or r.threads != 1 or not r.gmacs:
            continue
        share = f", {r.peak_share:.1%} of this CPU's {r.peak_gmacs:g} GMAC/s peak" if r.peak_share else ""
        lines.append(f"{r.file}: {r.macs_per_image / 1e6:.2f} M MAC per image, {r.gmacs:.1f} GMAC/s at p50{share}")
        dtypes.add(macs.dtype_of(r.format, r.runtime))
    for dtype, peak in (report.peaks or {}).items():
        if peak and dtype in dtypes:
            lines.append(f"peak {dtype}: {peak['per_cycle']} MAC/cycle/core ({peak['unit']}) x {peak['clock_ghz']:g} "
                         f"GHz ({peak['clock_source']}) x 1 core = {peak['gmacs']:g} GMAC/s (theoretical)")
    return (["\nwork (batch 1, 1 thread):"] + lines) if lines else []


STAGE = Stage(
    name="bench", help="measure inference latency of exported models (edge runtime only)",
    description="Benchmark model files, run directories (their export/ models) or bundles. Each model and "
                "thread count runs in a fresh process: warm-up runs, then timed runs. Writes bench.json, "
                "bench.csv and bench.png.",
    settings=BenchConfig, run=bench_run, report=BenchReport, render=render, output=lambda run: run.bench)


def _worker(argv: list[str]) -> int:
    """`python -m edgefashion.device.bench JOB_JSON`: measure one model, print JSON results."""
    job = json.loads(argv[0])
    try:
        results = measure(Path(job["path"]), job["threads"], job["batches"], job["warmup"], job["runs"],
                          job["min_time"], job.get("backend", "auto"), job.get("input"), job.get("input_shape"))
    except (Unsupported, MissingDependency) as exc:  # no interpreter here for this model
        print(json.dumps({"skipped": str(exc)}))
        return 0
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
