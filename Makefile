# dsjobs: `make run` installs and runs an example job; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# What outlives a clone, keyed by version: uv itself, the wheels the tests serve. uv's own cache (the packages every
# venv here installs) is ~/.cache/uv, so a fresh clone on a machine that installed once installs in seconds.
CACHE  ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/dsjobs
UV_VERSION := $(shell sed -n 's/^ *"uv==\([0-9.]*\)",*$$/\1/p' pyproject.toml)
UVTOOL := $(CACHE)/tools/uv-$(UV_VERSION)
UV     := $(UVTOOL)/bin/uv
# What running a job needs (dsjobs and its job pages: three small packages); `make test` adds the test tools and Ray.
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
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
# pytest-xdist workers for the main suite: it mostly waits on processes, containers and Ray, so more than the cores.
# Tests that share a heavy session fixture or a machine-wide resource run on one worker (tests/conftest.py).
TEST_WORKERS ?= 4
export UV_NO_PROGRESS := 1

.PHONY: bytecode install install-test run run-deps test test-deps test-setup test-pythons official-cli proto proto-check \
	layout-check bench bench-compare clean

# uv, the version pyproject.toml pins, in a venv of its own under $(CACHE), made once per machine (moved into place
# whole, so two clones making it at once both end with a working one).
$(UV):
	@rm -rf $(UVTOOL).tmp.$$$$ && mkdir -p $(dir $(UVTOOL)) && $(PYTHON) -m venv $(UVTOOL).tmp.$$$$ && \
	$(UVTOOL).tmp.$$$$/bin/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION) && \
	{ mv -T $(UVTOOL).tmp.$$$$ $(UVTOOL) 2>/dev/null || rm -rf $(UVTOOL).tmp.$$$$; } && test -x $(UV)

# A venv by uv, with pip in it as `python -m venv` gives (`.venv/bin/pip` works; the tests' wheel downloads use it).
define make_venv
	test -x $(1)/bin/python || $(UV) venv -q --seed --python $(2) $(1)
endef

# What a venv installed, compiled: uv does not compile what it installs, and with PYTHONDONTWRITEBYTECODE=1 (set on
# these machines) every process would compile its imports from source again: `import ray` 1.8 s of CPU instead of
# 0.7 (each Ray worker and job supervisor), grpc with protobuf 0.5 instead of 0.25 (each engine and CLI). Files a
# package ships that this Python cannot compile (templates, other versions' code) are left as they are, and so is
# a compile that failed for want of room: bytecode is a cache, the marker (bin/.compiled) only saves the look.
define compile_site
	$(1) -m compileall -qq -j0 "$$($(1) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true; \
	touch $(dir $(1)).compiled
endef

# An editable install builds dsjobs in this tree (setuptools writes dsjobs.egg-info here): one at a time, though
# `make test-setup` makes the venvs side by side.
EDITABLE := mkdir -p .cache && flock .cache/editable.lock $(UV) pip install -q

$(RUN_STAMP): pyproject.toml | $(UV)
	$(call make_venv,$(VENV),$(PYTHON))
	$(EDITABLE) --python $(PY) -e '.[ui]'
	$(call compile_site,$(PY))
	touch $@

$(TEST_STAMP): pyproject.toml | $(UV)
	$(call make_venv,$(VENV),$(PYTHON))
	$(EDITABLE) --python $(PY) -e '.[test,ray,ui]'
	$(call compile_site,$(PY))
	touch $@ $(RUN_STAMP)

$(DSSTAMP): | $(UV)
	$(call make_venv,$(DSVENV),$(PYTHON))
	$(UV) pip install -q --python $(DSVENV)/bin/python datasphere==0.10.0
	$(call compile_site,$(DSVENV)/bin/python)
	touch $@

# A venv per Python version: made again when its interpreter is gone, reinstalled when pyproject.toml changes.
.venv-py%/.installed: pyproject.toml | $(UV)
	@py=$$(tools/find-python.sh $*) || exit 1; \
	if ! .venv-py$*/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "$*".split("."))))' \
	    2>/dev/null; then rm -rf .venv-py$* && echo "python $*: $(UV) venv --python $$py .venv-py$*" && \
	    $(UV) venv -q --seed --python $$py .venv-py$*; fi
	$(EDITABLE) --python .venv-py$*/bin/python -e '.[test]'
	$(call compile_site,.venv-py$*/bin/python)
	touch $@

# Wheels the tests serve from local indexes, downloaded (and pyspark's built) once per machine into $(CACHE)/wheels,
# each set under its versions, and linked into .cache/wheels where the tests look. A set is made in a temporary
# directory and moved into place whole.
WHEELS := $(CACHE)/wheels
# envzy's wheels for Python 3.10: tests/e2e/test_python_auto.py installs envzy from them (no network).
ENVZY_WHEELS := .cache/wheels/envzy-cp310/.complete
$(ENVZY_WHEELS):
	@set -e; set=$(WHEELS)/envzy-0.3.1-cp310; if [ ! -f $$set/.complete ]; then \
	  py=$$(tools/find-python.sh 3.10); mkdir -p $(WHEELS); tmp=$$(mktemp -d $$set.tmp.XXXXXX); chmod 755 $$tmp; \
	  $$py -m pip download -q --disable-pip-version-check --only-binary=:all: -d $$tmp envzy==0.3.1; \
	  touch $$tmp/.complete; mv -T $$tmp $$set 2>/dev/null || rm -rf $$tmp; fi; \
	mkdir -p .cache/wheels; rm -rf .cache/wheels/envzy-cp310; ln -s $$set .cache/wheels/envzy-cp310

