#!/usr/bin/env bash
# Print the path of a CPython interpreter of version X.Y (`tools/find-python.sh 3.10`), able to make venvs.
# Looked for in: $PYTHON_X_Y (e.g. PYTHON_3_10=/opt/py310/bin/python3.10), pyenv (its newest X.Y.Z, active or
# not), pyenv's versions directory without pyenv on PATH ($PYENV_ROOT, else ~/.pyenv), then pythonX.Y on PATH.
# Fails, saying how to get one, when there is none: a missing interpreter is an error, never a skip.
set -euo pipefail
want=${1:?usage: find-python.sh X.Y}
[[ $want =~ ^3\.[0-9]+$ ]] || { echo "find-python: want X.Y (e.g. 3.10), not '$want'" >&2; exit 2; }

fits() {  # the interpreter runs, is X.Y, and has venv and ensurepip (Debian's python3.X without python3.X-venv has not)
  [ -n "$1" ] && [ -x "$1" ] && [ "$("$1" -c 'import sys, venv, ensurepip; print("%d.%d" % sys.version_info[:2])' \
    2>/dev/null)" = "$want" ]
}

override="PYTHON_${want//./_}"
if [ -n "${!override:-}" ]; then  # named explicitly: that one or an error
  fits "${!override}" && { echo "${!override}"; exit 0; }
  echo "find-python: $override=${!override} is not a Python $want that can make venvs" >&2
  exit 1
fi
candidates=()
root=${PYENV_ROOT:-$HOME/.pyenv}
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  for v in $(pyenv versions --bare --skip-aliases 2>/dev/null | grep -E "^${want//./\\.}\.[0-9]+$" | sort -rV); do
    candidates+=("$(PYENV_VERSION=$v pyenv which "python$want" 2>/dev/null || true)")
  done
fi
for d in $(ls -d "$root/versions/$want".* 2>/dev/null | sort -rV); do
  candidates+=("$d/bin/python$want")
done
IFS=: read -ra path_dirs <<<"${PATH:-}"
for d in "${path_dirs[@]}"; do
  case $d in */shims) continue ;; esac  # pyenv's shims pick a version by themselves
  candidates+=("$d/python$want")
done

for c in "${candidates[@]}"; do
  if fits "$c"; then
    echo "$c"
    exit 0
  fi
done
{
  echo "find-python: no Python $want here (looked in \$$override, pyenv, $root/versions, PATH)."
  echo "find-python: install it, e.g. \`pyenv install $want\` (or apt-get install python$want python$want-venv),"
  echo "find-python: or name one: make test-pythons $override=/path/to/python$want"
} >&2
exit 1
