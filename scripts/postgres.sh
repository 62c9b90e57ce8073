#!/usr/bin/env bash
# A PostgreSQL server on this machine's loopback, for searches whose workers share one study
# (tune.storage=postgresql+psycopg://...) and for the tests marked `postgres`:
#   scripts/postgres.sh up | down | status | url   (make postgres, make postgres-down)
#
# `up` installs Debian's postgresql where missing, makes a cluster in $POSTGRES_STATE (default
# /var/tmp/mnist-lab-postgres, outside the repository) as the postgres user, starts it on 127.0.0.1:$POSTGRES_PORT
# (default 5433; its socket in the same folder) with password logins over TCP, and creates the role and database
# mnist_lab (password mnist_lab). It needs root, and does nothing when the server already answers. `down` stops
# the server `up` started; its data stay, so the next `up` finds the studies again. `url` prints the URL to give
# tune.storage.
set -euo pipefail

STATE=${POSTGRES_STATE:-/var/tmp/mnist-lab-postgres}
PORT=${POSTGRES_PORT:-5433}
NAME=mnist_lab  # the role, its password and the database

say() { echo "postgres: $*"; }
die() { echo "postgres: error: $*" >&2; exit 1; }

bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
answers() { [ -n "$(bin_dir)" ] && "$(bin_dir)/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 3; }
url() { echo "postgresql+psycopg://$NAME:$NAME@127.0.0.1:$PORT/$NAME"; }
as_postgres() { runuser -u postgres -- "$@"; }

install_packages() {
    [ -n "$(bin_dir)" ] && return
    say "installing postgresql (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >"$STATE/apt.log" 2>&1 \
        || { apt-get update -q >>"$STATE/apt.log" 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >>"$STATE/apt.log" 2>&1; } \
        || die "apt-get could not install postgresql: see $STATE/apt.log"
}

up() {
    if answers; then say "the server already answers: $(url)"; return; fi
    [ "$(id -u)" = 0 ] || die "starting the server needs root, to run it as the postgres user (this is user $(id -un))"
    mkdir -p "$STATE"
    install_packages
    local bin
    bin=$(bin_dir)
    chown postgres:postgres "$STATE"
    if [ ! -s "$STATE/data/PG_VERSION" ]; then
        as_postgres "$bin/initdb" -D "$STATE/data" --auth-local=trust --auth-host=scram-sha-256 -U postgres \
            >"$STATE/initdb.log" 2>&1 || die "initdb failed: see $STATE/initdb.log"
    fi
    as_postgres "$bin/pg_ctl" -D "$STATE/data" -l "$STATE/server.log" -w -t 60 \
        -o "-k $STATE -p $PORT -c listen_addresses=127.0.0.1" start >/dev/null \
        || die "the server did not start: see $STATE/server.log"
    local psql=("$bin/psql" -h "$STATE" -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA)
    if [ -z "$(as_postgres "${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = '$NAME'")" ]; then
        as_postgres "${psql[@]}" -c "CREATE ROLE $NAME LOGIN PASSWORD '$NAME'"
    fi
    if [ -z "$(as_postgres "${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$NAME'")" ]; then
        as_postgres "${psql[@]}" -c "CREATE DATABASE $NAME OWNER $NAME"
    fi
    say "up: $(url)"
}

down() {
    local bin
    bin=$(bin_dir)
    if [ -n "$bin" ] && [ -s "$STATE/data/postmaster.pid" ]; then
        as_postgres "$bin/pg_ctl" -D "$STATE/data" -m fast -w stop >/dev/null && say "stopped the server" && return
    fi
    say "no server of this script was running"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) answers && say "answers: $(url)" || { say "no server answers on 127.0.0.1:$PORT"; exit 1; } ;;
    url) url ;;
    *) echo "usage: scripts/postgres.sh up | down | status | url" >&2; exit 2 ;;
esac
