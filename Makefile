# Usual verbs for agentwatch. Everything installs into a local virtual environment (.venv), so a
# fresh Debian machine with Python 3.11 needs nothing else: `make demo`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
comma  := ,
EXTRAS ?= dev,collector,embedded,dashboards,runtimes,dialects,mcp
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
# `make demo` installs only what `agentwatch demo` imports: the collector, the embedded ClickHouse
# (chDB) and the agent runtimes it runs the example on; no dev tools, no dashboards SDK.
DEMO_EXTRAS := collector,embedded,runtimes
DEMO_STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(DEMO_EXTRAS))

.PHONY: install demo test test-fast lint typecheck pytest bench generate clean

$(BIN)/python:
	@echo "creating the virtual environment $(VENV)"
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3-venv is missing; installing it with apt-get"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	@$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@
	$(if $(filter-out $(subst $(comma), ,$(EXTRAS)),$(subst $(comma), ,$(DEMO_EXTRAS))),,@touch $(DEMO_STAMP))

# pip's own output is the progress here: a first install downloads a few hundred MB (chDB, the runtimes)
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing agentwatch and what the demo needs [$(DEMO_EXTRAS)] into $(VENV)"
	$(BIN)/python -m pip install --progress-bar on -e ".[$(DEMO_EXTRAS)]"
	@touch $@

# Debian packages the tests drive for real (promtool, Prometheus, Alertmanager); skipped when present.
SYSDEPS := $(VENV)/.sysdeps
$(SYSDEPS): | $(BIN)/python
	@command -v promtool >/dev/null 2>&1 && command -v prometheus-alertmanager >/dev/null 2>&1 || { \
	  echo "installing prometheus and prometheus-alertmanager with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-alertmanager >/dev/null; }
	@touch $@

install: $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/agentwatch demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# the suite runs on every core (pytest-xdist); each worker has its own embedded ClickHouse
# OpenLIT pins openai<3 and OpenTelemetry 1.45.1, so it cannot share $(VENV) with the Agents SDK: its
# dialect test (tests/collectors/ingest/test_dialects_openlit.py) runs it in an environment of its own,
# installed exactly from a lock without the resolver (which cannot reconcile its pins on its own).
OPENLIT_VENV := .venv-openlit
$(OPENLIT_VENV)/.installed: tests/support/openlit-requirements.txt
	@echo "installing OpenLIT's own test environment into $(OPENLIT_VENV)"
	@$(PYTHON) -m venv $(OPENLIT_VENV)
	$(OPENLIT_VENV)/bin/python -m pip install -q --no-deps -r tests/support/openlit-requirements.txt
	@touch $@

pytest: $(STAMP) $(SYSDEPS) $(OPENLIT_VENV)/.installed
	$(BIN)/python -m pytest -q -n auto

# the unit tests: no collector, store, process or Prometheus tool (those are marked integration)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n auto -m "not slow and not integration"

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/instrumentation_overhead.py
	$(BIN)/python benchmarks/otlp_convert.py
	$(BIN)/python benchmarks/collector_throughput.py
	$(BIN)/python benchmarks/agents_overhead.py
	$(BIN)/python benchmarks/mcp_proxy.py
	$(BIN)/python benchmarks/dashboard_queries.py
	$(BIN)/python benchmarks/drift_quality.py
	$(BIN)/python benchmarks/control_plane.py

# Regenerate the committed artifacts: dashboards, alert rules and runbook, then the Kubernetes manifests
# embedding them (`agentwatch generate --check` and the tests fail when they differ from the code).
generate: $(STAMP)
	$(BIN)/agentwatch generate

clean:
	rm -rf $(VENV) $(OPENLIT_VENV) .mypy_cache .ruff_cache .pytest_cache
