"""Every command the README and docs/ show runs as shown: each `edgefashion ...` line of their shell
blocks parses with the real command line (command, subcommand and every flag exist, values of the
right kind), and each `make TARGET` is a target of the Makefile."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from edgefashion.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAM = re.compile(r"(?:^|/)edgefashion$")


INLINE = re.compile(r"`((?:\.venv/bin/)?(?:edgefashion|make) [^`]+)`")


def shell_lines(page: Path) -> list[tuple[int, str]]:
    """(line number, command) of the ```sh blocks (comments cut, continuations joined, chains split),
    and of the prose's `edgefashion ...` and `make ...` spans that are commands, not synopses ([optional])."""
    out, fence, pending = [], None, ""
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence is None:
            out.extend((number, span) for span in INLINE.findall(line) if not re.search(r"[\[|<]|\.\.\.|…", span))
            continue
        if fence not in ("sh", "bash", "shell", "console"):
            continue
        line = pending + line
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        text = re.sub(r"(^|\s)#.*$", "", line).strip()
        for part in re.split(r"&&|\|\||;|\|", text):
            if part.strip():
                out.append((number, part.strip()))
    return out


def commands(kind: str) -> list:
    found = []
    for page in PAGES:
        for number, line in shell_lines(page):
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            words = [w for w in words if "=" not in w or w.startswith("-")] if words else words
            while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value before a command
                words = words[1:]
            if kind == "edgefashion" and words and PROGRAM.search(words[0]):
                found.append(pytest.param(words[1:], id=f"{page.name}:{number}"))
            if kind == "make" and words[:1] == ["make"]:
                found.append(pytest.param(words[1:], id=f"{page.name}:{number}"))
    return found


def test_the_pages_show_commands():
    assert len(commands("edgefashion")) >= 30 and len(commands("make")) >= 5


@pytest.mark.parametrize("argv", commands("edgefashion"))
def test_each_edgefashion_command_parses(argv, capsys):
    if any(w in ("...", "…") for w in argv) or (argv and argv[0].isupper()):
        pytest.skip("an elided example, or COMMAND as a placeholder")
    if all(w.isalpha() and w.islower() for w in argv):  # a command named in prose: it exists
        argv = [*argv, "--help"]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code != 0:  # --help exits 0
            pytest.fail(f"edgefashion {' '.join(argv)}: {capsys.readouterr().err.strip()}")


@pytest.mark.parametrize("argv", commands("make"))
def test_each_make_target_exists(argv):
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+):", (ROOT / "Makefile").read_text(), re.M))
    for target in (w for w in argv if not w.startswith("-") and "=" not in w):
        assert target in targets, f"make {target}: no such target in the Makefile"
