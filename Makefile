# Fresh clone -> `make demo` or `make test`. Both create .venv when missing.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup chromium demo test test-fast lint bench pretrained finetune clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(PY) scripts/demo.py --out runs/demo

# headless Chromium for the report tests (tests/test_report_browser.py); they skip, saying so,
# when it cannot be installed (no root, no Debian package source)
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
	  echo "chromium not installed: the browser tests of the reports will be skipped"

test: setup chromium
	$(PY) -m pytest -q tests

test-fast: setup chromium
	$(PY) -m pytest -q -m "not slow" tests

lint: setup
	$(VENV)/bin/ruff check src tests bench

bench: setup
	$(PY) bench/infer.py
	$(PY) bench/train.py

pretrained: setup
	$(PY) scripts/pretrained.py --out runs/pretrained $(if $(INSTALL),--install,)

# stage 2 alone, from a built stage 1 (`make pretrained` runs both stages; docs/model.md)
finetune: setup
	$(PY) scripts/finetune.py --out runs/finetune --init runs/pretrained/stage1.pt

clean:
	rm -rf runs build dist *.egg-info src/*.egg-info .pytest_cache
