# The two commands of the README:
#   make demo   set up .venv from the pinned set, run the synthetic-task study on the pretrained
#               tiny base (base, SFT, SDFT and three components, 3 seeds), print the report
#   make test   set up .venv from the pinned set, run every test (what .ci/run calls)
# Also: make smoke (the one-minute random-weight smoke study), make study STUDY=path.yaml
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STUDY ?= studies/synthetic.yaml

.PHONY: setup bubblewrap demo smoke study test test-unit test-integration clean

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

$(VENV)/.installed: pyproject.toml constraints.txt
	@# chromium (Debian) for the MLflow UI browser test; as root only, never fatal (the test skips)
	-@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	  >/dev/null 2>&1 || echo "chromium not installed: the MLflow browser test will be skipped"; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $@

demo: study

smoke: STUDY = studies/smoke.yaml
smoke: study

study: setup
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
