"""edgefashion command line: train, export, verify, bench, bundle, firmware, selftest, predict, run, tune, keygen.

Options come from each stage's config dataclass (edgefashion.options), so defaults live in one place.
Errors are one line on stderr: exit 2 for bad input, 1 for a failed check. TensorFlow is imported
only by the host commands that need it, so device commands run without it.
"""

from __future__ import annotations

import argparse
import functools
import textwrap
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path

from . import __version__, data, plots
from .console import printable
from .device import compare, trust
from .device.bench import bench
from .device.locate import is_bundle, is_model_file
from .device.predict import predict
from .device.runtime import BACKEND_HELP, BACKENDS
from .device.selftest import Limits, selftest
from .device.verify import verify_bundle
from .errors import CheckFailed, InputError, MissingDependency
from .files import check_output
from .formats import FORMATS
from .host.bundle import make_bundle
from .host.firmware import model_fit, render_fit
from .host.tune import TuneConfig, tune
from .host.tune import front_rows as tune_front_rows
from .options import (THREADS_HELP, add_options, fraction, from_args, from_plain, given, positive_float, positive_int,
                      thread_count)
from .pipeline import STAGES, run, stage_named, verify_on_host
from .render import table
from .report import write as write_report
from .rundir import Run, TuneDir
from .schemas import VerifyReport
from .stage import Stage, with_verbosity


def add_stage(sub, stage: Stage, command=None, run_argument: bool = True,
              json_help: str = "print the report as JSON instead of the summary") -> argparse.ArgumentParser:
    """A stage's subcommand, built from the stage object: its help, its settings as options, and RUN
    (positional, or `--out RUN` for the stage that makes the run directory)."""
    p = sub.add_parser(stage.name, help=stage.help, description=stage.description)
    if run_argument and stage.makes_run:
        p.add_argument("--out", dest="run", type=Path, required=True, help="run directory to write")
    elif run_argument:
        p.add_argument("run", type=Path, help="run directory")
    add_options(p, stage.settings)
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(func=command or functools.partial(cmd_stage, stage))
    return p


def stage_settings(stage: Stage, args):
    """The stage's settings from its options (and --verbose, where the stage has it)."""
    return with_verbosity(from_args(stage.settings, args), args.verbose)


def cmd_stage(stage: Stage, args) -> int:
    """Any stage on one run directory: run it, show its report, exit 1 if it fails, 130 if interrupted."""
    run = Run(args.run)
    settings = stage_settings(stage, args)
    report = stage.run(settings, run)
    return show(stage, settings, report, args, f"{stage.render(report)}\n-> {stage.output(run)}")


def show(stage: Stage, settings, report, args, text: str) -> int:
    """The report as JSON (--json) or `text`, a FAILED line per failure; the exit code."""
    print(json.dumps(report.to_json(), indent=2) if args.json else text)
    failures = stage.failures(settings, report)
    for line in failures:
        print(printable("FAILED: " + line), file=sys.stderr)
    return 130 if getattr(report, "interrupted", False) else 1 if failures else 0


def add_verify(sub, stage: Stage) -> None:
    p = add_stage(sub, stage, command=cmd_verify, run_argument=False)
    p.add_argument("run", type=Path, metavar="RUN|BUNDLE", help="run directory with export/export.json, or a bundle")
    p.add_argument("--out", type=Path, help="verify.json to write for a bundle (a run writes RUN/verify.json)")
    add_force_option(p, "--out")
    add_trust_options(p)


def cmd_verify(args) -> int:
    stage = stage_named("verify")
    config = stage_settings(stage, args)
    if is_bundle(args.run):
        if args.out is not None:
            check_output(args.out, ".json", [args.run], ours=VerifyReport.written_at, force=args.force)
        report = verify_bundle(config, args.run, args.out, trust_from(args))
        written = args.out
    else:
        run_dir = Run(args.run)
        report = verify_on_host(config, run_dir)
        written = stage.output(run_dir)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(stage.render(report) + (f" -> {written}" if written else ""))
    for r in report.models:
        for warning in r.warnings:
            print(printable(f"warning: {warning}"), file=sys.stderr)
    for line in stage.failures(config, report):
        print("FAILED: " + line, file=sys.stderr)
    return 0 if report.passed else 1


def add_bench(sub, stage: Stage) -> None:
    p = add_stage(sub, stage, command=cmd_bench, run_argument=False,
                  json_help="print bench.json instead of the table (and write files only with --out)")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="model file, run directory or bundle")
    p.add_argument("--out", type=Path, help="bench.json path (default: RUN/bench.json or ./bench.json)")
    add_force_option(p, "--out (and its .csv and .png)")
    add_trust_options(p)


def cmd_bench(args) -> int:
    stage = stage_named("bench")
    report, written = bench(stage_settings(stage, args), args.paths, args.out, trust_from(args),
                            write=not args.json or args.out is not None, force=args.force)  # --json alone writes nothing
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    print(stage.render(report))
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
    add_threads_option(p, "thread count to compare")
    p.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                   help="also plot the devices side by side into FILE.png (default: no plot)")
    add_force_option(p, "--plot")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    benches, verifies, selftests = compare.load(args.files)  # labelled by file name, with its folder where shared
    if benches:
        for i, (label, _) in enumerate(benches):
            print(printable(f"D{i + 1}: {label}"))
        rows = compare.compare_rows(benches, args.batch, args.threads)
        print(f"p50 µs per image at batch {args.batch}, {args.threads} thread{'s' if args.threads > 1 else ''} "
              f"(int8/f32 rows: ratios):")
        print(table(rows))
        if args.plot is not None:
            check_output(args.plot, ".png", args.files, ours=plots.is_ours, force=args.force)
            if compare.plot(benches, rows, args.plot, args.batch, args.threads):
                print(f"-> {args.plot}")
    if verifies:
        print()
        for i, (label, _) in enumerate(verifies):
            print(printable(f"V{i + 1}: {label}"))
        rows = compare.accuracy_rows(verifies)
        print(table(rows))
        if args.plot is not None and not benches:  # with bench files too, the plot is theirs
            check_output(args.plot, ".png", args.files, ours=plots.is_ours, force=args.force)
            if compare.plot_accuracy(verifies, rows, args.plot):
                print(f"-> {args.plot}")
    if selftests:
        print()
        for i, (label, _) in enumerate(selftests):
            print(printable(f"S{i + 1}: {label}"))
        print(table(compare.selftest_rows(selftests)))
    return 0


def add_bundle(sub, stage: Stage) -> None:
    p = add_stage(sub, stage, command=cmd_bundle)
    p.add_argument("--out", type=Path, required=True, help="bundle file to write (.tar.gz)")
    add_force_option(p, "--out")


def cmd_bundle(args) -> int:
    stage = stage_named("bundle")
    manifest = make_bundle(stage_settings(stage, args), Run(args.run), args.out, force=args.force)
    if args.json:
        print(json.dumps(manifest.to_json(), indent=2))
    else:
        print(f"{args.out}: {args.out.stat().st_size / 1e6:.2f} MB, {stage.render(manifest)}")
        if args.sign is not None:
            print(f"signed with {args.sign}: devices that trust {args.sign.with_suffix('.pub').name} accept it, "
                  f"and refuse it if changed")
    return 0


def add_selftest(sub) -> None:
    p = sub.add_parser("selftest", help="check a bundle on this device (no TensorFlow needed)",
                       description="Extract a bundle safely, check every sha256, load each model with the "
                                   "installed interpreter, compare its outputs on the golden images with "
                                   "the host's, and repeat the int8-vs-float cross-check. Exit 0 only if "
                                   "every check passes.")
    p.add_argument("bundle", type=Path, help="bundle .tar.gz made by `edgefashion bundle`")
    add_threads_option(p)
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
                                   "images or a .npy array with any image classifier: a bundle, a run or a model "
                                   "file (.tflite or .onnx, NHWC or NCHW, grey or RGB, K classes). Photos are "
                                   "brought to the model's size: for a grey model drawn like Fashion-MNIST (light "
                                   "object centred on black), for an RGB model resized whole. Shows accuracy when "
                                   "labels are given.")
    p.add_argument("model", type=Path, metavar="BUNDLE|MODEL|RUN", help="bundle, model file or run directory")
    p.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="CSV, .npy, or image files")
    p.add_argument("--format", default=None, choices=FORMATS,
                   help="which model of a bundle or run to use (default tflite-int8)")
    add_threads_option(p)
    add_backend_option(p)
    p.add_argument("--show", dest="show", type=positive_int, default=20, metavar="N",
                   help="rows shown in the table (default 20; --json for all)")
    p.add_argument("--top", type=positive_int, default=1, metavar="K", help="show the K most likely classes")
    p.add_argument("--min-confidence", type=fraction, default=0.5, metavar="P",
                   help="warn about predictions whose probability is below P (default 0.5)")
    p.add_argument("--save-input", type=Path, metavar="DIR",
                   help="write the images the model saw into DIR, as PNG")
    p.add_argument("--labels", type=Path, metavar="FILE",
                   help="class names, one per line in label order (default: the run's or bundle's, else a label "
                        "file packed in the .tflite, else class 0 ... class K-1)")
    p.add_argument("--input-scale", type=positive_float, default=1 / 255, metavar="S",
                   help="a foreign float model's input is pixel * S + OFFSET (default 1/255: pixels in [0, 1], as "
                        "edgefashion's models; 2/255 with --input-offset -1 for [-1, 1])")
    p.add_argument("--input-offset", type=float, default=0.0, metavar="OFFSET",
                   help="see --input-scale (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_trust_options(p)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    result = predict(args.model, args.inputs, fmt=args.format, threads=args.threads, trust=trust_from(args),
                     backend=args.backend, top=args.top, save_input=args.save_input,
                     labels=None if args.labels is None else list(data.read_labels(args.labels)),
                     input_scale=args.input_scale, input_offset=args.input_offset)
    _warn_some([r for r in result.predictions if r.probability < args.min_confidence], len(result.predictions),
               f"predictions below confidence {args.min_confidence:.2f}")
    _warn_some([r for r in result.predictions if r.unusual], len(result.predictions),
               "inputs are unlike the training images, so their answers are guesses whatever their confidence")
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    rows = [_shown_prediction(row) for row in result.to_json()["predictions"]]
    print(table(rows[:args.show]))
    if len(rows) > args.show:
        print(f"... {len(rows) - args.show} more (--show N or --json for all)")
    summary = (f"{len(rows)} image{'s' if len(rows) != 1 else ''}, {result.model['format']} on "
               f"{result.model['backend']}")
    if result.accuracy is not None:
        summary += f", accuracy {result.accuracy:.4f}"
    print(summary)
    return 0


def _warn_some(rows: list, total: int, what: str) -> None:
    """One warning line for the predictions in `rows`: how many of `total`, and the first three."""
    if rows:
        shown = ", ".join(f"{r.input} ({r.label} {r.probability:.2f})" for r in rows[:3])
        print(printable(f"warning: {len(rows)} of {total} {what}: {shown}{' ...' if len(rows) > 3 else ''}"),
              file=sys.stderr)


def _shown_prediction(row: dict) -> dict:
    """A row of predict's table: the predicted class called so (the truth is the label), its top
    classes on one line, and a mark where the input is unlike the training images."""
    shown = {("predicted" if key == "label" else key): value for key, value in row.items()
             if key not in ("top", "unusual")}
    if "top" in row:
        shown["top"] = ", ".join(f"{label} {p:.2f}" for label, p in row["top"])
    if "unusual" in row:
        shown["unlike training"] = "yes" if row["unusual"] else ""
    return shown


def add_threads_option(p, help: str = THREADS_HELP) -> None:
    p.add_argument("--threads", type=thread_count, default=1, help=f"{help} (default 1)")


def add_backend_option(p) -> None:
    p.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP + " (default auto)")


def add_force_option(p, what: str) -> None:
    p.add_argument("--force", action="store_true",
                   help=f"replace an existing file at {what} that edgefashion did not write (without it such a "
                        f"file is refused; a link, a folder or an input of the command is refused always)")


