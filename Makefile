# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   the main job: an example app wired to the plugin, talking to the local emulator
#   make test   the whole test suite: Django 5.2 on Python 3.11 (with lint and types) beside Django 6 on Python 3.13
#               followed by the Django tests on Django 4.2 LTS on Python 3.11
# Each creates its virtualenv on first use and reinstalls only when pyproject.toml or constraints/ change.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
PYTHON313 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python) $(shell command -v python3.13))
VENV ?= .venv
VENV313 ?= .venv-py313
VENV42 ?= .venv-django42
PYTEST_ARGS ?=

.PHONY: demo demo-django demo-flask demo-core test test-main test-py313 test-django42 test-others system-packages \
	browser lint bench clean

# Debian packages installed at most once a run, before the virtualenvs that compile against them (apt-get takes a lock:
# two virtualenvs built side by side must not each call it).
system-packages:
	@bash scripts/ensure_mysql_client.sh

$(VENV)/.installed: pyproject.toml constraints/django52.txt | system-packages
	$(PYTHON) -m venv $(VENV)
	@echo "Installing into $(VENV) (log: $(VENV)/install.log)"
	@$(VENV)/bin/python -m pip install -c constraints/django52.txt -e '.[dev]' > $(VENV)/install.log 2>&1 \
		|| (cat $(VENV)/install.log; exit 1)
	touch $@

$(VENV313)/.installed: pyproject.toml constraints/django6.txt | system-packages
	@test -n "$(PYTHON313)" || (echo "Python 3.13 not found: set PYTHON313=/path/to/python3.13" && exit 1)
	$(PYTHON313) -m venv $(VENV313)
	@echo "Installing into $(VENV313) (log: $(VENV313)/install.log)"
	@$(VENV313)/bin/python -m pip install -c constraints/django6.txt -e '.[dev]' > $(VENV313)/install.log 2>&1 \
		|| (cat $(VENV313)/install.log; exit 1)
	touch $@

# Django 4.2 LTS on Python 3.11: only the Django tests run there (the rest does not depend on the Django version),
# with the dev-django42 extra: dev less django-tasks-db, which requires Django >= 5.2.
$(VENV42)/.installed: pyproject.toml constraints/django42.txt | system-packages
	$(PYTHON) -m venv $(VENV42)
	@echo "Installing into $(VENV42) (log: $(VENV42)/install.log)"
	@$(VENV42)/bin/python -m pip install -c constraints/django42.txt -e '.[dev-django42]' > $(VENV42)/install.log 2>&1 \
		|| (cat $(VENV42)/install.log; exit 1)
	touch $@

demo: demo-django

demo-django: $(VENV)/.installed
	$(VENV)/bin/python example_projects/django_app/run_demo.py

demo-flask: $(VENV)/.installed
	$(VENV)/bin/python example_projects/flask_app/run_demo.py

demo-core: $(VENV)/.installed
	$(VENV)/bin/python scripts/demo.py

# The suites spend most of their time waiting on subprocesses, databases and the emulator (about one core of two), so
# the Python 3.11 suite runs beside the other two; each test run keeps its own databases, Redis database and ports.
# --output-sync prints each suite's output whole, when it ends; --keep-going runs every suite even when one fails.
test:
	@$(MAKE) --no-print-directory -j2 --keep-going --output-sync=target test-main test-others

test-others: test-py313
	@$(MAKE) --no-print-directory test-django42

test-main: $(VENV)/.installed browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-py313: $(VENV313)/.installed browser
	$(VENV313)/bin/pytest $(PYTEST_ARGS)

test-django42: $(VENV42)/.installed browser
	$(VENV42)/bin/pytest tests/django $(PYTEST_ARGS)

browser: system-packages
	@bash scripts/ensure_chromium.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/client_throughput.py

clean:
	rm -rf $(VENV) $(VENV313) $(VENV42) .pytest_cache .mypy_cache .ruff_cache .hypothesis
