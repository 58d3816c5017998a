"""The architecture, checked: host/ may import device/, never the other way; no import loops; the
run directory's file names are spelled only in rundir.py. Reads the source (AST), imports nothing."""

import ast
import re
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "edgefashion"
# they call both sides (report reads what every stage wrote, tune's too)
CHOOSERS = {"edgefashion.cli", "edgefashion.pipeline", "edgefashion.__main__", "edgefashion.report"}
RUN_FILE = re.compile(r"""["'](model\.keras|config\.json|history\.json|pipeline\.json|export\.json|verify\.json|"""
                      r"""verify\.md|bench\.json|calibration\.npz|layer_errors\.json|isa-check\.json|"""
                      r"""edgefashion-bundle\.tar\.gz|training_curves\.png)["']|/\s*["']export["']""")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every edgefashion module `path` imports, anywhere in the file, as a full module name."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("edgefashion")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if base.startswith("edgefashion"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_device_and_core_never_import_host():
    edges = [(a, b) for a, targets in graph().items() for b in targets
             if b.startswith("edgefashion.host") and not a.startswith("edgefashion.host") and a not in CHOOSERS]
    assert edges == []


def test_no_import_loops():
    edges = graph()
    # a package's __init__ importing its own submodules is not a loop of the design
    edges = {a: {b for b in bs if not a.startswith(b + ".")} for a, bs in edges.items()}
    loops, done, stack = [], set(), []

    def visit(node):
        if node in stack:
            loops.append(stack[stack.index(node):] + [node])
            return
        if node in done:
            return
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            visit(nxt)
        stack.pop()
        done.add(node)

    for node in sorted(edges):
        visit(node)
    assert loops == []


def test_run_directory_names_live_in_rundir_only():
    spelled = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "tools").glob("*.py")]:
        if path.name == "rundir.py":
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if RUN_FILE.search(line):
                spelled.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert spelled == []


def test_the_checks_can_fail(tmp_path):
    """The walker sees relative imports, and the name pattern sees a run file name."""
    probe = PACKAGE / "device" / "verify.py"
    assert "edgefashion.device.runtime" in imports(probe) and "edgefashion.rundir" in imports(probe)
    assert RUN_FILE.search('path / "export.json"') and RUN_FILE.search('run / "export"')
    assert not RUN_FILE.search('"export.jsonl"') and not RUN_FILE.search('add_parser("export")')
