"""Untrusted models run where a crash cannot take the command down: jobs in a worker process (spawn:
a fresh interpreter that inherits nothing but the arguments). LiteRT's reference kernels and TFLM
abort the whole process on some malformed models; here that is one Crashed result naming the signal."""

from __future__ import annotations

import multiprocessing
import signal
from dataclasses import dataclass


@dataclass
class Crashed:
    """What a job that killed its worker gives instead of a result."""

    how: str  # "signal SIGABRT", "exit code 3"


def in_worker(work, jobs: list) -> list:
    """[work(*job) for job in jobs], run in order in a worker process; an exception a job raises is
    raised here, a job that kills the worker gives Crashed in its place and a new worker takes the
    jobs after it. `work` must be a module-level function (it is pickled by name)."""
    context = multiprocessing.get_context("spawn")
    results, left = [], list(jobs)
    while left:
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_worker, args=(work, left, send), daemon=True)
        child.start()
        send.close()
        try:
            while left:
                try:
                    kind, value = receive.recv()
                except EOFError:
                    child.join()
                    code = child.exitcode
                    results.append(Crashed(f"signal {signal.Signals(-code).name}" if code and code < 0
                                           else f"exit code {code}"))
                    left.pop(0)
                    break
                left.pop(0)
                if kind == "raised":
                    raise value
                results.append(value)
        finally:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
    return results


def _worker(work, jobs, send) -> None:
    for job in jobs:
        try:
            send.send(("ok", work(*job)))
        except Exception as exc:  # handed to the parent, which raises it there
            send.send(("raised", exc))
