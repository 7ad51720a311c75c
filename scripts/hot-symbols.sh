#!/usr/bin/env bash
# Refreshes examples/hot-symbols.txt: the functions the release quickstart runs while it starts, serves
# POST /foos, GET /foos/example, GET /foos?bar=…, a malformed body and an unknown route, and handles
# the events those set off (its relay, handler and views), as counted by valgrind's callgrind. Release
# builds of the examples link these first (examples/build.rs), so their code shares few pages.
# Needs valgrind (apt-get install valgrind) and curl. Run it after a compiler or dependency upgrade:
# the file names functions with their compiler-made hashes, which also change with the features a
# build turns on. So it records two builds: the quickstart alone (`cargo build --release -p
# minos-examples --bin quickstart`, as a service is deployed) and the quickstart beside the examples'
# benchmarks and tests (`cargo bench -p minos-examples --bench wrk`, `cargo run --release --example
# quickstart`), where their dependencies turn on more features.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
dir=$(mktemp -d)
pid=
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$dir"' EXIT
port=4547

# Runs the release quickstart under callgrind through start-up and a few requests; its functions'
# names as the linker knows them (Rust's mangled names and C's plain ones, not libc's versioned ones,
# which live in other files, nor unnamed addresses) on stdout.
record() {
    rm -f "$dir"/store*
    MINOS_STORAGE="sqlite://$dir/store.db" MINOS_HTTP_PORT=$port \
        valgrind --tool=callgrind --demangle=no --callgrind-out-file="$dir/calls" \
        target/release/quickstart >"$dir/log" 2>&1 &
    pid=$!
    for _ in $(seq 1 120); do
        curl -s -o /dev/null "localhost:$port/foos/example" && break
        sleep 0.5
    done
    for _ in $(seq 1 30); do
        curl -s -X POST "localhost:$port/foos" -H 'Content-Type: application/json' -d '{"bar": "hot"}' >/dev/null
        curl -s "localhost:$port/foos/example" >/dev/null
        curl -s "localhost:$port/foos?bar=hot" >/dev/null
    done
    curl -s -X POST "localhost:$port/foos" -H 'Content-Type: application/json' -d '{"bar":' >/dev/null
    curl -s "localhost:$port/no-such-route" >/dev/null
    sleep 5
    kill -INT "$pid"
    wait "$pid" || true
    pid=
    sed -n -E 's/^c?fn=\([0-9]+\) (.*)$/\1/p' "$dir/calls" |
        sed -E "s/'[0-9]+$//" |
        grep -E '^(_ZN|_R|[A-Za-z_][A-Za-z0-9_.]*$)' |
        grep -v '@'
}

cargo build --release -p minos-examples --bin quickstart
record >"$dir/alone"
cargo bench -p minos-examples --bench wrk --no-run
record >"$dir/beside"
LC_ALL=C sort -u "$dir/alone" "$dir/beside" >examples/hot-symbols.txt
echo "examples/hot-symbols.txt: $(wc -l <examples/hot-symbols.txt) functions"
