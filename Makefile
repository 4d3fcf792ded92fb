# `make demo` and `make test` bootstrap everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit test-integration test-e2e lint bench bench-kube bench-scale sandbox clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/wavegate demo

test: $(STAMP) sandbox
	@bash scripts/install-browser.sh || { status=$$?; [ $$status -eq 3 ] && [ "$$CI" != "true" ] || exit $$status; }
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

test-integration: $(STAMP)
	$(BIN)/pytest tests/integration

test-e2e: $(STAMP) sandbox
	$(BIN)/pytest tests/e2e

# The kube sandbox binaries (built once from Debian's kubernetes source, then cached).
# Exit 3 means this machine cannot build them; the e2e tests then skip, except under CI=true.
sandbox:
	@bash scripts/build-kube-sandbox.sh || { status=$$?; [ $$status -eq 3 ] && [ "$$CI" != "true" ] || exit $$status; }

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/run.py

# The fleet-scale goals (docs/performance.md): 10, 100 and 1,000 simulated clusters, then probes.
bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py --sweep 10,100,1000
	$(BIN)/python bench/probes.py

bench-kube: $(STAMP) sandbox
	$(BIN)/python bench/kube.py

clean:
	rm -rf $(VENV) .wavegate .pytest_cache .mypy_cache .ruff_cache
