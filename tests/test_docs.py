"""The docstring examples are runnable: every `>>>` example in the package is executed."""

import doctest
import importlib
import pkgutil

import pytest

import lungseg

FINDER = doctest.DocTestFinder()
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples() -> list[str]:
    """The package's modules whose own docstrings hold at least one `>>>` example."""
    names = ["lungseg", *sorted(m.name for m in pkgutil.walk_packages(lungseg.__path__, "lungseg.")
                                if m.name != "lungseg.__main__")]
    return [n for n in names if any(t.examples for t in FINDER.find(importlib.import_module(n)))]


MODULES = _modules_with_examples()


def test_some_modules_have_examples():
    assert len(MODULES) >= 1


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    for test in FINDER.find(importlib.import_module(name)):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 1, f"{name}: no example ran"
    assert result.failed == 0, "".join(report)
