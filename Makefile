# The two commands of the README:
#   make demo   set up .venv from the pinned set, run the smoke study, print the result table
#   make test   set up .venv from the pinned set, run every test (what .ci/run calls)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STUDY ?= studies/smoke.yaml

.PHONY: setup demo test test-unit test-integration clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/unisd study run $(STUDY)
	$(BIN)/unisd report $(STUDY)

test: setup
	$(BIN)/python -m pytest -q -ra

test-unit: setup
	$(BIN)/python -m pytest -q -ra tests/unit

test-integration: setup
	$(BIN)/python -m pytest -q -ra tests/integration

clean:
	rm -rf $(VENV) runs .pytest_cache
