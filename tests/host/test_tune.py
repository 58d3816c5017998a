"""edgefashion tune on real data, tiny: end to end, resume, two workers, an unmeetable budget."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from chromium import check_report
from helpers import cli

QUICK = ("--limit", 600, "--epochs", 1)


def _report(folder) -> dict:
    return json.loads((folder / "pareto.json").read_text())


def test_tune_end_to_end_then_resume(tmp_path):
    out = tmp_path / "tune"
    first = cli("tune", "--out", out, "--trials", 2, *QUICK, check=0)
    report = _report(out)
    complete = [t for t in report["trials"] if t["state"] == "COMPLETE"]
    assert len(complete) == 2 and report["seed_cnn"]["size_bytes"] > 900_000
    for t in complete:
        assert 0 <= t["accuracy"] <= 1 and t["latency_us"] > 0 and t["size_bytes"] > 0 and t["arch"]["blocks"]
    assert any(t["on_front"] for t in complete) and report["chosen"] in {t["number"] for t in complete}
    assert (out / "pareto.png").is_file() and "seed CNN" in first.stdout and "trial 1:" in first.stderr
    best = json.loads((out / "best" / "config.json").read_text())
    assert json.loads(best["settings"]["arch"]) == complete[report["chosen"]]["arch"]
    assert best["test"]["samples"] == 10_000 and 0 <= best["test"]["accuracy"] <= 1
    assert (out / "best" / "model.keras").is_file()
    assert "export's gates" in first.stderr and "validation images" in first.stderr
    assert "epoch 1/1: val accuracy" in first.stderr and "epoch 1/1" not in first.stderr.split("trial 0:")[1]
    assert report["verdict"].startswith(f"trial {report['chosen']} against the seed CNN")
    found = check_report(out / "report.html", tmp_path / "tune.png", ["front", "trials", "best-training"])
    assert found["figures"] >= 1  # the front
    # run again with a higher count: the study resumes, only the missing trial runs
    again = cli("tune", "--out", out, "--trials", 3, *QUICK, check=0)
    assert "trial 2:" in again.stderr and "trial 0:" not in again.stderr and "the seed CNN first" not in again.stderr
    assert len([t for t in _report(out)["trials"] if t["state"] == "COMPLETE"]) == 3
    # --final-epochs on the finished study: no trial runs, the chosen architecture and the seed CNN train again
    final = cli("tune", "--out", out, "--trials", 3, *QUICK, "--final-epochs", 2, check=0)
    report = _report(out)
    assert "trial 3:" not in final.stderr and final.stderr.count("trained again, 2 epochs") == 2
    assert report["final"]["epochs"] == 2 and report["final"]["chosen"]["number"] == report["chosen"]
    for model in (report["final"]["chosen"], report["final"]["seed_cnn"]):
        assert 0 <= model["test_accuracy"] <= 1 and model["latency_us"] > 0
    assert report["verdict"].startswith(f"trial {report['chosen']} (both trained 2 epochs) against the seed CNN")
    assert "int8 test accuracy" in final.stdout and "seed CNN, 2 epochs" in final.stdout
    best = json.loads((out / "best" / "config.json").read_text())
    assert best["settings"]["epochs"] == 2 and best["epochs_finished"] == 2
    chosen_dir = out / "final" / f"trial-{report['chosen']:04d}-2-epochs"
    assert (out / "best" / "model.keras").read_bytes() == (chosen_dir / "model.keras").read_bytes()
    assert "trained again" not in cli("tune", "--out", out, "--trials", 3, *QUICK, "--final-epochs", 2,
                                      check=0).stderr  # kept in the study
    # other settings on the same study are refused
    other = cli("tune", "--out", out, "--trials", 3, "--limit", 700, "--epochs", 1)
    assert other.returncode == 2 and "the study there was run with" in other.stderr


def test_two_workers_share_one_study(tmp_path):
    optuna = pytest.importorskip("optuna")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    out = tmp_path / "tune"
    cli("tune", "--out", out, "--trials", 2, "--jobs", 2, *QUICK, check=0)
    study = optuna.load_study(study_name="edgefashion-tune",
                              storage=JournalStorage(JournalFileBackend(str(out / "study.journal"))))
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) >= 2 and len({t.user_attrs["pid"] for t in complete}) == 2
    assert len({json.dumps(t.user_attrs["arch"], sort_keys=True) for t in complete}) >= 2  # not the same samples


def test_a_budget_no_trial_meets_is_a_failure(tmp_path):
    stale = tmp_path / "tune" / "best"  # the choice of an earlier invocation with other budgets
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    (tmp_path / "tune" / "pareto.json").write_text("{}")
    done = cli("tune", "--out", tmp_path / "tune", "--trials", 1, *QUICK, "--max-size-kb", 1)
    assert done.returncode == 1 and "no trial of 1 meets the budgets (max_size_kb 1)" in done.stderr
    assert "(an earlier choice) was removed" in done.stderr
    assert not (tmp_path / "tune" / "best").exists() and _report(tmp_path / "tune")["trials"]


def test_chance_level_is_never_inside_the_budgets_and_worse_is_said():
    from edgefashion.host.tune import TuneConfig, verdict, violations
    from edgefashion.schemas import TrialResult
    figures = {"accuracy": 0.1, "classes": 10, "latency_us": 5.0, "size_bytes": 1000}
    assert max(violations(figures, TuneConfig())) > 0  # no budgets given, still not "inside"
    assert max(violations({**figures, "accuracy": 0.6}, TuneConfig())) <= 0
    seed = TrialResult(number=-1, state="COMPLETE", arch=None, accuracy=0.55, latency_us=200.0, size_bytes=900_000)
    worse = TrialResult(number=3, state="COMPLETE", arch={}, accuracy=0.3583, latency_us=20.0, size_bytes=40_000)
    text = verdict(worse, seed)
    assert "19.17 pp LESS accurate" in text and "WORSE than the seed CNN on accuracy" in text and "10.0x faster" in text
    assert "WORSE" not in verdict(TrialResult(number=4, state="COMPLETE", arch={}, accuracy=0.6, latency_us=20.0,
                                              size_bytes=40_000), seed)


def test_train_a_preset_architecture(tmp_path):
    run = tmp_path / "run"
    cli("train", "--out", run, "--arch", "tiny", "--limit", 500, "--epochs", 1, check=0)
    assert json.loads((run / "config.json").read_text())["settings"]["arch"] == "tiny"
    bad = cli("tune", "--out", tmp_path / "t", "--storage", "nosuch://x", *QUICK)
    assert bad.returncode == 2 and "cannot open the study" in bad.stderr


def test_every_starting_point_is_a_point_of_the_space_and_stride_has_no_pool():
    import optuna
    from edgefashion.host import import_tf
    from edgefashion.host.arch import STARTS, build, params, sample
    for start in STARTS:  # enqueued as Optuna parameters: the trial must draw the same architecture back
        assert sample(optuna.trial.FixedTrial(params(start))) == start
    keras = import_tf(False).keras
    strided = build(next(a for a in STARTS if a.downsample == "stride" and a.head == "gap"), keras)
    kinds = [type(layer).__name__ for layer in strided.layers]
    assert "MaxPooling2D" not in kinds and "AveragePooling2D" not in kinds
    assert strided.get_layer("conv3").output.shape[1:3] == (4, 4)  # 28 -> 14 -> 7 -> 4
    mixed = build(next(a for a in STARTS if a.downsample == "mixed"), keras)  # pooled first, then strided
    assert [type(layer).__name__ for layer in mixed.layers].count("MaxPooling2D") == 1
    assert mixed.get_layer("conv1").output.shape[1:3] == (28, 28) and mixed.get_layer("conv2").strides == (2, 2)
    narrow = build(next(a for a in STARTS if a.dense < 32), keras)  # a narrow head on wide features
    assert narrow.get_layer("flatten").output.shape[1] == 4 * 4 * 48 and narrow.get_layer("dense").units == 24


def test_training_pauses_while_another_worker_measures(tmp_path):
    import threading
    import types
    from edgefashion.host import quiet_bench
    lock = tmp_path / "bench.lock"
    keras = types.SimpleNamespace(callbacks=types.SimpleNamespace(Callback=object))
    gate, batches, held = quiet_bench.training_gate(keras, lock), [], {}

    def train():  # a batch every 2 ms for 2.5 s, as a training worker would
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            gate.on_train_batch_begin(len(batches))
            batches.append(time.monotonic())
            time.sleep(0.002)

    trainer = threading.Thread(target=train)
    trainer.start()
    time.sleep(0.5)
    asked = time.monotonic()
    with quiet_bench.measuring(lock):
        held["from"] = time.monotonic()
        time.sleep(1.0)
        held["to"] = time.monotonic()
    trainer.join()
    assert held["from"] - asked < 0.5  # the training never kept the measurement waiting (0.25 s settle)
    during = [t for t in batches if held["from"] < t < held["to"]]
    assert not during and any(t > held["to"] for t in batches) and any(t < asked for t in batches)
    # a conversion in another worker holds the measurement off until it is done
    converting = {}

    def convert():
        with quiet_bench.working(lock):
            converting["from"] = time.monotonic()
            time.sleep(0.8)
            converting["to"] = time.monotonic()

    converter = threading.Thread(target=convert)
    converter.start()
    time.sleep(0.2)
    with quiet_bench.measuring(lock):
        measured = time.monotonic()
    converter.join()
    assert measured >= converting["to"]


def test_a_training_that_raises_leaves_no_lock_file_open(tmp_path):
    import gc
    import os
    import types
    from edgefashion.host import quiet_bench
    keras = types.SimpleNamespace(callbacks=types.SimpleNamespace(Callback=object))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):  # each a training that raised before on_train_end
        quiet_bench.training_gate(keras, tmp_path / "bench.lock").on_train_batch_begin(0)
    gc.collect()
    ended = quiet_bench.training_gate(keras, tmp_path / "bench.lock")
    ended.on_train_end()
    ended.on_train_end()  # Keras may call it again; the file is closed once
    assert len(os.listdir("/proc/self/fd")) == before


def test_sigterm_in_a_trial_stops_the_tune(tmp_path):
    optuna = pytest.importorskip("optuna")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    out = tmp_path / "tune"

    def trials():
        try:
            return optuna.load_study(study_name="edgefashion-tune", storage=JournalStorage(
                JournalFileBackend(str(out / "study.journal")))).trials
        except Exception:  # not created yet
            return []

    tune = subprocess.Popen([sys.executable, "-m", "edgefashion", "tune", "--out", str(out), "--trials", "6",
                             "--limit", "600", "--epochs", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline, running = time.monotonic() + 300, None
    while running is None and time.monotonic() < deadline and tune.poll() is None:
        time.sleep(0.3)
        running = next((t.number for t in trials() if t.state.name == "RUNNING"), None)
    assert running is not None, tune.communicate()[1][-2000:]
    tune.send_signal(signal.SIGTERM)
    _, err = tune.communicate(timeout=120)
    assert tune.returncode == 143 and "interrupted (SIGTERM)" in err, err[-2000:]
    states = {t.number: t.state.name for t in trials()}
    # the interrupted trial is left RUNNING in the journal (the next run marks it failed: _fail_abandoned);
    # what matters here: tune stopped, and no trial began after it
    assert states[running] in ("RUNNING", "FAIL")
    assert not [n for n, state in states.items() if n > running and state in ("RUNNING", "COMPLETE", "FAIL")]


def test_a_damaged_journal_is_one_line(tmp_path):
    for content in (bytes(range(256)) * 4, b'{"op_code": 99}\n[1, 2]\n'):
        folder = tmp_path / f"t{len(content)}"
        folder.mkdir()
        (folder / "study.journal").write_bytes(content)
        done = cli("tune", "--out", folder, "--trials", 1, check=2)
        assert "it is damaged or not an Optuna journal: move it away to start a new study" in done.stderr
        assert done.stderr.count("\n") == 1 and (folder / "study.journal").read_bytes() == content


def test_multi_fidelity_stops_only_trials_beaten_early(tmp_path):
    import keras

    from edgefashion.device import macs
    from edgefashion.host.arch import PRESETS, build
    from edgefashion.host.export import tflite_converter
    from edgefashion.host.model import build_model
    from edgefashion.host.tune import beaten_early, keras_macs

    assert keras_macs(build_model()) == 4_028_568  # the seed CNN, as bench counts it from the .tflite
    separable = build(PRESETS["separable"], keras)
    import numpy as np
    import tensorflow as tf
    content = tflite_converter(tf, separable, np.zeros((4, 28, 28, 1), np.float32)).convert()
    assert keras_macs(separable) == sum(op["macs"] or 0 for op in macs.tflite_ops(content, "separable"))
    mine = {"accuracy": 0.80, "parameters": 5000, "macs": 300_000}
    assert beaten_early(mine, [{**mine, "accuracy": 0.805}]) is None  # not by 1 pp
    assert beaten_early(mine, [{**mine, "accuracy": 0.82, "parameters": 6000}]) is None  # larger
    assert beaten_early(mine, [{**mine, "accuracy": 0.82, "number": 3}])["number"] == 3
    out = tmp_path / "tune"
    done = cli("tune", "--out", out, "--trials", 2, "--limit", 600, "--epochs", 2, "--first-epochs", 1, check=0)
    trials = [t for t in _report(out)["trials"] if t["state"] in ("COMPLETE", "PRUNED")]  # not the queued ones
    assert len(trials) >= 2 and all(t["first"]["parameters"] > 0 and t["first"]["macs"] > 0 for t in trials)
    for t in trials:
        assert (t["state"] == "PRUNED") == (t["stopped_by"] is not None)
        if t["state"] == "PRUNED":
            assert f"trial {t['number']}: stopped after 1 epoch(s): trial {t['stopped_by']}" in done.stderr


def test_ctrl_c_mid_trial_prints_optunas_warning_without_a_traceback():
    import io
    import logging
    from edgefashion.host.tune import optuna_module
    logger, out = optuna_module().logging.get_logger("optuna"), io.StringIO()
    handler = logging.StreamHandler(out)  # Optuna's own handler holds whichever stderr it first saw
    logger.addHandler(handler)
    try:
        for error in (KeyboardInterrupt, ValueError):  # other errors keep their traceback
            try:
                raise error("a real failure" if error is ValueError else "")
            except error:
                logger.warning(f"Trial failed because of the following error: {error.__name__}()", exc_info=True)
    finally:
        logger.removeHandler(handler)
    err = out.getvalue()
    assert "KeyboardInterrupt()" in err and err.count("Traceback") == 1 and "ValueError: a real failure" in err
