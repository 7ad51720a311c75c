#!/usr/bin/env bash
# TLS on the local PostgreSQL server, for the TLS tests: a CA and a server certificate for localhost and
# 127.0.0.1 (scripts/test-ca.sh), installed as the server's certificate (a configuration reload; plain
# connections keep working). A second CA, which signed nothing the server shows, is made beside them.
#   scripts/postgres-tls.sh on    prints the directory holding ca.pem and other-ca.pem
#   scripts/postgres-tls.sh off   the server's own certificate settings again
set -euo pipefail
url="${MINOS_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}"
# Outside the checkout: the server reads these files again at every restart.
dir=/var/lib/postgresql/minos-test-tls

make_certificates() {
    "$(dirname "$0")/test-ca.sh" "$dir"
    chown -R postgres:postgres "$dir" 2>/dev/null || true
}

case "${1:-on}" in
on)
    make_certificates >&2
    psql "$url" -v ON_ERROR_STOP=1 -q >&2 <<SQL
ALTER SYSTEM SET ssl = on;
ALTER SYSTEM SET ssl_cert_file = '$dir/server.pem';
ALTER SYSTEM SET ssl_key_file = '$dir/server.key';
SELECT pg_reload_conf();
SQL
    # The reload is asynchronous: wait until a verified connection works.
    for _ in $(seq 1 50); do
        if PGSSLMODE=verify-full PGSSLROOTCERT="$dir/ca.pem" \
            psql "postgresql://postgres@localhost:5432/postgres" -tAc 'SELECT 1' >/dev/null 2>&1; then
            echo "$dir"
            exit 0
        fi
        sleep 0.1
    done
    echo "PostgreSQL did not take the test certificate (see its log)" >&2
    exit 1
    ;;
off)
    psql "$url" -v ON_ERROR_STOP=1 -q <<'SQL'
ALTER SYSTEM RESET ssl_cert_file;
ALTER SYSTEM RESET ssl_key_file;
ALTER SYSTEM RESET ssl;
SELECT pg_reload_conf();
SQL
    ;;
*)
    echo "usage: $0 on|off" >&2
    exit 2
    ;;
esac
