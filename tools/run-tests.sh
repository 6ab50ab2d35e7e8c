#!/usr/bin/env bash
# `make test`'s last step: the main suite on $TEST_WORKERS pytest-xdist workers (--dist loadgroup: tests that share a
# heavy fixture or a machine-wide resource are grouped onto one worker, tests/conftest.py), and beside it, in the
# background, the client tests under each other Python (`make test-pythons`' runs): the suite mostly waits on
# processes, so they add little to its wall time. Their output follows the suite's; any failure fails the whole.
#   tools/run-tests.sh PY "3.10 3.13" CLIENT_TEST_PATHS...   (TEST_WORKERS=4, TEST_ARGS= for the main suite)
set -euo pipefail
py=$1 pythons=$2
shift 2
logs=$(mktemp -d "${TMPDIR:-/tmp}/dsjobs-test-pythons.XXXXXX")
declare -A pid full
for v in $pythons; do
  full[$v]=$(".venv-py$v/bin/python" -c 'import sys; print(sys.version.split()[0])') || {
    echo "test-pythons: .venv-py$v does not start (its interpreter gone?): rm -rf .venv-py$v and run again" >&2
    exit 1
  }
  # DSJOBS_TEST_PYTHON: tests/e2e/test_pythons.py checks that the venv really runs that version. A basetemp of
  # its own: pytest's clean-up of old runs' dirs in /tmp/pytest-of-$USER is the main suite's to do, not three at once.
  DSJOBS_TEST_PYTHON=$v ".venv-py$v/bin/python" -m pytest -q -p no:cacheprovider --basetemp="$logs/tmp-$v" "$@" \
    >"$logs/$v.log" 2>&1 &
  pid[$v]=$!
done
stop_background() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap 'stop_background; exit 130' INT TERM
rc=0
# TEST_ARGS: options or paths for the main suite (make test TEST_ARGS=tests/unit). Tests marked serial (a latency
# bound under a load of their own) run after the others, alone; pytest's 5 is "none of them selected".
# shellcheck disable=SC2086
# --durations: where the wall time goes (the longest group, Ray's, sets it), printed on every run.
"$py" -m pytest -q -n "${TEST_WORKERS:-4}" --dist loadgroup -m "not serial" --durations=25 ${TEST_ARGS:-} || rc=$?
st=0
"$py" -m pytest -q -m serial ${TEST_ARGS:-} || st=$?
[ $st -eq 0 ] || [ $st -eq 5 ] || rc=1
for v in $pythons; do
  st=0
  wait "${pid[$v]}" || st=$?
  echo "test-pythons: Python $v (${full[$v]}): $([ $st -eq 0 ] && echo passed || echo FAILED)"
  cat "$logs/$v.log"
  [ $st -eq 0 ] || rc=1
done
rm -rf "$logs"
exit $rc
