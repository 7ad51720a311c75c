#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers at 127.0.0.1:5432 with trust auth for `postgres` and a `test`
# database (what the tests use by default): starts the local cluster if it is down, installs PostgreSQL
# from Debian's packages if there is none.
#   scripts/postgres-dev.sh start
set -euo pipefail

host=127.0.0.1
port=5432

ready() { pg_isready -h "$host" -p "$port" -q 2>/dev/null; }

start_cluster() {
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    [ -n "$version" ] || return 1
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
}

install_postgres() {
    echo "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q postgresql postgresql-client
    local version conf
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    conf=/etc/postgresql/$version/main/pg_hba.conf
    # Local development server: trust connections from this machine only.
    sed -i -E 's/^(local|host)(\s+all\s+all\s+.*)\s(peer|md5|scram-sha-256)$/\1\2 trust/' "$conf"
    sed -i -E 's/^(local\s+all\s+postgres\s+)peer$/\1trust/' "$conf"
    start_cluster
}

case "${1:-start}" in
start)
    if ! ready; then
        if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
            start_cluster
        else
            install_postgres
        fi
    fi
    for _ in $(seq 1 60); do
        ready && break
        sleep 0.5
    done
    ready || { echo "PostgreSQL does not answer at $host:$port" >&2; exit 1; }
    if ! psql -h "$host" -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
        createdb -h "$host" -p "$port" -U postgres test
    fi
    echo "PostgreSQL ready at postgresql://postgres@$host:$port/test"
    ;;
*)
    echo "usage: $0 start" >&2
    exit 2
    ;;
esac
