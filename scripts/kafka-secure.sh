#!/usr/bin/env bash
# Two more local nisshi brokers for the Kafka security tests, with certificates from a test CA
# (scripts/test-ca.sh):
#   127.0.0.1:9094  TLS only (security_protocol: ssl)
#   127.0.0.1:9095  TLS and SCRAM-SHA-512 logins (security_protocol: sasl_ssl), user `minos`, password
#                   from MINOS_TEST_KAFKA_SASL_PASSWORD (default `minos-test-secret`)
#   scripts/kafka-secure.sh start   prints the directory holding ca.pem and other-ca.pem
#   scripts/kafka-secure.sh stop
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.minos/kafka-secure"
password="${MINOS_TEST_KAFKA_SASL_PASSWORD:-minos-test-secret}"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
    for _ in $(seq 1 100); do
        listening "$1" && return 0
        sleep 0.1
    done
    echo "nisshi did not start on $1; see $dir" >&2
    exit 1
}

broker() {
    # broker NAME PORT ARGS...: a broker in the background, its pid in NAME.pid. A simple command in
    # the background, so $! is the broker itself (nohup execs it).
    local name=$1 port=$2
    shift 2
    cd "$dir"
    nohup nisshi broker --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" --group-initial-rebalance-delay 0s \
        "$@" >"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
    cd "$root"
    wait_for "$port"
}

stop() {
    local name
    for name in tls sasl-setup sasl; do
        if [ -f "$dir/$name.pid" ]; then
            kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
            rm -f "$dir/$name.pid"
        fi
    done
}

case "${1:-start}" in
start)
    "$root/scripts/kafka-dev.sh" install >&2
    mkdir -p "$dir"
    stop
    "$root/scripts/test-ca.sh" "$dir" >&2
    tls=(--cert "$dir/server.pem" --key "$dir/server.key")
    broker tls 9094 --storage-engine "memory://nisshi/" "${tls[@]}" >&2
    # Logins need stored users: made on the same storage before the broker asks for them.
    rm -f "$dir"/users.db*
    broker sasl-setup 9095 --storage-engine "sqlite://users.db" >&2
    nisshi user create --broker tcp://127.0.0.1:9095 --mechanism scram512 minos "$password" >&2
    kill "$(cat "$dir/sasl-setup.pid")"
    rm -f "$dir/sasl-setup.pid"
    for _ in $(seq 1 50); do listening 9095 || break; sleep 0.1; done
    if listening 9095; then
        echo "127.0.0.1:9095 is still taken" >&2
        exit 1
    fi
    broker sasl 9095 --storage-engine "sqlite://users.db" --authentication "${tls[@]}" >&2
    echo "$dir"
    ;;
stop)
    stop
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
