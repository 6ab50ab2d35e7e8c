#!/usr/bin/env bash
# What the test suite needs from the machine beyond Python: a running Docker Engine, static busybox and bash (a
# shell image is made from them), Debian's registry and htpasswd (a private registry), debootstrap (a Python image),
# bubblewrap (the job sandbox), Java (a local Spark), Chromium (the job page in a real browser), xfsprogs (a reflink
# filesystem), docker-compose v1 and psql (a job with a service container).
set -euo pipefail
need=()
[ -x /bin/busybox ] || need+=(busybox-static)
[ -x /bin/bash-static ] || need+=(bash-static)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v dockerd >/dev/null || need+=(docker.io)
command -v bwrap >/dev/null || need+=(bubblewrap)
[ -x /usr/bin/chromium ] || need+=(chromium)  # the job page's browser tests (Playwright drives it)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)  # a local Spark (tests/e2e/test_spark.py)
command -v mkfs.xfs >/dev/null || need+=(xfsprogs)  # a reflink filesystem on a loop device (tests/e2e/test_file_speed.py)
command -v docker-compose >/dev/null || need+=(docker-compose)  # compose v1: the suite's services (pytest-docker)
command -v psql >/dev/null || need+=(postgresql-client)  # examples/jobs/pgreport's job and its readiness check
if [ ${#need[@]} -gt 0 ]; then
  echo "test-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # One apt at a time: tools/run-deps.sh runs beside this in `make test-setup` (dpkg's lock fails, it does not wait).
  apt() { flock /var/lock/dsjobs-apt.lock apt-get -o DPkg::Lock::Timeout=600 "$@"; }
  apt update -qq
  apt install -y -qq "${need[@]}" >/dev/null
fi
exec "$(dirname "$0")/ensure-docker.sh"
