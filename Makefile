# dsjobs: `make run` installs and runs an example job; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
# The official datasphere CLI, in an environment of its own (it carries its own generated protos).
DSVENV := .venv-datasphere
DSSTAMP := $(DSVENV)/.installed

.PHONY: install run run-deps test test-deps official-cli proto proto-check layout-check bench bench-compare clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,ray]'
	touch $(STAMP)

$(DSSTAMP):
	test -x $(DSVENV)/bin/python || $(PYTHON) -m venv $(DSVENV)
	$(DSVENV)/bin/python -m pip install -q --disable-pip-version-check datasphere==0.10.0
	touch $(DSSTAMP)

install: $(STAMP)

official-cli: $(DSSTAMP)

run-deps:
	tools/run-deps.sh

run: install run-deps
	cd examples/jobs/hello && ../../../$(BIN)/dsjobs run -c config.yaml

proto: install
	$(PY) tools/gen_proto.py

layout-check: install
	$(PY) tools/check_layout.py

proto-check: install
	$(PY) tools/gen_proto.py --check

test-deps:
	tools/test-deps.sh

test: install proto-check layout-check test-deps official-cli
	DSJOBS_DATASPHERE_PYTHON=$(CURDIR)/$(DSVENV)/bin/python $(PY) -m pytest -q

bench: install test-deps
	$(PY) bench/bench_spine.py
	$(PY) bench/bench_cancel.py
	$(PY) bench/bench_pyenv.py
	$(PY) bench/bench_docker.py
	$(PY) bench/bench_ray.py

# Every benchmark on this tree and on BASE (a commit), alternately, in one run: BASE=deda4f5 make bench-compare
bench-compare: install test-deps
	$(PY) bench/compare.py $(BASE)

clean:
	rm -rf $(VENV) $(DSVENV) build *.egg-info
