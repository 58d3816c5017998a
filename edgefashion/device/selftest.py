"""The on-device self-test of a bundle: every model against the host's golden outputs, and the
int8-vs-float cross-check, against this device's own limits (Limits). No TensorFlow."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import cpu
from ..console import printable
from ..errors import InputError, MissingDependency, Unsupported
from ..formats import FLOAT_OF
from ..options import fraction, non_negative_float, non_negative_int, setting
from ..schemas import BundleManifest, Check, SelftestReport
from .isolate import Crashed, in_worker
from .runtime import Model
from .trust import Trust
from .unpack import REFERENCE_KERNELS, load_golden, open_bundle
from .verify import Gates

@dataclass(frozen=True)
class Limits:
    """How strict this device is with a bundle. Defaults in code, settable by flag; the bundle's
    manifest cannot loosen them."""

    reference_steps: int = setting(0, "largest difference of int8 TFLite (reference kernels) from the golden "
                                      "outputs, in quantization steps: they are bit-identical on every CPU",
                                   type=non_negative_int, metavar="STEPS")
    onnx_int8_steps: int = setting(1, "largest difference of int8 ONNX from the golden outputs, in steps of "
                                      "1/255 (measured: 0 on x86 with and without VNNI and on aarch64)",
                                   type=non_negative_int, metavar="STEPS")
    float_tolerance: float = setting(Gates.float_tolerance, "largest |p - p_golden| of a float model",
                                     type=non_negative_float, metavar="P")
    fast_min_match: float = setting(0.99, "int8 TFLite on the fast kernels: smallest share of values within "
                                          "one step of the golden outputs, and of identical top-1",
                                    type=fraction, metavar="FRACTION")
    min_agreement: float = setting(Gates.min_agreement, "smallest top-1 agreement of an int8 model with its float model on "
                                         "the golden images (one image of slack for small sets)",
                                   type=fraction, metavar="FRACTION")
    min_accuracy: float = setting(0.5, "smallest accuracy of every model on the golden images (0.1 is "
                                       "chance; the seed CNN scores about 0.9)", type=fraction,
                                  metavar="FRACTION")


def selftest(bundle, threads: int = 1, on_check=print, trust: Trust | None = None,
             limits: Limits = Limits(), backend: str = "auto") -> SelftestReport:
    """Every check of a bundle on this device; `on_check` gets each one's line as it finishes."""
    checks: list[Check] = []

    def record(check: Check) -> None:
        checks.append(check)
        on_check(check.line())

    with tempfile.TemporaryDirectory(prefix="edgefashion-selftest-") as scratch:
        try:
            folder, manifest, provenance = open_bundle(bundle, Path(scratch), trust)
            golden = load_golden(folder / manifest.golden.file, manifest)
        except InputError as exc:
            record(Check("bundle", False, str(exc)))
            return _report(checks)
        record(Check("bundle", True, f"safe to extract; {len(manifest.files)} files match their sha256; "
                                     f"{len(golden['labels'])} golden images"))
        record(Check("origin", True, provenance.line() + (f"; warning: {provenance.warning}"
                                                          if provenance.warning else ""),
                     {"sha256": provenance.digest, "signer": provenance.signer, "verified": provenance.verified}))
        outputs = _check_models_isolated([(fmt, folder / name) for fmt, name in manifest.models.items()], golden,
                                         threads, limits, backend, record)
        if all(value is None for value in outputs.values()) and not any(c.passed is False for c in checks):
            record(Check("models", False, "no model of the bundle could run on this device"))
        _cross_check(manifest, golden, outputs, limits, record)
    return _report(checks)


def _report(checks: list[Check]) -> SelftestReport:
    return SelftestReport(passed=all(c.passed for c in checks), cpu=cpu.describe(), checks=checks)


