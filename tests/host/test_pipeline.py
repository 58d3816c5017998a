import json

from chromium import check_report
from helpers import LOOSE_GATES, cli, write_csv


def test_run_end_to_end_then_resume(tmp_path):
    run = tmp_path / "run"
    quick = ("--limit", 1000, "--epochs", 1, "--calibration", 50, "--firmware-images", 100, *LOOSE_GATES)
    first = cli("run", "--out", run, *quick, check=0)
    assert "tflite-int8" in first.stdout and "bundle:" in first.stdout and "TFLM: accuracy" in first.stdout
    state = json.loads((run / "pipeline.json").read_text())
    assert [s["status"] for s in state["stages"].values()] == ["done"] * 6
    assert {r["format"] for r in state["summary"]["rows"]} == {"keras", "tflite-int8", "tflite-f32",
                                                                "onnx-f32", "onnx-int8"}
    assert f"report: {run / 'report.html'}" in first.stdout
    found = check_report(run / "report.html", tmp_path / "report.png",
                         ["overview", "training", "export", "accuracy", "latency", "firmware", "bundle"])
    # nothing missing; bench's CPU warnings (no VNNI: "int8 may be no faster") are the machine's, drawn apart
    assert found["missing"] == [] and all(w.startswith("warning: ") for w in found["warnings"])
    assert found["figures"] >= 4  # curves, two confusions, latency
    model_mtime = (run / "model.keras").stat().st_mtime_ns
    # no flags at all: the recorded settings (not the defaults), nothing redone
    resumed = cli("run", "--out", run, check=0)
    assert "train: done before, skipped" in resumed.stderr and "-- stage" not in resumed.stderr
    assert "settings changed" not in resumed.stderr and "tflite-int8" in resumed.stdout
    # lose the bench stage: a second run redoes only that
    state["stages"].pop("bench")
    (run / "pipeline.json").write_text(json.dumps(state))
    second = cli("run", "--out", run, *quick, check=0)
    assert "train: done before, skipped" in second.stderr and "-- stage bench" in second.stderr
    assert "-- stage train" not in second.stderr and (run / "model.keras").stat().st_mtime_ns == model_mtime
    # a changed setting redoes its own stage and those after it, not the ones before
    third = cli("run", "--out", run, *quick, "--golden", 20, check=0)
    assert "bundle settings changed" in third.stderr and "-- stage bundle" in third.stderr
    assert "-- stage train" not in third.stderr and "-- stage bench" not in third.stderr
    assert json.loads((run / "pipeline.json").read_text())["settings"]["bundle"]["golden_count"] == 20
    # an output edited or deleted since: its stage is redone (and what follows), not "done before"
    (run / "verify.json").write_text("{}")
    fourth = cli("run", "--out", run, check=0)
    assert "verify: its output changed or went missing since it ran (verify.json)" in fourth.stderr
    assert "-- stage verify" in fourth.stderr and "-- stage export" not in fourth.stderr
    assert json.loads((run / "verify.json").read_text())["models"]


def test_run_stops_at_the_failing_stage(tmp_path):
    bad = write_csv(tmp_path / "bad.csv", [[1] + [300] + [0] * 783])
    done = cli("run", "--out", tmp_path / "run", "--data", bad)
    assert done.returncode == 2 and "pixel 300 is outside 0-255" in done.stderr
    state = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert list(state["stages"]) == ["train"] and state["stages"]["train"]["status"] == "failed"
    assert "pixel 300 is outside 0-255" in state["stages"]["train"]["error"]
