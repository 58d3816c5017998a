"""The pure logic, in-process and fast: the pipeline's redo rules, option building from stage
settings, and tune's Pareto dominance and budget violations. No TensorFlow, no subprocess."""

from pathlib import Path

import pytest

from edgefashion import cli, pipeline
from edgefashion.host.tune import TuneConfig, dominates, violations
from edgefashion.options import from_plain, settings_of
from edgefashion.schemas import PipelineState, StageState, TrialResult

NAMES = [s.name for s in pipeline.STAGES]


def finished(changes=None, statuses=None) -> PipelineState:
    """A pipeline.json as a run with `changes` would have left it, every stage done unless `statuses` says."""
    settings, _, _ = pipeline.plan(None, changes or {})
    return PipelineState(settings={s.name: s.recorded(settings[s.name]) for s in pipeline.STAGES},
                         stages={n: StageState(status=(statuses or {}).get(n, "done")) for n in NAMES})


def run_changes(*argv) -> dict:
    return cli.run_changes(cli.build_parser().parse_args(["run", *map(str, argv)]))


def test_first_run_runs_every_stage_with_the_defaults():
    settings, kept, notes = pipeline.plan(None, {})
    assert kept == {} and notes == []
    assert settings["train"].epochs == 4 and settings["bundle"].golden_count == 200


def test_resume_without_flags_keeps_the_recorded_settings_and_redoes_nothing():
    before = finished({"train": {"limit": 2000, "epochs": 1}})
    settings, kept, notes = pipeline.plan(before, run_changes())
    assert list(kept) == NAMES and notes == []
    assert settings["train"].limit == 2000 and settings["train"].epochs == 1


def test_a_given_setting_redoes_its_stage_and_those_after_it_and_says_old_and_new():
    before = finished({"train": {"limit": 2000, "epochs": 1}})
    settings, kept, notes = pipeline.plan(before, run_changes("--golden", 20))
    assert list(kept) == ["train", "export", "verify", "bench"]
    assert notes == ["bundle settings changed since the last run: golden_count 200 -> 20"]
    assert settings["train"].limit == 2000  # what was not given keeps its recorded value
    _, kept, notes = pipeline.plan(before, run_changes("--epochs", 3))
    assert kept == {} and notes == ["train settings changed since the last run: epochs 1 -> 3"]


def test_the_same_value_given_again_is_no_change():
    before = finished({"train": {"epochs": 1}})
    _, kept, notes = pipeline.plan(before, run_changes("--epochs", 1))
    assert list(kept) == NAMES and notes == []


def test_a_gate_changes_export_and_verify_and_keeps_the_other_recorded_gates():
    before = finished({"export": {"gates": {"min_agreement": 0.9}}, "verify": {"gates": {"min_agreement": 0.9}}})
    settings, kept, notes = pipeline.plan(before, run_changes("--max-drop", 5))
    assert list(kept) == ["train"] and len(notes) == 2 and "max_drop_pp" in notes[0]
    assert settings["verify"].gates.min_agreement == 0.9 and settings["verify"].gates.max_drop_pp == 5


def test_a_stage_that_failed_or_was_skipped_runs_again_with_all_after_it():
    _, kept, _ = pipeline.plan(finished(statuses={"verify": "failed"}), {})
    assert list(kept) == ["train", "export"]
    _, kept, _ = pipeline.plan(finished(statuses={"firmware": "skipped"}), {})
    assert list(kept) == NAMES[:-1]


def test_run_options_map_to_each_stage_that_takes_them():
    changes = run_changes("--test-data", "t.csv", "--seed", 3, "--min-agreement", 95, "--threads", "1,2")
    assert changes["train"] == {"test_data": Path("t.csv"), "seed": 3}
    assert changes["export"] == {"seed": 3, "gates": {"min_agreement": 0.95}}
    assert changes["verify"] == {"data": Path("t.csv"), "gates": {"min_agreement": 0.95}}  # verify's --data
    assert changes["bench"] == {"threads": [1, 2]} and changes["firmware"] == {"data": Path("t.csv")}
    assert run_changes() == {name: {} for name in NAMES}  # nothing given: nothing changes


def test_recorded_settings_round_trip():
    settings, _, _ = pipeline.plan(None, run_changes("--formats", "tflite-int8", "--data", "d.csv", "--max-drop", 2))
    for stage in pipeline.STAGES:
        assert stage.restore(stage.recorded(settings[stage.name])) == settings[stage.name]
    assert from_plain(TuneConfig, settings_of(TuneConfig(trials=7, data=Path("x")))).data == Path("x")


def test_a_stage_is_one_object_the_cli_is_built_from():
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    for stage in pipeline.STAGES:
        assert commands[stage.name].description == stage.description
    assert pipeline.stage_named("verify").run is pipeline.verify_on_host  # Keras as reference on the host


def trial(number, accuracy, latency, size) -> TrialResult:
    return TrialResult(number=number, state="COMPLETE", arch={}, accuracy=accuracy, latency_us=latency,
                       size_bytes=size)


def test_pareto_dominance():
    a, b = trial(0, 0.9, 100, 1000), trial(1, 0.8, 200, 2000)
    assert dominates(a, b) and not dominates(b, a)
    assert not dominates(a, trial(2, 0.9, 100, 1000))  # equal on every axis: neither dominates
    assert not dominates(a, trial(3, 0.95, 300, 1000)) and not dominates(trial(3, 0.95, 300, 1000), a)


@pytest.mark.parametrize("budgets, figures, inside", [
    ({}, {"accuracy": 0.1, "latency_us": 1e6, "size_bytes": 1e9}, False),  # chance level: never inside
    ({}, {"accuracy": 0.5, "latency_us": 1e6, "size_bytes": 1e9}, True),
    ({}, {"accuracy": 0.45, "classes": 5, "latency_us": 1, "size_bytes": 1}, True),  # 2/K of 5 classes is 0.4
    ({"max_latency_us": 50}, {"accuracy": 0.9, "latency_us": 60, "size_bytes": 1}, False),
    ({"max_size_kb": 10}, {"accuracy": 0.9, "latency_us": 1, "size_bytes": 10 * 1024}, True),
    ({"min_accuracy": 0.85}, {"accuracy": 0.84, "latency_us": 1, "size_bytes": 1}, False),
    ({"max_arena_kb": 64}, {"accuracy": 0.9, "latency_us": 1, "size_bytes": 1, "arena_bytes": None}, False),
])
def test_budget_violations(budgets, figures, inside):
    assert (max(violations(figures, TuneConfig(**budgets))) <= 0) == inside


def test_a_job_that_kills_its_worker_is_crashed_and_the_rest_still_run():
    import math
    import os

    from edgefashion.device.isolate import Crashed, in_worker

    results = in_worker(math.sqrt, [(4.0,), (9.0,)])
    assert results == [2.0, 3.0]
    assert [type(r) for r in in_worker(os.abort, [(), ()])] == [Crashed, Crashed]
    assert in_worker(os.abort, [()])[0].how == "signal SIGABRT"
    with pytest.raises(ValueError, match="math domain error"):
        in_worker(math.sqrt, [(-1.0,)])