def add_trust_options(p) -> None:
    p.add_argument("--trust", type=Path, action="append", default=[], metavar="PUBKEY",
                   help=f"accept only bundles signed by this Ed25519 public key (repeatable); the .pub files in "
                        f"{trust.trusted_dir()} are trusted too")
    p.add_argument("--pin", metavar="SHA256", help="accept only the bundle file with this sha256")
    p.add_argument("--allow-downgrade", action="store_true",
                   help="accept a signed bundle older than the newest this device accepted from the same key "
                        f"(recorded in {trust.config_dir() / trust.ACCEPTED})")


def trust_from(args) -> trust.Trust:
    return trust.Trust.load(args.trust, args.pin, args.allow_downgrade)


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
    p.add_argument("--worker", metavar="SETTINGS_JSON", help=argparse.SUPPRESS)  # a worker of --jobs
    p.set_defaults(func=cmd_tune)


def cmd_tune(args) -> int:
    if args.worker:  # the first process's settings, as they are
        tune(from_plain(TuneConfig, json.loads(args.worker)), args.out, worker=True)
        return 0
    result = tune(from_args(TuneConfig, args, verbose=args.verbose), args.out)
    # accuracies side by side with their four decimals (0.9200, not 0.92)
    print(table([{**r, "int8_val_acc": f"{r['int8_val_acc']:.4f}"} for r in tune_front_rows(result)]))
    best = TuneDir(args.out).best_run
    where = (f" -> {best.root} (export it with `edgefashion export {best.root}`)" if best.config.is_file() else
             " (its model is in the folder of the worker that ran it)")
    print(f"{sum(t.state == 'COMPLETE' for t in result.trials)} trials; front: "
          f"{sum(t.on_front for t in result.trials)}; chosen trial {result.chosen}{where}; "
          f"{TuneDir(args.out).report}, {TuneDir(args.out).plot}")
    if result.verdict:
        print(result.verdict)
    say_report(args.out)
    return 0


def add_report(sub) -> None:
    p = sub.add_parser("report", help="one self-contained report.html of a run, tune or fleet folder",
                       description="Write FOLDER/report.html: everything a run (training, export, accuracy, "
                                   "latency, firmware, bundle), a tune (the front, every trial, the chosen model) "
                                   "or a fleet command (each device, side by side) wrote, on one page with its "
                                   "plots. Styles, script and plots are inlined: it opens with no network, and "
                                   "its content policy lets no request leave the file. `run` and `tune` write it "
                                   "at their end.")
    p.add_argument("folder", type=Path, metavar="FOLDER", help="run, tune or fleet folder")
    p.add_argument("--out", type=Path, default=None, metavar="FILE.html",
                   help="where to write it (default FOLDER/report.html); an existing file that is not an "
                        "edgefashion report is replaced only with --force")
    add_force_option(p, "--out")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    out = write_report(args.folder, args.out, force=args.force)
    print(f"-> {out} ({out.stat().st_size / 1e3:.0f} KB, self-contained)")
    return 0


def say_report(folder: Path) -> None:
    """The report at the end of run and tune: a failure to draw it is a note, not the command's failure."""
    try:
        out = write_report(folder)
    except (InputError, MissingDependency) as exc:
        print(f"note: no report.html ({exc})", file=sys.stderr)
        return
    print(f"report: {out}")


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
    names = " -> ".join(s.name for s in STAGES)
    p = sub.add_parser("run", help=f"the whole job: {names}",
                       description=f"Run the stages {names} in one run directory: train with the seed's settings, "
                                   "export, verify, benchmark, bundle, and run the int8 model on TensorFlow Lite "
                                   "Micro (skipped where tflite-micro is not installed). Stops at the first failing "
                                   "stage. Run it again to resume: a setting not given keeps the value the run "
                                   "recorded, a setting given with a new value redoes its stage and those after it "
                                   "(--restart redoes everything). --seed also picks the calibration images, --data "
                                   "also feeds calibration and --test-data is also verify's and firmware's test set.")
    p.add_argument("--out", type=Path, default=Path("runs/latest"), help="run directory (default runs/latest)")
    seen: set = set()
    for stage in STAGES:
        add_options(p, stage.settings, for_run=True, seen=seen)
    p.add_argument("--restart", action="store_true", help="ignore finished stages and recorded settings; start over")
    p.set_defaults(func=cmd_run)


