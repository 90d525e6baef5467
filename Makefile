# cxrlib — one-command set-up, reproduction and tests.
# Every target works from a fresh clone with only the machine's python3 (3.11): the project
# venv (.venv) is created on first use and refreshed when the requirement files change.

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
KERNEL      := cxr-retrieval
PROFILE     ?= demo
PYTEST_ARGS ?=

.PHONY: help venv reproduce test lint unit nbval lab bench lock clean-results

help:
	@echo "make reproduce   set up .venv + kernel, run the $(PROFILE) profile end to end (PROFILE=paper on a GPU server)"
	@echo "make test        lint + unit tests + nbval on the notebooks"
	@echo "make lab         JupyterLab on the $(KERNEL) kernel"
	@echo "make bench       run the scripts in benchmarks/ at their goals' sizes, PASS/FAIL per goal (minutes)"
	@echo "make lock        regenerate requirements.lock from a fresh install"

$(STAMP): requirements.txt requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python ($(KERNEL))" >/dev/null
	@touch $(STAMP)
	@echo "environment ready: $(VENV) with Jupyter kernel '$(KERNEL)'"

venv: $(STAMP)

reproduce: $(STAMP)
	$(PY) -m cxrlib.reproduce --profile $(PROFILE) $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check cxrlib tests benchmarks notebooks solutions

# .ci/pytest-run: exit 5 ("no tests collected") fails a full run, passes a PYTEST_ARGS selection that matched nothing.
unit: $(STAMP)
	.ci/pytest-run $(PY) "unit tests" "$(PYTEST_ARGS)" -- tests

nbval: $(STAMP)
	.ci/pytest-run $(PY) "notebooks" "$(PYTEST_ARGS)" -- --nbval-lax --nbval-kernel-name $(KERNEL) \
		--nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider notebooks

test: lint unit nbval

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

# Every script runs at its goals' sizes (no --quick) and exits 1 when a goal FAILs; all run anyway, then the
# verdicts are collected in $(BENCH_MD) (one markdown row per goal) and make exits non-zero if any failed.
BENCH_MD    ?= benchmarks/results.md
bench: $(STAMP)
	@rm -f $(BENCH_MD); failed=""; \
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b --markdown $(BENCH_MD) || failed="$$failed $$b"; done; \
	echo "== verdicts ($(BENCH_MD))"; cat $(BENCH_MD) 2>/dev/null; \
	if [ -n "$$failed" ]; then echo "bench: FAIL in$$failed"; exit 1; else echo "bench: every goal PASS"; fi

lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet -r requirements.txt
	{ echo "# Full resolved environment (pip freeze --all, less pip itself, of a fresh install of requirements.txt on Python 3.11, x86_64)."; \
	  echo "# Used as a constraints file; regenerate with \`make lock\`."; \
	  .venv-lock/bin/python -m pip freeze --all --exclude-editable | grep -v -i '^pip==' | sort -f; } > requirements.lock
	rm -rf .venv-lock
