"""edgefashion command line: train, export, verify, bench, bundle, firmware, selftest, predict, run, tune, keygen.

Options come from each stage's config dataclass (edgefashion.options), so defaults live in one place.
Errors are one line on stderr: exit 2 for bad input, 1 for a failed check. TensorFlow is imported
only by the host commands that need it, so device commands run without it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

from . import __version__, cpu
from .device.bench import BenchConfig, bench, table_rows
from .console import printable
from .device import compare, trust
from .device.selftest import Limits, selftest
from .device.predict import predict
from .device.runtime import BACKEND_HELP, BACKENDS
from .device.locate import is_bundle
from .device.verify import Gates, VerifyConfig, gate_failure, summary_rows, verify, verify_bundle
from .errors import CheckFailed, InputError
from .files import check_output
from .host.bundle import BundleConfig, make_bundle
from .host.export import ExportConfig, export
from .host.firmware import FirmwareConfig, firmware
from .host.firmware import summary_lines as firmware_summary
from .host.firmware import target_rows as firmware_targets
from .host.train import TrainConfig, train
from .host.tune import TuneConfig, tune
from .host.tune import front_rows as tune_front_rows
from .options import add_options, fraction, from_args, positive_int, thread_count
from .pipeline import RunConfig, keras_reference, run
from .render import table
from .rundir import Run, TuneDir
from .formats import FORMATS


def gates_from(args) -> Gates:
    return from_args(Gates, args).validate()


def add_train(sub) -> None:
    p = sub.add_parser("train", help="fit the seed CNN (or another --arch) on Fashion-MNIST (host)",
                       description="Fit the seed CNN. Writes RUN/model.keras (best epoch by val_accuracy), "
                                   "history.json, training_curves.png and config.json, then evaluates "
                                   "on the held-out test set.")
    p.add_argument("--out", type=Path, required=True, help="run directory to write")
    add_options(p, TrainConfig)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    result = train(from_args(TrainConfig, args, out=args.out, verbose=args.verbose))
    line = (f"best epoch {result.best_epoch}: val_accuracy {result.val_accuracy:.4f}"
            if result.best_epoch else "no epoch finished")
    if result.test and result.test.accuracy is not None:
        line += f", test accuracy {result.test.accuracy:.4f} on {result.test.samples} images"
    print(f"{line} ({result.fit_seconds} s) -> {Run(args.out).model}")
    return 130 if result.interrupted else 0


def add_export(sub) -> None:
    p = sub.add_parser("export", help="quantize RUN/model.keras to int8/float TFLite and ONNX (host)",
                       description="Write RUN/export/: model_int8.tflite (full-integer int8), model_f32.tflite, "
                                   "model_f32.onnx, model_int8.onnx (QDQ: uint8 activations, per-channel 7-bit "
                                   "int8 weights, the same integers on every CPU), the int8 model as a C array, "
                                   "the calibration indices, the per-layer int8 error table and export.json. "
                                   "Each model is checked against Keras on the calibration images with the "
                                   "gates below; the new set replaces the old one only whole.")
    p.add_argument("run", type=Path, help="run directory holding model.keras")
    add_options(p, ExportConfig)
    add_options(p, Gates)
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    manifest = export(from_args(ExportConfig, args, run=args.run, gates=gates_from(args), verbose=args.verbose))
    rows = [{"file": a.file, "format": a.format, "bytes": a.bytes,
             "check": ", ".join(f"{k} {v:.3g}" for k, v in (a.check or {}).items()), "seconds": a.seconds}
            for a in manifest.artifacts]
    print(table(rows))
    print(f"calibration: {manifest.calibration.count} training images, seed {manifest.calibration.seed}"
          f" -> {Run(args.run).export_manifest}")
    return 0


def add_verify(sub) -> None:
    p = sub.add_parser("verify", help="cross-check every exported model against the float model",
                       description="Run the float reference (Keras on the host, model_f32.tflite without "
                                   "TensorFlow) and every exported model on the held-out test set. Writes "
                                   "RUN/verify.json, verify.md and confusion_*.png. On a device, give the bundle "
                                   "instead: its models against its float model on --data or its golden images, "
                                   "no TensorFlow (--out writes verify.json). Exit 1 if a gate fails.")
    p.add_argument("run", type=Path, metavar="RUN|BUNDLE", help="run directory with export/export.json, or a bundle")
    add_options(p, VerifyConfig)
    add_options(p, Gates)
    p.add_argument("--json", action="store_true", help="print verify.json instead of the table")
    p.add_argument("--out", type=Path, help="verify.json to write for a bundle (a run writes RUN/verify.json)")
    add_trust_options(p)
    p.set_defaults(func=cmd_verify)


def cmd_verify(args) -> int:
    config = from_args(VerifyConfig, args, run=args.run, gates=gates_from(args), verbose=args.verbose,
                       out=args.out)
    if is_bundle(args.run):
        if args.out is not None:
            check_output(args.out, ".json", [args.run])
        report = verify_bundle(config, trust_from(args))
    else:
        report = verify(config, keras_reference(config))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(table(summary_rows(report)))
        written = args.out if is_bundle(args.run) else Run(args.run).verify
        print(f"{report.reference.samples} images, {report.seconds} s" + (f" -> {written}" if written else ""))
    for r in report.models:
        for warning in r.warnings:
            print(printable(f"warning: {warning}"), file=sys.stderr)
    where = f"on {report.reference.samples} test images vs {report.reference.format}"
    for r in report.models:
        if r.failures:
            print("FAILED: " + gate_failure(r.file, r.failures, where), file=sys.stderr)
    return 0 if report.passed else 1


def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="measure inference latency of exported models (edge runtime only)",
                       description="Benchmark model files, run directories (their export/ models) or bundles. "
                                   "Each model and thread count runs in a fresh process: warm-up runs, then "
                                   "timed runs. Writes bench.json, bench.csv and bench.png.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="model file, run directory or bundle")
    add_options(p, BenchConfig)
    p.add_argument("--out", type=Path, help="bench.json path (default: RUN/bench.json or ./bench.json)")
    p.add_argument("--json", action="store_true", help="print bench.json instead of the table (and write "
                                                          "files only with --out)")
    add_trust_options(p)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    config = from_args(BenchConfig, args, paths=args.paths, out=args.out, trust=trust_from(args))
    report, written = bench(config, write=not args.json or args.out is not None)  # --json alone writes nothing
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    env = report.environment
    print(f"{env.cpu_model} ({env.cores} cores, {env.machine}); int8 path: {env.cpu.int8_path}; "
          f"governor {env.cpu_governor or 'unknown'}" + (f"; board {env.board_model}" if env.board_model else ""))
    print(table(table_rows(report.results)))
    if report.comparison:
        print("\nint8 vs float (p50):")
        print(table(report.comparison))
    for name, prof in (report.profiles or {}).items():
        print(f"\n{name} ({prof['format']}), per operator at batch 1: {prof['method']}")
        print(table([{"op": op["name"], "type": op["type"], "dtype": op["dtype"], "us": op["us"],
                      "share": f"{op['share']:.1%}" if op["share"] is not None else "-"} for op in prof["ops"]]))
        print(f"sum {prof['total_us']} us vs whole model {prof['model_us']} us (x{prof['sum_vs_model']})")
    for note in report.warnings:
        print(f"warning: {note}", file=sys.stderr)
    print(f"-> {written}")
    return 0


def add_compare(sub) -> None:
    p = sub.add_parser("compare", help="put bench, verify and selftest results of several devices side by side",
                       description="Read bench.json files (from `edgefashion bench` on each machine) and print, "
                                   "per format, the p50 latency per image on each device, and each device's "
                                   "int8/float ratio; plot them side by side. Devices are labelled by board or "
                                   "CPU, cores, machine, governor, runtime, and marked when emulated. verify.json "
                                   "files give the accuracy per format per device, `selftest --json` outputs the "
                                   "checks passed and failed.")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE",
                   help="bench.json, verify.json or a saved `selftest --json` output, of each device")
    p.add_argument("--batch", type=positive_int, default=1, help="batch size to compare (default 1)")
    p.add_argument("--threads", type=thread_count, default=1, help="thread count to compare (default 1)")
    p.add_argument("--plot", type=Path, default=Path("compare.png"), help="plot to write (default compare.png)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    benches, verifies, selftests = compare.load(args.files)
    if benches:
        for i, (label, _) in enumerate(benches):
            print(printable(f"D{i + 1}: {label}"))
        rows = compare.compare_rows(benches, args.batch, args.threads)
        print(table(rows))
        check_output(args.plot, ".png", args.files)
        if compare.plot(benches, rows, args.plot, args.batch, args.threads):
            print(f"-> {args.plot}")
    if verifies:
        print()
        for i, (label, _) in enumerate(verifies):
            print(printable(f"V{i + 1}: {label}"))
        print(table(compare.accuracy_rows(verifies)))
    if selftests:
        print()
        for i, (label, _) in enumerate(selftests):
            print(printable(f"S{i + 1}: {label}"))
        print(table(compare.selftest_rows(selftests)))
    return 0


def add_bundle(sub) -> None:
    p = sub.add_parser("bundle", help="pack a run's models, labels and golden vectors for a device",
                       description="Write one .tar.gz with the int8 and float models (TFLite and ONNX), "
                                   "labels, golden vectors (test images with the host's outputs), the host's "
                                   "verify and bench summaries, and manifest.json (sha256 of every file).")
    p.add_argument("run", type=Path, help="run directory with export/")
    p.add_argument("--out", type=Path, required=True, help="bundle file to write (.tar.gz)")
    add_options(p, BundleConfig)
    p.set_defaults(func=cmd_bundle)


def cmd_bundle(args) -> int:
    manifest = make_bundle(from_args(BundleConfig, args, run=args.run, out=args.out))
    size = args.out.stat().st_size
    print(f"{args.out}: {len(manifest.files) + 1} files, {size / 1e6:.2f} MB, "
          f"{manifest.golden.count} golden images, models: {', '.join(manifest.models)}")
    return 0


def add_selftest(sub) -> None:
    p = sub.add_parser("selftest", help="check a bundle on this device (no TensorFlow needed)",
                       description="Extract a bundle safely, check every sha256, load each model with the "
                                   "installed interpreter, compare its outputs on the golden images with "
                                   "the host's, and repeat the int8-vs-float cross-check. Exit 0 only if "
                                   "every check passes.")
    p.add_argument("bundle", type=Path, help="bundle .tar.gz made by `edgefashion bundle`")
    p.add_argument("--threads", type=thread_count, default=1, help="interpreter threads (default 1)")
    add_backend_option(p)
    p.add_argument("--json", action="store_true", help="print the checks as JSON (with this CPU's int8 path)")
    add_trust_options(p)
    add_options(p, Limits)
    p.set_defaults(func=cmd_selftest)


def cmd_selftest(args) -> int:
    if not args.bundle.is_file():
        raise InputError(f"{args.bundle}: bundle not found")
    report = selftest(args.bundle, threads=args.threads, on_check=(lambda line: None) if args.json else print,
                      trust=trust_from(args), limits=from_args(Limits, args), backend=args.backend)
    failed, skipped = len(report.failed), report.skipped
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(f"{len(report.checks) - failed - skipped} passed, {failed} failed"
              + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify images with a bundle or model file",
                       description="Classify a seed-format CSV (with or without the label column), PNG/JPEG "
                                   "images (any size: converted to 28x28 grayscale, light object on black, "
                                   "like Fashion-MNIST) or a .npy array. Shows accuracy when labels are given.")
    p.add_argument("model", type=Path, metavar="BUNDLE|MODEL|RUN", help="bundle, model file or run directory")
    p.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="CSV, .npy, or image files")
    p.add_argument("--format", default=None, choices=FORMATS,
                   help="which model of a bundle or run to use (default tflite-int8)")
    p.add_argument("--threads", type=thread_count, default=1, help="interpreter threads (default 1)")
    add_backend_option(p)
    p.add_argument("--show", "--limit", dest="show", type=positive_int, default=20, metavar="N",
                   help="rows shown in the table (default 20; --json for all)")
    p.add_argument("--top", type=positive_int, default=1, metavar="K", help="show the K most likely classes")
    p.add_argument("--min-confidence", type=fraction, default=0.5, metavar="P",
                   help="warn about predictions whose probability is below P (default 0.5)")
    p.add_argument("--save-input", type=Path, metavar="DIR",
                   help="write the 28x28 images the model saw into DIR, as PNG")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_trust_options(p)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    result = predict(args.model, args.inputs, fmt=args.format, threads=args.threads, trust=trust_from(args),
                     backend=args.backend, top=args.top, save_input=args.save_input)
    unsure = [r for r in result.predictions if r.probability < args.min_confidence]
    if unsure:
        shown = ", ".join(f"{r.input} ({r.label} {r.probability:.2f})" for r in unsure[:3])
        print(printable(f"warning: {len(unsure)} of {len(result.predictions)} predictions below confidence "
                        f"{args.min_confidence:.2f}: {shown}{' ...' if len(unsure) > 3 else ''}"), file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    rows = [{"input": r.input, "class": r.class_id, "label": r.label, "probability": r.probability,
             **({"top": ", ".join(f"{label} {p:.2f}" for label, p in r.top)} if r.top else {}),
             **({"truth": r.truth} if r.truth is not None else {})} for r in result.predictions]
    print(table(rows[:args.show]))
    if len(rows) > args.show:
        print(f"... {len(rows) - args.show} more (--show N or --json for all)")
    summary = (f"{len(rows)} image{'s' if len(rows) != 1 else ''}, {result.model['format']} on "
               f"{result.model['backend']}")
    if result.accuracy is not None:
        summary += f", accuracy {result.accuracy:.4f}"
    print(summary)
    return 0


def add_backend_option(p) -> None:
    p.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP + " (default auto)")


def add_trust_options(p) -> None:
    p.add_argument("--trust", type=Path, action="append", default=[], metavar="PUBKEY",
                   help=f"accept only bundles signed by this Ed25519 public key (repeatable); the .pub files in "
                        f"{trust.trusted_dir()} are trusted too")
    p.add_argument("--pin", metavar="SHA256", help="accept only the bundle file with this sha256")


def trust_from(args) -> trust.Trust:
    return trust.Trust.load(args.trust, args.pin)


def add_firmware(sub) -> None:
    p = sub.add_parser("firmware", help="run the int8 model on TensorFlow Lite Micro; arena, ops, targets (host)",
                       description="Run RUN/export/model_int8.tflite on the real TensorFlow Lite Micro interpreter "
                                   "(the tflite-micro package, x86_64 only) over the test set: accuracy, outputs "
                                   "against LiteRT's reference kernels, the tensor arena TFLM allocates, the "
                                   "operators to register, and which microcontrollers it fits. Writes "
                                   "RUN/firmware/firmware.json and a model_int8_data.h/.cc a firmware can use as "
                                   "they are.")
    p.add_argument("run", type=Path, help="run directory with export/model_int8.tflite")
    add_options(p, FirmwareConfig)
    p.add_argument("--json", action="store_true", help="print firmware.json instead of the summary")
    p.set_defaults(func=cmd_firmware)


def cmd_firmware(args) -> int:
    config = from_args(FirmwareConfig, args, run=args.run)
    report = firmware(config)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print("\n".join(firmware_summary(report)))
        print(table(firmware_targets(report)))
        print(report.uncounted)
        print(f"-> {Run(args.run).firmware.folder}/ (firmware.json, model_int8_data.h, model_int8_data.cc)")
    if report.differing_values_vs_litert_reference:
        print(f"warning: TFLM differs from LiteRT's reference kernels in {report.differing_values_vs_litert_reference} "
              f"values", file=sys.stderr)
    checked = {t.name for t in config.checked()}
    misfits = [t for t in report.targets if t.target in checked and t.verdict == "does not fit"]
    for t in misfits:
        print(f"FAILED: {t.target}: does not fit ({t.why})", file=sys.stderr)
    return 1 if misfits else 0


def add_tune(sub) -> None:
    p = sub.add_parser("tune", help="search the architecture family for models that fit a device (host, Optuna)",
                       description="Multi-objective architecture search with Optuna (NSGA-II): each trial trains on "
                                   "the training rows, converts to int8 TFLite and measures int8 validation "
                                   "accuracy, int8 p50 latency at batch 1 on this machine, model size and the TFLM "
                                   "arena. The budgets are constraints. Writes DIR/pareto.json, DIR/pareto.png, "
                                   "DIR/trials/NNNN/ and the chosen model (best accuracy inside the budgets) as "
                                   "the run directory DIR/best, which export, verify, bench and bundle take as it "
                                   "is. Run it again to resume; --jobs K runs K processes on the study; --storage "
                                   "URL shares it between machines.")
    p.add_argument("--out", type=Path, required=True, help="tune directory (the study journal lives here)")
    add_options(p, TuneConfig)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_tune)


def cmd_tune(args) -> int:
    config = from_args(TuneConfig, args, out=args.out, verbose=args.verbose)
    result = tune(config, worker=args.worker)
    if args.worker:
        return 0
    print(table(tune_front_rows(result)))
    best = TuneDir(args.out).best_run
    print(f"{sum(t.state == 'COMPLETE' for t in result.trials)} trials; front: "
          f"{sum(t.on_front for t in result.trials)}; chosen trial {result.chosen} -> {best.root} "
          f"(export it with `edgefashion export {best.root}`); {TuneDir(args.out).report}, {TuneDir(args.out).plot}")
    return 0


def add_keygen(sub) -> None:
    p = sub.add_parser("keygen", help="make an Ed25519 key pair to sign bundles with (workstation)",
                       description="Write KEY (private, PEM, mode 0600; keep it on the workstation) and KEY.pub "
                                   "(public, one OpenSSH line). Sign with `bundle --sign KEY`; on a device, "
                                   f"copy KEY.pub into {trust.trusted_dir()}/ (or pass --trust KEY.pub) and it "
                                   "refuses every bundle not signed by KEY.")
    p.add_argument("key", type=Path, metavar="KEY", help="private key file to write, e.g. keys/edgefashion.key")
    p.add_argument("--comment", default=f"edgefashion@{platform.node() or 'host'}",
                   help="label stored in the public key (default: edgefashion@HOSTNAME)")
    p.set_defaults(func=cmd_keygen)


def cmd_keygen(args) -> int:
    private, public, name = trust.generate_key(args.key, printable(args.comment))
    print(f"key {name}: private {private} (keep it secret), public {public} -> copy it to "
          f"{trust.trusted_dir()}/ on each device")
    return 0


def add_run(sub) -> None:
    p = sub.add_parser("run", help="the whole job: train -> export -> verify -> bench -> bundle -> firmware",
                       description="Train with the seed's settings, export, verify, benchmark, bundle, and run "
                                   "the int8 model on TensorFlow Lite Micro (skipped where tflite-micro is not "
                                   "installed), all in one run directory. Stops at the first failing stage; run it "
                                   "again to resume after the last finished stage (--restart to redo everything). "
                                   "--seed also picks the calibration images, --data also feeds calibration "
                                   "and --test-data is also verify's and firmware's test set.")
    p.add_argument("--out", type=Path, default=Path("runs/latest"), help="run directory (default runs/latest)")
    add_options(p, TrainConfig)
    add_options(p, ExportConfig, skip=("seed", "data"))
    add_options(p, Gates)
    add_options(p, VerifyConfig, skip=("data", "threads", "backend"))
    add_options(p, BenchConfig, skip=("backend",))
    add_options(p, BundleConfig)
    add_options(p, FirmwareConfig, skip=("data", "target", "ram_kb", "flash_kb"))
    p.add_argument("--restart", action="store_true", help="ignore finished stages and start over")
    p.set_defaults(func=cmd_run)


def run_config(args) -> RunConfig:
    """Each stage's config from the one set of `run` options."""
    gates = gates_from(args)
    return RunConfig(
        out=args.out,
        train=from_args(TrainConfig, args, out=args.out, verbose=args.verbose),
        export=from_args(ExportConfig, args, run=args.out, gates=gates, verbose=args.verbose),
        verify=from_args(VerifyConfig, args, run=args.out, data=args.test_data, threads=1, gates=gates,
                         verbose=args.verbose),
        bench=from_args(BenchConfig, args, paths=[args.out], out=Run(args.out).bench),
        bundle=from_args(BundleConfig, args, run=args.out, out=Run(args.out).bundle),
        firmware=from_args(FirmwareConfig, args, run=args.out, data=args.test_data),
        restart=args.restart)


