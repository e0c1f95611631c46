#!/usr/bin/env bash
# TCP relaying benchmark: rouse's `tcp` listener vs systemd-socket-proxyd, same
# nginx backend, one run.
#
#   benches/tcp.sh
#
# Rows (oha, HTTP/1.1 over the relay, small nginx body):
#   direct          nginx itself, for reference
#   socket-proxyd   systemd-socket-activate -l ADDR systemd-socket-proxyd BACKEND
#   rouse tcp       rouse with protocol = "tcp", route kind "none" (always ready)
# each with keep-alive connections and with one new connection per request;
# then a bulk row: MiB/s of a large file fetched with curl through each relay.
#
# Environment knobs:
#   DURATION=10s   oha run length per row
#   CONNS=64       concurrent connections
#   BULK_MIB=512   size of the bulk file (tmpfs); BULK_MIB=0 skips the bulk rows
#   NO_BUILD=1     skip `cargo build --release`
#   OHA=path       oha binary (default: oha on PATH, then ~/.cargo/bin/oha)
#
# Needs: cargo, curl, jq, oha, nginx, systemd-socket-activate and
# systemd-socket-proxyd. Results: a table on stdout, raw oha JSON in
# target/bench/tcp-*.json.
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LC_ALL=C

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
BULK_MIB=${BULK_MIB:-512}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ROUSE=$TARGET_DIR/release/rouse
OUT=$TARGET_DIR/bench

case ${1:-} in
    -h | --help | help) show_help; exit 0 ;;
    "") ;;
    *) die "no arguments expected (see --help)" ;;
esac

find_oha
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "nginx not found (apt-get install nginx-light)"
ACTIVATE=$(command -v systemd-socket-activate || true)
[[ -n $ACTIVATE ]] || die "systemd-socket-activate not found"
PROXYD=
for p in /lib/systemd/systemd-socket-proxyd /usr/lib/systemd/systemd-socket-proxyd; do
    [[ -x $p ]] && PROXYD=$p && break
done
[[ -n $PROXYD ]] || die "systemd-socket-proxyd not found"
for tool in curl jq; do command -v "$tool" >/dev/null || die "$tool is required"; done

