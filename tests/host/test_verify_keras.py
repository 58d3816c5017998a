"""verify on the host: Keras is the reference, and model_f32.tflite (a device's reference) agrees."""

import pytest

from edgefashion.device import verify


def test_device_reference_equals_keras(tiny_run):
    from edgefashion.device.verify import VerifyConfig
    from edgefashion.pipeline import float_reference
    from edgefashion.rundir import Run

    config, run = VerifyConfig(), Run(tiny_run)
    on_device = verify.verify(config, run)  # no Keras handed in: model_f32.tflite, as on a device
    on_host = verify.verify(config, run, float_reference(config, run))
    assert on_device.reference.format == "tflite-f32" and on_host.reference.format == "keras"
    assert on_device.reference.accuracy == pytest.approx(on_host.reference.accuracy, abs=1e-4)
    for a, b in zip(on_device.models, on_host.models):
        assert a.accuracy == pytest.approx(b.accuracy, abs=1e-4)
    # the per-layer table comes from export's layer_errors.json: no TensorFlow needed to show it
    assert "Layers that lose the most in int8" in (tiny_run / "verify.md").read_text()
