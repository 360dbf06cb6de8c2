# Two entry points for a newcomer (see README): `make run` and `make test` (`make test-fast` while editing).
# Both create .venv on first use and install the project into it.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: run test test-fast reports install clean screenshot

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

# The fast tier: the tests marked `slow` (pyproject.toml) left out, on 2 workers (pytest-xdist); 105 s on the idle 2-core machine (README, Tests).
test-fast: $(VENV)/.installed
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -m "not slow" -n 2 $(ARGS)

# The shipped reports (reports/README.md): the sweeps at this commit (groups: +sweep=groups and +sweep=group_reproduction), in a store of this commit's own (resumable,
# never mixing code versions), then their reports into reports/. Refused before anything runs when tracked code has
# uncommitted changes: every shipped report names one clean commit.
COMMIT        := $(shell git rev-parse --short=12 HEAD 2>/dev/null)
REPORTS_STORE ?= sqlite:///reports/mlflow-$(COMMIT).db
REPORTS_ARGS  ?= hydra/launcher=joblib hydra.launcher.n_jobs=2
reports: $(VENV)/.installed
	@test -z "$$(git status --porcelain --untracked-files=no -- . ':(exclude)reports')" || \
		{ echo "error: make reports needs a checkout without uncommitted code changes (git status): each shipped report names one clean commit; commit or stash them first" >&2; exit 2; }
	$(PY) -m benchmark +sweep=paper $(REPORTS_ARGS) tracking.uri=$(REPORTS_STORE)
	$(PY) -m benchmark +sweep=paper_protocol $(REPORTS_ARGS) tracking.uri=$(REPORTS_STORE)
	$(PY) -m benchmark.report --experiment paper --tracking-uri $(REPORTS_STORE) --out reports/paper --no-log
	$(PY) -m benchmark +sweep=tuned $(REPORTS_ARGS) tracking.uri=$(REPORTS_STORE)
	$(PY) -m benchmark.report --experiment tuned --tracking-uri $(REPORTS_STORE) --out reports/tuned --no-log
	$(PY) -m benchmark +sweep=groups $(REPORTS_ARGS) tracking.uri=$(REPORTS_STORE)
	$(PY) -m benchmark +sweep=group_reproduction $(REPORTS_ARGS) tracking.uri=$(REPORTS_STORE)
	$(PY) -m benchmark.report --experiment groups --tracking-uri $(REPORTS_STORE) --out reports/groups --no-log

# The README's runs-table screenshot (docs/img/mlflow-runs-table.png) in headless Chromium; ARGS: --experiment, --tracking-uri.
screenshot: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[screenshot]'
	$(PY) scripts/screenshot_runs.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun
