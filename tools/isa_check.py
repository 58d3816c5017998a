#!/usr/bin/env python3
"""The int8 models of a run on the x86 kernel paths that matter, without such CPUs.

ONNX Runtime and LiteRT pick their int8 kernels from cpuid: VNNI, AVX2 without VNNI (vpmaddubsw,
whose int16 pair sums can saturate) or SSE. `qemu-x86_64 -cpu MODEL` runs this machine's Python
with that CPU's cpuid, so each path runs for real, only slower. Per path this reports, for every
exported model, the accuracy, the top-1 agreement with its float model and the largest difference
from this machine's outputs (in int8 steps), and runs `selftest` on two bundles: one made here and
one made under the first emulated CPU. Golden vectors made on any CPU must pass on every other one.

  tools/isa_check.py RUN                      (make isa-check: 2,000 images, a few minutes)
  tools/isa_check.py RUN --images 200 --golden 50   (the version in make test)

Exit 0 only when every selftest passes on every path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefashion import cpu, data  # noqa: E402
from edgefashion.device.runtime import Model  # noqa: E402
from edgefashion.errors import InputError  # noqa: E402
from edgefashion.files import write_json  # noqa: E402
from edgefashion.render import table  # noqa: E402
from edgefashion.formats import FLOAT_OF  # noqa: E402
from edgefashion.rundir import FILES, Run  # noqa: E402

# -cpu models and the int8 kernel path each one takes (x86 ONNX Runtime / XNNPACK)
CPUS = {"Haswell": "AVX2 without VNNI", "Nehalem": "SSE4.2"}
QEMU_NAMES = ("qemu-x86_64-static", "qemu-x86_64")


def qemu() -> str:
    if platform.machine() not in ("x86_64", "AMD64"):
        raise InputError(f"the x86 paths are emulated from an x86_64 machine, this is {platform.machine()}")
    for name in QEMU_NAMES:
        if shutil.which(name):
            return shutil.which(name)
    raise InputError("qemu-x86_64 not found: apt-get install qemu-user-static (make isa-check does it)")


def on_cpu(cpu: str | None, *args: str) -> list[str]:
    """The command line running `python ARGS` natively (cpu None) or under qemu -cpu CPU."""
    command = [sys.executable, *args]
    return command if cpu is None else [qemu(), "-cpu", cpu, *command]


def run(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, capture_output=True, text=True, env=env)


# --- the probe: runs on each path ---------------------------------------------------------

def probe(run_dir: Path, count: int, out: Path) -> None:
    """Raw outputs of every exported model on the first `count` test images -> out (.npz)."""
    test = data.load(None, "test").subset(slice(0, count))
    arrays = {"labels": test.labels}
    for fmt, path in Run(run_dir).exported_models().items():
        model = Model(path)
        arrays[fmt] = model.run(model.prepare(test.images))
        arrays[f"probs_{fmt}"] = model.dequantize(arrays[fmt])
    np.savez(out, **arrays)
    print(json.dumps(asdict(cpu.describe())))


# --- the check: runs here -----------------------------------------------------------------

def path_name(cpu: str | None) -> str:
    return "native" if cpu is None else f"qemu -cpu {cpu}"


def make_bundle(run_dir: Path, cpu: str | None, out: Path, golden: int) -> Path:
    done = run(on_cpu(cpu, "-m", "edgefashion", "bundle", str(run_dir), "--out", str(out), "--golden", str(golden)))
    if done.returncode != 0:
        raise InputError(f"bundle on {path_name(cpu)} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return out


def check_path(cpu: str | None, run_dir: Path, count: int, bundles: dict, scratch: Path) -> dict:
    started = time.monotonic()
    out = scratch / f"outputs-{cpu or 'native'}.npz"
    done = run(on_cpu(cpu, __file__, "--probe", str(run_dir), "--images", str(count), "--probe-out", str(out)))
    if done.returncode != 0:
        raise InputError(f"probe on {path_name(cpu)} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    result = {"path": path_name(cpu), "cpu": json.loads(done.stdout.strip().splitlines()[-1]), "selftest": {}}
    for made_on, bundle in bundles.items():
        st = run(on_cpu(cpu, "-m", "edgefashion", "selftest", str(bundle), "--json"))
        try:
            result["selftest"][made_on] = json.loads(st.stdout)
        except ValueError:
            result["selftest"][made_on] = {"passed": False, "checks": [], "error": st.stderr.strip()[-300:]}
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def compare(results: list[dict], scratch: Path, steps: dict) -> list[dict]:
    """Rows per path and model: accuracy, agreement with its float model, max diff vs native."""
    native = np.load(scratch / "outputs-native.npz")
    rows = []
    for result in results:
        tag = result["path"].split()[-1] if result["path"] != "native" else "native"
        here = np.load(scratch / f"outputs-{tag}.npz")
        labels = here["labels"]
        for fmt in (k for k in here.files if k != "labels" and not k.startswith("probs_")):
            probs = here[f"probs_{fmt}"]
            float_probs = here.get(f"probs_{FLOAT_OF[fmt]}") if fmt in FLOAT_OF else None
            diff = np.abs(here[fmt].astype(np.float64) - native[fmt]) / steps.get(fmt, 1.0)
            golden = _golden_max(result, fmt)
            rows.append({"path": result["path"], "int8 path": result["cpu"]["int8_path"].split(" (")[0],
                         "model": fmt, "accuracy": float((probs.argmax(1) == labels).mean()),
                         "agreement": None if float_probs is None else
                         float((probs.argmax(1) == float_probs.argmax(1)).mean()),
                         "max_diff_vs_native": float(diff.max()), "values_differing": int((diff > 1e-6).sum()),
                         "golden_max_diff": golden,
                         "selftest": " ".join("PASS" if s.get("passed") else "FAIL"
                                              for s in result["selftest"].values())})
    return rows


def _golden_max(result: dict, fmt: str) -> str:
    """The largest golden difference this path's selftests found for `fmt`, one per bundle
    (int8 TFLite: reference kernels / fast kernels, in steps)."""
    file = FILES[fmt]
    parts = []
    for st in result["selftest"].values():
        maxes = [f"{c['figures']['max']:.3g}" for c in st.get("checks", [])
                 if c["name"].startswith(f"golden {file}") and "max" in c.get("figures", {})]
        parts.append("/".join(maxes) or "-")
    return " ; ".join(parts)


def output_steps(run_dir: Path) -> dict:
    """One int8 step of each model's output: 1 for raw int8, the output scale for int8 ONNX."""
    models = Run(run_dir).read_export().models()
    onnx = models.get("onnx-int8")
    return {"onnx-int8": onnx.output.scale or 1.0} if onnx and onnx.output else {}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="run directory with export/ (make demo: runs/demo)")
    parser.add_argument("--images", type=int, default=2000, help="test images per path (default 2000)")
    parser.add_argument("--golden", type=int, default=200, help="golden images per bundle (default 200)")
    parser.add_argument("--cpus", default=",".join(CPUS), help=f"qemu -cpu models (default {','.join(CPUS)})")
    parser.add_argument("--out", type=Path, help="JSON report (default RUN/isa-check.json)")
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probe-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.probe:
            probe(args.run, args.images, args.probe_out)
            return 0
        return check(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def emulable(cpu: str) -> str | None:
    """Why `cpu` cannot be emulated here, or None: on some hosts qemu-user stops a plain `import numpy`
    under an older -cpu model with an illegal instruction (seen with qemu 7.2 on an AVX-512 EPYC for
    Nehalem and Westmere, not SandyBridge), before any code of ours runs."""
    done = run(on_cpu(cpu, "-c", "import numpy"))
    if done.returncode == 0:
        return None
    last = [line for line in done.stderr.strip().splitlines() if not line.startswith("qemu-x86_64")][-1:]
    return f"`import numpy` fails under qemu -cpu {cpu} on this host ({(last or ['?'])[0][:120]})"


def check(args) -> int:
    started = time.monotonic()
    cpus = [c for c in args.cpus.split(",") if c]
    Run(args.run).exported_models()  # a clear error now rather than on every path
    qemu()
    skipped = {model: why for model in cpus if (why := emulable(model))}
    for model, why in skipped.items():
        print(f"warning: path qemu -cpu {model} left out: {why}", file=sys.stderr)
    cpus = [c for c in cpus if c not in skipped]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        bundles = {"native": make_bundle(args.run, None, scratch / "native.tar.gz", args.golden)}
        if cpus:
            bundles[cpus[0]] = make_bundle(args.run, cpus[0], scratch / f"{cpus[0]}.tar.gz", args.golden)
        paths = [None, *cpus]
        done = []

        def checked(cpu):  # a line as each path ends: the emulated ones take minutes
            result = check_path(cpu, args.run, args.images, bundles, scratch)
            done.append(cpu)
            print(f"isa-check: {path_name(cpu)} done ({len(done)}/{len(paths)}), {result['seconds']} s, "
                  f"{time.monotonic() - started:.0f} s so far", file=sys.stderr, flush=True)
            return result

        with ThreadPoolExecutor(max_workers=max(1, min(len(paths), os.cpu_count() or 1))) as pool:
            results = list(pool.map(checked, paths))
        rows = compare(results, scratch, output_steps(args.run))
    passed = all(s.get("passed") for r in results for s in r["selftest"].values())
    print(table(rows))
    print(f"\nselftest columns: bundle made {' ; bundle made on '.join(['natively', *cpus[:1]])}. "
          f"{args.images} test images per path; differences in int8 steps (models with float output, int8 ones with a float head too: in probability).")
    for r in results:
        for made_on, st in r["selftest"].items():
            for c in st.get("checks", []):
                if not c["passed"]:
                    print(f"FAIL on {r['path']} (bundle made on {made_on}): {c['name']}: {c['detail']}")
            if st.get("error"):
                print(f"FAIL on {r['path']} (bundle made on {made_on}): {st['error']}")
    seconds = round(time.monotonic() - started, 1)
    print(f"{'PASS' if passed else 'FAIL'}: {len(paths)} paths, wall time {seconds} s")
    write_json(args.out or Run(args.run).isa_check,
               {"passed": passed, "images": args.images, "golden": args.golden, "seconds": seconds,
                "paths": results, "rows": rows, "not_emulable": skipped})
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