def _check_models_isolated(models: list, golden, threads: int, limits: Limits, backend: str, record) -> dict:
    """{format: probabilities or None} of _check_model on each (format, path), in a worker process: a
    model that kills its interpreter (SIGABRT in LiteRT's reference kernels on a negative softmax beta)
    is a FAIL line naming it and the signal, and this process goes on (and removes the extracted bundle)."""
    jobs = [(fmt, str(path), golden, threads, limits, backend) for fmt, path in models]
    outputs = {}
    for (fmt, path), result in zip(models, in_worker(_model_job, jobs)):
        if isinstance(result, Crashed):
            record(Check(f"load {printable(path.name)}", False, f"the model killed its interpreter ({result.how}); "
                                                               f"a malformed or hostile model"))
            outputs[fmt] = None
            continue
        checks, outputs[fmt] = result
        for check in checks:
            record(check)
    return outputs


def _model_job(fmt, path, golden, threads, limits, backend):
    checks = []
    probabilities = _check_model(fmt, Path(path), golden, threads, limits, backend, checks.append)
    return checks, probabilities


def _check_model(fmt: str, path: Path, golden, threads: int, limits: Limits, backend: str,
                 record) -> np.ndarray | None:
    """Load one model, compare it with the host's golden outputs; return its probabilities."""
    name = printable(path.name)
    try:
        model = Model(path, threads=threads, backend=backend)
        if model.format != fmt:
            raise InputError(f"{name}: is a {model.format} model, listed as {printable(fmt)}")
        raw = model.outputs_of(model.prepare(golden["images"]))
        if fmt in REFERENCE_KERNELS and model.backend != "numpy":
            reference = Model(path, threads=threads, backend=backend, kernels="reference")
            raw_reference = reference.outputs_of(reference.prepare(golden["images"]))
    except (MissingDependency, Unsupported) as exc:
        record(Check(f"load {name}", True, f"skipped: {exc}", skipped=True))
        return None
    except InputError as exc:
        record(Check(f"load {name}", False, str(exc)))
        return None
    record(Check(f"load {name}", True, f"{model.format} on {model.backend}"))
    if fmt in REFERENCE_KERNELS and model.output.dtype == "float32":
        _check_float_head(name, raw, raw_reference if model.backend != "numpy" else None, golden, limits, record)
    elif fmt in REFERENCE_KERNELS and model.backend == "numpy":  # the reference arithmetic itself
        exact = _diff(raw, golden[f"raw_{fmt}"])
        record(Check(f"golden {name} (numpy backend, reference arithmetic)", exact["max"] <= limits.reference_steps,
                     f"max {exact['max']:.3g} quantization steps (limit {limits.reference_steps}), "
                     f"{exact['differ']} of {exact['values']} values differ", exact))
    elif fmt in REFERENCE_KERNELS:
        exact = _diff(raw_reference, golden[f"raw_{fmt}"])
        record(Check(f"golden {name} (reference kernels)", exact["max"] <= limits.reference_steps,
                     f"max {exact['max']:.3g} quantization steps (limit {limits.reference_steps}), "
                     f"{exact['differ']} of {exact['values']} values differ", exact))
        _check_fast(name, _diff(raw, golden["fast_tflite-int8"]), "steps", limits, record)
    else:
        tolerance = limits.onnx_int8_steps / 255 * 1.001 if fmt == "onnx-int8" else limits.float_tolerance
        result = _diff(raw, golden[f"raw_{fmt}"])
        record(Check(f"golden {name}", result["max"] <= tolerance,
                     f"max |diff| {result['max']:.3g} (limit {tolerance:.3g}), "
                     f"{result['differ']} of {result['values']} values differ", {**result, "tolerance": tolerance}))
    return model.dequantize(raw)


def _check_float_head(name: str, raw, raw_reference, golden, limits: Limits, record) -> None:
    """An int8 model with float layers at its end (export's float-head) gives float probabilities: float
    sums, which another kernel or CPU may add in another order, so they are held to the float tolerance.
    The fast kernels may differ by an int8 step inside, which the float layers carry on into several
    1/256 steps of probability (arm64: 5.98), so for them only the same top-1 counts; the share within
    one 1/256 step is shown. `raw_reference` is None on the numpy backend (its outputs are the reference)."""
    where = "numpy backend" if raw_reference is None else "reference kernels"
    result = _diff(raw if raw_reference is None else raw_reference, golden["raw_tflite-int8"])
    record(Check(f"golden {name} ({where}, float output)", result["max"] <= limits.float_tolerance,
                 f"max |diff| {result['max']:.3g} (limit {limits.float_tolerance:.3g}), "
                 f"{result['differ']} of {result['values']} values differ", result))
    if raw_reference is not None:
        _check_fast(name, _diff(raw, golden["fast_tflite-int8"], step=1 / 256), "steps of 1/256", limits, record,
                    steps_count=False)