def run_changes(args) -> dict[str, dict]:
    """{stage: {setting: value}} of the `run` options given on the command line (the others are absent)."""
    values = vars(args)
    return {stage.name: given(stage.settings, values, for_run=True) for stage in STAGES}


def cmd_run(args) -> int:
    started = time.monotonic()
    run_dir = Run(args.out)
    state = run(run_dir, run_changes(args), restart=args.restart, verbose=args.verbose)
    summary = state.summary
    print(table(summary.rows))
    stages = ", ".join(f"{name} {stage.seconds if stage.seconds is not None else '-'} s"
                       for name, stage in state.stages.items())
    print(f"accuracy on {summary.samples} test images; p50 latency at batch 1, 1 thread on {summary.cpu.model} "
          f"(int8 path: {summary.cpu.int8_path}).\n"
          f"stages: {stages}; this invocation {time.monotonic() - started:.0f} s")
    if summary.firmware:
        print(summary.firmware + f" (details: {run_dir.firmware.report})")
    if summary.bundle_bytes:
        print(f"bundle: {summary.bundle} ({summary.bundle_bytes / 1e6:.2f} MB) -> copy it to the device "
              f"and run `edgefashion selftest {Path(summary.bundle).name}`")
    say_report(run_dir.root)
    return 0


def add_info(sub) -> None:
    p = sub.add_parser("info", help="what this device is and can run (no TensorFlow; fleet check asks it)",
                       description="Print edgefashion's and Python's versions, the machine, OS, the interpreters "
                                   "installed (LiteRT, tflite-runtime, ONNX Runtime; the numpy backend always), "
                                   "the CPU's int8 path, free disk and the clock. Writes nothing.")
    p.add_argument("--dir", type=Path, default=None, help="report the free disk where this folder is (default .)")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(func=cmd_info)


def cmd_info(args) -> int:
    from .device.info import device_info, render
    found = device_info(args.dir)
    print(json.dumps(found, indent=2) if args.json else render(found))
    return 0


FLEET_HELP = {
    "check": "connect to each device and report what it is and runs",
    "deploy": "copy a bundle to each device (atomically, sha256-checked) and selftest it there",
    "bench": "deploy if needed, bench on each device, fetch bench.json and compare the devices",
    "verify": "deploy if needed, verify on each device, fetch verify.json and compare the accuracies",
}


