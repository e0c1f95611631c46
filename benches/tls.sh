#!/usr/bin/env bash
# HTTPS benchmark: rouse terminating TLS vs nginx terminating TLS, in front of the same plain
# HTTP backend (nginx returning a small body), in one run, with oha:
#   keep-alive:      oha --insecure -c 64 -z $DURATION
#   new connections: oha --insecure --disable-keepalive -c 32 -z $DURATION   (TLS handshakes/s)
# The certificate is ECDSA P-256, made here with openssl. Needs nginx, openssl, oha, curl.
#   benches/tls.sh          DURATION=10s by default; NO_BUILD=1 skips the release build
# Results: a table on stdout and target/bench/tls.md.
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LC_ALL=C

DURATION=${DURATION:-10s}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUSE=${CARGO_TARGET_DIR:-$ROOT/target}/release/rouse
OUT=${CARGO_TARGET_DIR:-$ROOT/target}/bench
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
HOST=bench.local
for tool in "$OHA" "$NGINX" openssl curl jq; do command -v "$tool" >/dev/null || die "$tool is required"; done

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
free_port_init "$TMP" # free_port: a loopback port nothing answers on, below the ephemeral range
wait_up() { # URL
    local i
    for ((i = 0; i < 200; i++)); do
        curl -sk -o /dev/null --resolve "$HOST:${1##*:}:127.0.0.1" "${1/127.0.0.1/$HOST}/" && return 0
        sleep 0.05
    done
    die "$1 did not answer"
}

[[ -n ${NO_BUILD:-} ]] || cargo build --release --quiet
mkdir -p "$OUT" "$TMP/tmp"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$HOST" \
    -addext "subjectAltName=DNS:$HOST" -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null

backend=$(free_port) rouse_port=$(free_port) nginx_port=$(free_port)
cores=$(nproc)
cat >"$TMP/nginx.conf" <<EOF
worker_processes $cores;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $TMP/tmp/body; proxy_temp_path $TMP/tmp/proxy;
    fastcgi_temp_path $TMP/tmp/fastcgi; uwsgi_temp_path $TMP/tmp/uwsgi; scgi_temp_path $TMP/tmp/scgi;
    keepalive_requests 1000000;
    upstream backend { server 127.0.0.1:$backend; keepalive 64; }
    server { listen 127.0.0.1:$backend; location / { return 200 "hello\n"; } }
    server {
        listen 127.0.0.1:$nginx_port ssl http2;
        ssl_certificate $TMP/cert.pem; ssl_certificate_key $TMP/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$host;
        }
    }
}
EOF
"$NGINX" -c "$TMP/nginx.conf" -p "$TMP" -g 'daemon off;' >"$TMP/nginx.log" 2>&1 &
PIDS+=($!)
cat >"$TMP/rouse.toml" <<EOF
[[listener]]
name = "https"
bind = "127.0.0.1:$rouse_port"
protocol = "https"

[[route]]
name = "bench"
hosts = ["$HOST"]
upstream = "127.0.0.1:$backend"
tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }
EOF
RUST_LOG=warn "$ROUSE" serve -c "$TMP/rouse.toml" >"$TMP/rouse.log" 2>&1 &
PIDS+=($!)
wait_up "https://127.0.0.1:$rouse_port"
wait_up "https://127.0.0.1:$nginx_port"

rows=()
run() { # LABEL TARGET PORT OHA-ARGS...
    local label=$1 target=$2 port=$3 json
    shift 3
    json=$OUT/tls-$label-$target.json
    "$OHA" --no-tui --insecure --output-format json -z "$DURATION" -t 10s "$@" \
        "https://$HOST:$port/" --connect-to "$HOST:$port:127.0.0.1:$port" >"$json" 2>/dev/null ||
        "$OHA" --no-tui --insecure --output-format json -z "$DURATION" -t 10s "$@" \
            -H "Host: $HOST" "https://127.0.0.1:$port/" >"$json"
    rows+=("$(jq -r --arg l "$label" --arg t "$target" \
        '[$l, $t, (.summary.requestsPerSec|floor), (.latencyPercentiles.p50*1000*1000|round/1000), (.latencyPercentiles.p99*1000*1000|round/1000), (.summary.successRate*100)] | @tsv' "$json")")
}
for target in rouse nginx; do
    port=$rouse_port
    [[ $target == nginx ]] && port=$nginx_port
    run keepalive "$target" "$port" -c 64
    run new-conn "$target" "$port" -c 32 --disable-keepalive
done

{
    echo "machine: nproc=$cores, kernel $(uname -r); $("$ROUSE" --version); $("$NGINX" -v 2>&1); $("$OHA" --version | head -n 1)"
    echo "ECDSA P-256, TLS via oha --insecure, -z $DURATION; backend: nginx return 200"
    echo
    echo "| scenario | target | req/s | p50 ms | p99 ms | success % |"
    echo "|---|---|--:|--:|--:|--:|"
    printf '%s\n' "${rows[@]}" | awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }'
} | tee "$OUT/tls.md"
