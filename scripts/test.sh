#!/usr/bin/env bash
# The test command: provisions what the tests need, then runs every test of the workspace.
#   scripts/test.sh                 every test (arguments go to `cargo test`, e.g. `-p minos --test saga`)
#
# 1. PostgreSQL at MINOS_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test): the local
#    cluster is started, or installed from Debian's packages when there is none (scripts/postgres-dev.sh).
#    Schemas left by earlier runs' tests are dropped.
# 2. A Kafka-protocol broker at MINOS_TEST_KAFKA (default 127.0.0.1:9092): nisshi from crates.io, installed
#    on first use (about 14 minutes) and started fresh for this run, stopped at the end
#    (scripts/kafka-dev.sh). Set MINOS_TEST_KAFKA yourself to use a broker you run. Beside it, two
#    brokers with TLS (127.0.0.1:9094) and with TLS and SCRAM logins (127.0.0.1:9095) for the Kafka
#    security tests (scripts/kafka-secure.sh; MINOS_TEST_KAFKA_SECURE names their test CA's directory).
# 3. Python's confluent-kafka for the stock-client test (pip).
# 4. Chromium for the dashboard's browser test (Debian's `chromium`, installed with apt-get when missing), and
#    Python's kubernetes-validate for the test of `minos deploy` (pip).
# 5. The validators of the API specs test (examples/tests/specs.rs): Python's openapi-spec-validator (pip)
#    and @asyncapi/parser (`npm ci` in scripts/asyncapi, when its node_modules is missing).
# 6. cargo test --workspace.
#
# The restart test restarts the local PostgreSQL server under load; set MINOS_TEST_PG_RESTART=0 to keep
# your server running (the test then says it did not run). The TLS tests give the local server a
# certificate from a CA made by scripts/postgres-tls.sh for the run (MINOS_TEST_POSTGRES_TLS names its
# directory; set it yourself for a server you configured).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

# What this run set up and takes down at the end, last first.
cleanups=()
cleanup() {
    local i
    for ((i = ${#cleanups[@]} - 1; i >= 0; i--)); do eval "${cleanups[$i]}" || true; done
}
trap cleanup EXIT

step "PostgreSQL"
default_pg="postgresql://postgres@127.0.0.1:5432/test"
export MINOS_TEST_POSTGRES_URL="${MINOS_TEST_POSTGRES_URL:-$default_pg}"
if [ "$MINOS_TEST_POSTGRES_URL" = "$default_pg" ]; then
    scripts/postgres-dev.sh start
    # The local server is ours to restart (the restart test), unless told otherwise.
    export MINOS_TEST_PG_RESTART="${MINOS_TEST_PG_RESTART:-1}"
    # ... and to give a certificate from a CA made here, for the TLS tests (undone at the end).
    if [ -z "${MINOS_TEST_POSTGRES_TLS:-}" ]; then
        MINOS_TEST_POSTGRES_TLS="$(scripts/postgres-tls.sh on)"
        export MINOS_TEST_POSTGRES_TLS
        cleanups+=("scripts/postgres-tls.sh off >/dev/null")
    fi
fi
# Schemas left by earlier runs' tests, one transaction each (a single one would need a lock per table of
# every schema at once).
psql "$MINOS_TEST_POSTGRES_URL" -v ON_ERROR_STOP=1 -q <<'SQL'
SET client_min_messages = warning;
SELECT format('DROP SCHEMA %I CASCADE', nspname) FROM pg_namespace
 WHERE nspname LIKE 'minos\_t\_%' OR nspname LIKE 'minos\_bench\_%' \gexec
SQL

step "Kafka"
if [ -z "${MINOS_TEST_KAFKA:-}" ]; then
    # A fresh broker (memory storage): no messages left by earlier runs.
    scripts/kafka-dev.sh stop
    scripts/kafka-dev.sh start
    cleanups+=("scripts/kafka-dev.sh stop")
    # Two more, with TLS and with SCRAM logins, for the Kafka security tests.
    MINOS_TEST_KAFKA_SECURE="$(scripts/kafka-secure.sh start)"
    export MINOS_TEST_KAFKA_SECURE
    cleanups+=("scripts/kafka-secure.sh stop")
    export MINOS_TEST_KAFKA=127.0.0.1:9092
    # The outage test pauses this broker (SIGSTOP/SIGCONT) when it is ours; a broker someone else
    # started on the port is used as it is, and the tests that would pause it say they did not run.
    if MINOS_TEST_KAFKA_PID="$(scripts/kafka-dev.sh pid)"; then
        export MINOS_TEST_KAFKA_PID
    else
        echo "the broker on 127.0.0.1:9092 was not started by this checkout: not pausing it"
    fi
fi

step "Python client for the stock-client test"
if ! python3 -c "import confluent_kafka" 2>/dev/null; then
    python3 -m pip install -q confluent-kafka 2>/dev/null ||
        python3 -m pip install -q --break-system-packages confluent-kafka
fi

step "kubernetes-validate for the test of minos deploy"
if ! python3 -c "import kubernetes_validate" 2>/dev/null; then
    python3 -m pip install -q kubernetes-validate 2>/dev/null ||
        python3 -m pip install -q --break-system-packages kubernetes-validate
fi

step "Chromium for the dashboard's browser test"
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then apt=(apt-get); else apt=(sudo apt-get); fi
    "${apt[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq chromium fonts-dejavu-core >/dev/null
fi
chromium --version 2>/dev/null | grep -v "unexpected operator" || true

step "Validators of the API specs (OpenAPI, AsyncAPI)"
if ! python3 -c "import openapi_spec_validator" 2>/dev/null; then
    python3 -m pip install -q openapi-spec-validator 2>/dev/null ||
        python3 -m pip install -q --break-system-packages openapi-spec-validator
fi
if [ ! -d scripts/asyncapi/node_modules/@asyncapi/parser ]; then
    (cd scripts/asyncapi && npm ci --no-audit --no-fund --loglevel=error)
fi

step "tests: cargo test --workspace $*"
cargo test --workspace "$@"
