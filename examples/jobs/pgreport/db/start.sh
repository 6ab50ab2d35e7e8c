#!/bin/sh
# The database container's command: a fresh PostgreSQL 15 cluster seeded from seed.sql, then the server on TCP.
# TCP opens only once the seed is in (the seed runs on a server that listens on a Unix socket only), so a client
# that gets in finds the tables.
set -eu
bin=/usr/lib/postgresql/15/bin
export PGDATA=/var/lib/postgresql/data
sock=/tmp
# --no-sync: a test database thrown away with its container has nothing to keep through a power loss.
"$bin/initdb" --no-sync --username=postgres --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust \
    --auth-host=scram-sha-256 >/dev/null
# Clients come through docker-proxy, from the network's gateway, not from 127.0.0.1.
echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
"$bin/pg_ctl" -w -s -o "-c listen_addresses='' -c unix_socket_directories=$sock" start
psql -q -h "$sock" -U postgres -v ON_ERROR_STOP=1 -v pw="$REPORTER_PASSWORD" <<'SQL'
CREATE ROLE reporter LOGIN PASSWORD :'pw';
CREATE DATABASE shop;
SQL
psql -q -h "$sock" -U postgres -d shop -v ON_ERROR_STOP=1 -f /db/seed.sql
"$bin/pg_ctl" -w -s -m fast stop
exec "$bin/postgres" -c listen_addresses='*' -c unix_socket_directories=$sock