# A Spark job's wheels for the .venv's Python (tests/e2e/test_spark.py serves them from a local index): the official
# datasphere client with its dependencies, py4j, and pyspark 3.5.9, which PyPI has as an sdist only: built once per
# machine (33 s), kept apart from the rest (it is the same wheel for every Python) and hard-linked into each set.
SPARK_WHEELS := .cache/wheels/spark/.complete
$(SPARK_WHEELS): | $(TEST_STAMP)
	@set -e; tag=$$($(PY) -c 'import sys; print("cp%d%d" % sys.version_info[:2])'); \
	pyspark=$(WHEELS)/pyspark-3.5.9; set=$(WHEELS)/spark-datasphere-0.10.0-py4j-0.10.9.9-pyspark-3.5.9-$$tag; \
	mkdir -p $(WHEELS); \
	if [ ! -f $$pyspark/.complete ]; then tmp=$$(mktemp -d $$pyspark.tmp.XXXXXX); chmod 755 $$tmp; \
	  echo "spark wheels: building pyspark 3.5.9 (once per machine, into $$pyspark)"; \
	  $(PY) -m pip wheel -q --disable-pip-version-check --no-deps -w $$tmp pyspark==3.5.9; \
	  touch $$tmp/.complete; mv -T $$tmp $$pyspark 2>/dev/null || rm -rf $$tmp; fi; \
	if [ ! -f $$set/.complete ]; then tmp=$$(mktemp -d $$set.tmp.XXXXXX); chmod 755 $$tmp; \
	  $(PY) -m pip download -q --disable-pip-version-check --only-binary=:all: -d $$tmp datasphere==0.10.0 \
	    py4j==0.10.9.9; \
	  ln $$pyspark/pyspark-3.5.9-py2.py3-none-any.whl $$tmp/ 2>/dev/null || \
	    cp $$pyspark/pyspark-3.5.9-py2.py3-none-any.whl $$tmp/; \
	  touch $$tmp/.complete; mv -T $$tmp $$set 2>/dev/null || rm -rf $$tmp; fi; \
	mkdir -p .cache/wheels; rm -rf .cache/wheels/spark; ln -s $$set .cache/wheels/spark

install: $(RUN_STAMP)

install-test: $(TEST_STAMP)

official-cli: $(DSSTAMP)

run-deps:
	tools/run-deps.sh

run: install run-deps
	cd examples/jobs/hello && ../../../$(BIN)/dsjobs run -c config.yaml

proto: install-test
	$(PY) tools/gen_proto.py

layout-check: install
	$(PY) tools/check_layout.py

proto-check: install-test
	$(PY) tools/gen_proto.py --check

test-deps:
	tools/test-deps.sh

# Everything the suite needs, the venvs made side by side (each install mostly waits on disk and network).
test-setup:
	$(MAKE) --no-print-directory -j4 $(TEST_STAMP) $(DSSTAMP) $(PYSTAMPS) $(ENVZY_WHEELS) test-deps run-deps
	$(MAKE) --no-print-directory $(SPARK_WHEELS) proto-check layout-check bytecode

# The tree's own modules compiled once for each Python the tests run: with PYTHONDONTWRITEBYTECODE=1 (set on these
# machines) every engine, CLI, hook and agent process of the suite would compile them again, ~0.5 s of CPU each.
# A source edited later is compiled in memory as usual (a pyc is used only while its source is unchanged). The
# venvs' packages too, once, for a venv installed before they were compiled at install (bin/.compiled says done).
bytecode:
	@for p in $(PY) $(foreach v,$(PYTHONS),.venv-py$(v)/bin/python); do \
	  $$p -m compileall -q -j0 engine runners dsjobs dsjobs_pb || exit 1; \
	done
	@$(foreach p,$(PY) $(DSVENV)/bin/python $(foreach v,$(PYTHONS),.venv-py$(v)/bin/python),\
	  { test -f $(dir $(p)).compiled || { $(call compile_site,$(p)); }; } || exit 1;)

# The main suite on $(TEST_WORKERS) xdist workers, and the client tests under each of $(PYTHONS) beside it
# (tools/run-tests.sh); TEST_ARGS= narrows the main suite (make test TEST_ARGS="tests/unit -x").
test: test-setup
	DSJOBS_DATASPHERE_PYTHON=$(CURDIR)/$(DSVENV)/bin/python TEST_WORKERS=$(TEST_WORKERS) TEST_ARGS="$(TEST_ARGS)" \
	  tools/run-tests.sh $(PY) "$(PYTHONS)" $(CLIENT_TESTS)

# DSJOBS_TEST_PYTHON: tests/e2e/test_pythons.py checks that the venv really runs that version.
test-pythons: $(PYSTAMPS) run-deps
	@set -e; for v in $(PYTHONS); do \
	  full=$$(.venv-py$$v/bin/python -c 'import sys; print(sys.version.split()[0])') || { echo "test-pythons:" \
	    ".venv-py$$v does not start (its interpreter gone?): rm -rf .venv-py$$v and run again" >&2; exit 1; }; \
	  echo "test-pythons: Python $$v ($$full)"; \
	  DSJOBS_TEST_PYTHON=$$v .venv-py$$v/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadgroup \
	    $(CLIENT_TESTS); \
	done

bench: install-test test-deps
	$(PY) bench/bench_run.py
	$(PY) bench/bench_spine.py
	$(PY) bench/bench_memory.py
	$(PY) bench/bench_files.py
	$(PY) bench/bench_cancel.py
	$(PY) bench/bench_pyenv.py
	$(PY) bench/bench_docker.py
	$(PY) bench/bench_ray.py

# Every benchmark on this tree and on BASE (a commit), alternately, in one run: BASE=deda4f5 make bench-compare
bench-compare: install-test test-deps
	$(PY) bench/compare.py $(BASE)

clean:
	rm -rf $(VENV) $(DSVENV) .venv-py* build *.egg-info
