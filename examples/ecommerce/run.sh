#!/usr/bin/env bash
# Starts the ecommerce system on this machine: the registry (`minos discovery`, port 5567), the API
# gateway (`minos gateway`, port 5566) and the services ported so far, on PostgreSQL (a schema per
# service) and Kafka; waits until every service is registered and healthy; stops it all on Ctrl-C.
#
#   examples/ecommerce/run.sh
#   MINOS_POSTGRES=postgresql://postgres@127.0.0.1:5432/test MINOS_KAFKA=127.0.0.1:9092 examples/ecommerce/run.sh
#   MINOS_AUTH_SECRET=… (default: a random one for this run)
#
# PostgreSQL and Kafka must be running (scripts/postgres-dev.sh start, scripts/kafka-dev.sh start).
set -euo pipefail
cd "$(dirname "$0")/../.."

postgres="${MINOS_POSTGRES:-postgresql://postgres@127.0.0.1:5432/test}"
# One secret signs and checks every token (the authentication service issues them at GET /login).
export MINOS_AUTH_SECRET="${MINOS_AUTH_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
kafka="${MINOS_KAFKA:-127.0.0.1:9092}"
services=(authentication customer product cart ticket payment order review)

cargo build --release -q -p minos --bin minos
cargo build --release -q -p minos-ecommerce --bins
bin=target/release
for binary in minos "${services[@]}"; do
    [ -x "$bin/$binary" ] || { echo "$bin/$binary was not built" >&2; exit 1; }
done
mkdir -p .minos
pids=()
stop() {
    trap - INT TERM EXIT
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    echo "stopped"
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

"$bin/minos" discovery --storage "sqlite://.minos/ecommerce-discovery.db" &
pids+=($!)
export MINOS_DISCOVERY_URL=http://127.0.0.1:5567
for service in "${services[@]}"; do
    MINOS_STORAGE="$postgres?schema=ecommerce_$service" MINOS_BROKER="kafka://$kafka" \
        MINOS_HTTP_HOST=127.0.0.1 "$bin/$service" &
    pids+=($!)
done
"$bin/minos" gateway --config examples/ecommerce/config/gateway.yml &
pids+=($!)

echo "waiting for ${services[*]} to register and answer"
for _ in $(seq 1 120); do
    registered=$(curl -sf http://127.0.0.1:5567/microservices 2>/dev/null || true)
    missing=0
    for service in "${services[@]}"; do
        grep -q "\"$service\"" <<<"$registered" || missing=1
    done
    if [ "$missing" = 0 ] && curl -sf http://127.0.0.1:5566/products >/dev/null; then
        echo "ready: the API is on http://127.0.0.1:5566 (Ctrl-C stops everything)"
        wait -n "${pids[@]}" || true
        echo "a process ended: stopping"
        exit 1
    fi
    sleep 1
done
echo "the services did not become ready in 120 s" >&2
exit 1
