#!/usr/bin/env bash
# A local Kafka-protocol broker for development and tests: nisshi (Apache-licensed, from crates.io),
# listening on 127.0.0.1:9092 with in-memory storage.
#   scripts/kafka-dev.sh start    install if missing (about 14 minutes the first time), start, wait for the port
#   scripts/kafka-dev.sh stop
#   scripts/kafka-dev.sh pid      the broker's process id (tests pause it with SIGSTOP/SIGCONT)
#   scripts/kafka-dev.sh install  only install it
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.minos/kafka"
pidfile="$dir/nisshi.pid"
port="${MINOS_KAFKA_PORT:-9092}"
version=0.8.1

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

install() {
    if command -v nisshi >/dev/null 2>&1 && nisshi --version 2>/dev/null | grep -q "$version"; then
        return
    fi
    echo "installing nisshi $version (a Kafka-compatible broker) from crates.io"
    # It declares a newer rustc than some toolchains but builds and runs on them.
    cargo install nisshi --version "$version" --locked --ignore-rust-version
}

case "${1:-start}" in
install)
    install
    ;;
start)
    install
    mkdir -p "$dir"
    if running && listening; then
        echo "nisshi already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"
        exit 0
    fi
    if listening; then
        echo "something else listens on 127.0.0.1:$port; using it as the broker"
        exit 0
    fi
    cd "$dir"
    # A simple command in the background, so $! is the broker itself (nohup execs it).
    nohup nisshi broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --group-initial-rebalance-delay 0s \
        --storage-engine "memory://nisshi/" >"$dir/nisshi.log" 2>&1 &
    echo $! >"$pidfile"
    cd "$root"
    for _ in $(seq 1 100); do
        listening && break
        sleep 0.2
    done
    listening || { echo "nisshi did not start; see $dir/nisshi.log" >&2; tail -n 20 "$dir/nisshi.log" >&2; exit 1; }
    echo "nisshi running (pid $(cat "$pidfile")) on 127.0.0.1:$port"
    ;;
stop)
    if running; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
        echo "nisshi stopped"
    fi
    ;;
pid)
    running && cat "$pidfile"
    ;;
*)
    echo "usage: $0 start|stop|pid|install" >&2
    exit 2
    ;;
esac
