#!/usr/bin/env bash
# Make sure a Docker Engine answers: install Debian's docker.io when there is none, start dockerd without a
# bridge network (this machine has none), wait until it answers, and leave it running.
set -euo pipefail
if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "ensure-docker: installing docker.io" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi
if ! pgrep -x dockerd >/dev/null; then
  echo "ensure-docker: starting dockerd" >&2
  mkdir -p /var/log
  nohup dockerd --bridge=none --iptables=false --ip-masq=false >/var/log/dsjobs-dockerd.log 2>&1 &
fi
for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "ensure-docker: dockerd did not answer; see /var/log/dsjobs-dockerd.log" >&2
tail -20 /var/log/dsjobs-dockerd.log >&2 || true
exit 1