def cmd_run(args) -> int:
    started = time.monotonic()
    state = run(run_config(args))
    summary = state.summary
    print(table(summary.rows))
    stages = ", ".join(f"{name} {stage.seconds if stage.seconds is not None else '-'} s"
                       for name, stage in state.stages.items())
    print(f"accuracy on {summary.samples} test images; p50 latency at batch 1, 1 thread on {summary.cpu.model} "
          f"(int8 path: {summary.cpu.int8_path}).\n"
          f"stages: {stages}; this invocation {time.monotonic() - started:.0f} s")
    if summary.firmware:
        print(summary.firmware + f" (details: {Run(args.out).firmware.report})")
    if summary.bundle_bytes:
        print(f"bundle: {summary.bundle} ({summary.bundle_bytes / 1e6:.2f} MB) -> copy it to the device "
              f"and run `edgefashion selftest {Path(summary.bundle).name}`")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="edgefashion",
        description="Train a Fashion-MNIST CNN on a workstation, quantize it to int8 TFLite and ONNX, "
                    "and run, verify and benchmark it on Raspberry Pi-class CPUs.")
    parser.add_argument("--version", action="version", version=f"edgefashion {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's own log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    for command in sub.choices.values():  # the global option works after the command too
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="show TensorFlow's own log output")
    return parser


