"""Accuracy-aware int8 on models made to quantize badly: plain PTQ's drop, the candidate export's
search chose, every candidate tried, the search's time, and the test-set figures of `verify`.

    edgefashion train --out runs/seed                      # the seed CNN, full Fashion-MNIST
    edgefashion train --out runs/tiny8 --epochs 10 --arch '{"blocks": [8, 8], "head": "gap", "batch_norm": true}'
    python benchmarks/int8_search.py runs/seed --family runs/tiny8 --out runs/int8-search
    python benchmarks/int8_search.py runs/seed --family runs/tiny8 --out runs/int8-qat --quantization qat

Makes OUT/spread and OUT/outlier from the seed run (tools/bad_int8_models.py), exports each of them,
the seed itself and the family models with --max-drop 0.3 --min-agreement 0.99, verifies them on
the test set and prints one markdown table (also OUT/int8_search.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import bad_int8_models  # noqa: E402

GATES = ("--max-drop", "0.3", "--min-agreement", "0.99")


def edgefashion(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgefashion", *map(str, args)], capture_output=True, text=True)


def copy_run(run: Path, out: Path) -> Path:
    from edgefashion.rundir import Run

    out.mkdir(parents=True)
    for name in ("config", "history", "test_split", "model"):
        if getattr(Run(run), name).is_file():
            shutil.copy2(getattr(Run(run), name), getattr(Run(out), name))
    return out


def measure(name: str, run: Path, quantization: str) -> dict:
    started = time.monotonic()
    done = edgefashion("export", run, *GATES, "--quantization", quantization)
    seconds = time.monotonic() - started
    row = {"model": name, "export_s": round(seconds, 1), "exit": done.returncode}
    if done.returncode != 0:
        row["error"] = done.stderr.strip().splitlines()[-1]  # every candidate's figures are in it
        return row
    export = json.loads((run / "export" / "export.json").read_text())
    q = export["quantization"]
    row["candidates"] = q["candidates"]
    row["float_p50_us"] = q["float_p50_us"]
    row["firmware"] = q["firmware"]
    verify = edgefashion("verify", run, *GATES)
    report = json.loads((run / "verify.json").read_text())
    row["test"] = {m["format"]: {"drop_pp": m["accuracy_drop_pp"], "agreement": m["top1_agreement"]}
                   for m in report["models"]}
    row["test_reference_accuracy"] = report["reference"]["accuracy"]
    row["verify_exit"] = verify.returncode
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| model | format | PTQ drop pp / agreement | chosen | chosen drop pp / agreement | int8 p50 / float p50 (us) "
             "| test set drop pp / agreement | candidates tried (drop pp / agreement) | export s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | - | - | export failed: {row['error'].replace('|', '/')} | | | | | "
                         f"{row['export_s']} |")
            continue
        for fmt, f32 in (("tflite-int8", "tflite-f32"), ("onnx-int8", "onnx-f32")):
            tried = [c for c in row["candidates"] if c["format"] == fmt]
            ptq, chosen = tried[0], next(c for c in tried if c["chosen"])
            test = row["test"][fmt]
            floats = f" ({', '.join(chosen['float_layers'])} float, {chosen['float_share']:.0%} of its time)" \
                if chosen["float_layers"] and chosen["float_share"] is not None else ""
            lines.append(
                f"| {row['model']} | {fmt} | {ptq['accuracy_drop_pp']:+.2f} / {ptq['top1_agreement']:.2%} | "
                f"{chosen['name']}{floats} | {chosen['accuracy_drop_pp']:+.2f} / {chosen['top1_agreement']:.2%} | "
                f"{chosen['p50_us']:.0f} / {row['float_p50_us'][f32]:.0f} = {chosen['p50_us'] / row['float_p50_us'][f32]:.2f} | "
                f"{test['drop_pp']:+.2f} / {test['agreement']:.2%} | "
                + ", ".join(f"{c['name']} {c['accuracy_drop_pp']:+.2f}/{c['top1_agreement']:.1%}" for c in tried)
                + f" | {row['export_s']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seed_run", type=Path, help="a trained seed-CNN run")
    parser.add_argument("--family", type=Path, nargs="*", default=[], help="trained runs of tune's family")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the copies")
    parser.add_argument("--quantization", default="auto",
                        help="export's --quantization (auto; qat measures quantization-aware fine-tuning alone)")
    args = parser.parse_args()
    if args.out.exists():
        parser.exit(2, f"error: {args.out}: exists; give a new folder\n")
    runs = [("seed CNN", copy_run(args.seed_run, args.out / "seed"))]
    for kind in bad_int8_models.KINDS:
        runs.append((f"seed CNN, {kind}", bad_int8_models.make(args.seed_run, args.out / kind, kind)))
    for family in args.family:
        runs.append((f"family {family.name}", copy_run(family, args.out / family.name)))
    rows = []
    for name, run in runs:
        print(f"-- {name}", file=sys.stderr, flush=True)
        rows.append(measure(name, run, args.quantization))
    (args.out / "int8_search.json").write_text(json.dumps(rows, indent=2))
    table = markdown(rows)
    (args.out / "int8_search.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
