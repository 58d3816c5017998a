#!/usr/bin/env python3
"""Make the real Fashion-MNIST available locally.

Order: already present (/usr/share/datasets/fashion-mnist or ~/.keras/datasets/fashion-mnist) ->
Debian's package dataset-fashion-mnist where apt-get is available -> download of the official
files into ~/.keras/datasets/fashion-mnist, each checked against its sha256.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefashion import data  # noqa: E402
from edgefashion.errors import InputError  # noqa: E402


def apt_install() -> bool:
    """Install dataset-fashion-mnist with apt-get (as root, or through sudo). True on success."""
    if not shutil.which("apt-get"):
        return False
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None:
        return False
    install = prefix + ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env).returncode == 0:
        return True
    subprocess.run(prefix + ["apt-get", "update", "-q"], env=env)  # stale package lists
    return subprocess.run(install, env=env).returncode == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--download-only", action="store_true", help="skip apt-get, download the files")
    args = parser.parse_args(argv)
    found = data.default_dir()
    if found is None and not args.download_only and apt_install():
        found = data.default_dir()
    if found is None:
        try:
            dest = data.download(Path("~/.keras/datasets/fashion-mnist"))
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        found = data.default_dir() or dest
    print(f"Fashion-MNIST: {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
