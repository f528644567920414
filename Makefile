# The two commands of the README:
#   make demo   set up .venv from the pinned set, run the synthetic-task study on the pretrained
#               tiny base (base, SFT, SDFT and three components, 3 seeds), print the report
#   make test   set up .venv from the pinned set, run every test (what .ci/run calls)
# Also: make smoke (the one-minute random-weight smoke study), make study STUDY=path.yaml,
#       make factorial (all 32 subsets + base + SFT on the synthetic task, CPU; 24 min measured on 2 cores)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STUDY ?= studies/synthetic.yaml

.PHONY: setup bubblewrap test-packages demo smoke factorial study test test-unit test-integration clean

setup: bubblewrap $(VENV)/.installed

# Generated code is scored inside bubblewrap (README, "Sandbox for generated code"). Installed
# here only when missing, as root and with apt-get; otherwise a note, never a failure (code items
# are then refused and the sandbox tests skip, each saying why).
bubblewrap:
	@if command -v bwrap >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing bubblewrap (apt-get) for the code sandbox"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) \
	    >/dev/null 2>&1 || echo "note: could not install bubblewrap; code items will be refused" >&2; \
	else echo "note: bubblewrap (bwrap) is missing; install it (apt-get install bubblewrap) to score code" >&2; fi

# Debian packages only some tests use: chromium (the MLflow UI browser test) and PostgreSQL (the
# cluster simulation's MLflow store). Installed by `make test` when missing, as root with apt-get;
# never fatal: without them those tests skip and say why.
test-packages:
	-@missing=""; command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing (apt-get) for the browser and cluster-simulation tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) \
	      >/dev/null 2>&1 || echo "note: could not install$$missing; those tests will skip" >&2; \
	  else echo "note:$$missing missing (apt-get install$$missing); those tests will skip" >&2; fi; \
	fi

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $@

demo: study

smoke: STUDY = studies/smoke.yaml
smoke: study

factorial: STUDY = studies/synthetic_factorial.yaml
factorial: study

study: setup
	$(BIN)/unisd study run $(STUDY)
	$(BIN)/unisd report $(STUDY)

test: setup test-packages
	$(BIN)/python -m pytest -q -ra

test-unit: setup
	$(BIN)/python -m pytest -q -ra tests/unit

test-integration: setup
	$(BIN)/python -m pytest -q -ra tests/integration

clean:
	rm -rf $(VENV) runs .pytest_cache
