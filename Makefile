# Two entry points for a newcomer (see README): `make run` and `make test`.
# Both create .venv on first use and install the project into it.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: run test install clean screenshot

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Main job: one benchmark run (default dataset and model); pass Hydra overrides in ARGS.
run: $(VENV)/.installed
	$(PY) -m benchmark $(ARGS)

# Tests; the layers contract first (docs/architecture.md); pytest exits 5 when no test ran, which fails this target.
test: $(VENV)/.installed
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(ARGS)

# The README's runs-table screenshot (docs/img/mlflow-runs-table.png) in headless Chromium; ARGS: --experiment, --tracking-uri.
screenshot: $(VENV)/.installed
	$(PY) scripts/screenshot_runs.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun
