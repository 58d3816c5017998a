"""Debian's PostgreSQL server for the tune tests: a new cluster in a temporary folder (initdb), started
on 127.0.0.1 at a free port with trust authentication, stopped and removed at the end. PostgreSQL
refuses to run as root, so as root it runs as the `postgres` user the Debian package makes."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from sshd import free_port


def bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class Postgres:
    """The cluster lives in a folder of its own under /tmp: the `postgres` user must be able to reach it,
    and pytest's folders are private to root."""

    def __init__(self):
        self.bin, self.port = bin_dir(), free_port()
        self.folder = folder = Path(tempfile.mkdtemp(prefix="edgefashion-pg-"))
        self.data = folder / "data"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(folder, "postgres")
        self._run("initdb", "-D", self.data, "--auth=trust", "-U", "postgres", "-E", "UTF8")
        self._run("pg_ctl", "-D", self.data, "-l", folder / "server.log", "-w", "-t", "30", "-o",
                  f"-p {self.port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off", "start")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *map(str, args)], check=True, capture_output=True,
                       cwd="/")

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                       capture_output=True, cwd="/")
        shutil.rmtree(self.folder, ignore_errors=True)
