"""Atomic artifact writes and hashing: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from .console import printable
from .errors import InputError


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = ".part"):
    """Yield a temporary path beside `dest`; move it over `dest` only if the block succeeds.

    `suffix` lets writers that insist on an extension (Keras wants .keras) use it. The temporary
    name carries our pid, so `remove_leftovers` can tell a killed writer's file from a live one's.
    A write error without a file name (a full disk) is raised again naming `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{TEMP_MARK}{os.getpid()}-", suffix=suffix, dir=dest.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary files
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(dest)) from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


TEMP_MARK = "tmp-pid"  # .NAME.tmp-pid1234-XXXX.part: a half-written NAME of process 1234
_LEFTOVER = re.compile(rf"^\..+\.{TEMP_MARK}(\d+)-")


def remove_leftovers(folder, of: str | None = None) -> list[Path]:
    """Delete half-written files (and staging folders) that a killed process left in `folder`:
    those whose pid is no longer running (`of`: only those of the file named so). Returns what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _LEFTOVER.match(path.name)
        if of is not None and not path.name.startswith(f".{of}."):
            continue
        if match and not process_alive(int(match.group(1))):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    """Is process `pid` running on this machine (someone else's counts)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def staging_dir(dest) -> Path:
    """A fresh folder beside `dest` to build a set of files in (replace_dir puts it in place)."""
    dest = Path(dest)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.{TEMP_MARK}{os.getpid()}-", dir=dest.parent))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(dest, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text(dest, text: str) -> Path:
    return write_bytes(dest, text.encode("utf-8"))


def write_json(dest, obj) -> Path:
    return write_text(dest, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(value):
    # numpy scalars and arrays, without importing numpy here
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


MAX_JSON_BYTES = 64 * 2**20  # edgefashion's reports are kilobytes; a larger one is a mistake or an attack


def read_json(path, what: str = "JSON file"):
    """Read a JSON file (a regular file within MAX_JSON_BYTES) or raise InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found (or not a regular file)")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise InputError(f"{path}: more than {MAX_JSON_BYTES // 2**20} MB, not a {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


SYSTEM_DIRS = ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/opt", "/proc", "/root", "/run", "/sbin",
               "/srv", "/sys", "/tmp", "/usr", "/var", "/home")


def check_tool_folder(folder, markers: tuple[str, ...], what: str, is_marker=Path.exists) -> None:
    """A folder a command writes a set of files into must be new, empty, or the command's own (one of
    `markers`, the files it writes first, is there and `is_marker` of it: a user's config.json is not
    a run's): never a user's project folder, $HOME or /."""
    folder = Path(folder)
    resolved = folder.expanduser().resolve()
    if str(resolved) in SYSTEM_DIRS or resolved == Path.home().resolve():
        raise InputError(f"{folder}: a system or home folder; give a folder of its own for the {what}")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder; give a new folder for the {what}")
    found = [p.name for p in folder.iterdir() if not _ours_hidden(p.name)]
    if found and not any(is_marker(folder / m) for m in markers):
        shown = ", ".join(printable(n) for n in sorted(found)[:3]) + (" ..." if len(found) > 3 else "")
        raise InputError(f"{folder}: exists and is not an edgefashion {what} (holds {shown}); give a new or empty "
                         f"folder")


def is_manifest(path) -> bool:
    """A JSON object of edgefashion's (its settings and schema version): a marker of a run folder."""
    try:
        value = read_json(path)
    except InputError:
        return False
    return isinstance(value, dict) and "schema_version" in value and "settings" in value


def _ours_hidden(name: str) -> bool:
    """Lock files and leftovers of an interrupted command: edgefashion's own, however the folder looks."""
    return name.startswith(".") and (name.endswith(".lock") or TEMP_MARK in name or name.endswith(".old"))


def fingerprint(path) -> dict[str, str]:
    """{name: sha256} of a file, or of every file in a folder (hidden leftovers left out)."""
    path = Path(path)
    if path.is_file():
        return {path.name: sha256_file(path)}
    if path.is_dir():
        return {str(p.relative_to(path)): sha256_file(p) for p in sorted(path.rglob("*"))
                if p.is_file() and not p.name.startswith(".")}
    return {}


def check_replaceable(dest, ours) -> None:
    """Refuse to replace folder `dest` when it is a file, or holds a file whose name is not one of
    `ours` (what the command writes there): that one is the user's."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise InputError(f"{dest}: is a file, not edgefashion's folder; move it away")
    if dest.is_dir():
        theirs = sorted(p.name for p in dest.iterdir() if p.name not in ours)
        if theirs:
            shown = ", ".join(printable(n) for n in theirs[:3]) + (" ..." if len(theirs) > 3 else "")
            raise InputError(f"{dest}: holds files edgefashion did not write ({shown}); move them out first")


def replace_dir(new: Path, dest: Path, ours: frozenset | set = frozenset()) -> None:
    """Put the finished folder `new` in place of `dest` (a set of files that belong together).
    Two renames; a crash between them leaves `dest` missing and `.DEST.old` beside it, which
    `restore_dir` (called under the same lock, before the next build) puts back. A file in `dest`
    that is neither in `new` nor one of `ours` (the names the command writes) is the user's: refused."""
    new, dest = Path(new), Path(dest)
    check_replaceable(dest, {*ours, *(p.name for p in new.iterdir())})
    os.chmod(new, 0o777 & ~_umask())  # mkdtemp makes 0700; this is an ordinary folder
    old = dest.with_name(f".{dest.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        os.rename(dest, old)
    os.rename(new, dest)
    shutil.rmtree(old, ignore_errors=True)


def restore_dir(dest: Path) -> None:
    """Undo a replace_dir that was cut off between its two renames."""
    old = Path(dest).with_name(f".{Path(dest).name}.old")
    if old.is_dir() and not Path(dest).exists():
        os.rename(old, dest)


@contextlib.contextmanager
def run_lock(run: Path, what: str):
    """One `what` (export, ...) per run directory at a time; a second one is refused, not queued. The
    lock file goes when the holder ends: it is removed while still locked, and a process that locked a
    file already removed tries again on the new one."""
    path = Path(run) / f".{what}.lock"
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise InputError(f"{run}: another {what} is running on this run directory ({holder}); "
                             f"wait for it to finish") from None
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()  # the holder removed it as we opened it: lock the new one
    with handle:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def check_output(out, suffix: str, inputs=(), ours=None, siblings=(), force: bool = False) -> None:
    """Refuse an output path that is not a `suffix` file, that is one of the inputs (`bench --out
    model.tflite` must not overwrite the model), a link, or an existing file that is not this command's
    own output (`ours(path)` says whether it is; `siblings`: the other files written beside it) unless
    `force` (the user's --force: replacing a file of theirs on purpose; never a link, folder or input)."""
    out = Path(out)
    if not out.name.lower().endswith(suffix):
        raise InputError(f"{out}: expected a {suffix} file to write")
    for path in [out, *map(Path, siblings)]:
        if path.is_symlink():
            raise InputError(f"{path}: is a symbolic link; refusing to write through it")
        if path.is_dir():
            raise InputError(f"{path}: is a directory, expected a file to write")
        if path.exists() and not path.is_file():
            raise InputError(f"{path}: is not a regular file; refusing to write there")
    if ours is not None and not force:
        mine = out.is_file() and ours(out)
        for path in [out, *siblings]:
            if path.exists() and not mine:
                raise InputError(f"{path}: exists and is not an edgefashion output; refusing to overwrite it "
                                 f"(choose another --out, move it away, or pass --force to replace it)")
    target = out.resolve()
    for source in map(Path, inputs):
        if source.exists() and (source.resolve() == target or target.is_relative_to(source.resolve())
                                and source.is_file()):
            raise InputError(f"{out}: is an input of this command; refusing to overwrite it")
