"""`edgefashion tune`: search the architecture family (host/arch.py) for models that fit a device.

Each trial trains as train does (train.fit_model: its optimizer, batch size and validation split),
converts to full-int8 TFLite and measures int8 validation accuracy, int8 p50 latency at batch 1 on this machine
(the bench worker, a fresh process), model bytes and, where tflite-micro is installed, the TFLM
arena. Optuna's NSGA-II keeps the trials on the accuracy / latency / size front; budgets are its
constraints. Test images are used only for the chosen model.

The study lives in Optuna storage: a journal file in DIR by default (resumable after Ctrl-C or a
crash, shared by `--jobs K` processes on this machine), or `--storage URL` (PostgreSQL, MySQL,
SQLite) for workers on several machines.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .. import cpu, data, plots, rundata
from ..console import printable, quiet, step
from ..device.bench import BenchConfig, run_worker
from ..device.runtime import Model
from ..errors import CheckFailed, InputError, MissingDependency
from ..files import atomic_path, check_tool_folder, process_alive, write_bytes
from ..options import fraction, plain, positive_float, positive_int, setting, settings_of
from ..rundir import TUNE_MARKERS, TuneDir
from ..schemas import DatasetInfo, FinalResult, TrainReport, TrialResult, TuneReport
from . import import_tf, versions
from .arch import STARTS, WIDTHS, Arch, parse, sample
from . import quiet_bench, recipe
from .arch import params as arch_params
from .train import TrainConfig, fit_model, load_data, split_data, validation_cut

STUDY = "edgefashion-tune"
OBJECTIVES = {"accuracy": "maximize", "latency_us": "minimize", "size_bytes": "minimize"}
CALIBRATION = 200
# each trial's int8 latency: bench's defaults (batch 1, 1 thread), timed for 0.3 s rather than 1 s
TRIAL_BENCH = BenchConfig(min_time=0.3)
WORKER_ENV = "EDGEFASHION_TUNE_WORKER"


@dataclass
class TuneConfig:
    trials: int = setting(20, "trials to complete (a resumed study counts those already done)", type=positive_int)
    jobs: int = setting(1, "worker processes on this machine, all on one study", type=positive_int)
    storage: str | None = setting(None, "Optuna storage URL shared by workers on several machines, e.g. "
                                        "postgresql://user@host/db or sqlite:///tune.db (default: DIR/study.journal)",
                                  metavar="URL")
    data: Path | None = setting(None, "training CSV, IDX or image folder, as train takes it (default: the local "
                                      "Fashion-MNIST)", type=Path)
    test_data: Path | None = setting(None, "test CSV, IDX or image folder, for the chosen model only (default: as "
                                           "train finds it, else a held-out share of --data that no trial sees)",
                                     type=Path)
    image_shape: str | None = setting(None, "HxWxC of the data, as train takes it", metavar="HxWxC")
    labels: Path | None = setting(None, "class names, one per line, as train takes them", type=Path, metavar="FILE")
    limit: int | None = setting(None, "use the first N training rows (quick tunes)", type=positive_int)
    epochs: int = setting(4, "training epochs per trial", type=positive_int)
    first_epochs: int | None = setting(None, "multi-fidelity: after this many epochs a trial stops (pruned) when an "
                                             "earlier trial was at least 1 pp more accurate at that point with no "
                                             "more parameters and multiply-accumulates; the others train all "
                                             "--epochs (default: every trial trains all of them)",
                                       type=positive_int, metavar="N")
    final_epochs: int | None = setting(None, "after the search, train the chosen trial's architecture and the seed "
                                             "CNN again, both for N epochs with the trials' recipe, and measure them "
                                             "as trials are: DIR/best and the comparison with the seed CNN are then "
                                             "these two (a finished study takes it too: only they train)",
                                       type=positive_int, metavar="N")
    lr_schedule: str = setting("constant", "each trial's (and the seed CNN's) learning-rate schedule, as train takes "
                                           "it", choices=recipe.SCHEDULES,
                               metavar="|".join(recipe.SCHEDULES))
    augment: str = setting("none", "each trial's (and the seed CNN's) augmentation, as train takes it",
                           choices=recipe.AUGMENTS,
                           metavar="|".join(recipe.AUGMENTS))
    max_latency_us: float | None = setting(None, "budget: int8 p50 latency at batch 1 on this machine, µs",
                                           type=positive_float, metavar="US")
    max_size_kb: float | None = setting(None, "budget: int8 model size, KB", type=positive_float, metavar="KB")
    max_arena_kb: float | None = setting(None, "budget: TFLM tensor arena, KB (needs tflite-micro)",
                                         type=positive_float, metavar="KB")
    min_accuracy: float | None = setting(None, "budget: int8 validation accuracy, a fraction or a percentage",
                                         type=fraction, metavar="FRACTION")
    seed: int = setting(0, "seed of the sampler and of each trial's training")
    timeout_min: float | None = setting(None, "stop starting new trials after this many minutes",
                                        type=positive_float, metavar="MIN")
    stale_after_s: float = setting(120.0, "with --storage URL: a trial whose worker has sent no heartbeat for this "
                                          "long (killed, its machine gone) is marked failed", type=positive_float,
                                   metavar="SECONDS")
    measure_on: str | None = setting(None, "take each trial's int8 latency from this device of --inventory (over "
                                           "SSH, as fleet bench does) instead of this machine", metavar="DEVICE")
    inventory: Path | None = setting(None, "the fleet inventory that --measure-on names a device of", type=Path,
                                     metavar="FLEET.toml")
    latency_repeats: int = setting(3, "times each trial's int8 latency is measured (fresh processes, each the "
                                      "median of its runs); the quietest decides, as load elsewhere only adds "
                                      "time, and the spread is recorded", type=positive_int)
    verbose: bool = False

    def identity(self) -> dict:
        """What makes trials comparable: a resumed study must have been run with the same."""
        found = {"data": str(self.data) if self.data else None, "limit": self.limit, "epochs": self.epochs,
                 "seed": self.seed}
        if self.lr_schedule != "constant" or self.augment != "none":  # studies made before these stay resumable
            found.update(lr_schedule=self.lr_schedule, augment=self.augment)
        if self.first_epochs:
            found["first_epochs"] = self.first_epochs
        return {**found, "measure_on": self.measure_on} if self.measure_on else found

    def trial_training(self, arch: dict | None) -> TrainConfig:
        """Train's settings for one trial (arch None: the seed CNN): train's defaults but for these."""
        return TrainConfig(data=self.data, test_data=self.test_data, limit=self.limit, epochs=self.epochs,
                           seed=self.seed, verbose=self.verbose, image_shape=self.image_shape, labels=self.labels,
                           lr_schedule=self.lr_schedule, augment=self.augment,
                           arch="seed" if arch is None else json.dumps(arch, sort_keys=True))

    def budgets(self) -> dict:
        return {"max_latency_us": self.max_latency_us, "max_size_kb": self.max_size_kb,
                "max_arena_kb": self.max_arena_kb, "min_accuracy": self.min_accuracy}


def optuna_module():
    try:
        import optuna
    except ImportError:
        raise MissingDependency("optuna", "host") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.get_logger("optuna").addFilter(_no_interrupt_traceback)
    return optuna


def _no_interrupt_traceback(record) -> bool:
    """Ctrl-C mid-trial: Optuna's warning that the trial failed, without the traceback it attaches."""
    if record.exc_info and issubclass(record.exc_info[0], KeyboardInterrupt):
        record.exc_info = None
    return True


