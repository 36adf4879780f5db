"""The docstring examples are runnable: every `>>>` example in the package is executed."""

import doctest
import importlib
import pkgutil

import pytest

import lungseg

MODULES = sorted(m.name for m in pkgutil.walk_packages(lungseg.__path__, "lungseg.")
                 if m.name not in ("lungseg.__main__",))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
