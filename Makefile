# PoolPilot: `make demo` shows the operator at work with no cluster; `make test` runs the whole suite.
# Both create .venv and install what they need; nothing else is required but Python 3.11, git and make.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.demo-installed
DEV_STAMP := $(VENV)/.dev-installed
CLUSTER_KUBECONFIG := $(CURDIR)/.cluster/kubeconfig

.PHONY: demo test lint unit e2e crd bench clean prometheus cluster cluster-down

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[devkube,sim]'
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/python -m devkube.demo

# The real Prometheus server backs the metrics tests; install it when missing and we may (root).
prometheus:
	@if command -v prometheus >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing the Debian prometheus package"; \
		apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	else echo "prometheus is not installed and this is not root: the tests that need it will fail" >&2; fi

lint: $(DEV_STAMP)
	$(BIN)/ruff check controller devkube tests bench cluster
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(DEV_STAMP)
	$(BIN)/pytest -q

# The whole suite: the embedded API server for the quick tests, and the real control plane (cluster/)
# for the integration, e2e and fidelity suites. A plane that was already up (make cluster) stays up.
test: $(DEV_STAMP) prometheus lint
	@$(BIN)/python -m cluster status >/dev/null 2>&1 && was_up=1 || was_up=0; \
	$(BIN)/python -m cluster up || exit 1; \
	KUBECONFIG=$(CLUSTER_KUBECONFIG) POOLPILOT_REQUIRE_CLUSTER=1 $(BIN)/pytest -q; status=$$?; \
	[ $$was_up = 1 ] || $(BIN)/python -m cluster down; \
	exit $$status

# The real control plane on 127.0.0.1 (built once from the Go modules pinned in cluster/go.mod,
# cached outside the repo); `export KUBECONFIG=.cluster/kubeconfig` then reaches it.
cluster: $(DEV_STAMP)
	$(BIN)/python -m cluster up

cluster-down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m cluster down; fi

# The same scenarios against the real cluster named by KUBECONFIG (CRD and operator must be able to run there).
e2e: $(DEV_STAMP)
	$(BIN)/pytest -q tests/e2e -m e2e

# Reaction time (spike -> Deployment patch), the cost of an evaluation round, CPU per replica scrape, and the
# operator process over fleets of pools (convergence, steady CPU, memory, API and metrics traffic); tables.
bench: $(DEV_STAMP) prometheus
	$(BIN)/python -m bench.reaction
	$(BIN)/python -m bench.round_cost
	$(BIN)/python -m bench.parse_cost
	$(BIN)/python -m bench.fleet
	$(BIN)/python -m bench.notice_reaction --servers embedded

crd: $(DEMO_STAMP)
	$(BIN)/poolpilot crd -o crds/inferencepool.yaml

clean: cluster-down
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .cluster