def open_study(config: TuneConfig, folder: TuneDir):
    optuna = optuna_module()
    folder.root.mkdir(parents=True, exist_ok=True)
    try:
        if config.storage:
            storage = _database(optuna, config)
        else:
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend
            storage = JournalStorage(JournalFileBackend(str(folder.journal)))  # replays the journal here
        study = optuna.create_study(study_name=STUDY, storage=storage, load_if_exists=True,
                                    directions=list(OBJECTIVES.values()))
    except MissingDependency:
        raise
    except Exception as exc:  # a bad URL, an unreachable database, a damaged journal (any type Optuna raises)
        where = config.storage or folder.journal
        hint = "" if config.storage else "; it is damaged or not an Optuna journal: move it away to start a new study"
        raise InputError(f"cannot open the study in {where} ({type(exc).__name__}: "
                         f"{printable(str(exc))[:160]}){hint}") from None
    study.sampler = _sampler(optuna, config, len(study.trials))
    recorded = study.user_attrs.get("identity")
    if recorded is None:
        study.set_user_attr("identity", config.identity())
        for start in STARTS:  # the presets and a few known-good small models first, then the search
            if all(w in WIDTHS for w in start.blocks):
                study.enqueue_trial(arch_params(start), skip_if_exists=True)
    elif recorded != config.identity():
        raise InputError(f"{folder.root}: the study there was run with {recorded}, not {config.identity()}; "
                         f"use another --out")
    return study


HEARTBEAT_S = 10  # how often a worker on a database tells it the trial is alive


def _database(optuna, config: TuneConfig):
    """The RDB storage of --storage URL, with heartbeats: a worker killed mid-trial (or its machine gone)
    gets its trial marked failed by the next worker that starts a trial, after `stale_after_s`."""
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeats are "experimental" in Optuna
            return optuna.storages.RDBStorage(config.storage, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=max(int(config.stale_after_s), HEARTBEAT_S + 1))
    except ImportError:
        scheme = config.storage.split(":", 1)[0]
        if scheme.startswith("postgresql"):
            raise MissingDependency("psycopg (the PostgreSQL driver, for --storage postgresql://)", "postgres") from None
        raise


