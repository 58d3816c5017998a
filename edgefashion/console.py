"""Console helpers: a progress bar on stderr (redraws on a terminal, a few lines otherwise),
step announcements, and silencing chatty native libraries."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
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
        """Time so far, the rate and, before the end, the time left at that rate."""
        spent = time.monotonic() - self.start
        if not self.done or spent <= 0:
            return f"{spent:.1f}s"
        rate = self.done / spent
        left = "" if self.done >= self.total else f", {(self.total - self.done) / rate:.0f}s left"
        return f"{spent:.1f}s ({rate:.3g}/s{left})"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def step(message: str) -> None:
    """Announce a slow step on stderr."""
    print(f"-- {message}", file=sys.stderr, flush=True)


def quiet(verbose: bool = False, fds=(1, 2)):
    """Silence native chatter (TensorFlow's C++ logs ignore TF_CPP_MIN_LOG_LEVEL) unless verbose."""
    return contextlib.nullcontext() if verbose else _fds_silenced(fds)


@contextlib.contextmanager
def _fds_redirected(fds, target: int, flush_c: bool = False):
    """Point file descriptors `fds` at `target` (native code writes there too), then restore them."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    try:
        for fd in fds:
            os.dup2(target, fd)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if flush_c:
            _flush_c_stdio()  # C stdio output may sit in libc's buffer until flushed
        for fd, copy in zip(fds, saved):
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def _fds_silenced(fds=(1, 2)):
    """Point stdout and stderr at /dev/null at the file-descriptor level, then restore them."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        with _fds_redirected(fds, devnull):
            yield
    finally:
        os.close(devnull)


def capture_fd(function, fd: int = 2) -> str:
    """What `function` writes to file descriptor `fd` (native code that prints, such as TFLM's
    print_allocations on stderr), as text."""
    with tempfile.TemporaryFile() as sink:
        with _fds_redirected((fd,), sink.fileno(), flush_c=True):
            function()
        sink.seek(0)
        return sink.read().decode("utf-8", "replace")


def _flush_c_stdio() -> None:
    try:
        import ctypes
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


def printable(text, limit: int | None = None) -> str:
    """`text` with control and bidi-override characters escaped (\\x1b, \\u202e, ...), so a crafted
    file or member name cannot rewrite the terminal. Newlines are escaped too: one value, one line.
    With `limit`, a longer result is cut in the middle."""
    out = "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                  for ch in str(text))
    if limit and len(out) > limit:
        out = f"{out[:limit // 2]}...({len(out) - limit} more)...{out[-(limit // 2):]}"
    return out
