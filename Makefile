# dsjobs: `make run` installs and runs an example job; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
# The official datasphere CLI, in an environment of its own (it carries its own generated protos).
DSVENV := .venv-datasphere
DSSTAMP := $(DSVENV)/.installed
# The client side (CLI, run_job, the pytest plugin and the engine they start) under the oldest declared Python and
# the newest tested one, each in a venv of its own (.venv-py3.10, .venv-py3.13), interpreters from pyenv
# (tools/find-python.sh; PYTHON_3_10=/path/to/python3.10 names one). No ray there: the ray backend is server side.
PYTHONS ?= 3.10 3.13
PYSTAMPS := $(foreach v,$(PYTHONS),.venv-py$(v)/.installed)
CLIENT_TESTS := tests/e2e/test_pythons.py tests/unit/test_jobconfig.py tests/e2e/test_pytest_plugin.py \
	tests/e2e/test_examples.py tests/e2e/test_cli_server.py tests/e2e/test_python_env.py examples/jobs/wordcount/tests

.PHONY: install run run-deps test test-deps test-pythons official-cli proto proto-check layout-check bench bench-compare \
	clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,ray,ui]'
	touch $(STAMP)

$(DSSTAMP):
	test -x $(DSVENV)/bin/python || $(PYTHON) -m venv $(DSVENV)
	$(DSVENV)/bin/python -m pip install -q --disable-pip-version-check datasphere==0.10.0
	touch $(DSSTAMP)

# A venv per Python version: made again when its interpreter is gone, reinstalled when pyproject.toml changes.
.venv-py%/.installed: pyproject.toml
	@py=$$(tools/find-python.sh $*) || exit 1; \
	if ! .venv-py$*/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "$*".split("."))))' \
	    2>/dev/null; then rm -rf .venv-py$* && echo "python $*: $$py -m venv .venv-py$*" && $$py -m venv .venv-py$*; fi
	.venv-py$*/bin/python -m pip install -q --disable-pip-version-check -U pip
	.venv-py$*/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

# envzy's wheels for Python 3.10 on disk: tests/e2e/test_python_auto.py installs envzy from them (no network).
ENVZY_WHEELS := .cache/wheels/envzy-cp310/.complete
$(ENVZY_WHEELS):
	py=$$(tools/find-python.sh 3.10) && $$py -m pip download -q --disable-pip-version-check --only-binary=:all: \
	  -d .cache/wheels/envzy-cp310 envzy==0.3.1 && touch $@

# A Spark job's wheels for the .venv's Python (tests/e2e/test_spark.py serves them from a local index): the official
# datasphere client with its dependencies, py4j, and pyspark 3.5.9, which PyPI has as an sdist only: built here once.
SPARK_WHEELS := .cache/wheels/spark/.complete
$(SPARK_WHEELS): $(STAMP)
	$(PY) -m pip download -q --disable-pip-version-check --only-binary=:all: -d .cache/wheels/spark \
	  datasphere==0.10.0 py4j==0.10.9.9
	test -f .cache/wheels/spark/pyspark-3.5.9-py2.py3-none-any.whl || $(PY) -m pip wheel -q \
	  --disable-pip-version-check --no-deps -w .cache/wheels/spark pyspark==3.5.9
	touch $@

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

test: install proto-check layout-check test-deps official-cli $(ENVZY_WHEELS) $(SPARK_WHEELS) test-pythons
	DSJOBS_DATASPHERE_PYTHON=$(CURDIR)/$(DSVENV)/bin/python $(PY) -m pytest -q

# DSJOBS_TEST_PYTHON: tests/e2e/test_pythons.py checks that the venv really runs that version.
test-pythons: $(PYSTAMPS) run-deps
	@set -e; for v in $(PYTHONS); do \
	  full=$$(.venv-py$$v/bin/python -c 'import sys; print(sys.version.split()[0])') || { echo "test-pythons:" \
	    ".venv-py$$v does not start (its interpreter gone?): rm -rf .venv-py$$v and run again" >&2; exit 1; }; \
	  echo "test-pythons: Python $$v ($$full)"; \
	  DSJOBS_TEST_PYTHON=$$v .venv-py$$v/bin/python -m pytest -q -p no:cacheprovider $(CLIENT_TESTS); \
	done

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
	rm -rf $(VENV) $(DSVENV) .venv-py* build *.egg-info
