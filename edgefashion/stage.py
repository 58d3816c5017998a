"""A stage: one step of a run (train, export, verify, bench, bundle, firmware), as one object.

Its settings are a dataclass whose `setting` fields are also its command-line options; `run`
takes those settings and the typed run directory and returns the stage's typed report (schemas.py);
`render` turns the report into what the terminal shows. pipeline.py runs the stages in order, the
CLI builds each stage's subcommand from the same object, and a notebook calls them directly:

    from edgefashion.rundir import Run
    from edgefashion.host.train import STAGE as train, TrainConfig
    report = train.run(TrainConfig(epochs=1, limit=2000), Run("runs/nb"))
    print(train.render(report), report.test.accuracy)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .options import from_plain, settings_of


def with_verbosity(settings, verbose: bool):
    """`settings` with TensorFlow's own log shown or not, where the stage has that switch (not a setting)."""
    names = {f.name for f in dataclasses.fields(settings)}
    return dataclasses.replace(settings, verbose=verbose) if "verbose" in names else settings


def _no_failures(settings, report) -> list[str]:
    return []


@dataclass(frozen=True)
class Stage:
    name: str
    help: str                    # one line in `edgefashion --help`
    description: str             # `edgefashion NAME --help`
    settings: type               # a dataclass of `setting` fields
    run: Callable[[Any, Any], Any]  # run(settings, run: Run) -> report
    report: type                 # the report's schema (schemas.py)
    render: Callable[[Any], str]  # report -> the text the terminal shows
    output: Callable[[Any], Any]  # run -> the path the stage writes (the report, or the folder or file it made)
    failures: Callable[[Any, Any], list[str]] = _no_failures  # (settings, report) -> why it fails: exit 1
    skip_when: tuple[type[Exception], ...] = ()  # what makes the stage skipped, not failed, in a run
    makes_run: bool = False      # the stage that creates the run directory (train: `--out RUN`)

    def defaults(self):
        return self.settings()

    def recorded(self, settings) -> dict:
        """The settings as pipeline.json records them."""
        return settings_of(settings)

    def restore(self, recorded: dict):
        """Settings from what pipeline.json recorded."""
        return from_plain(self.settings, recorded)
