# The two commands a fresh clone needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# The fast tests: what `make check` runs. Markers are described in pyproject.toml.
FAST := not postgres and not browser and not slow
# How `make lock` compiles requirements.in into the hashed lock, requirements.txt.
LOCK := $(PY) -m uv pip compile requirements.in --quiet --generate-hashes --universal \
	--python-version 3.11 --custom-compile-command "make lock" -o requirements.txt

.PHONY: run check test lint format lock lock-upgrade bench install clean

# Exactly the lock: every package pinned and checked against its hashes; --no-deps because the
# lock already names every dependency, so nothing unpinned can slip in. The marker depends on
# the lock, so that a changed lock reinstalls.
$(INSTALLED): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements.txt
	touch $(INSTALLED)

install: $(INSTALLED)

run: $(INSTALLED)
	$(PY) -m finance_core.run

# Lint, format, types and the fast tests: the loop to run before every commit (< 3 minutes).
# The fast tests run on two workers (pytest-xdist): most of their time is waiting on the
# processes and servers they start, so two overlap well on two cores (285 s to 193 s).
check: $(INSTALLED)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m tests.support.system_packages
	$(PY) -m pytest -n 2 -m "$(FAST)"

# `make check`, then every test it left out (PostgreSQL, browser, slow), also on two workers:
# 1165 s in one process, 693 s on two (docs/testing.md).
test: check
	$(PY) -m pytest -n 2 -m "not ($(FAST))"

lint: $(INSTALLED)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Renew the lock from requirements.in, keeping the pins that still fit...
lock: $(INSTALLED)
	$(LOCK)

# ... or moving every transitive package to its newest release.
lock-upgrade: $(INSTALLED)
	$(LOCK) --upgrade

format: $(INSTALLED)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(INSTALLED)
	$(PY) -m tests.support.system_packages --bench
	$(PY) -m bench
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
		$(PY) -m bench.peer_bench; \
	else \
		echo "skipping the stripe-sync-engine comparison: it needs node and npm"; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
