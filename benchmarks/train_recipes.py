#!/usr/bin/env python3
"""What the training recipes buy: test accuracy of the same architectures trained with the seed's
recipe (constant learning rate, plain images) and with --lr-schedule cosine and --augment, on the
full Fashion-MNIST, same seed and epochs. One training per cell, each in its own `edgefashion train`.

    python benchmarks/train_recipes.py --out runs/recipes [--arch seed,small] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgefashion import cpu  # noqa: E402
from edgefashion.render import table  # noqa: E402

RECIPES = [("constant", "none"), ("cosine", "none"), ("cosine", "shift"), ("cosine", "shift+flip")]


def train(out: Path, arch: str, epochs: int, schedule: str, augment: str) -> dict:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "edgefashion", "train", "--out", str(out), "--arch", arch,
                           "--epochs", str(epochs), "--lr-schedule", schedule, "--augment", augment],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{out}: train failed: {done.stderr.strip().splitlines()[-1]}")
    config = json.loads((out / "config.json").read_text())
    return {"arch": arch, "epochs": epochs, "lr_schedule": schedule, "augment": augment,
            "val_accuracy": round(config["val_accuracy"], 4), "test_accuracy": round(config["test"]["accuracy"], 4),
            "best_epoch": config["best_epoch"], "wall_s": round(time.monotonic() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the runs")
    parser.add_argument("--arch", default="seed,small", help="comma list of train's --arch values")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    if args.out.exists():
        parser.exit(2, f"error: {args.out}: exists; give a new folder\n")
    rows = []
    for arch in args.arch.split(","):
        for schedule, augment in RECIPES:
            name = f"{arch}-{schedule}-{augment}".replace("+", "-")
            print(f"-- {name}", file=sys.stderr, flush=True)
            rows.append(train(args.out / name, arch, args.epochs, schedule, augment))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recipes.json").write_text(json.dumps(rows, indent=2))
    info = cpu.describe()
    print(f"{time.strftime('%Y-%m-%d')}, {info.model} ({os.cpu_count()} cores, {info.int8_path}); full Fashion-MNIST, "
          f"seed 0, float test accuracy")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
