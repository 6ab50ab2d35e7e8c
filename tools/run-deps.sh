#!/usr/bin/env bash
# What running a job needs from the machine beyond Python: bubblewrap, which confines process jobs (the engine
# refuses to run them unconfined unless told `--sandbox none`).
set -euo pipefail
if command -v bwrap >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "run-deps: bubblewrap (bwrap) is missing: install it (Debian/Ubuntu: sudo apt-get install bubblewrap)," >&2
  echo "run-deps: or run jobs unconfined with --sandbox none" >&2
  exit 1
fi
echo "run-deps: installing bubblewrap" >&2
export DEBIAN_FRONTEND=noninteractive
# One apt at a time: `make test-setup` runs this beside tools/test-deps.sh, and dpkg's lock makes a second apt-get
# fail at once rather than wait (the lock timeout is for any other apt on the machine).
apt() { flock /var/lock/dsjobs-apt.lock apt-get -o DPkg::Lock::Timeout=600 "$@"; }
apt install -y -qq bubblewrap >/dev/null 2>&1 || { apt update -qq && apt install -y -qq bubblewrap >/dev/null; }
