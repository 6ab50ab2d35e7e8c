# dsjobs: `make run` installs and runs an example job; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed

.PHONY: install run test test-deps proto proto-check bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	cd examples/jobs/hello && ../../../$(BIN)/dsjobs run -c config.yaml

proto: install
	$(PY) tools/gen_proto.py

proto-check: install
	$(PY) tools/gen_proto.py --check

test-deps:
	tools/test-deps.sh

test: install proto-check test-deps
	$(PY) -m pytest -q

bench: install test-deps
	$(PY) bench/bench_spine.py
	$(PY) bench/bench_cancel.py
	$(PY) bench/bench_pyenv.py
	$(PY) bench/bench_docker.py

clean:
	rm -rf $(VENV) build *.egg-info
