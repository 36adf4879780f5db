"""The layers only import downwards: core <- io <- methods <- uses <- app (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lungseg"

#: module (dotted, below lungseg) or package prefix -> layer; the longest prefix wins.
LAYERS = {
    "core": 0,
    "io": 1,
    "transforms": 2, "networks": 2, "inference": 2,
    "training": 3, "evaluation": 3, "quantification": 3, "phantoms": 3, "report": 3, "quality": 3,
    "report.figures": 3, "report.render3d": 3, "report.mesh": 3, "report.html": 3, "report.cohort": 3,
    "report.build": 3, "report.evaluation_page": 3,
    "batch": 4, "cli": 4, "__main__": 4, "__init__": 4,
}


def layer_of(module: str) -> int:
    """Layer of a dotted module name below `lungseg` ('' is the package itself, the app)."""
    parts = module.split(".") if module else ["__init__"]
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    raise KeyError(f"lungseg.{module} has no layer in tests/test_architecture.py: add it")


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def lungseg_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported lungseg module below the package) for every import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lungseg"):
            out.append((node.lineno, node.module.removeprefix("lungseg").lstrip(".")))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name.removeprefix("lungseg").lstrip(".")) for a in node.names
                    if a.name.startswith("lungseg")]
    return out


def upward_edges() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        me = _module_name(path)
        mine = layer_of(me)
        for line, target in lungseg_imports(path):
            if layer_of(target) > mine:
                bad.append(f"{path.relative_to(SRC.parent)}:{line}: lungseg.{me} (layer {mine}) imports "
                           f"lungseg.{target} (layer {layer_of(target)})")
    return bad


def test_imports_point_down_only():
    assert upward_edges() == []


def test_core_imports_nothing_else_of_lungseg():
    for path in (SRC / "core").rglob("*.py"):
        targets = [t for _, t in lungseg_imports(path)]
        assert all(t.startswith("core") for t in targets), (path, targets)


def test_walker_finds_a_planted_upward_import(tmp_path, monkeypatch):
    """The check can fail: a core module importing io is reported."""
    fake = tmp_path / "lungseg"
    (fake / "core").mkdir(parents=True)
    (fake / "core" / "bad.py").write_text("from lungseg.io.volumes import read_volume\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    edges = upward_edges()
    assert len(edges) == 1 and "lungseg.core.bad (layer 0) imports lungseg.io.volumes (layer 1)" in edges[0]


def test_import_lungseg_stays_light():
    """`import lungseg` (and the CLI module) load neither torch nor MONAI."""
    code = "import sys, lungseg, lungseg.cli; print(sorted(m for m in ('torch', 'monai') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["synth", "make_phantom", "segment", "quantify", "evaluate", "train"])
def test_public_functions_are_functions(name):
    """No public name is shadowed by a submodule of the same name (lungseg.quantify was once)."""
    import importlib

    import lungseg

    importlib.import_module("lungseg.quantification")
    importlib.import_module("lungseg.phantoms")
    assert callable(getattr(lungseg, name)) and not isinstance(getattr(lungseg, name), type(lungseg))
