# Entry points for developers and CI. `make test` is what .ci/run executes.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# scripts/bootstrap.sh installs uv into .tools/bin when the machine has none; a user-level
# install (pip --user, the official installer) lands in ~/.local/bin.
export PATH := $(CURDIR)/.tools/bin:$(HOME)/.local/bin:$(PATH)

# --locked: fail instead of rewriting uv.lock when it no longer matches the pyproject files.
UV_RUN := uv run --locked
PYTEST_ARGS ?=
# Test processes (pytest-xdist): the fault suite runs on one of them, one test at a time
# (--dist loadgroup), while the others share the rest of the suite.
PYTEST_WORKERS ?= 2
PYTEST := $(UV_RUN) pytest -n $(PYTEST_WORKERS) --dist loadgroup
# CI=true (from the environment or `make test CI=true`) reaches the tools unchanged;
# nothing behaves differently under it yet.

.PHONY: help bootstrap run test test-fast lint lint-deploy fmt bench clean
.PHONY: db-deploy ops-healthcheck ops-readiness ops-incident ops-maintenance job-campaign-retry

help:
	@echo "make run     start the local stack (SecantusDB unless MONGODB_URL is set, the services)"
	@echo "make test    lint, type-check and run the whole suite (PYTEST_ARGS='-k foo' to narrow)"
	@echo "make test-fast  the suite without the fault and hostile-input suites (a quick loop)"
	@echo "make lint    ruff check, ruff format --check, mypy"
	@echo "make lint-deploy  the offline checks of deploy/ and docker-compose.yml (deploy/lint.sh)"
	@echo "make fmt     ruff format and ruff check --fix"
	@echo "make bench   run the benchmarks (python -m inbox_testkit.bench.run)"
	@echo "make clean   remove .venv, .run and the tool caches"
	@echo "The runbook's commands (settings from the environment; ARGS='...' adds options):"
	@echo "make db-deploy        apply the migrations (ARGS=--check: verify only)"
	@echo "make ops-healthcheck  every service's /api/health (ARGS=--json)"
	@echo "make ops-readiness    the go/no-go after a deploy (ARGS=--json)"
	@echo "make ops-incident     an incident snapshot under incidents/ (ARGS='--out DIR')"
	@echo "make ops-maintenance  run the maintenance tasks once (ARGS='retention ...': some)"
	@echo "make job-campaign-retry  one retry-worker pass in the foreground"

bootstrap:
	@scripts/bootstrap.sh

# The venv's entry point directly (bootstrap synced it): Ctrl-C and SIGTERM reach inbox-ops,
# which stops the services in order.
run: bootstrap
	exec .venv/bin/inbox-ops dev

# The slowest tests are listed after the suite (--durations=20), so a slow run's log says
# where the time went. The lints run beside the suite (they are single-threaded, and the
# suite leaves a share of the cores idle while it waits on its services); their output
# follows the suite's, and either failing fails the target.
test: bootstrap
	@mkdir -p .run
	@$(MAKE) --no-print-directory lint lint-deploy >.run/lint.log 2>&1 & lints=$$!; \
	status=0; $(PYTEST) --durations=20 $(PYTEST_ARGS) || status=$$?; \
	lint_status=0; wait $$lints || lint_status=$$?; \
	echo "== lint and lint-deploy (ran beside the suite)"; cat .run/lint.log; \
	if [ $$lint_status -ne 0 ]; then echo "make test: the lints failed (above)" >&2; exit 1; fi; \
	exit $$status

test-fast: bootstrap
	$(PYTEST) -m "not faults and not hostile" $(PYTEST_ARGS)

lint: bootstrap
	$(UV_RUN) ruff check .
	$(UV_RUN) ruff format --check .
	$(UV_RUN) mypy

# hadolint, the Compose Specification schema, caddy validate, kubernetes-validate and the CRD
# schemas on deploy/k8s/rendered, promtool (config, rules, rule unit tests), and the
# cross-checks of tests/deploy that need no server.
lint-deploy: bootstrap
	deploy/lint.sh

fmt: bootstrap
	$(UV_RUN) ruff format .
	$(UV_RUN) ruff check --fix .

bench: bootstrap
	@scripts/bootstrap.sh --bench
	$(UV_RUN) --group bench python -m inbox_testkit.bench.run

# The runbook's names for inbox-ops's commands (db:deploy, ops:healthcheck, ...); each exits
# with the command's own status.
ARGS ?=
INBOX_OPS := $(UV_RUN) inbox-ops

db-deploy: bootstrap
	$(INBOX_OPS) db-deploy $(ARGS)

ops-healthcheck: bootstrap
	$(INBOX_OPS) healthcheck $(ARGS)

ops-readiness: bootstrap
	$(INBOX_OPS) readiness $(ARGS)

ops-incident: bootstrap
	$(INBOX_OPS) incident $(ARGS)

ops-maintenance: bootstrap
	$(INBOX_OPS) maintenance run $(ARGS)

job-campaign-retry: bootstrap
	$(INBOX_OPS) job campaign-retry $(ARGS)

clean:
	rm -rf .venv .run .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./.tools -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
