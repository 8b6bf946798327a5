# The two commands a fresh clone needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test lint format bench install clean

$(INSTALLED): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(INSTALLED)

install: $(INSTALLED)

run: $(INSTALLED)
	$(PY) -m finance_core.run

test: $(INSTALLED)
	$(PY) -m tests.support.system_packages
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: $(INSTALLED)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

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
