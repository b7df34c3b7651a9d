# Two commands are the contract with a new user: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Django 6.x needs Python 3.12+; pyenv keeps one on this kind of machine.
PYTHON312 ?= $(shell PYENV_VERSION=3.12.1 pyenv which python3.12 2>/dev/null || command -v python3.12 2>/dev/null)
VENV6 ?= .venv-django6
PYTEST_ARGS ?=

.PHONY: bench bench-peers browser docs faketime install lint screenshots test test-sqlite test-postgres test-django6 test-soak demo demo-check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The browser tests drive Debian's Chromium (never a browser download); installed once, as root or with sudo.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
$(CHROMIUM):
	@echo "Installing Debian's chromium and chromium-driver for the browser tests..."
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver \
	  || ( $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	       --no-install-recommends chromium chromium-driver )

browser: $(CHROMIUM)

# The fault tests (tests/faults) run a sweeper with its clock shifted through libfaketime; installed once, likewise.
FAKETIME := /usr/bin/faketime
$(FAKETIME):
	@echo "Installing Debian's faketime for the fault tests..."
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends faketime \
	  || ( $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	       --no-install-recommends faketime )

faketime: $(FAKETIME)

lint: install
	$(VENV)/bin/ruff check cq tests demo bench
	$(VENV)/bin/mypy cq

test: install browser faketime
	$(MAKE) lint
	$(MAKE) test-sqlite
	$(MAKE) test-postgres

# Each database: the suite on cq.Task, then the tests of a task model of the project's own.
test-sqlite: install browser
	CQ_TEST_DATABASE=sqlite $(PY) -m pytest -m 'not soak and not custom_model and not postgres' $(PYTEST_ARGS)
	CQ_TEST_DATABASE=sqlite $(PY) -m pytest --ds=tests.settings_custom -m 'custom_model and not postgres' $(PYTEST_ARGS)

# The demo keeps its own SQLite database, and the browser tests (tests/browser) drive the SQLite site:
# they run in the SQLite pass only.
test-postgres: install faketime
	CQ_TEST_DATABASE=postgres $(PY) -m pytest --ignore=tests/browser -m 'not soak and not custom_model and not demo' $(PYTEST_ARGS)
	CQ_TEST_DATABASE=postgres $(PY) -m pytest --ds=tests.settings_custom -m custom_model $(PYTEST_ARGS)

# The same suite on Django 6.x (PostgreSQL), when a Python 3.12+ is installed.
test-django6: faketime
	@if [ -z "$(PYTHON312)" ]; then echo "test-django6: no python3.12 found, nothing run"; exit 1; fi
	[ -f $(VENV6)/.installed ] || ( $(PYTHON312) -m venv $(VENV6) && \
	  $(VENV6)/bin/pip install -q --upgrade pip && \
	  $(VENV6)/bin/pip install -q -e '.[dev]' 'Django>=6.1,<6.2' && touch $(VENV6)/.installed )
	CQ_TEST_DATABASE=postgres $(VENV6)/bin/python -m pytest --ignore=tests/browser -m 'not soak and not custom_model and not demo' $(PYTEST_ARGS)
	CQ_TEST_DATABASE=postgres $(VENV6)/bin/python -m pytest --ds=tests.settings_custom -m custom_model $(PYTEST_ARGS)

test-soak: install
	CQ_TEST_DATABASE=postgres $(PY) -m pytest -m soak -s $(PYTEST_ARGS)

# The documentation site (docs/) as HTML in docs/_build/html. Warnings are errors (-W), every
# reference must resolve (-n), and -E reads every page again, so that a warning is never hidden
# by a page or a docstring that did not change since the last build.
docs: install
	$(VENV)/bin/sphinx-build -E -W --keep-going -n -q -b html docs docs/_build/html

# The screenshots under docs/ (the README shows them), taken by the browser tests that drive the demo and
# the dashboard in headless Chromium: each pair is the test's screenshot and the file it becomes.
SHOTS := demo-run-stopped:demo.png demo-task-page:dashboard.png task-list-chart:task-list.png \
         queues-charts:queues.png workers-elapsed:workers.png
screenshots: install browser
	rm -rf .screenshots
	CQ_TEST_ARTIFACTS=.screenshots CQ_TEST_DATABASE=sqlite $(PY) -m pytest -q -p no:randomly \
	  tests/browser/test_demo.py tests/browser/test_timeline.py tests/browser/test_fleet.py $(PYTEST_ARGS)
	for pair in $(SHOTS); do cp .screenshots/$${pair%%:*}.png docs/$${pair##*:}; done
	rm -rf .screenshots
	@echo "docs/: $(foreach pair,$(SHOTS),$(lastword $(subst :, ,$(pair))))"

# The demo site (daphne and two worker processes) until Ctrl-C; DEMO_PORT, DATABASE_URL, REDIS_URL.
demo: install
	$(PY) demo/run.py

# The demo's scenario without a browser, on a fresh database: exits 0 only if every result is right.
demo-check: install
	$(PY) demo/run.py --check

clean:
	rm -rf $(VENV) $(VENV6) $(PEERS_VENV) build *.egg-info docs/_build

# cq's own figures on this machine, tuned and with Django's defaults (PostgreSQL database cq_bench,
# Redis db 8), and issue 16's targets against BENCH_BASELINE, the commit that issue started from
# (empty: no baseline run); see bench/run.py.
BENCH_BASELINE ?= bcdf8af
bench: install
	BENCH_BASELINE=$(BENCH_BASELINE) $(PY) bench/run.py

# The same workload on Huey, Dramatiq, RQ, Celery, Procrastinate and Celery with django-celery-results,
# in their own virtualenv (PostgreSQL database cq_peers, Redis db 9); prints cq/peer ratios.
PEERS_VENV ?= .venv-peers
bench-peers: bench $(PEERS_VENV)/.installed
	$(PEERS_VENV)/bin/python bench/peers/run.py

# Made again whenever this Makefile (and so the list of peers) changes.
$(PEERS_VENV)/.installed: Makefile
	[ -d $(PEERS_VENV) ] || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q 'huey>=3.5,<4' 'dramatiq[redis]>=2.2,<3' 'rq>=3,<4' 'celery[redis]>=5.7,<6' \
	  'procrastinate>=3.10,<4' 'django-celery-results>=2.5,<3' 'Django>=5.2,<6' 'psycopg[binary]>=3.2'
	touch $@
