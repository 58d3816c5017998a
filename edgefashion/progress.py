"""A small progress bar on stderr (no dependency): redraws on a terminal, a few lines otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str, stream=None, width: int = 30):
        self.total, self.desc, self.width = max(int(total), 1), desc, width
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.done, self.start, self._last_quarter = 0, time.monotonic(), -1

    def update(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        if self.tty:
            filled = self.width * self.done // self.total
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r{self.desc} [{bar}] {self.done}/{self.total} {self._elapsed()}")
            self.stream.flush()
        else:  # logs: one line per quarter
            quarter = 4 * self.done // self.total
            if quarter != self._last_quarter:
                self._last_quarter = quarter
                self.stream.write(f"{self.desc}: {self.done}/{self.total} {self._elapsed()}\n")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.start:.1f}s"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def step(message: str) -> None:
    """Announce a slow step on stderr."""
    print(f"-- {message}", file=sys.stderr, flush=True)
