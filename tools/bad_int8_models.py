"""Models made to quantize badly, from a trained run: a copy of the run whose model.keras computes
(nearly) the same function as the original but loses points in plain post-training int8.

  spread    every other output channel of conv1 and conv2 scaled by 100, the next layer's matching
            input weights by 1/100: the same float function (ReLU(s x) = s ReLU(x)), channel ranges
            within a layer 100x apart (one per-tensor activation scale serves them all)
  outlier   two units of the first dense layer always output ~3000 (bias +3000) and the next layer
            ignores them (zero weights): the same float function minus two of its units, an
            activation range 100x wider than the other units need

    python tools/bad_int8_models.py RUN OUT_RUN spread|outlier
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

KINDS = ("spread", "outlier")


def spread(model, factor: float = 100.0) -> None:
    """Channel ranges `factor` apart in conv1 and conv2 (their first two conv layers), in place."""
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    for first, second in zip(convs[:2], convs[1:3]):
        scale = np.where(np.arange(first.filters) % 2 == 0, factor, 1.0).astype(np.float32)
        kernel, bias = first.get_weights()
        first.set_weights([kernel * scale, bias * scale])
        kernel, bias = second.get_weights()
        second.set_weights([kernel / scale[None, None, :, None], bias])


def outlier(model, bias: float = 3000.0, units: int = 2) -> None:
    """`units` units of the first hidden Dense layer with a huge output nothing reads, in place."""
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    hidden, after = dense[0], dense[1]
    kernel, b = hidden.get_weights()
    b[:units] += bias
    hidden.set_weights([kernel, b])
    kernel, b = after.get_weights()
    kernel[:units, :] = 0
    after.set_weights([kernel, b])


def make(run: Path, out: Path, kind: str) -> Path:
    """A copy of `run` (its config, data split and history, no exports) with the model made bad."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from edgefashion.rundir import Run

    if out.exists():
        raise SystemExit(f"{out}: exists; give a new folder")
    source, copy = Run(run), Run(out)
    model = keras.saving.load_model(source.model)
    {"spread": spread, "outlier": outlier}[kind](model)
    out.mkdir(parents=True)
    for name in ("config", "history", "test_split"):
        if getattr(source, name).is_file():
            shutil.copy2(getattr(source, name), getattr(copy, name))
    model.save(copy.model)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a trained run (train --out RUN)")
    parser.add_argument("out", type=Path, help="the new run folder")
    parser.add_argument("kind", choices=KINDS)
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.exit(2, f"error: {args.out}: exists; give a new folder\n")
    from edgefashion.rundir import Run

    if not Run(args.run).model.is_file():
        parser.exit(2, f"error: {args.run}: no model.keras (a run made by `edgefashion train`)\n")
    print(make(args.run, args.out, args.kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
