import subprocess
import sys

import numpy as np
import pytest

from edgefashion.device.runtime import Model
from edgefashion.errors import InputError
from helpers import MODELS, ROOT

BLOCK_TF = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
"""


def test_device_modules_import_without_tensorflow():
    code = BLOCK_TF + """
import edgefashion.device.runtime, edgefashion.device.verify, edgefashion.device.bench
import edgefashion.device.unpack, edgefashion.device.selftest, edgefashion.device.predict, edgefashion.data, edgefashion.cli, edgefashion.pipeline
try:
    import tensorflow
except ImportError:
    pass
else:
    raise SystemExit('tensorflow imported')
assert not any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules), 'a heavy module loaded'
print('ok')
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_predict_without_tensorflow(fixture_models):
    code = BLOCK_TF + f"""
import numpy as np
from edgefashion.device.runtime import Model
m = Model({str(fixture_models / 'model_int8.tflite')!r})
print(m.backend, m.predict(np.zeros((28, 28), np.uint8)).labels[0] != '')
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.split() == ["ai_edge_litert", "True"], done.stderr


@pytest.mark.parametrize("fmt", MODELS)
def test_every_format_runs_single_and_batch(fixture_models, few_images, fmt):
    model = Model(fixture_models / MODELS[fmt])
    assert model.format == fmt
    images = few_images.images[:64]
    batch = model.predict(images)
    singles = np.stack([model.predict(img).probabilities[0] for img in images[:8]])
    np.testing.assert_allclose(batch.probabilities[:8], singles, atol=1e-6)
    assert batch.probabilities.shape == (64, 10) and np.allclose(batch.probabilities.sum(1), 1, atol=0.05)
    # uint8 pixels and [0, 1] floats are the same input
    floats = model.predict_proba(images.astype(np.float32) / 255)
    np.testing.assert_allclose(floats, batch.probabilities, atol=1e-6)
    assert (batch.class_ids == few_images.labels[:64]).mean() > 0.5
    assert len(batch.labels) == 64 and all(isinstance(label, str) for label in batch.labels)


def test_int8_quantization_round_trip(fixture_models):
    model = Model(fixture_models / "model_int8.tflite")
    pixels = np.arange(256, dtype=np.uint8)
    q = model.prepare(np.resize(pixels, (28, 28)))
    back = (q.astype(np.float32).ravel()[:256] - model.input.zero_point) * model.input.scale
    np.testing.assert_allclose(back, pixels / 255, atol=model.input.scale / 2 + 1e-7)
    raw = np.array([[-128, 127] + [0] * 8], dtype=np.int8)
    probs = model.dequantize(raw)
    assert probs[0, 0] == pytest.approx(0.0, abs=1e-7)
    assert probs[0, 1] == pytest.approx((127 - model.output.zero_point) * model.output.scale)


def test_threads_and_backend_visible(fixture_models):
    model = Model(fixture_models / "model_int8.tflite", threads=2)
    assert model.threads == 2 and model.backend == "ai_edge_litert" and "tflite-int8" in repr(model)
    with pytest.raises(InputError, match="threads=0"):
        Model(fixture_models / "model_int8.tflite", threads=0)


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 32, 32), np.uint8), r"input shape=\(2, 32, 32\), expected"),
    (np.zeros((28, 28), np.int64), "input dtype=int64, expected uint8"),
    (np.full((28, 28), np.nan, np.float32), "NaN"),
    (np.full((28, 28), 3.0, np.float32), r"input values in \[3, 3\], expected float images in \[0, 1\]"),
    (np.zeros((0, 28, 28), np.uint8), "no images"),
])
def test_bad_inputs(fixture_models, images, message):
    model = Model(fixture_models / "model_int8.tflite")
    with pytest.raises(InputError, match=message):
        model.predict(images)


def test_bad_model_files(fixture_models, tmp_path):
    good = (fixture_models / "model_int8.tflite").read_bytes()
    with pytest.raises(InputError, match="model file not found"):
        Model(tmp_path / "missing.tflite")
    (tmp_path / "empty.tflite").write_bytes(b"")
    with pytest.raises(InputError, match="model file is empty"):
        Model(tmp_path / "empty.tflite")
    (tmp_path / "trunc.tflite").write_bytes(good[: len(good) // 3])
    with pytest.raises(InputError, match="not a valid TFLite model"):
        Model(tmp_path / "trunc.tflite")
    (tmp_path / "junk.onnx").write_bytes(b"\x01\x02this is not a model at all" * 10)
    with pytest.raises(InputError, match="not a valid TFLite or ONNX model"):
        Model(tmp_path / "junk.onnx")


def test_backend_can_be_chosen(fixture_models):
    assert Model(fixture_models / "model_int8.tflite", backend="ai_edge_litert").backend == "ai_edge_litert"
    with pytest.raises(InputError, match="backend 'nope', expected one of"):
        Model(fixture_models / "model_int8.tflite", backend="nope")
