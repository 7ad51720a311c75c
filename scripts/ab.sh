#!/usr/bin/env bash
# Compares two builds of a service under the same load, in interleaved rounds (A, B, A, B, …), so that
# a machine whose speed drifts from minute to minute (2-core machines do, by ±10–20%) is read as noise
# and not as a difference. Each round starts the binary on a fresh database, warms it up, runs wrk's
# POST /foos for SECONDS, waits two more seconds for its relay, handlers and views to work off what the
# load left them, and prints:
#   creates/s, p50, p99   as wrk measured them
#   cpu/create            the service's CPU (user + system, /proc/PID/stat) per create during the load,
#                         then including the two seconds after it (what the handlers and views did late)
#   written/create        bytes the service wrote (write and pwrite calls, /proc/PID/io) per create,
#                         over the same window: with SQLite, mostly WAL pages
#
#   scripts/ab.sh [-c CONNECTIONS] [-d SECONDS] [-n ROUNDS] [-p POSTGRES_URL] BIN_A BIN_B
#
# The binaries are release builds of a service with `POST /foos` taking {"bar": …} (the quickstart:
# `cargo build --release -p minos-examples --bin quickstart`, copied aside before building the other).
# Without -p each runs on its embedded default (SQLite in a fresh folder); with -p on a fresh schema of
# that PostgreSQL database, dropped afterwards. Needs wrk (apt-get install wrk), curl and python3.
set -euo pipefail
connections=32
seconds=8
rounds=3
postgres=
while getopts "c:d:n:p:" option; do
    case $option in
        c) connections=$OPTARG ;;
        d) seconds=$OPTARG ;;
        n) rounds=$OPTARG ;;
        p) postgres=$OPTARG ;;
        *) sed -n '2,21p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 2 ] || { sed -n '2,21p' "$0" >&2; exit 2; }
for tool in wrk curl python3; do
    command -v $tool >/dev/null || { echo "$tool is needed (apt-get install $tool)" >&2; exit 1; }
done
[ -z "$postgres" ] || command -v psql >/dev/null || { echo "psql is needed with -p" >&2; exit 1; }
bins=("$(realpath "$1")" "$(realpath "$2")")
port=4596
dir=$(mktemp -d)
pid=
schema=
body="$dir/post.lua"
cat >"$body" <<'EOF'
wrk.method = "POST"
wrk.body = '{"bar": "test"}'
wrk.headers["Content-Type"] = "application/json"
EOF
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    if [ -n "$schema" ]; then psql -q "$postgres" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT

# The process's CPU ticks (user + system) and bytes written so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
written() { awk '/^wchar/ {print $2}' "/proc/$1/io"; }

round() {
    local bin=$1 work="$dir/run"
    rm -rf "$work"; mkdir -p "$work"
    local storage="sqlite://$work/store.db"
    if [ -n "$postgres" ]; then
        schema="ab_$(date +%s%N)"
        psql -q "$postgres" -c "CREATE SCHEMA $schema" >/dev/null
        case $postgres in *\?*) storage="$postgres&schema=$schema" ;; *) storage="$postgres?schema=$schema" ;; esac
    fi
    (cd "$work" && MINOS_STORAGE="$storage" MINOS_HTTP_PORT=$port exec "$bin" >"$work/log" 2>&1) &
    pid=$!
    for _ in $(seq 1 200); do curl -s -o /dev/null "localhost:$port/health" && break; sleep 0.05; done
    wrk -t1 -c4 -d1s -s "$body" "http://127.0.0.1:$port/foos" >/dev/null
    sleep 1
    local t0 w0 t1 t2 w2 out
    t0=$(ticks $pid); w0=$(written $pid)
    out=$(wrk -t$((connections < 2 ? 1 : 2)) -c"$connections" -d"${seconds}s" --latency -s "$body" \
        "http://127.0.0.1:$port/foos")
    t1=$(ticks $pid)
    sleep 2
    t2=$(ticks $pid); w2=$(written $pid)
    kill $pid; wait $pid 2>/dev/null || true; pid=
    if [ -n "$schema" ]; then psql -q "$postgres" -c "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1; schema=; fi
    if echo "$out" | grep -q "Non-2xx"; then echo "$(basename "$bin"): answers other than 2xx" >&2; echo "$out" >&2; exit 1; fi
    python3 - "$(basename "$bin")" "$out" "$t0" "$t1" "$t2" "$w0" "$w2" "$(getconf CLK_TCK)" <<'EOF'
import re, sys
name, out, t0, t1, t2, w0, w2, hz = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
creates = int(re.search(r"(\d+) requests in", out).group(1))
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = re.search(r"\s50%\s+(\S+)", out).group(1)
p99 = re.search(r"\s99%\s+(\S+)", out).group(1)
us = lambda ticks: ticks * 1e6 / hz / creates
print(f"{name:<24} {rate:>10,.0f} {p50:>9} {p99:>9} {us(t1 - t0):>9.1f} {us(t2 - t0):>9.1f} {(w2 - w0) / creates / 1024:>9.1f}")
EOF
}

printf "%-24s %10s %9s %9s %9s %9s %9s\n" "binary (c=$connections)" "creates/s" "p50" "p99" "cpu µs" "+after" "KB w"
for _ in $(seq 1 "$rounds"); do
    round "${bins[0]}"
    round "${bins[1]}"
done