def add_fleet(sub) -> None:
    p = sub.add_parser("fleet", help="deploy, selftest, bench and verify a bundle on many devices over SSH",
                       description="Devices come from an inventory (TOML: [devices.NAME] with host, user, identity, "
                                   "edgefashion, dir; see `edgefashion fleet check --help`). Each runs in "
                                   "parallel (--jobs); a device that fails is one line naming it and the cause, "
                                   "the others carry on, and the exit is 1 if any failed. Host keys are checked "
                                   "against known_hosts (the inventory's or ~/.ssh/known_hosts), never accepted "
                                   "unseen. Needs the fleet extra (asyncssh).")
    commands = p.add_subparsers(dest="fleet_command", required=True, metavar="COMMAND")
    for name, help in FLEET_HELP.items():
        c = commands.add_parser(name, help=help, description=_paragraphs(FLEET_DESCRIPTIONS[name]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        if name != "check":
            c.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle .tar.gz made by `edgefashion bundle`")
        c.add_argument("--inventory", type=Path, required=True, metavar="FLEET.toml", help="the devices")
        c.add_argument("--device", action="append", default=[], metavar="NAME", help="only this device (repeatable)")
        c.add_argument("--tag", action="append", default=[], help="only devices with this tag (repeatable)")
        c.add_argument("--jobs", type=positive_int, default=8, help="devices at a time (default 8)")
        c.add_argument("--timeout", type=positive_float, default=900.0, metavar="SECONDS",
                       help="longest one command may take on a device (default 900)")
        c.add_argument("--out", type=Path, required=name in ("bench", "verify"), metavar="FLEET_DIR",
                       help="folder for fleet.json and each device's results (FLEET_DIR/<device>/)"
                            + ("" if name in ("bench", "verify") else "; default: print only"))
        c.add_argument("--json", action="store_true", help="print fleet.json instead of the summary")
        if name != "check":
            c.add_argument("--again", action="store_true",
                           help="redo devices that already hold the bundle (deploy) or passed into FLEET_DIR "
                                "before (bench, verify)")
        if name == "deploy":
            c.add_argument("--install", type=Path, metavar="WHEEL",
                           help="install or upgrade edgefashion on each device from this wheel first (pip, in the "
                                "venv of the inventory's edgefashion command; made if missing)")
            c.add_argument("--extras", default="edge",
                           help="extras installed with --install (default edge: LiteRT, ONNX Runtime, Pillow; "
                                "'' for numpy only)")
        if name == "bench":
            add_options(c, stage_named("bench").settings)
        if name == "verify":
            add_options(c, stage_named("verify").settings)
        c.set_defaults(func=cmd_fleet)


FLEET_DESCRIPTIONS = {
    "check": "Connect to each device of the inventory and report: reachable, machine (uname -m), OS, Python, the "
             "installed edgefashion and interpreters (LiteRT / ONNX Runtime / numpy backend), the CPU's int8 path, "
             "free disk in the device's folder and its clock skew. The inventory is a TOML file:\n\n"
             "  known_hosts = \"fleet_known_hosts\"   # optional; else ~/.ssh/known_hosts\n"
             "  [devices.pi-lab-1]\n  host = \"192.168.1.20\"\n  port = 22                          # optional\n"
             "  user = \"pi\"\n  identity = \"~/.ssh/id_ed25519\"\n"
             "  edgefashion = \"/home/pi/ef/bin/edgefashion\"   # the command on the device\n"
             "  dir = \"/home/pi/edgefashion\"   # where bundles and results go on the device\n"
             "  tags = [\"lab\"]                  # optional, for --tag\n"
             "  trust = [\"/home/pi/release.pub\"]  # optional: selftest --trust, paths on the device\n"
             "  env = { EDGEFASHION_EMULATED = \"qemu-aarch64\" }   # optional: environment of its commands\n\n"
             "Workstation paths (known_hosts, identity) are relative to the inventory's folder.",
    "deploy": "To each device in parallel: upload the bundle under a temporary name, check its sha256 on the "
              "device, selftest it there (with the device's own trusted keys and the inventory's trust = [...]: a "
              "signed bundle is checked by the device, never by this workstation on its behalf), and only then "
              "rename it into the device's folder with deployed.json beside it. A device that already holds "
              "that bundle and passed its selftest is skipped (--again redoes it). A bundle is never left "
              "half-copied under its real name, also on Ctrl-C.",
    "bench": "Deploy the bundle where it is not (as fleet deploy), run `edgefashion bench` on each device with "
             "the flags given here, fetch each bench.json into FLEET_DIR/<device>/, and compare the devices: "
             "the p50 table, FLEET_DIR/compare.png and FLEET_DIR/fleet.json. Run it again into the same "
             "FLEET_DIR and only the devices that failed run again.",
    "verify": "Deploy the bundle where it is not, run `edgefashion verify` on each device (on the bundle's golden "
              "images, or --data FILE, uploaded to each device), fetch each verify.json into FLEET_DIR/<device>/ "
              "and compare the accuracies per format. Re-runs retry only the devices that failed.",
}


def _paragraphs(text: str) -> str:
    """Prose paragraphs wrapped, indented ones (an example file) kept as they are."""
    return "\n\n".join(p if p.startswith("  ") else textwrap.fill(p, 90) for p in text.split("\n\n"))


def cmd_fleet(args) -> int:
    from .fleet import command, inventory
    from .fleet.jobs import Job
    from .files import sha256_file
    from .options import to_flags
    inv = inventory.load(args.inventory)
    devices = inv.select(args.device, args.tag)
    bundle = getattr(args, "bundle", None)
    if bundle is not None and not bundle.is_file():
        raise InputError(f"{bundle}: bundle not found")
    if bundle is not None and not is_bundle(bundle):
        raise InputError(f"{bundle}: not a bundle (expected the .tar.gz of `edgefashion bundle`)")
    install = getattr(args, "install", None)
    if install is not None and (not install.is_file() or install.suffix != ".whl"):
        raise InputError(f"{install}: wheel not found (expected a .whl; `pip wheel --no-deps .` makes one)")
    flags, data = [], None
    if args.fleet_command in ("bench", "verify"):
        stage = stage_named(args.fleet_command)
        settings = from_args(stage.settings, args)
        settings.validate()
        if args.fleet_command == "bench" and settings.input is not None:
            raise InputError("--input: a workstation .npy is not sent to devices; bench the bundle's own images")
        data = getattr(settings, "data", None)
        if data is not None and not data.is_file():
            raise InputError(f"{data}: test data not found (fleet verify uploads a file, not a folder)")
        flags = to_flags(settings, skip=("data", "input"))
    command.prepare_out(args.out)
    job = Job(inventory=inv, timeout=args.timeout, bundle=bundle, sha256=sha256_file(bundle) if bundle else None,
              install=install, extras=getattr(args, "extras", "edge"), again=getattr(args, "again", False),
              out=args.out, flags=flags, data=data)
    report = command.run_fleet(args.fleet_command, job, devices, args.jobs)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        if args.fleet_command == "check":
            print(table(command.check_rows(report)))
        failed = report.failed
        print(f"{len(report.devices) - len(failed)} of {len(report.devices)} devices ok in {report.seconds:.1f} s"
              + (f"; failed: {', '.join(r.device for r in failed)} (run it again to retry them)" if failed else "")
              + (f" -> {args.out / command.REPORT}" if args.out else ""))
        if args.out is not None and args.fleet_command in ("bench", "verify"):
            say_report(args.out)
    return 1 if report.failed else 0


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


def add_firmware(sub, stage: Stage) -> None:
    p = add_stage(sub, stage, command=cmd_firmware, run_argument=False)
    p.add_argument("run", type=Path, metavar="RUN|MODEL",
                   help="run directory with export/model_int8.tflite, or any full-int8 .tflite model (arena, ops "
                        "and targets only; nothing written)")


def cmd_firmware(args) -> int:
    if not is_model_file(args.run):
        return cmd_stage(stage_named("firmware"), args)
    stage = stage_named("firmware")
    settings = stage_settings(stage, args)
    report = model_fit(settings, args.run)
    return show(stage, settings, report, args, render_fit(report))


# Stages whose command does more than run the stage on one run directory (a bundle, several paths, --out).
STAGE_COMMANDS = {"verify": add_verify, "bench": add_bench, "bundle": add_bundle, "firmware": add_firmware}


def add_stages(sub) -> None:
    for stage in STAGES:
        STAGE_COMMANDS.get(stage.name, add_stage)(sub, stage)


COMMANDS = [add_stages, add_compare, add_selftest, add_predict, add_run, add_tune, add_report, add_keygen, add_info,
            add_fleet]


MESSAGE_LIMIT = 2000  # characters of one error line


class Parser(argparse.ArgumentParser):
    """argparse, with a bad flag answered in one line (no usage block) and exit 2."""

    def error(self, message):
        self.exit(2, printable(f"{self.prog}: error: {message} (see {self.prog} --help)") + "\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse, but an unknown flag is refused by the subcommand it was given to (its --help)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self._innermost(parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _innermost(self, parsed) -> argparse.ArgumentParser:
        parser = self
        for dest in ("command", "fleet_command"):
            choices = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
            name = getattr(parsed, dest, None)
            if not choices or name not in choices:
                break
            parser = choices[name]
        return parser


class Terminated(BaseException):
    """SIGTERM or SIGHUP: unwind like Ctrl-C, so temporary folders are removed. Not an Exception, as
    KeyboardInterrupt is not: tune's study takes an Exception in a trial for a failed trial and goes
    on with the next one, so `kill` would only have cost a trial."""


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