# --- process bookkeeping: everything we start is stopped by PID on exit ------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/rouse-tcp-bench.XXXXXX")
BULK=
PIDS=()
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ $rc -ne 0 ]]; then
        mkdir -p "$OUT"
        cp "$TMP"/*.log "$OUT"/ 2>/dev/null || true
        echo "tcp.sh: failed (exit $rc); logs copied to $OUT/" >&2
    fi
    [[ -z $BULK ]] || rm -f "$BULK"
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port_init "$TMP" # free_port: a loopback port nothing answers on, below the ephemeral range

# wait_ok URL PID: until URL answers 200 (10 s max), or the process dies.
wait_ok() {
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$2" 2>/dev/null || die "process $2 for $1 exited (see $TMP/*.log)"
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" || true) == 200 ]] && return 0
        sleep 0.1
    done
    die "$1 did not answer 200 within 10 s"
}

# --- build ---------------------------------------------------------------------
if [[ -z ${NO_BUILD:-} ]]; then
    cargo build --release --quiet
fi
[[ -x $ROUSE ]] || die "$ROUSE not built"

# --- backend: nginx, one worker per core, small body and a bulk file ------------
NGINX_PORT=$(free_port)
if ((BULK_MIB > 0)); then
    BULK_DIR=/dev/shm
    [[ -w $BULK_DIR ]] || BULK_DIR=$TMP
    BULK=$(mktemp "$BULK_DIR/rouse-tcp-bench.XXXXXX")
    head -c "$((BULK_MIB * 1024 * 1024))" /dev/urandom >"$BULK"
    chmod 644 "$BULK" # nginx workers run as an unprivileged user
fi
cat >"$TMP/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096 reuseport;
        location = / { return 200 "hello from nginx\n"; }
        location = /bulk { alias ${BULK:-/dev/null}; }
    }
}
CONF
"$NGINX" -c "$TMP/nginx.conf" -p "$TMP" >"$TMP/nginx.log" 2>&1 &
PIDS+=($!)
wait_ok "http://127.0.0.1:$NGINX_PORT/" "${PIDS[-1]}"

# --- systemd-socket-proxyd, socket-activated the way a unit would do it ---------
PROXYD_PORT=$(free_port)
"$ACTIVATE" -l "127.0.0.1:$PROXYD_PORT" "$PROXYD" "127.0.0.1:$NGINX_PORT" >"$TMP/proxyd.log" 2>&1 &
PIDS+=($!)
PROXYD_PID=$! # systemd-socket-activate execs the proxy: same pid
wait_ok "http://127.0.0.1:$PROXYD_PORT/" "${PIDS[-1]}"

# --- rouse, tcp listener --------------------------------------------------------
ROUSE_PORT=$(free_port)
cat >"$TMP/rouse.toml" <<CONF
[[listener]]
name = "tcp"
bind = "127.0.0.1:$ROUSE_PORT"
protocol = "tcp"
route = "nginx"

[[route]]
name = "nginx"
upstream = "127.0.0.1:$NGINX_PORT"

[route.backend]
kind = "none"
CONF
RUST_LOG=warn "$ROUSE" serve -c "$TMP/rouse.toml" >"$TMP/rouse.log" 2>&1 &
PIDS+=($!)
ROUSE_PID=$!
wait_ok "http://127.0.0.1:$ROUSE_PORT/" "${PIDS[-1]}"

# --- runs -----------------------------------------------------------------------
mkdir -p "$OUT"
TARGETS=("direct $NGINX_PORT -" "socket-proxyd $PROXYD_PORT $PROXYD_PID" "rouse-tcp $ROUSE_PORT $ROUSE_PID")
TICK=$(getconf CLK_TCK)
# cpu_ticks PID: user + system time the process has used so far, in clock ticks.
cpu_ticks() { if [[ $1 == - ]]; then echo 0; else awk '{ print $14 + $15 }' "/proc/$1/stat"; fi; }
declare -A RPS
rows=()
for mode in keepalive newconn; do
    flags=()
    [[ $mode == newconn ]] && flags=(--disable-keepalive)
    for t in "${TARGETS[@]}"; do
        read -r name port pid <<<"$t"
        json=$OUT/tcp-$name-$mode.json
        cpu0=$(cpu_ticks "$pid")
        "$OHA" --no-tui -c "$CONNS" -z "$DURATION" "${flags[@]}" --output-format json \
            "http://127.0.0.1:$port/" >"$json"
        cpu1=$(cpu_ticks "$pid")
        line=$(jq -r '[
                (.summary.requestsPerSec // 0),
                ((.latencyPercentiles.p50 // 0) * 1000),
                ((.latencyPercentiles.p99 // 0) * 1000),
                ((.summary.successRate // 0) * 100),
                ([.statusCodeDistribution[]] | add // 0)
            ] | @tsv' "$json")
        read -r rps p50 p99 ok n <<<"$line"
        RPS[$name-$mode]=$rps
        cpu=-
        [[ $pid == - ]] || cpu=$(awk -v t=$((cpu1 - cpu0)) -v hz="$TICK" -v n="$n" 'BEGIN { printf "%.1f", n ? t * 1e6 / hz / n : 0 }')
        rows+=("$(printf '%s\t%s\t%.0f\t%.3f\t%.3f\t%.1f%%\t%s' "$mode" "$name" "$rps" "$p50" "$p99" "$ok" "$cpu")")
    done
done

bulk_rows=()
if ((BULK_MIB > 0)); then
    for t in "${TARGETS[@]}"; do
        read -r name port pid <<<"$t"
        best=0
        cpu0=$(cpu_ticks "$pid")
        for _ in 1 2 3; do
            bps=$(curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$port/bulk")
            best=$(awk -v a="$best" -v b="$bps" 'BEGIN { print (b > a) ? b : a }')
        done
        cpu1=$(cpu_ticks "$pid")
        cpu=-
        [[ $pid == - ]] || cpu=$(awk -v t=$((cpu1 - cpu0)) -v hz="$TICK" -v m="$BULK_MIB" 'BEGIN { printf "%.0f", t * 1000 / hz / (3 * m / 1024) }')
        bulk_rows+=("$(awk -v n="$name" -v b="$best" -v c="$cpu" 'BEGIN { printf "%s\t%.0f\t%s", n, b / 1048576, c }')")
    done
fi

# --- report ---------------------------------------------------------------------
{
    printf 'mode\ttarget\treq/s\tp50 ms\tp99 ms\tsuccess\tproxy cpu us/req\n'
    printf '%s\n' "${rows[@]}"
} | column -t -s $'\t' | tee "$OUT/tcp.txt"
{
    echo
    for mode in keepalive newconn; do
        awk -v m="$mode" -v r="${RPS[rouse-tcp-$mode]}" -v p="${RPS[socket-proxyd-$mode]}" \
            'BEGIN { printf "%s: rouse tcp / socket-proxyd = %.2fx req/s\n", m, (p > 0 ? r / p : 0) }'
    done
} | tee -a "$OUT/tcp.txt"
if ((${#bulk_rows[@]})); then
    printf '\nbulk (%s MiB file, best of 3 curl downloads)\n' "$BULK_MIB"
    { printf 'target\tMiB/s\tproxy cpu ms/GiB\n'; printf '%s\n' "${bulk_rows[@]}"; } | column -t -s $'\t'
fi | tee -a "$OUT/tcp.txt"
printf '\nconns=%s duration=%s cores=%s\n' "$CONNS" "$DURATION" "$(nproc)" | tee -a "$OUT/tcp.txt"
