"""edgefashion command line: train, export, verify, bench, bundle, selftest, predict, run.

Errors are one line on stderr: exit 2 for bad input, 1 for a failed check.
Heavy modules are imported inside each command, so device commands never load TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__
from .errors import CheckFailed, InputError
from .artifacts import FORMATS
from .report import table
from .verify import Gates


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def int_list(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32], each a positive integer."""
    return [positive_int(part) for part in text.split(",") if part.strip()] or [positive_int(text)]


def fraction(text: str) -> float:
    """0.98 or 98 (a percentage) -> 0.98."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    return value / 100 if 1 < value <= 100 else value


def add_gate_options(p) -> None:
    """--max-drop, --min-agreement, --float-tolerance: the one set of gates (export, verify, run)."""
    defaults = Gates()
    p.add_argument("--max-drop", type=float, default=defaults.max_drop_pp, dest="max_drop_pp", metavar="PP",
                   help=f"{Gates.HELP['max_drop_pp']} (default {defaults.max_drop_pp:g})")
    p.add_argument("--min-agreement", type=fraction, default=defaults.min_agreement, metavar="FRACTION",
                   help=f"{Gates.HELP['min_agreement']} (default {defaults.min_agreement:g})")
    p.add_argument("--float-tolerance", type=float, default=defaults.float_tolerance, metavar="P",
                   help=f"{Gates.HELP['float_tolerance']} (default {defaults.float_tolerance:g})")


def gates_from(args) -> Gates:
    return Gates(max_drop_pp=args.max_drop_pp, min_agreement=args.min_agreement,
                 float_tolerance=args.float_tolerance).validate()


def add_train(sub) -> None:
    p = sub.add_parser("train", help="fit the seed CNN on Fashion-MNIST (host)",
                       description="Fit the seed CNN. Writes RUN/model.keras (best epoch by val_accuracy), "
                                   "history.json, training_curves.png and config.json, then evaluates "
                                   "on the held-out test set.")
    p.add_argument("--data", type=Path, help="training CSV (seed format) or IDX folder "
                                             "(default: the local Fashion-MNIST)")
    p.add_argument("--test-data", type=Path, help="test CSV or IDX folder (default: beside --data or local)")
    p.add_argument("--out", type=Path, required=True, help="run directory to write")
    p.add_argument("--epochs", type=positive_int, default=4, help="default 4 (the seed's)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="default 100 (the seed's)")
    p.add_argument("--validation-split", type=float, default=0.2, help="default 0.2 (the seed's)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam",
                   help="adam (the seed's) or mini-batch SGD with momentum")
    p.add_argument("--learning-rate", type=float, help="default: adam 0.001, sgd 0.01")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed (default 0). The same seed, data, settings and package versions give "
                        "the same weights on the same CPU family; another CPU (AVX-512 vs AVX2, x86 vs Arm) "
                        "rounds float sums differently and trains a slightly different model (test accuracy "
                        "0.8988 vs 0.9029 for the defaults). An exported int8 model gives the same "
                        "integers on every CPU.")
    p.add_argument("--limit", type=positive_int, help="use only the first N training rows (quick runs)")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from .host.train import TrainConfig, train

    config = TrainConfig(out=args.out, data=args.data, test_data=args.test_data, epochs=args.epochs,
                         batch_size=args.batch_size, validation_split=args.validation_split,
                         optimizer=args.optimizer, learning_rate=args.learning_rate,
                         momentum=args.momentum, seed=args.seed, limit=args.limit, verbose=args.verbose)
    result = train(config)
    line = (f"best epoch {result['best_epoch']}: val_accuracy {result['val_accuracy']:.4f}"
            if result["best_epoch"] else "no epoch finished")
    if result.get("test", {}) and "accuracy" in result["test"]:
        line += f", test accuracy {result['test']['accuracy']:.4f} on {result['test']['samples']} images"
    print(f"{line} ({result['fit_seconds']} s) -> {args.out / 'model.keras'}")
    return 130 if result["interrupted"] else 0


def add_export(sub) -> None:
    p = sub.add_parser("export", help="quantize RUN/model.keras to int8/float TFLite and ONNX (host)",
                       description="Write RUN/export/: model_int8.tflite (full-integer int8), model_f32.tflite, "
                                   "model_f32.onnx, model_int8.onnx (QDQ: uint8 activations, per-channel 7-bit "
                                   "int8 weights, the same integers on every CPU), the int8 model as a C array, "
                                   "and export.json. Each model is checked against Keras on the calibration "
                                   "images with the gates below; the new set replaces the old one only whole.")
    p.add_argument("run", type=Path, help="run directory holding model.keras")
    p.add_argument("--formats", default=",".join(FORMATS),
                   help=f"comma-separated subset of {','.join(FORMATS)} (default: all)")
    p.add_argument("--calibration", type=positive_int, default=500,
                   help="number of training images used to calibrate int8 (default 500)")
    p.add_argument("--seed", type=int, default=0, help="seed choosing the calibration images")
    p.add_argument("--data", type=Path, help="training CSV or IDX folder for calibration "
                                             "(default: the data the run was trained on)")
    add_gate_options(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from .host.export import ExportConfig, export

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    manifest = export(ExportConfig(run=args.run, formats=formats, calibration_count=args.calibration,
                                   seed=args.seed, data=args.data, gates=gates_from(args),
                                   verbose=args.verbose))
    rows = [{"file": a["file"], "format": a["format"], "bytes": a["bytes"],
             "check": ", ".join(f"{k} {v:.3g}" for k, v in a.get("check", {}).items()),
             "seconds": a.get("seconds")} for a in manifest["artifacts"]]
    print(table(rows))
    print(f"calibration: {manifest['calibration']['count']} training images, seed {manifest['calibration']['seed']}"
          f" -> {args.run / 'export' / 'export.json'}")
    return 0


def add_verify(sub) -> None:
    p = sub.add_parser("verify", help="cross-check every exported model against the float model",
                       description="Run the float reference (Keras on the host, model_f32.tflite without "
                                   "TensorFlow) and every exported model on the held-out test set. Writes "
                                   "RUN/verify.json, verify.md and confusion_*.png. Exit 1 if a gate fails.")
    p.add_argument("run", type=Path, help="run directory with export/export.json")
    p.add_argument("--data", type=Path, help="test CSV (seed format, with labels) or IDX folder "
                                             "(default: the 10,000 Fashion-MNIST test images)")
    add_gate_options(p)
    p.add_argument("--reference", choices=["auto", "keras", "tflite-f32"], default="auto",
                   help="float reference (default: Keras when TensorFlow is installed)")
    p.add_argument("--threads", type=positive_int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--no-layer-report", action="store_true", help="skip the per-layer int8 error table")
    p.add_argument("--json", action="store_true", help="print verify.json instead of the table")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args) -> int:
    from .verify import VerifyConfig, gate_failure, summary_rows, verify

    report = verify(VerifyConfig(run=args.run, data=args.data, gates=gates_from(args), reference=args.reference,
                                 threads=args.threads, layer_report=not args.no_layer_report,
                                 verbose=args.verbose))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table(summary_rows(report)))
        print(f"{report['reference']['samples']} images, {report['seconds']} s -> {args.run / 'verify.json'}")
    for r in report["models"]:
        if r["failures"]:
            print("FAILED: " + gate_failure(r["file"], r["failures"], f"on {report['reference']['samples']} test "
                                            f"images vs {report['reference']['format']}"), file=sys.stderr)
    return 0 if report["passed"] else 1


def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="measure inference latency of exported models (edge runtime only)",
                       description="Benchmark model files, run directories (their export/ models) or bundles. "
                                   "Each model and thread count runs in a fresh process: warm-up runs, then "
                                   "timed runs. Writes bench.json, bench.csv and bench.png.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="model file, run directory or bundle")
    p.add_argument("--batch", type=int_list, default=[1], help="batch sizes, comma-separated (default 1)")
    p.add_argument("--threads", type=int_list, default=[1], help="thread counts, comma-separated (default 1)")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs first (default 20)")
    p.add_argument("--runs", type=positive_int, default=200, help="timed runs (default 200)")
    p.add_argument("--min-time", type=float, default=1.0,
                   help="keep timing for at least this many seconds per configuration (default 1.0)")
    p.add_argument("--out", type=Path, help="bench.json path (default: RUN/bench.json or ./bench.json)")
    p.add_argument("--json", action="store_true", help="print bench.json instead of the table")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from .bench import BenchConfig, bench, table_rows

    report = bench(BenchConfig(paths=args.paths, batches=args.batch, threads=args.threads, warmup=args.warmup,
                               runs=args.runs, min_time=args.min_time, out=args.out))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    env = report["environment"]
    print(f"{env['cpu_model']} ({env['cores']} cores, {env['machine']}); int8 path: {env['cpu']['int8_path']}; "
          f"governor {env['cpu_governor'] or 'unknown'}" + (f"; board {env['board_model']}" if env['board_model'] else ""))
    print(table(table_rows(report["results"])))
    if report["comparison"]:
        print("\nint8 vs float (p50):")
        print(table(report["comparison"]))
    for note in report["warnings"]:
        print(f"warning: {note}", file=sys.stderr)
    print(f"-> {report['written']}")
    return 0


def add_bundle(sub) -> None:
    p = sub.add_parser("bundle", help="pack a run's models, labels and golden vectors for a device",
                       description="Write one .tar.gz with the int8 and float models (TFLite and ONNX), "
                                   "labels, golden vectors (test images with the host's outputs), the host's "
                                   "verify and bench summaries, and manifest.json (sha256 of every file).")
    p.add_argument("run", type=Path, help="run directory with export/")
    p.add_argument("--out", type=Path, required=True, help="bundle file to write (.tar.gz)")
    p.add_argument("--golden", type=positive_int, default=200, help="golden test images (default 200)")
    p.set_defaults(func=cmd_bundle)


def cmd_bundle(args) -> int:
    from .bundle import make_bundle

    manifest = make_bundle(args.run, args.out, golden_count=args.golden)
    size = args.out.stat().st_size
    print(f"{args.out}: {len(manifest['files']) + 1} files, {size / 1e6:.2f} MB, "
          f"{manifest['golden']['count']} golden images, models: {', '.join(manifest['models'])}")
    return 0


def add_selftest(sub) -> None:
    p = sub.add_parser("selftest", help="check a bundle on this device (no TensorFlow needed)",
                       description="Extract a bundle safely, check every sha256, load each model with the "
                                   "installed interpreter, compare its outputs on the golden images with "
                                   "the host's, and repeat the int8-vs-float cross-check. Exit 0 only if "
                                   "every check passes.")
    p.add_argument("bundle", type=Path, help="bundle .tar.gz made by `edgefashion bundle`")
    p.add_argument("--threads", type=positive_int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON (with this CPU's int8 path)")
    p.set_defaults(func=cmd_selftest)


def cmd_selftest(args) -> int:
    from . import cpu
    from .bundle import selftest

    checks = selftest(args.bundle, threads=args.threads, report=(lambda line: None) if args.json else print)
    failed = [c for c in checks if not c.passed]
    if args.json:
        print(json.dumps({"passed": not failed, "cpu": cpu.describe(), "checks": [c.as_dict() for c in checks]},
                         indent=2))
    else:
        print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify images with a bundle or model file",
                       description="Classify a seed-format CSV (with or without the label column), PNG/JPEG "
                                   "images (any size: converted to 28x28 grayscale, light object on black, "
                                   "like Fashion-MNIST) or a .npy array. Shows accuracy when labels are given.")
    p.add_argument("model", type=Path, metavar="BUNDLE|MODEL|RUN", help="bundle, model file or run directory")
    p.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="CSV, .npy, or image files")
    p.add_argument("--format", default="tflite-int8", choices=FORMATS,
                   help="which model of a bundle or run to use (default tflite-int8)")
    p.add_argument("--threads", type=positive_int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--limit", type=positive_int, default=20, help="rows shown in the table (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from .predict import predict

    result = predict(args.model, args.inputs, fmt=args.format, threads=args.threads)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = result["predictions"]
    print(table(rows[:args.limit]))
    if len(rows) > args.limit:
        print(f"... {len(rows) - args.limit} more (--limit or --json for all)")
    summary = f"{len(rows)} images, {result['model']['format']} on {result['model']['backend']}"
    if result.get("accuracy") is not None:
        summary += f", accuracy {result['accuracy']:.4f}"
    print(summary)
    return 0


def add_run(sub) -> None:
    p = sub.add_parser("run", help="the whole job: train -> export -> verify -> bench -> bundle",
                       description="Train with the seed's settings, export, verify, benchmark and bundle, all "
                                   "in one run directory. Stops at the first failing stage; run it again to "
                                   "resume after the last finished stage (--restart to redo everything).")
    p.add_argument("--out", type=Path, default=Path("runs/latest"), help="run directory (default runs/latest)")
    p.add_argument("--data", type=Path, help="training CSV or IDX folder (default: the local Fashion-MNIST)")
    p.add_argument("--epochs", type=positive_int, default=4, help="default 4 (the seed's)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="default 100 (the seed's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--limit", type=positive_int, help="train on the first N rows only (a quick run)")
    p.add_argument("--calibration", type=positive_int, default=500, help="int8 calibration images (default 500)")
    add_gate_options(p)
    p.add_argument("--restart", action="store_true", help="ignore finished stages and start over")
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    from .pipeline import RunConfig, run

    started = time.monotonic()
    state = run(RunConfig(out=args.out, data=args.data, epochs=args.epochs, batch_size=args.batch_size,
                          seed=args.seed, limit=args.limit, calibration=args.calibration,
                          gates=gates_from(args), restart=args.restart, verbose=args.verbose))
    summary = state["summary"]
    print(table(summary["rows"]))
    stages = ", ".join(f"{k} {v.get('seconds', '-')} s" for k, v in state["stages"].items())
    print(f"accuracy on {summary['samples']} test images; p50 latency at batch 1, 1 thread.\n"
          f"stages: {stages}; this invocation {time.monotonic() - started:.0f} s")
    if summary["bundle_bytes"]:
        print(f"bundle: {summary['bundle']} ({summary['bundle_bytes'] / 1e6:.2f} MB) -> copy it to the device "
              f"and run `edgefashion selftest {Path(summary['bundle']).name}`")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgefashion",
        description="Train a Fashion-MNIST CNN on a workstation, quantize it to int8 TFLite and ONNX, "
                    "and run, verify and benchmark it on Raspberry Pi-class CPUs.")
    parser.add_argument("--version", action="version", version=f"edgefashion {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's own log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


COMMANDS = [add_train, add_export, add_verify, add_bench, add_bundle, add_selftest, add_predict, add_run]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except CheckFailed as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # unwritable output folder, full disk, ...
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
