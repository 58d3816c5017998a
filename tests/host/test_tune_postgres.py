"""tune on a real PostgreSQL server (Debian's, started here): two workers with their own folders on one
study, one killed mid-trial, the other carrying on, the killed trial marked failed, resume, and
pareto.json from the database alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import postgres
from helpers import cli

QUICK = ("--limit", 600, "--epochs", 1, "--latency-repeats", 2)

pytestmark = pytest.mark.skipif(postgres.bin_dir() is None, reason="postgresql is not installed (make postgres)")


@pytest.fixture(scope="module")
def database():
    server = postgres.Postgres()
    try:
        yield server.url
    finally:
        server.stop()


def _study(url):
    import optuna
    return optuna.load_study(study_name="edgefashion-tune", storage=url)


def _worker(folder, url, trials, log):
    return subprocess.Popen([sys.executable, "-m", "edgefashion", "tune", "--out", str(folder), "--storage", url,
                             "--trials", str(trials), "--stale-after-s", "12", *map(str, QUICK)],
                            stdout=log, stderr=subprocess.STDOUT)


def test_two_workers_one_killed_then_resume(database, tmp_path):
    a_log, b_log = open(tmp_path / "a.log", "w"), open(tmp_path / "b.log", "w")
    a = _worker(tmp_path / "a", database, 4, a_log)
    time.sleep(3)
    b = _worker(tmp_path / "b", database, 4, b_log)
    deadline, killed = time.monotonic() + 300, None
    while time.monotonic() < deadline and killed is None and a.poll() is None:  # kill worker a in the middle of one of its trials
        time.sleep(0.5)
        try:
            running = [t for t in _study(database).trials if t.state.name == "RUNNING" and t.user_attrs.get("pid") == a.pid]
        except Exception:  # the study is not created yet
            continue
        if running:
            a.send_signal(signal.SIGKILL)
            killed = running[0].number
    assert killed is not None, (tmp_path / "a.log").read_text()[-2000:]
    a.wait()
    assert b.wait(timeout=600) == 0, (tmp_path / "b.log").read_text()[-2000:]
    study = _study(database)
    states = {t.number: t.state.name for t in study.trials}
    pids = {t.user_attrs.get("pid") for t in study.trials if t.state.name == "COMPLETE"}
    assert states[killed] in ("FAIL", "RUNNING") and b.pid in pids
    assert sum(s == "COMPLETE" for s in states.values()) >= 4
    # resume in a's folder: the killed trial is failed (its process is gone), one more trial runs
    resumed = cli("tune", "--out", tmp_path / "a", "--storage", database, "--trials", 5, "--stale-after-s", 12,
                  *QUICK, check=0)
    assert {t.number: t.state.name for t in _study(database).trials}[killed] == "FAIL"
    assert "trials complete" in resumed.stderr
    # the front from the database alone: a third folder, no training, nothing of the trials' models
    alone = cli("tune", "--out", tmp_path / "c", "--storage", database, "--trials", 5, *QUICK, check=0)
    report = json.loads((tmp_path / "c" / "pareto.json").read_text())
    assert sum(t["state"] == "COMPLETE" for t in report["trials"]) >= 5 and report["seed_cnn"]
    assert not (tmp_path / "c" / "trials").exists() and "the seed CNN first" not in alone.stderr
    chosen = next(t for t in report["trials"] if t["number"] == report["chosen"])
    assert chosen["host"] and chosen["folder"] in (str((tmp_path / n).resolve()) for n in "ab")
    assert "its model is there" in alone.stderr and report["verdict"].startswith(f"trial {chosen['number']}")
    assert "postgres@127.0.0.1" in report["storage"]
    assert os.path.isdir(tmp_path / "b" / "trials")
