"""Accuracy-aware int8: when plain post-training quantization misses the gates, try repairs in order
of cost and keep the first that meets them, measured on validation images (never the test set).

    ptq           the calibration images export always uses (seeded random training rows)
    calibration   more images, the same number of each class; for ONNX also Percentile and Entropy
    cle           cross-layer equalization, then also bias correction, then activation equalization,
                  on the float model (equalize.py; batch norms folded first)
    adaround      the best full-int8 candidate's weights rounded up or down on the format's grid, layer
                  by layer, so that each layer's output stays nearest the float one (adaround.py)
    float-layers  first the last dense layer and the output in float (an int8 softmax steps by 1/256, so
                  the top two classes of an unsure model tie there); then the conv/dense layers whose
                  float versions buy the most agreement, one, then two (TFLite: the converter's
                  denylist; ONNX Runtime: nodes_to_exclude)
    qat           the last resort: a few epochs of quantization-aware fine-tuning (qat.py), full int8

Every candidate tried is reported: its accuracy drop and top-1 agreement on the validation images,
its size and its median latency at batch 1 on this machine.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import rundata
from ..console import quiet, step
from ..data import prepare
from ..device.profile import median_us, profile
from ..device.runtime import Model
from ..device.verify import Gates, agreement_figures
from ..errors import CheckFailed
from ..rundir import Run, indices_sha256
from .layer_errors import short_name

METHODS = ("auto", "ptq", "calibration", "cle", "adaround", "float-layers", "qat")
VALIDATION_IMAGES = 2000
MORE_CALIBRATION = 2000
FLOAT_LAYER_TRIES = 6   # conv/dense layers (graph order) tried one at a time in float, then in pairs
SELECTION_IMAGES = 500  # validation-split images that rank those layers (others judge the candidate)
TIMED_RUNS = 100


@dataclass
class Candidate:
    """One int8 model tried: how it was made and what it scored on the validation images."""

    format: str
    method: str      # what --quantization names
    name: str        # this candidate among those of its method (ptq, balanced, percentile, cle+bias, ...)
    detail: str
    accuracy_drop_pp: float
    top1_agreement: float
    bytes: int
    p50_us: float | None
    full_int8: bool = True
    float_layers: list = field(default_factory=list)
    float_share: float | None = None  # of the batch-1 latency, in the float operators
    differences: int = 0  # validation images whose top-1 differs from the float model's
    tied: int = 0         # of them, those where the float's class ties for the top int8 probability
    note: str = ""
    base: str = ""   # the candidate it was made from (adaround and float-layers start from the best full-int8 one)
    seconds: float = 0.0
    meets_gates: bool = False
    chosen: bool = False
    content: bytes = field(default=b"", repr=False)
    recipe: object = field(default=None, repr=False)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("content", "recipe")}

    def failures(self, gates: Gates) -> list[str]:
        """Why this candidate misses the gates ([] when it meets them)."""
        return gates.failures(self.format, {"accuracy_drop_pp": self.accuracy_drop_pp,
                                            "top1_agreement": self.top1_agreement})


@dataclass
class Validation:
    """Labelled training rows that neither trained (Keras' validation split) nor calibrated the model."""

    images: np.ndarray
    labels: np.ndarray
    reference: np.ndarray  # the float Keras model's probabilities
    indices: np.ndarray    # rows of the training data (without held-out test rows)
    info: dict
    ranking: "Validation | None" = None  # other rows, which rank the float-layer options (None: the first judged ones)

    @property
    def float_accuracy(self) -> float:
        return float((self.reference.argmax(1) == self.labels).mean())

    @property
    def rows_used(self) -> np.ndarray:
        """Every row that judges or ranks: none of them may calibrate or fine-tune."""
        return self.indices if self.ranking is None else np.union1d(self.indices, self.ranking.indices)


def validation_set(rows, run: Run, source, calibration: np.ndarray, keras_model, seed: int) -> Validation:
    """Up to VALIDATION_IMAGES of the training rows `rows` from the validation split (the last share
    of the rows train fitted on, as Keras cuts it), none of them a calibration image."""
    config = rundata.recorded(run)
    settings = config.settings if config is not None and source in (None, config.trained_on) else {}
    fitted = min(len(rows), settings.get("limit") or len(rows))
    first = int(fitted * (1 - settings.get("validation_split", 0.2))) if settings else 0
    pool = np.setdiff1d(np.arange(first, fitted), calibration)
    where = "the training's validation split, no calibration image" if settings else "training rows, no calibration image"
    if len(np.unique(rows.labels[pool])) < len(np.unique(rows.labels)):  # none left, or rows sorted by class
        pool, where = np.setdiff1d(np.arange(len(rows)), calibration), "training rows, no calibration image"
    if len(pool) == 0:  # every training row calibrates: judge on them rather than on nothing
        pool, where = np.arange(len(rows)), "the calibration images themselves (no other training rows)"
    rng = np.random.default_rng(seed + 1)
    picked = np.sort(rng.choice(pool, min(VALIDATION_IMAGES, len(pool)), replace=False))
    # the float-layer options are ranked on rows of their own: ranked and judged on the same rows, the
    # best of several would look better than it is (an 8-channel model: 99.10 % judged, 98.43 % on the test set)
    rest = np.setdiff1d(pool, picked)
    ranked = np.sort(rng.choice(rest, SELECTION_IMAGES, replace=False)) if len(rest) >= SELECTION_IMAGES else None
    validation = _validation(rows, picked, keras_model, {"source": f"{rows.source} ({where})"})
    if ranked is not None:
        validation.ranking = _validation(rows, ranked, keras_model, {})
    validation.info["ranking"] = (f"{SELECTION_IMAGES} other rows of the same pool" if ranked is not None else
                                  f"the first {min(SELECTION_IMAGES, len(picked))} judged rows (too few rows for others)")
    return validation


def _validation(rows, picked: np.ndarray, keras_model, info: dict) -> Validation:
    images = prepare(rows.images[picked])
    reference = keras_model.predict(images, batch_size=500, verbose=0)
    return Validation(images, rows.labels[picked], reference, picked,
                      {"count": int(len(picked)), **info, "indices_sha256": indices_sha256(picked)})


def balanced_calibration(rows, count: int, seed: int, exclude: np.ndarray) -> np.ndarray:
    """`count` of the training rows `rows`, the same number of each class, none of the validation rows."""
    rng = np.random.default_rng(seed)
    allowed = np.setdiff1d(np.arange(len(rows)), exclude)
    if len(allowed) == 0:  # a training set too small to spare rows: calibrate on the same ones
        allowed = np.arange(len(rows))
    classes = np.unique(rows.labels[allowed])
    per_class = max(1, count // len(classes))
    picked = [rng.permutation(allowed[rows.labels[allowed] == k])[:per_class] for k in classes]
    return prepare(rows.images[np.sort(np.concatenate(picked))])


def score(fmt: str, method: str, name: str, detail: str, content: bytes, validation: Validation, seconds: float,
          gates: Gates, float_layers: list | None = None, images: int | None = None, timed: bool = True) -> Candidate:
    """A candidate's figures on the validation images (the first `images` of them when given), as
    verify computes them; `timed`: also its p50 (not for the trials that only rank layers)."""
    model = Model(content, name=f"{fmt} {method}")
    count = min(images or len(validation.images), len(validation.images))  # small data: fewer than asked
    reference = validation.reference[:count]
    probs = model.predict_proba(validation.images[:count])
    figures = agreement_figures(probs, reference, validation.labels[:count], [str(k) for k in range(reference.shape[1])])
    differs = probs.argmax(1) != reference.argmax(1)
    tied = differs & (probs[np.arange(count), reference.argmax(1)] == probs.max(1))
    candidate = Candidate(format=fmt, method=method, name=name, detail=detail,
                          accuracy_drop_pp=round(figures["accuracy_drop_pp"], 3),
                          top1_agreement=round(figures["top1_agreement"], 4), bytes=len(content),
                          p50_us=p50_us(model, validation.images[:1]) if timed else None,
                          full_int8=not float_layers, float_layers=[short_name(n) for n in float_layers or []],
                          seconds=round(seconds, 1), differences=int(differs.sum()), tied=int(tied.sum()),
                          content=content)
    candidate.meets_gates = not candidate.failures(gates)
    return candidate


def p50_us(model: Model | bytes, image: np.ndarray) -> float:
    """Median latency at batch 1 on this machine, one thread (a model's figure beside the others)."""
    model = model if isinstance(model, Model) else Model(model)
    one = model.prepare(image)
    return round(median_us(lambda: model.run(one), TIMED_RUNS), 1)


@dataclass
class Built:
    """What one step made: the model, the layers it left in float, and how to make it again."""

    content: bytes
    float_layers: list = field(default_factory=list)
    recipe: object = None  # what a later float-layers step starts from
    note: str = ""         # what a repair did (cross-layer equalization: the ranges before and after)
    base: str = ""         # the candidate it started from, when it did


@dataclass
class Search:
    """The candidates of one format, built in order of cost."""

    fmt: str
    gates: Gates
    validation: Validation
    method: str = "auto"
    verbose: bool = False
    tried: list = field(default_factory=list)

    def run(self, steps: list[tuple[str, str, str, Callable[[], Built | None]]]) -> Candidate:
        """Try `steps` (method, name, detail, build) until one meets the gates: in auto mode all of them in
        order, else plain PTQ (the baseline, and what float-layers starts from) and those of the one
        method asked for. The chosen candidate is the first of that method that meets them, else the
        nearest the float model (the caller fails the export on it)."""
        for method, name, detail, build in steps:
            if self.method != "auto" and method not in ("ptq", self.method):
                continue
            if self.method == "auto" and any(c.meets_gates for c in self.tried):
                break
            step(f"int8 {self.fmt}: {name} ({detail})")
            started = time.monotonic()
            with quiet(self.verbose):
                built = build()
            if built is None:
                continue
            candidate = score(self.fmt, method, name, detail, built.content, self.validation,
                              time.monotonic() - started, self.gates, built.float_layers)
            candidate.recipe, candidate.note, candidate.base = built.recipe, built.note, built.base
            if built.note:
                step(f"  {built.note}")
            self.tried.append(candidate)
        chosen = self.best(method=None if self.method == "auto" else self.method)
        if chosen is None:
            raise CheckFailed(f"{self.fmt}: --quantization {self.method} has nothing to try for this model")
        chosen.chosen = True
        return chosen

    @property
    def chosen(self) -> Candidate:
        return next(c for c in self.tried if c.chosen)

    def best(self, full_int8_only: bool = False, method: str | None = None) -> Candidate | None:
        """The first candidate (of `method`, when given) that meets the gates, else the nearest the
        float model."""
        pool = [c for c in self.tried if (c.full_int8 or not full_int8_only) and method in (None, c.method)]
        if not pool:
            return None
        passing = [c for c in pool if c.meets_gates]
        if passing:
            return passing[0]
        # nearest the float model: the fewest gates missed, then the highest agreement (a drop of a
        # few images either way is noise; agreement counts every image that changed)
        return min(pool, key=lambda c: (len(c.failures(self.gates)), -c.top1_agreement,
                                        c.accuracy_drop_pp))


def float_layer_steps(fmt: str, search: Search, layers_of: Callable[["Candidate"], list[str]],
                      build_without: Callable[["Candidate", list], bytes]) -> list[tuple[str, str, str, Callable]]:
    """Steps that keep layers in float, starting from the best full-int8 candidate so far. First the
    head: the last conv/dense layer, with the output after it (its softmax) in float too. Then each conv
    and dense layer (the first FLOAT_LAYER_TRIES in graph order) is tried alone in float, ranked on
    SELECTION_IMAGES validation-split rows that do not judge (when there are enough) by the agreement it
    buys: the best is one candidate. Then
    pairs: the best layer with each other one, and each layer with the next (a layer with outlier
    outputs needs its consumer in float too, or the consumer's int8 input keeps the outlier's scale)."""
    found: dict[int, list[str]] = {}

    def measured(base, layers: list[str]) -> tuple:
        trial = score(fmt, "float-layers", "", "", build_without(base, layers),
                      search.validation.ranking or search.validation, 0.0, search.gates, layers, images=SELECTION_IMAGES)
        return trial.top1_agreement, -trial.accuracy_drop_pp

    def best_of(base, options: list[list[str]]) -> list[str] | None:
        return max(options, key=lambda layers: measured(base, layers)) if options else None

    def head() -> Built | None:
        base = search.best(full_int8_only=True)
        layers = layers_of(base)[-1:] if base is not None else []
        return Built(build_without(base, layers), layers, base.recipe, base=base.name) if layers else None

    def keep(n: int):
        def build() -> Built | None:
            base = search.best(full_int8_only=True)
            if base is None:
                return None
            layers = layers_of(base)[:FLOAT_LAYER_TRIES]
            if n not in found:
                single = found.get(1) or best_of(base, [[layer] for layer in layers])
                options = [[*single, layer] for layer in layers if layer not in single]
                options += [[a, b] for a, b in zip(layers, layers[1:])]
                found[n] = single if n == 1 else best_of(base, _unique(options))
            if not found[n]:
                return None
            return Built(build_without(base, found[n]), found[n], base.recipe, base=base.name)
        return build
    return [("float-layers", "float-head", "the last dense layer and the output in float (no ties at the int8 "
             "output's 1/256 step)", head),
            ("float-layers", "float-1", "the one conv/dense layer whose float version agrees best", keep(1)),
            ("float-layers", "float-2", "the two conv/dense layers whose float versions agree best", keep(2))]


def _unique(options: list[list[str]]) -> list[list[str]]:
    seen, out = set(), []
    for layers in options:
        if frozenset(layers) not in seen:
            seen.add(frozenset(layers))
            out.append(layers)
    return out


def float_share(content: bytes, name: str) -> float | None:
    """The share of a mixed model's batch-1 latency spent in float operators (LiteRT, per-op timing)."""
    with tempfile.TemporaryDirectory(prefix="edgefashion-share-") as scratch:
        path = Path(scratch) / name
        path.write_bytes(content)
        try:
            ops = profile(path, runs=50)["ops"]
        except Exception:  # a latency breakdown is a remark; its failure must not fail the export
            return None
    total = sum(op["us"] for op in ops)
    return round(sum(op["us"] for op in ops if op["dtype"] == "float32") / total, 3) if total else None


def report(searches: list[Search], validation: Validation, float_p50: dict[str, float], firmware) -> dict:
    """What export.json records: the validation images, every candidate, the ones chosen."""
    return {"validation": {**validation.info, "float_accuracy": round(validation.float_accuracy, 4)},
            "float_p50_us": float_p50,
            "candidates": [c.as_dict() for s in searches for c in s.tried],
            "chosen": {s.fmt: s.chosen.name for s in searches},
            "firmware": None if firmware is None else firmware.as_dict()}


def describe(searches: list[Search]) -> list[str]:
    """One line per format: what was chosen and why."""
    lines = []
    for s in searches:
        chosen = s.chosen
        tried = ", ".join(f"{c.name} {c.accuracy_drop_pp:+.2f} pp/{c.top1_agreement:.1%}" for c in s.tried)
        verdict = "meets the gates" if chosen.meets_gates else "misses the gates (the best tried)"
        ties = (f" ({chosen.tied} of its {chosen.differences} differences are ties: the float model's class shares "
                f"the top int8 output value)") if chosen.tied else ""
        lines.append(f"{s.fmt}: {chosen.name} ({chosen.detail}) {verdict}: drop {chosen.accuracy_drop_pp:.2f} pp, "
                     f"agreement {chosen.top1_agreement:.2%}{ties}; tried {tried}")
    return lines


def copy_model(keras, model):
    """A copy of a Keras model with its weights, for a repair to change in place."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
