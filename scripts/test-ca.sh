#!/usr/bin/env bash
# Certificates for the TLS tests, made with openssl in DIR when missing: ca.pem (a test CA), server.pem and
# server.key (signed by it, for localhost and 127.0.0.1), other-ca.pem (a CA that signed nothing here).
#   scripts/test-ca.sh DIR
set -euo pipefail
dir="${1:?usage: $0 DIR}"
if [ -s "$dir/ca.pem" ] && [ -s "$dir/server.pem" ] && [ -s "$dir/server.key" ] && [ -s "$dir/other-ca.pem" ]; then
    exit 0
fi
command -v openssl >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
for ca in ca other-ca; do
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$ca.key" -out "$ca.pem" -days 3650 -subj "/CN=minos test $ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
done
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out server.pem -days 3650 -extfile server.ext 2>/dev/null
cp ca.pem other-ca.pem server.pem server.key "$dir/"
chmod 600 "$dir/server.key"