COMMANDS = [add_train, add_export, add_verify, add_bench, add_compare, add_bundle, add_firmware, add_selftest, add_predict,
            add_run, add_tune, add_keygen]


MESSAGE_LIMIT = 2000  # characters of one error line


class Parser(argparse.ArgumentParser):
    """argparse, with a bad flag answered in one line (no usage block) and exit 2."""

    def error(self, message):
        self.exit(2, printable(f"{self.prog}: error: {message} (see {self.prog} --help)") + "\n")


class Terminated(Exception):
    """SIGTERM or SIGHUP: unwind like Ctrl-C, so temporary folders are removed."""


def _terminate(signum, frame):
    raise Terminated(signal.Signals(signum).name)


def main(argv=None) -> int:
    previous = {signum: signal.signal(signum, _terminate) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return _main(argv)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(printable(f"error: {exc}", MESSAGE_LIMIT), file=sys.stderr)
        return exc.exit_code
    except CheckFailed as exc:
        print(printable(f"FAILED: {exc}", MESSAGE_LIMIT), file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, Terminated) as exc:
        print(f"interrupted{f' ({exc})' if str(exc) else ''}", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 143
    except BrokenPipeError:
        return 0
    except OSError as exc:  # unwritable output folder, full disk, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(printable(f"error: {where}{exc.strerror or exc}"), file=sys.stderr)
        return 2
    except RecursionError:
        print("error: input nested too deeply to read (recursion limit)", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; try a smaller input or batch", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug of ours: still one line; EDGEFASHION_DEBUG=1 shows where
        if os.environ.get("EDGEFASHION_DEBUG"):
            raise
        print(printable(f"error: unexpected {type(exc).__name__}: {str(exc)[:200]} (a bug in edgefashion; "
                        f"EDGEFASHION_DEBUG=1 shows the traceback)"), file=sys.stderr)
        return 70
