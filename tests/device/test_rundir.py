"""The typed run directory: every manifest round-trips, and a bad one is one error naming file and field."""

import json
import shutil
from pathlib import Path

import pytest

from edgefashion.rundir import Run
from edgefashion.schemas import ExportReport, LayerErrors
from edgefashion.manifest import ManifestError
from helpers import FIXTURES, cli


def test_the_committed_run_reads_and_round_trips(fixture_run):
    run = Run(fixture_run)
    export = run.read_export()
    assert set(run.exported_models()) == {"tflite-int8", "tflite-f32", "onnx-f32", "onnx-int8"}
    assert export.models()["tflite-int8"].input.dtype == "int8" and export.calibration.count == 200
    assert ExportReport.from_json(export.to_json(), "again") == export
    assert LayerErrors.read(run.layer_errors).rows
    assert Run.at(fixture_run / "export").root == fixture_run


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("calibration"), "export.json: export manifest (edgefashion export RUN): field calibration is missing"),
    (lambda m: m["artifacts"][1].update(sha256=None), "field artifacts[1].sha256 is null, expected str"),
    (lambda m: m["calibration"].update(count="500"), "field calibration.count is str '500', expected int"),
    (lambda m: m.update(artifacts={}), "field artifacts is dict {}, expected a list"),
])
def test_bad_export_manifest_names_the_field(fixture_run, change, message):
    path = Run(fixture_run).export_manifest
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError) as info:
        Run(fixture_run).read_export()
    assert message in str(info.value) and str(path) in str(info.value)


def test_a_changed_or_escaping_model_file_is_refused(fixture_run):
    run = Run(fixture_run)
    (run.export_dir / "model_f32.tflite").write_bytes(b"\0" * 100)
    with pytest.raises(ManifestError.__mro__[1], match="model_f32.tflite: does not match its sha256"):
        run.exported_models()
    manifest = json.loads(run.export_manifest.read_text())
    manifest["artifacts"][0]["file"] = "../config.json"
    run.export_manifest.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="not a plain file name"):
        run.exported_models()


def test_calibration_indices_are_checked(fixture_run):
    run = Run(fixture_run)
    assert len(run.read_calibration()) == 200
    import numpy as np

    np.savez(run.calibration, indices=np.arange(200))
    with pytest.raises(ManifestError.__mro__[1], match="indices do not match indices_sha256"):
        run.read_calibration()


def test_an_export_whose_model_keras_changed_since_is_refused(fixture_run):
    """A second training replaced model.keras: the export of the first is refused, in one line."""
    from edgefashion.files import sha256_bytes
    from helpers import cli

    run = Run(fixture_run)
    manifest = json.loads(run.export_manifest.read_text())
    run.model.write_bytes(b"the model export was made from")
    manifest["model_sha256"] = sha256_bytes(run.model.read_bytes())
    run.export_manifest.write_text(json.dumps(manifest))
    assert set(run.exported_models())  # the same model.keras: accepted
    run.model.write_bytes(b"a model trained again")
    with pytest.raises(ManifestError.__mro__[1], match="model.keras: changed since .*export.json was made from it"):
        run.exported_models()
    done = cli("bench", fixture_run, "--runs", 1, "--min-time", 0, "--warmup", 0)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert f"run `edgefashion export {fixture_run}` again" in done.stderr
    run.model.unlink()  # a copy of the run without model.keras (a device) has nothing to check
    assert set(run.exported_models())


def test_a_users_folder_is_never_written_into(tmp_path):
    """train, run and tune write only into a new, empty or their own folder, never $HOME or /; export
    refuses a file of the user's in RUN/export/ instead of deleting it. Everything stays as it was."""
    project = tmp_path / "project"
    (project / "export").mkdir(parents=True)
    (project / "export" / "thesis.tex").write_text("three years")
    (project / "notes.txt").write_text("mine")
    for command in (("train", "--out", project), ("run", "--out", project), ("tune", "--out", project)):
        done = cli(*command, "--limit", 100, check=2)
        assert "exists and is not an edgefashion" in done.stderr and "notes.txt" in done.stderr, done.stderr
    (project / "config.json").write_text('{"compilerOptions": {}}')  # the user's: its name is not enough
    for command in (("train", "--out", project), ("run", "--out", project)):
        assert "is not an edgefashion run (holds config.json" in cli(*command, "--limit", 100, check=2).stderr
    assert (project / "config.json").read_text() == '{"compilerOptions": {}}'
    for folder in (Path.home(), Path("/")):
        assert "a system or home folder" in cli("train", "--out", folder, check=2).stderr
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run", run)
    (run / "export" / "thesis.tex").write_text("three years")
    done = cli("export", run, check=2)
    assert "export: holds files edgefashion did not write (thesis.tex)" in done.stderr
    assert (run / "export" / "thesis.tex").read_text() == "three years"
    assert (project / "export" / "thesis.tex").read_text() == "three years" and sorted(
        p.name for p in project.iterdir()) == ["config.json", "export", "notes.txt"]
