# settleflow — the two commands a new user needs are `make demo` and `make test`.
# Both create .venv and install the pinned dependencies first when needed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo up test unit histories keep-histories bench chaos clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## A local Temporal dev server (web UI on :8233), the gateway simulator, a worker, NATS JetStream,
## the outbox relay and the reporting consumer,
## and the demo scenarios; everything keeps running until Ctrl-C.
demo: install
	$(PY) devstack.py demo

## The same stack without the demo.
up: install
	$(PY) devstack.py up

## The whole test suite (PostgreSQL tests run when SETTLEFLOW_TEST_POSTGRES_URL is set).
## Three processes (pytest-xdist), each taking the next test as it finishes one: the suite's tests
## mostly wait on servers and subprocesses, and one process waits for the quick chaos run (about
## 80 s, mostly waiting itself), so three share the 2 cores it is sized for.
test: install
	$(PY) -m pytest -n 3 --dist worksteal

unit: install
	$(PY) -m pytest tests/unit -q

TRACING_REPLAY := tests/workflows/test_operations.py::test_every_recorded_history_replays_with_the_tracing_interceptor_the_workers_now_run

## Re-record the workflow histories the replay tests check (commit the result), then replay them
## all (after the recording: a release's histories just kept are the same runs until re-recorded).
histories: install
	SETTLEFLOW_RECORD_HISTORIES=1 $(PY) -m pytest tests/workflows -q --ignore=tests/workflows/test_replay.py \
		--deselect $(TRACING_REPLAY)
	$(PY) -m pytest tests/workflows/test_replay.py $(TRACING_REPLAY) -q

## Before changing a workflow: keep the running release's histories so they go on replaying
## (README "Shipping a change to a workflow"). make keep-histories RELEASE=2026-12-01
keep-histories:
	@test -n "$(RELEASE)" || { echo "make keep-histories RELEASE=<the running release>"; exit 2; }
	mkdir -p tests/workflows/histories/$(RELEASE)
	cp tests/workflows/histories/*.json tests/workflows/histories/$(RELEASE)/

## Refund throughput against a raw chain of the same shape on the same dev server (ratios printed).
bench: install
	$(PY) -m bench.refund_throughput

## Faults under load: worker SIGKILLs, a server restart, gateway 5xx/timeouts; checks money moved once.
chaos: install
	$(PY) -m chaos.run

clean:
	rm -rf var .pytest_cache .hypothesis