def _check_fast(name: str, fast: dict, unit: str, limits: Limits, record, steps_count: bool = True) -> None:
    within = fast["within_one"] >= limits.fast_min_match or not steps_count
    passed = within and fast["same_top1"] >= limits.fast_min_match
    record(Check(f"golden {name} (fast kernels)", passed,
                 f"{fast['within_one']:.2%} of values within one step "
                 f"({f'>= {limits.fast_min_match:.0%}' if steps_count else 'shown, not judged: float output'}), "
                 f"max {fast['max']:.3g} {unit}, same top-1 on {fast['same_top1']:.1%} of images", fast))


def _diff(here: np.ndarray, host: np.ndarray, step: float = 1.0) -> dict:
    """Differences from the host's outputs, in units of `step`."""
    delta = np.abs(here.astype(np.float64) - host.astype(np.float64)) / step
    return {"max": float(delta.max()), "differ": int((delta > 0).sum()), "values": int(delta.size),
            "within_one": float((delta <= 1).mean()),
            "same_top1": float((here.argmax(1) == host.argmax(1)).mean())}


def agreements(golden, probabilities: dict) -> dict:
    """Per family: int8-vs-float top-1 agreement and both accuracies on the golden images."""
    labels, out = golden["labels"], {}
    for q_fmt, f_fmt in FLOAT_OF.items():
        q, f = probabilities.get(q_fmt), probabilities.get(f_fmt)
        if q is not None and f is not None:
            out[q_fmt.split("-")[0]] = {"agreement": float((q.argmax(1) == f.argmax(1)).mean()),
                                        "int8_accuracy": float((q.argmax(1) == labels).mean()),
                                        "f32_accuracy": float((f.argmax(1) == labels).mean())}
    return out


def _cross_check(manifest: BundleManifest, golden, outputs: dict, limits: Limits, record) -> None:
    """The int8-vs-float cross-check on the golden images, against this device's floors, and the
    same figures the host recorded (one golden image of slack for one-step int8 differences)."""
    labels = golden["labels"]
    slack = 1 / len(labels)
    accuracy = {fmt: float((p.argmax(1) == labels).mean()) for fmt, p in outputs.items() if p is not None}
    if accuracy:
        low = [fmt for fmt, value in accuracy.items() if value + slack < limits.min_accuracy]
        record(Check("accuracy", not low, ", ".join(f"{fmt} {value:.3f}" for fmt, value in accuracy.items())
                     + f" on {len(labels)} golden images; this device's floor {limits.min_accuracy:.2f}"
                     + (f": {', '.join(low)} below it" if low else ""),
                     {"accuracy": accuracy, "floor": limits.min_accuracy}))
    device = agreements(golden, {k: v for k, v in outputs.items() if v is not None})
    for family, here in device.items():
        there = manifest.golden.host_cross_check.get(family)
        floor_ok = here["agreement"] + slack >= limits.min_agreement - 1e-9
        same_as_host = there is not None and here["agreement"] >= there.agreement - slack - 1e-9 and \
            abs(here["int8_accuracy"] - there.int8_accuracy) <= slack + 1e-9
        host = (f" (host {there.agreement:.1%})" if there else " (the host recorded none)")
        record(Check(f"int8 vs float {family}", floor_ok and same_as_host,
                     f"top-1 agreement {here['agreement']:.1%}{host}, floor {limits.min_agreement:.0%}; int8 accuracy "
                     f"{here['int8_accuracy']:.3f}" + (f" (host {there.int8_accuracy:.3f})" if there else "")
                     + f", float {here['f32_accuracy']:.3f} on {len(labels)} golden images",
                     {**here, "floor": limits.min_agreement}))