def _sampler(optuna, config: TuneConfig, trials_so_far: int):
    """NSGA-II. Its random stream starts from the seed, the worker and the trials already in the study:
    two workers, or a resumed study, must not draw the same architectures again."""
    modern = hasattr(optuna.trial.Trial, "set_constraint")  # Optuna 5 reads budgets from set_constraint
    worker = int(os.environ.get(WORKER_ENV, "0"))
    # the first generation is random: a quarter of the trials (4-50) leaves room for the search proper
    population = max(4, min(50, config.trials // 4))
    return optuna.samplers.NSGAIISampler(seed=config.seed + 1000 * worker + trials_so_far, population_size=population,
                                         **({} if modern else {"constraints_func": _constraints}))


def _constraints(trial) -> list[float]:
    return trial.user_attrs.get("constraints", [1.0])


def tune(config: TuneConfig, out, worker: bool = False) -> TuneReport:
    """Run (or resume) the study in folder `out` until `trials` trials are complete; report the front
    and the choice."""
    folder = TuneDir(out)
    if config.jobs > 2 * (os.cpu_count() or 1):
        raise InputError(f"--jobs {config.jobs}: more than twice this machine's {os.cpu_count()} CPUs; each job trains "
                         f"a model (--storage URL spreads a study over several machines)")
    if (config.measure_on is None) != (config.inventory is None):
        raise InputError("--measure-on DEVICE and --inventory FLEET.toml go together")
    if config.measure_on is not None:
        from ..fleet import inventory
        inventory.load(config.inventory).select([config.measure_on])  # a bad inventory or name: now, not per trial
    if not worker:
        check_tool_folder(folder.root, TUNE_MARKERS, "tune folder")
    study = open_study(config, folder)
    if not worker:
        _fail_abandoned(study)
        if "seed_cnn" not in study.user_attrs:
            step("the seed CNN first, with the same data, epochs and bench, for comparison")
            study.set_user_attr("seed_cnn", _measure(None, config, folder.seed_run.root, say_epochs=True))
    helpers = [] if worker else _start_workers(config, folder)
    optuna = optuna_module()
    done = _complete(study)
    started, left = time.monotonic(), max(config.trials - done, 0)
    progress = _Progress(left, config.jobs, config.timeout_min * 60 if config.timeout_min else None)

    def objective(trial):
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", platform.node())
        trial.set_user_attr("folder", str(folder.root.resolve()))
        arch = sample(trial)
        trial.set_user_attr("arch", arch.as_dict())

        beaten = []

        def promising(first: dict) -> bool:  # at the end of --first-epochs (inside the training: no output)
            trial.set_user_attr("first", first)
            others = [{**t.user_attrs["first"], "number": t.number} for t in study.get_trials(deepcopy=False)
                      if t.number != trial.number and "first" in t.user_attrs]
            beaten.append(beaten_early(first, others))
            return beaten[-1] is None

        figures = _measure(arch, config, folder.trial(trial.number), promising if config.first_epochs else None)
        if figures is None:
            by, first = beaten[-1], trial.user_attrs["first"]
            trial.set_user_attr("stopped_by", by["number"])
            step(f"trial {trial.number}: stopped after {config.first_epochs} epoch(s): trial {by['number']} was "
                 f"{100 * (by['accuracy'] - first['accuracy']):.1f} pp more accurate then, with no more parameters "
                 f"or multiply-accumulates")
            raise optuna.TrialPruned()
        trial.set_user_attr("figures", figures)
        over = violations(figures, config)
        trial.set_user_attr("constraints", over)
        if hasattr(trial, "set_constraint"):
            for i, value in enumerate(over):
                trial.set_constraint(f"budget{i}", value)
        progress.report(trial.number, figures, over)
        return figures["accuracy"], figures["latency_us"], figures["size_bytes"]

    if left:
        callback = optuna.study.MaxTrialsCallback(config.trials, states=(optuna.trial.TrialState.COMPLETE,))
        timeout = config.timeout_min * 60 if config.timeout_min else None
        # a trial that crashes (a conversion error, a bench failure) is a failed trial, not the end of the
        # study; n_trials bounds the attempts when every trial fails
        study.optimize(objective, callbacks=[callback], timeout=timeout, catch=(Exception,),
                       n_trials=3 * config.trials)
    for process in helpers:
        process.wait()
    if worker:
        return None
    step(f"{_complete(study)} trials complete ({time.monotonic() - started:.0f} s this invocation)")
    return summarize(study, config, folder)


def _complete(study) -> int:
    from optuna.trial import TrialState
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _fail_abandoned(study) -> None:
    """Trials left RUNNING by a process of this machine that is gone (Ctrl-C, a crash): mark them failed;
    on a database, also those of any machine whose heartbeat stopped."""
    import warnings

    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import is_heartbeat_enabled
    from optuna.trial import TrialState
    if is_heartbeat_enabled(study._storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeats are "experimental" in Optuna
            fail_stale_trials(study)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid, host = trial.user_attrs.get("pid"), trial.user_attrs.get("host")
        if host == platform.node() and pid and not process_alive(pid):
            study.tell(trial.number, state=TrialState.FAIL)


def _start_workers(config: TuneConfig, folder: TuneDir) -> list[subprocess.Popen]:
    """jobs - 1 more processes on the same study (this process is the first), given its settings as JSON."""
    if config.jobs <= 1:
        return []
    args = [sys.executable, "-m", "edgefashion", "tune", "--out", str(folder.root), "--worker",
            json.dumps(plain(config))]
    step(f"starting {config.jobs - 1} more worker process(es) on the study")
    return [subprocess.Popen(args, env={**os.environ, WORKER_ENV: str(i)}) for i in range(1, config.jobs)]


class _Progress:
    """One line per finished trial, with the elapsed time and an estimate of what is left."""

    def __init__(self, total: int, jobs: int, timeout_s: float | None = None):
        self.total, self.jobs, self.done, self.start = max(total, 1), jobs, 0, time.monotonic()
        self.timeout_s = timeout_s  # --timeout-min: no new trial starts after it

    def report(self, number: int, figures: dict, over: list[float]) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.done * max(self.total - self.done * self.jobs, 0) / self.jobs
        if self.timeout_s is not None:  # the trials then running still end: about one more trial's time
            eta = min(eta, max(self.timeout_s - elapsed, 0) + elapsed / self.done)
        fits = ("inside the budgets" if max(over) <= 0 else "at chance level" if over[0] > 0 else
                "outside a budget")
        arena = f", arena {figures['arena_bytes'] / 1024:.1f} KB" if figures.get("arena_bytes") else ""
        step(f"trial {number}: int8 val accuracy {figures['accuracy']:.4f}, {figures['latency_us']:.0f} µs, "
             f"{figures['size_bytes'] / 1024:.0f} KB{arena}, {fits}; {elapsed / 60:.1f} min so far, "
             f"about {eta / 60:.1f} min left")


def violations(figures: dict, config: TuneConfig) -> list[float]:
    """Optuna constraints: <= 0 is inside a budget. The first is always there: a model must reach twice
    chance (2/K), so a trial that learnt nothing is never "inside the budgets", budgets or not."""
    classes = figures.get("classes") or 10
    out = [min(2.0 / classes, 0.99) - figures["accuracy"]]
    if config.max_latency_us:
        out.append(figures["latency_us"] - config.max_latency_us)
    if config.max_size_kb:
        out.append(figures["size_bytes"] / 1024 - config.max_size_kb)
    if config.max_arena_kb:
        arena = figures.get("arena_bytes")
        out.append(1e9 if arena is None else arena / 1024 - config.max_arena_kb)
    if config.min_accuracy:
        out.append(config.min_accuracy - figures["accuracy"])
    return out


# --- one trial ----------------------------------------------------------------------------------

EARLY_MARGIN = 0.01  # of validation accuracy: what a trial must lose by to be stopped early


def beaten_early(mine: dict, others: list[dict]) -> dict | None:
    """The first of `others` (figures after the first epochs) that was EARLY_MARGIN more accurate than
    `mine` with no more parameters and MACs: `mine` then cannot reach the front it is on; None if none."""
    for other in others:
        if (other["accuracy"] >= mine["accuracy"] + EARLY_MARGIN and other["parameters"] <= mine["parameters"]
                and other["macs"] <= mine["macs"]):
            return other
    return None


def keras_macs(model) -> int:
    """Multiply-accumulates per image of the conv and dense layers of a Keras model."""
    total = 0
    for layer in model.layers:
        kind, out = type(layer).__name__, layer.output.shape
        if kind in ("Conv2D", "SeparableConv2D", "DepthwiseConv2D"):
            cin, taps, pixels = layer.input.shape[-1], int(np.prod(layer.kernel_size)), int(np.prod(out[1:3]))
            if kind == "Conv2D":
                total += pixels * taps * cin * out[-1] // layer.groups
            else:  # the depthwise part, and a separable layer's pointwise one
                total += pixels * taps * cin * layer.depth_multiplier
                total += pixels * cin * layer.depth_multiplier * out[-1] if kind == "SeparableConv2D" else 0
        elif kind == "Dense":
            total += layer.input.shape[-1] * layer.units
    return int(total)


def _measure(arch: Arch | None, config: TuneConfig, folder: Path, promising=None, say_epochs=False) -> dict | None:
    """Train as train does, convert to int8 TFLite, measure on the validation rows; the models stay in
    `folder`. `promising(first figures)`, asked after --first-epochs, may stop the trial: None then.
    `say_epochs`: a line per epoch (the seed CNN and --final-epochs train for minutes with no trial line)."""
    tf = import_tf(config.verbose)
    if config.jobs > 1:  # share the cores instead of fighting over them
        tf.config.threading.set_intra_op_parallelism_threads(max(1, (os.cpu_count() or 1) // config.jobs))
    training = config.trial_training(None if arch is None else arch.as_dict())
    rows = _training_rows(training)
    val = _validation_rows(rows, training)
    started = time.monotonic()
    early = _early_stop(tf, config.first_epochs, promising) if promising and config.first_epochs < config.epochs \
        else None
    callbacks = [early] if early else []
    if config.measure_on is None:  # pause while another worker here measures a latency
        callbacks.append(quiet_bench.training_gate(tf.keras))
    with contextlib.ExitStack() as stack:
        if say_epochs:
            callbacks.append(stack.enter_context(_epoch_lines(tf, config.epochs, started)))
        with quiet(config.verbose):
            model = fit_model(training, rows, callbacks=tuple(callbacks))
    if early is not None and early.stopped:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    keras_path, int8_path = TuneDir.model_paths(folder)
    from .export import tflite_converter
    with quiet_bench.working() if config.measure_on is None else contextlib.nullcontext():
        with atomic_path(keras_path, suffix=".keras") as tmp:
            model.save(tmp)
        with quiet(config.verbose):
            content = tflite_converter(tf, model, data.prepare(rows.images[:CALIBRATION])).convert()
        write_bytes(int8_path, content)
        accuracy = float((Model(content).predict(val.images).class_ids == val.labels).mean())
        arena = _arena(int8_path)
    latencies, where = _latencies(int8_path, config)
    quietest = min(latencies)  # each run is a median already; load elsewhere only ever adds time
    return {"accuracy": accuracy, "classes": rows.num_classes, "latency_us": quietest, "measured_on": where,
            "latency_runs_us": [round(v, 2) for v in latencies],
            "latency_spread": round((max(latencies) - quietest) / quietest, 3) if quietest else None,
            "size_bytes": len(content),
            "arena_bytes": arena, "parameters": int(model.count_params()),
            "seconds": round(time.monotonic() - started, 1)}


MIN_ROWS = 50


@contextlib.contextmanager
def _epoch_lines(tf, epochs: int, started: float):
    """A Keras callback with a line per epoch, on the stderr of before `quiet` silences it for the fit;
    its duplicate of stderr is closed when the block ends, however it ends."""
    out = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)

    class EpochLines(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print(f"--   epoch {epoch + 1}/{epochs}: val accuracy {(logs or {}).get('val_accuracy', 0.0):.4f}, "
                  f"{time.monotonic() - started:.0f} s", file=out)
    with out:
        yield EpochLines()


def _early_stop(tf, first_epochs: int, promising):
    """A Keras callback that asks `promising` after `first_epochs` and stops the training if not."""

    class EarlyStop(tf.keras.callbacks.Callback):
        stopped = False

        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == first_epochs:
                first = {"accuracy": float((logs or {}).get("val_accuracy", 0.0)),
                         "parameters": int(self.model.count_params()), "macs": keras_macs(self.model)}
                if not promising(first):
                    self.stopped = self.model.stop_training = True
    return EarlyStop()


def _training_rows(training: TrainConfig) -> data.Dataset:
    """The training rows as train splits them (never a test row), read once per process."""
    train, _, _ = _split(training.data, training.test_data, training.image_shape, training.labels, training.seed)
    train = train.subset(slice(0, training.limit)) if training.limit else train
    if len(train) < MIN_ROWS:
        raise InputError(f"{train.source}: {len(train)} rows; tuning needs at least {MIN_ROWS}")
    return train


def _validation_rows(rows: data.Dataset, training: TrainConfig) -> data.Dataset:
    """The training rows' last share, which Keras holds out for validation (validation_split)."""
    return rows.subset(slice(validation_cut(len(rows), training.validation_split), None))


@functools.lru_cache(maxsize=1)
def _split(data_path, test_data, image_shape, labels, seed):
    """(training rows, test set, held-out indices) of the data, as train makes them."""
    config = TrainConfig(data=data_path, test_data=test_data, image_shape=image_shape, labels=labels, seed=seed)
    return split_data(config, load_data(config))


def _latencies(path: Path, config: TuneConfig) -> tuple[list[float], str]:
    """The int8 p50 latencies, `latency_repeats` of them, and where they were measured."""
    if config.measure_on is None:
        with quiet_bench.measuring():
            return [_latency_us(path) for _ in range(config.latency_repeats)], f"this machine ({platform.node()})"
    from ..fleet import inventory, jobs
    from ..options import to_flags
    fleet = inventory.load(config.inventory)
    p50s = jobs.remote_p50(fleet, config.measure_on, path, to_flags(TRIAL_BENCH), config.latency_repeats)
    return p50s, f"device {config.measure_on} ({fleet.select([config.measure_on])[0].address})"


def _latency_us(path: Path) -> float:
    """int8 p50 at batch 1, 1 thread, in a fresh process (the bench worker)."""
    measured = run_worker(path, 1, TRIAL_BENCH)
    if isinstance(measured, dict):
        raise InputError(f"{path}: bench worker skipped it ({measured['skipped']})")
    return float(measured[0]["latency_us"]["p50"])


def _arena(path: Path) -> int | None:
    from .firmware import measure_arena_isolated, tflm_runtime
    try:
        tflm_runtime()
        return measure_arena_isolated(path)["total"]
    except MissingDependency:
        return None


# --- the result ------------------------------------------------------------------------------

def summarize(study, config: TuneConfig, folder: TuneDir) -> TuneReport:
    """pareto.json, pareto.png, the front on the terminal, the chosen model as DIR/best."""
    results = [_result(t, config) for t in study.get_trials(deepcopy=False)]
    complete = [r for r in results if r.state == "COMPLETE"]
    for r in complete:  # the front of every complete trial, whatever the budgets; `feasible` marks those inside
        r.on_front = not any(dominates(o, r) for o in complete if o is not r)
    seed = study.user_attrs.get("seed_cnn")
    seed_result = None if seed is None else _measured(-1, None, seed)
    feasible = [r for r in complete if r.feasible]
    chosen = max(feasible, key=lambda r: (r.accuracy, -r.latency_us)) if feasible else None
    final = _final(study, config, folder, chosen) if chosen and config.final_epochs else None
    storage = _shown(config.storage) if config.storage else str(folder.journal)
    result = TuneReport(study=STUDY, storage=storage, budgets=config.budgets(), trials=results,
                        seed_cnn=seed_result, chosen=chosen.number if chosen else None, cpu=cpu.describe(),
                        verdict=verdict(final.chosen, final.seed_cnn, final.epochs) if final else
                        verdict(chosen, seed_result), final=final)
    result.write(folder.report)
    plot_front(result, folder.plot)
    if chosen is None:
        stale = _remove_stale_best(folder)
        closest = max(complete, key=lambda r: -max(violations(asdict(r), config)), default=None)
        hint = (f"; closest: trial {closest.number} (accuracy {closest.accuracy:.4f}, {closest.latency_us:.0f} µs, "
                f"{closest.size_bytes / 1024:.0f} KB)") if closest else ""
        floor = "twice chance accuracy (2/K)" + (f" and the budgets {_budget_text(config)}"
                                                 if any(v is not None for v in config.budgets().values()) else "")
        raise CheckFailed(f"no trial of {len(complete)} meets the budgets {_budget_text(config)}{hint}; "
                          f"a trial must reach {floor}; see {folder.report}{stale}")
    if final is not None:
        make_best_run(final.chosen, folder.final(chosen.number, final.epochs), final.epochs, config, folder)
    elif folder.trial_model(chosen.number).is_file():
        make_best_run(chosen, folder.trial(chosen.number), config.epochs, config, folder)
    else:  # a trial of another worker (another machine, another folder): its model is there
        _remove_stale_best(folder)
        step(f"the chosen trial {chosen.number} ran on {chosen.host} in {chosen.folder}; its model is there "
             f"(run tune with the same --storage in that folder to make its best/ run)")
    return result


def _measured(number: int, arch: dict | None, figures: dict) -> TrialResult:
    """A model measured as trials are (the seed CNN, a --final-epochs model) as a row of the report."""
    return TrialResult(number=number, state="COMPLETE", arch=arch,
                       **{k: figures.get(k) for k in ("accuracy", "latency_us", "size_bytes", "arena_bytes", "seconds",
                                                      "latency_spread", "measured_on", "test_accuracy")})


def _final(study, config: TuneConfig, folder: TuneDir, chosen: TrialResult) -> FinalResult:
    """--final-epochs: the chosen architecture and the seed CNN trained again for N epochs each, measured as
    trials are, with their int8 test accuracy. Kept in the study: a resumed tune does not train them again."""
    longer = replace(config, epochs=config.final_epochs, first_epochs=None)
    figures = {}
    for number, arch in ((None, None), (chosen.number, chosen.arch)):  # the seed CNN, then the chosen one
        where = folder.final(number, config.final_epochs)
        key = f"final:{where.name}"
        if key not in study.user_attrs or not TuneDir.model_paths(where)[1].is_file():
            step(f"--final-epochs: {'the seed CNN' if arch is None else f'trial {number}'} trained again, "
                 f"{config.final_epochs} epochs")
            measured = _measure(None if arch is None else parse(json.dumps(arch)), longer, where, say_epochs=True)
            study.set_user_attr(key, {**measured, "test_accuracy": _int8_test_accuracy(where, longer)})
        figures[number] = study.user_attrs[key]
    result = FinalResult(epochs=config.final_epochs, seed_cnn=_measured(-1, None, figures[None]),
                         chosen=_measured(chosen.number, chosen.arch, figures[chosen.number]))
    over = [v for v in violations(figures[chosen.number], config) if v > 0]
    if over:
        step(f"note: trial {chosen.number} trained for {config.final_epochs} epochs is outside a budget "
             f"{_budget_text(config)}: accuracy {result.chosen.accuracy:.4f}, {result.chosen.latency_us:.1f} µs, "
             f"{result.chosen.size_bytes / 1024:.0f} KB")
    return result


def _int8_test_accuracy(folder: Path, training: TuneConfig) -> float:
    """The int8 model's accuracy on the test set (as make_best_run finds it)."""
    config = training.trial_training(None)
    _, test, _ = _split(config.data, config.test_data, config.image_shape, config.labels, config.seed)
    if test is None:
        raise InputError("no test set for --final-epochs: give --test-data (or run `make data`)")
    predicted = Model(TuneDir.model_paths(folder)[1]).predict(test.images).class_ids
    return float((predicted == test.labels).mean())


def verdict(chosen: TrialResult | None, seed: TrialResult | None, epochs: int | None = None) -> str | None:
    """The chosen model against the seed CNN, measured the same way, in plain words."""
    if chosen is None or seed is None:
        return None
    gain = (chosen.accuracy - seed.accuracy) * 100
    faster, smaller = seed.latency_us / chosen.latency_us, seed.size_bytes / chosen.size_bytes
    accuracy = (f"{abs(gain):.2f} pp {'more' if gain >= 0 else 'LESS'} accurate ({chosen.accuracy:.4f} vs "
                f"{seed.accuracy:.4f} int8 validation accuracy"
                + (f"; int8 test accuracy {chosen.test_accuracy:.4f} vs {seed.test_accuracy:.4f})"
                   if chosen.test_accuracy is not None and seed.test_accuracy is not None else ")"))
    trained = f" (both trained {epochs} epochs)" if epochs else ""
    text = (f"trial {chosen.number}{trained} against the seed CNN: {accuracy}, {faster:.1f}x "
            f"{'faster' if faster >= 1 else 'SLOWER'}, {smaller:.1f}x {'smaller' if smaller >= 1 else 'LARGER'}")
    if gain < 0 or faster < 1 or smaller < 1:
        text += "; it is WORSE than the seed CNN on " + ", ".join(
            axis for axis, worse in (("accuracy", gain < 0), ("latency", faster < 1), ("size", smaller < 1)) if worse)
    return text


def _remove_stale_best(folder: TuneDir) -> str:
    """DIR/best of an earlier invocation, which this one's choice no longer backs: removed (tune's own)."""
    if not folder.best_run.root.exists():
        return ""
    shutil.rmtree(folder.best_run.root)
    return f"; the old {folder.best_run.root} (an earlier choice) was removed"


def _shown(url: str) -> str:
    """A storage URL without its password."""
    import re
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _result(trial, config: TuneConfig) -> TrialResult:
    figures = trial.user_attrs.get("figures") or {}
    complete = trial.state.name == "COMPLETE"
    return TrialResult(number=trial.number, state=trial.state.name, arch=trial.user_attrs.get("arch"),
                       accuracy=figures.get("accuracy"), latency_us=figures.get("latency_us"),
                       size_bytes=figures.get("size_bytes"), arena_bytes=figures.get("arena_bytes"),
                       feasible=(max(violations(figures, config)) <= 0) if complete and figures else None,
                       seconds=figures.get("seconds"), latency_spread=figures.get("latency_spread"),
                       measured_on=figures.get("measured_on"),
                       host=trial.user_attrs.get("host"), folder=trial.user_attrs.get("folder"),
                       first=trial.user_attrs.get("first"), stopped_by=trial.user_attrs.get("stopped_by"))


def dominates(a: TrialResult, b: TrialResult) -> bool:
    better_or_equal = a.accuracy >= b.accuracy and a.latency_us <= b.latency_us and a.size_bytes <= b.size_bytes
    return better_or_equal and (a.accuracy > b.accuracy or a.latency_us < b.latency_us or a.size_bytes < b.size_bytes)


def _budget_text(config: TuneConfig) -> str:
    parts = [f"{k} {v:g}" for k, v in config.budgets().items() if v is not None]
    return "(" + (", ".join(parts) or "none") + ")"


def make_best_run(chosen: TrialResult, models: Path, epochs: int, config: TuneConfig, folder: TuneDir) -> None:
    """The chosen model (in folder `models`, trained `epochs`) as a normal run directory: model.keras and
    config.json (with the test accuracy: no trial saw a test image)."""
    run = folder.best_run
    run.root.mkdir(parents=True, exist_ok=True)
    keras_path, int8_path = TuneDir.model_paths(models)
    shutil.copyfile(keras_path, run.model)
    training = replace(config.trial_training(chosen.arch), epochs=epochs)
    train, test, held_out = _split(training.data, training.test_data, training.image_shape, training.labels,
                                   training.seed)
    if test is None:
        raise InputError("no test set for the chosen model: give --test-data (or run `make data`)")
    from .model import load_model
    model = load_model(run.model, config.verbose)
    with quiet(config.verbose):
        loss, accuracy = model.evaluate(data.prepare(test.images), data.one_hot(test.labels, train.num_classes),
                                        batch_size=500, verbose=0)
    _say_export_gates(model, int8_path, training, config.verbose)
    settings = {**settings_of(training), "tune_trial": chosen.number, "tune_study": str(folder.report)}
    test_info = DatasetInfo(source=test.source, sha256=test.sha256, samples=len(test), loss=float(loss),
                            accuracy=float(accuracy))
    if held_out is not None:
        test_info.held_out, test_info.indices_sha256 = training.test_split, rundata.save_held_out(run, held_out)
    TrainReport(settings=settings, dataset=DatasetInfo(source=train.source, sha256=train.sha256, samples=len(train)),
                test=test_info, image_shape=list(train.shape), labels=train.class_names(),
                best_epoch=epochs, val_accuracy=chosen.accuracy,
                epochs_finished=epochs, interrupted=False, fit_seconds=chosen.seconds,
                versions=versions(), platform={"machine": platform.machine(), "cpu": asdict(cpu.describe())}
                ).write(run.config)


def _say_export_gates(model, int8_path: Path, training: TrainConfig, verbose: bool) -> None:
    """Whether `export DIR/best` passes its default gates with plain PTQ, judged as export judges it
    (int8 against the float model on validation rows); if not, what export will do about it."""
    from ..device.verify import Gates, agreement_figures
    rows = _training_rows(training)
    val = _validation_rows(rows, training)
    with quiet(verbose):
        reference = model.predict(data.prepare(val.images), batch_size=500, verbose=0)
    probs = Model(int8_path).predict(val.images).probabilities
    figures = agreement_figures(probs, reference.astype(np.float64), val.labels, rows.class_names())
    gates = Gates()
    drop, agreement = figures["accuracy_drop_pp"], figures["top1_agreement"]
    if drop <= gates.max_drop_pp and agreement >= gates.min_agreement:
        step(f"the chosen model meets export's gates with plain int8: drop {drop:.2f} pp, agreement "
             f"{agreement:.2%} on {len(val)} validation images")
    else:
        step(f"note: plain int8 of the chosen model misses export's gates (drop {drop:.2f} pp, agreement "
             f"{agreement:.2%} on {len(val)} validation images; gates {gates.max_drop_pp:g} pp, "
             f"{gates.min_agreement:.0%}): `edgefashion export` will try its repairs (--quantization auto) and "
             f"says which one it chose, or why none passed")


def front_rows(result: TuneReport) -> list[dict]:
    """The front by latency, then the seed CNN, then (--final-epochs) the two models trained again."""
    rows = [_row(r, r.number, "*" if r.number == result.chosen else "")
            for r in sorted((t for t in result.trials if t.on_front), key=lambda t: t.latency_us)]
    if result.seed_cnn:
        rows.append(_row(result.seed_cnn, "seed CNN"))
    if result.final:
        f = result.final
        rows += [_row(f.chosen, f"{f.chosen.number}, {f.epochs} epochs", "*"),
                 _row(f.seed_cnn, f"seed CNN, {f.epochs} epochs")]
    return rows


def _row(r: TrialResult, name, chosen: str = "") -> dict:
    return {"trial": name, "int8_val_acc": r.accuracy, "p50_us": r.latency_us, "KB": round(r.size_bytes / 1024, 1),
            "arena_KB": round(r.arena_bytes / 1024, 1) if r.arena_bytes else None, "chosen": chosen,
            "arch": json.dumps(r.arch, separators=(",", ":")) if r.arch else "seed"}


def plot_front(result: TuneReport, path: Path) -> None:
    plots.save(front_figure(result), path)


def front_figure(result: TuneReport):
    """Accuracy against latency of every trial (plots.front_figure), named by where it was measured."""
    where = next((t.measured_on for t in result.trials if t.measured_on), None)
    device = where if where and where.startswith("device") else result.cpu.model
    return plots.front_figure(result.trials, result.seed_cnn, result.chosen, result.budgets.get("max_latency_us"),
                              device or "this machine")

