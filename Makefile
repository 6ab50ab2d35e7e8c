# dsjobs: `make run` installs and runs an example job; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed

.PHONY: install run test proto proto-check bench clean

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

test: install proto-check
	$(PY) -m pytest -q

bench: install
	$(PY) bench/bench_spine.py
	$(PY) bench/bench_cancel.py

clean:
	rm -rf $(VENV) build *.egg-info
