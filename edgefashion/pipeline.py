"""`edgefashion run`: train -> export -> verify -> bench -> bundle in one run directory.

RUN/pipeline.json records each finished stage, so a second run resumes after the last one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .artifacts import FLOAT_OF
from .console import step
from .errors import CheckFailed
from .files import read_json, write_json
from .verify import Gates

STAGES = ("train", "export", "verify", "bench", "bundle")
BUNDLE_NAME = "edgefashion-bundle.tar.gz"


@dataclass
class RunConfig:
    out: Path
    data: Path | None = None
    epochs: int = 4
    batch_size: int = 100
    seed: int = 0
    limit: int | None = None
    calibration: int = 500
    gates: Gates = Gates()
    restart: bool = False
    verbose: bool = False


def run(config: RunConfig) -> dict:
    """Run every unfinished stage; return the summary. Raises at the first failing stage."""
    out = Path(config.out)
    state_path = out / "pipeline.json"
    state = {} if config.restart or not state_path.is_file() else read_json(state_path)
    if state.get("settings") not in (None, _settings(config)):
        step("settings changed since the last run: starting over")
        state = {}
    state.setdefault("settings", _settings(config))
    stages = state.setdefault("stages", {})
    for name in STAGES:
        if stages.get(name, {}).get("status") == "done":
            step(f"{name}: done before, skipped (--restart to redo)")
            continue
        step(f"stage {name}")
        started = time.monotonic()
        try:
            STAGE_FUNCS[name](config, out)
        except BaseException as exc:
            stages[name] = {"status": "failed", "error": str(exc) or type(exc).__name__}
            write_json(state_path, state)
            raise
        stages[name] = {"status": "done", "seconds": round(time.monotonic() - started, 1)}
        write_json(state_path, state)
    summary = summarize(out)
    state["summary"] = summary
    write_json(state_path, state)
    return state


def _settings(config: RunConfig) -> dict:
    return {"data": str(config.data) if config.data else None, "epochs": config.epochs,
            "batch_size": config.batch_size, "seed": config.seed, "limit": config.limit,
            "calibration": config.calibration, "gates": asdict(config.gates)}


def _train(config: RunConfig, out: Path) -> None:
    from .host.train import TrainConfig, train

    result = train(TrainConfig(out=out, data=config.data, epochs=config.epochs, batch_size=config.batch_size,
                               seed=config.seed, limit=config.limit, verbose=config.verbose))
    if result["interrupted"]:
        raise KeyboardInterrupt


def _export(config: RunConfig, out: Path) -> None:
    from .host.export import ExportConfig, export

    export(ExportConfig(run=out, calibration_count=config.calibration, seed=config.seed, data=config.data,
                        gates=config.gates, verbose=config.verbose))


def _verify(config: RunConfig, out: Path) -> None:
    from .verify import VerifyConfig, gate_failure, verify

    report = verify(VerifyConfig(run=out, gates=config.gates, verbose=config.verbose))
    where = f"on {report['reference']['samples']} test images vs {report['reference']['format']}"
    failures = [gate_failure(m["file"], m["failures"], where) for m in report["models"] if m["failures"]]
    if failures:
        raise CheckFailed("verify: " + " | ".join(failures))


def _bench(config: RunConfig, out: Path) -> None:
    from .bench import BenchConfig, bench

    bench(BenchConfig(paths=[out], out=out / "bench.json"))


def _bundle(config: RunConfig, out: Path) -> None:
    from .bundle import make_bundle

    make_bundle(out, out / BUNDLE_NAME)


STAGE_FUNCS = {"train": _train, "export": _export, "verify": _verify, "bench": _bench, "bundle": _bundle}


def summarize(out: Path) -> dict:
    """Per format: accuracy, drop vs float, size, p50 latency at batch 1 / 1 thread."""
    verify = read_json(out / "verify.json")
    bench = read_json(out / "bench.json")
    latency = {r["format"]: r for r in bench["results"] if r["batch"] == 1 and r["threads"] == 1}
    rows = [{"format": verify["reference"]["format"], "accuracy": verify["reference"]["accuracy"],
             "drop_pp": None, "agreement": None, "MB": None, "p50_us": None, "vs_f32": None}]
    for m in verify["models"]:
        r = latency.get(m["format"], {})
        f32 = latency.get(FLOAT_OF.get(m["format"]), {})
        rows.append({"format": m["format"], "accuracy": m["accuracy"], "drop_pp": m["accuracy_drop_pp"],
                     "agreement": m["top1_agreement"],
                     "MB": round(r["size_bytes"] / 1e6, 3) if r else None,
                     "p50_us": r.get("latency_us", {}).get("p50"),
                     "vs_f32": round(r["latency_us"]["p50"] / f32["latency_us"]["p50"], 3) if r and f32 else None})
    bundle = out / BUNDLE_NAME
    return {"rows": rows, "bundle": str(bundle), "bundle_bytes": bundle.stat().st_size if bundle.is_file() else None,
            "samples": verify["reference"]["samples"]}
