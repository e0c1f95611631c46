#!/usr/bin/env bash
# Load and cold-start benchmarks for rouse.
#
#   benches/load.sh [load]   throughput/latency with oha: backend direct vs
#                            through rouse vs through nginx (proxy_pass with
#                            upstream keep-alive), same backend, one run.
#   benches/load.sh cold     time to first 200 on a cold exec route vs the
#                            backend's own start-to-ready time.
#
# Environment knobs:
#   DURATION=10s   oha run length per target (load)
#   CONNS=64       concurrent connections (load)
#   ITER=10        repetitions (cold)
#   NO_BUILD=1     skip `cargo build --release`
#   OHA=path       oha binary (default: oha on PATH, then ~/.cargo/bin/oha)
#   NGINX=path     nginx binary; NGINX=none runs without nginx
#
# Needs: cargo, curl, jq; oha for `load`; nginx is optional (backend falls back
# to `rouse static`, and the nginx column is dropped).
# Results: a table on stdout, Markdown + raw oha JSON in target/bench/; `cold`
# also writes its medians to target/bench/cold.tsv (key<TAB>value, read by
# benches/compare.sh).
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LC_ALL=C # EPOCHREALTIME and printf must use '.' as decimal separator

MODE=${1:-load}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
ITER=${ITER:-10}
HOST=bench.local

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ROUSE=$TARGET_DIR/release/rouse
OUT=$TARGET_DIR/bench

case $MODE in
    load | cold) ;;
    -h | --help | help) show_help; exit 0 ;;
    *) die "unknown mode '$MODE' (use: load | cold)" ;;
esac

for tool in curl jq; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
if [[ $MODE == load ]]; then
    find_oha
fi
find_nginx

# --- process bookkeeping: everything we start is killed by PID on exit -------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/rouse-bench.XXXXXX")
PIDS=()

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ $rc -ne 0 && -d $TMP ]]; then
        mkdir -p "$OUT"
        cp "$TMP"/*.log "$OUT"/ 2>/dev/null || true
        echo "load.sh: failed (exit $rc); logs copied to $OUT/" >&2
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

nap_init "$TMP"       # nap: sleep without forking
free_port_init "$TMP" # free_port: loopback port below the ephemeral range

# http_status HOSTPORT HOSTHEADER: GET / and set HTTP_CODE; fails if no answer.
# Pure bash, no fork, so it can poll at sub-millisecond cost.
HTTP_CODE=
http_status() {
    local addr=${1%:*} port=${1##*:} fd line
    HTTP_CODE=
    exec {fd}<>"/dev/tcp/$addr/$port" || return 1
    printf 'GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$2" >&"$fd" || { exec {fd}>&-; return 1; }
    IFS= read -r -t 5 -u "$fd" line || { exec {fd}>&-; return 1; }
    exec {fd}>&-
    line=${line%$'\r'}
    [[ $line =~ ^HTTP/1\.[01]\ ([0-9]{3}) ]] || return 1
    HTTP_CODE=${BASH_REMATCH[1]}
}

# wait_http HOSTPORT HOSTHEADER PID LOG [WANT]: until HOSTPORT answers (WANT
# status if given), 10 s max, or the process dies.
wait_http() {
    local hp=$1 host=$2 pid=$3 log=$4 want=${5:-} i
    for ((i = 0; i < 2000; i++)); do
        if http_status "$hp" "$host" 2>/dev/null && [[ -z $want || $HTTP_CODE == "$want" ]]; then
            # Make sure the answer came from our process, not a squatter on
            # the port while ours failed to bind.
            nap 0.2
            kill -0 "$pid" 2>/dev/null && return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "load.sh: process $pid exited before $hp answered; log:" >&2
            tail -n 20 "$log" >&2 || true
            return 1
        fi
        nap 0.005
    done
    echo "load.sh: $hp did not answer (want ${want:-any}) within 10 s; last: ${HTTP_CODE:-no answer}; log:" >&2
    tail -n 20 "$log" >&2 || true
    return 1
}

# start NAME LOG CMD...: start in background, remember the PID in $LAST_PID.
start() {
    local name=$1 log=$2
    shift 2
    "$@" >"$log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    echo "started $name (pid $LAST_PID)" >&2
}

machine_info() {
    local cpu
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    echo "machine: nproc=$(nproc), kernel $(uname -r), cpu: ${cpu:-unknown}"
    echo "rouse: $("$ROUSE" --version 2>/dev/null || echo '?') ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit'))"
    [[ -n $NGINX ]] && echo "nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
    [[ $MODE == load ]] && echo "oha: $("$OHA" --version 2>/dev/null | head -n 1)"
    return 0
}

# --- build --------------------------------------------------------------------
if [[ -z ${NO_BUILD:-} ]]; then
    echo "building rouse (release)..." >&2
    cargo build --release --quiet || die "cargo build --release failed"
fi
[[ -x $ROUSE ]] || die "$ROUSE not found"
mkdir -p "$OUT"
CORES=$(nproc)

# --- configs ------------------------------------------------------------------
nginx_common() { # nginx_common DIR: main-context boilerplate, everything in DIR
    local d=$1
    mkdir -p "$d/tmp"
    cat <<EOF
worker_processes $CORES;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
EOF
}

write_nginx_backend() { # DIR PORT
    nginx_common "$1"
    cat <<EOF
    server {
        listen 127.0.0.1:$2 default_server;
        default_type text/plain;
        location / { return 200 "hello\n"; }
    }
}
EOF
}

write_nginx_proxy() { # DIR PORT BACKEND_PORT
    nginx_common "$1"
    cat <<EOF
    upstream backend {
        server 127.0.0.1:$3;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$2 default_server;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Same header work rouse does: keep Host, add X-Forwarded-*.
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
    }
}
EOF
}

start_nginx() { # NAME DIR CONF
    start "$1" "$TMP/$1.log" "$NGINX" -c "$3" -p "$2" -g 'daemon off;'
}

# ===================================================================== load ===
run_load() {
    local backend_port rouse_port nginx_port backend_kind backend_log rouse_pid
    backend_port=$(free_port)
    rouse_port=$(free_port)
    nginx_port=$(free_port)
    rm -f "$OUT"/load-*.json "$OUT"/load.md

    # Backend
    if [[ -n $NGINX ]]; then
        backend_kind="nginx ($CORES workers, return 200)"
        mkdir -p "$TMP/nginx-backend"
        write_nginx_backend "$TMP/nginx-backend" "$backend_port" >"$TMP/nginx-backend/nginx.conf"
        start_nginx nginx-backend "$TMP/nginx-backend" "$TMP/nginx-backend/nginx.conf"
        backend_log=$TMP/nginx-backend.log
    else
        backend_kind="rouse static --body hello"
        backend_log=$TMP/backend.log
        start backend "$backend_log" "$ROUSE" static --listen "127.0.0.1:$backend_port" --body hello
    fi
    wait_http "127.0.0.1:$backend_port" "$HOST" "$LAST_PID" "$backend_log" 200

    # rouse in front, route kind = "none"
    cat >"$TMP/rouse.toml" <<EOF
[[listener]]
name = "http"
bind = "127.0.0.1:$rouse_port"
protocol = "http"

[[route]]
name = "bench"
hosts = ["$HOST"]
upstream = "127.0.0.1:$backend_port"
[route.backend]
kind = "none"
EOF
    "$ROUSE" check -c "$TMP/rouse.toml" >"$TMP/rouse-check.log" 2>&1 ||
        { cat "$TMP/rouse-check.log" >&2; die "rouse check rejected the bench config"; }
    RUST_LOG=${RUST_LOG:-warn} start rouse "$TMP/rouse.log" "$ROUSE" serve -c "$TMP/rouse.toml"
    rouse_pid=$LAST_PID
    wait_http "127.0.0.1:$rouse_port" "$HOST" "$rouse_pid" "$TMP/rouse.log" 200

    # nginx as the reference proxy
    local targets=("direct=127.0.0.1:$backend_port" "rouse=127.0.0.1:$rouse_port")
    if [[ -n $NGINX ]]; then
        mkdir -p "$TMP/nginx-proxy"
        write_nginx_proxy "$TMP/nginx-proxy" "$nginx_port" "$backend_port" >"$TMP/nginx-proxy/nginx.conf"
        start_nginx nginx-proxy "$TMP/nginx-proxy" "$TMP/nginx-proxy/nginx.conf"
        wait_http "127.0.0.1:$nginx_port" "$HOST" "$LAST_PID" "$TMP/nginx-proxy.log" 200
        targets+=("nginx=127.0.0.1:$nginx_port")
    fi

    # oha flag spellings differ between versions.
    local help json_flag=() extra=()
    help=$("$OHA" --help 2>&1 || true)
    if grep -q -- '--output-format' <<<"$help"; then
        json_flag=(--output-format json)
    elif grep -qE -- '(^|[[:space:],])--json([[:space:],]|$)' <<<"$help"; then
        json_flag=(--json)
    else
        json_flag=(-j)
    fi
    grep -q -- '--no-tui' <<<"$help" && extra+=(--no-tui)
    # A hung request must not hang the benchmark; it counts as an error instead.
    extra+=(-t 10s)
    # Let requests in flight at the deadline finish instead of counting as errors.
    grep -q -- '--wait-ongoing-requests-after-deadline' <<<"$help" && extra+=(--wait-ongoing-requests-after-deadline)

    local rows=() t name addr json line
    for t in "${targets[@]}"; do
        name=${t%%=*}
        addr=${t#*=}
        json=$OUT/load-$name.json
        echo "oha: $name ($addr), -c $CONNS -z $DURATION ..." >&2
        # warm-up: open connections, fill pools, fault in code
        "$OHA" "${extra[@]}" "${json_flag[@]}" -c "$CONNS" -n $((CONNS * 50)) -H "Host: $HOST" "http://$addr/" >/dev/null 2>&1 || true
        "$OHA" "${extra[@]}" "${json_flag[@]}" -c "$CONNS" -z "$DURATION" -H "Host: $HOST" "http://$addr/" >"$json" 2>"$TMP/oha-$name.log" ||
            { cat "$TMP/oha-$name.log" >&2; die "oha failed against $name"; }
        # rps, p50 ms, p99 ms, success %, 2xx count, total (responses + errors,
        # not counting requests cut off by the deadline)
        line=$(jq -r '
            (.statusCodeDistribution // {}) as $s | (.errorDistribution // {}) as $e
            | ([$s | to_entries[] | select(.key | startswith("2")) | .value] | add // 0) as $ok
            | ([$s[]] | add // 0) as $resp
            | ([$e | to_entries[] | select(.key | test("deadline"; "i") | not) | .value] | add // 0) as $err
            | [ .summary.requestsPerSec,
                ((.latencyPercentiles.p50 // 0) * 1000),
                ((.latencyPercentiles.p99 // 0) * 1000),
                (if ($resp + $err) > 0 then 100 * $ok / ($resp + $err) else 0 end),
                $ok, ($resp + $err) ] | @tsv' "$json")
        rows+=("$name	$line")
        if ! kill -0 "$rouse_pid" 2>/dev/null; then
            echo "load.sh: rouse died during the run; log:" >&2
            tail -n 20 "$TMP/rouse.log" >&2
        fi
    done

    # table: ratios of req/s against direct and nginx
    local rps_direct rps_nginx=""
    rps_direct=$(printf '%s\n' "${rows[@]}" | awk -F'\t' '$1 == "direct" { print $2 }')
    rps_nginx=$(printf '%s\n' "${rows[@]}" | awk -F'\t' '$1 == "nginx" { print $2 }')
    local table
    table=$(printf '%s\n' "${rows[@]}" | awk -F'\t' -v d="$rps_direct" -v n="$rps_nginx" '
        function ratio(a, b) { return (b == "" || b == 0) ? "n/a" : sprintf("%.2f", a / b) }
        { printf "%s\t%.0f\t%.3f\t%.3f\t%.2f%%\t%s\t%s\n", $1, $2, $3, $4, $5, ratio($2, d), ratio($2, n) }')

    local header="target	req/s	p50 ms	p99 ms	success	vs direct	vs nginx"
    local info
    info=$(
        machine_info
        echo "backend: $backend_kind; oha -c $CONNS -z $DURATION, Host: $HOST, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    )

    echo
    echo "$info"
    echo
    { echo "$header"; echo "$table"; } | column -t -s $'\t'

    {
        echo "# rouse load benchmark"
        echo
        echo "- ${info//$'\n'/$'\n'- }"
        echo
        echo "| ${header//	/ | } |"
        echo "|---|--:|--:|--:|--:|--:|--:|"
        while IFS= read -r line; do echo "| ${line//	/ | } |"; done <<<"$table"
        echo
        echo "success = 2xx / (responses + errors), requests cut off by the deadline not counted."
        echo "Raw oha output: load-<target>.json next to this file."
    } >"$OUT/load.md"
    echo
    echo "written: $OUT/load.md, $OUT/load-*.json"
}

# ===================================================================== cold ===
run_cold() {
    local rouse_port backend_port direct_port
    rouse_port=$(free_port)
    backend_port=$(free_port)
    direct_port=$(free_port)
    rm -f "$OUT/cold.tsv" # written only by a run that gets to the end

    cat >"$TMP/rouse.toml" <<EOF
[[listener]]
name = "http"
bind = "127.0.0.1:$rouse_port"
protocol = "http"

[[route]]
name = "cold"
hosts = ["cold.local"]
upstream = "127.0.0.1:$backend_port"
idle_timeout = "1h"
start_timeout = "10s"
ready = "tcp"
[route.backend]
kind = "exec"
command = ["\$ROUSE", "static", "--listen", "127.0.0.1:$backend_port", "--body", "hello"]
EOF
    "$ROUSE" check -c "$TMP/rouse.toml" >"$TMP/rouse-check.log" 2>&1 ||
        { cat "$TMP/rouse-check.log" >&2; die "rouse check rejected the cold config"; }

    local i t out code t_cold t_warm t0 t1 pid rc ready_ms line problems=()
    : >"$TMP/cold.txt"; : >"$TMP/warm.txt"; : >"$TMP/direct.txt"; : >"$TMP/logged.txt"
    for ((i = 1; i <= ITER; i++)); do
        # 1. through rouse, fresh process, route cold
        RUST_LOG=info start rouse "$TMP/rouse.log" "$ROUSE" serve -c "$TMP/rouse.toml" 2>/dev/null
        pid=$LAST_PID
        wait_http "127.0.0.1:$rouse_port" probe.invalid "$pid" "$TMP/rouse.log" 404
        if http_status "127.0.0.1:$backend_port" x 2>/dev/null; then
            die "backend port $backend_port already answering before the first request (not cold)"
        fi
        out=$(curl -sS --max-time 30 -o /dev/null -H 'Host: cold.local' -w '%{http_code} %{time_total}' "http://127.0.0.1:$rouse_port/") || true
        code=${out%% *}; t_cold=${out#* }
        [[ $code == 200 ]] || { tail -n 20 "$TMP/rouse.log" >&2; die "cold request got HTTP $code"; }
        out=$(curl -sS --max-time 30 -o /dev/null -H 'Host: cold.local' -w '%{http_code} %{time_total}' "http://127.0.0.1:$rouse_port/") || true
        t_warm=${out#* }
        [[ ${out%% *} == 200 ]] || problems+=("iteration $i: warm request got HTTP ${out%% *}")
        awk -v t="$t_cold" 'BEGIN { printf "%.3f\n", t * 1000 }' >>"$TMP/cold.txt"
        awk -v t="$t_warm" 'BEGIN { printf "%.3f\n", t * 1000 }' >>"$TMP/warm.txt"

        kill -TERM "$pid"
        for ((t = 0; t < 300; t++)); do kill -0 "$pid" 2>/dev/null || break; nap 0.05; done
        if kill -0 "$pid" 2>/dev/null; then
            problems+=("iteration $i: rouse still running 15 s after SIGTERM, killed")
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rc=0
        wait "$pid" || rc=$?
        forget "$pid"
        [[ $rc -eq 0 ]] || problems+=("iteration $i: rouse exited $rc on SIGTERM")
        ready_ms=$(sed 's/\x1b\[[0-9;]*m//g' "$TMP/rouse.log" | grep 'backend ready' | grep -o 'elapsed_ms=[0-9.]*' | head -n 1 | cut -d= -f2 || true)
        [[ -n $ready_ms ]] && echo "$ready_ms" >>"$TMP/logged.txt"
        if http_status "127.0.0.1:$backend_port" x 2>/dev/null; then
            problems+=("iteration $i: backend still answering after rouse exited")
            # it is our grandchild: find it by its port and stop it
            local orphan
            orphan=$(ss -Hltnp "sport = :$backend_port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2 || true)
            if [[ -n $orphan ]]; then kill -TERM "$orphan" 2>/dev/null || true; fi
            nap 0.5
        fi
        cat "$TMP/rouse.log" >>"$TMP/rouse-all.log"

        # 2. the backend alone: spawn -> first 200
        t0=$EPOCHREALTIME
        "$ROUSE" static --listen "127.0.0.1:$direct_port" --body hello >>"$TMP/direct.log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        until http_status "127.0.0.1:$direct_port" x 2>/dev/null && [[ $HTTP_CODE == 200 ]]; do
            kill -0 "$pid" 2>/dev/null || die "rouse static exited; see $TMP/direct.log"
            nap 0.0002
        done
        t1=$EPOCHREALTIME
        awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) * 1000 }' >>"$TMP/direct.txt"
        stop_pid "$pid"
        forget "$pid"
        printf '  run %2d: cold %.2f ms, warm %.2f ms, backend alone %.2f ms\n' "$i" \
            "$(tail -n 1 "$TMP/cold.txt")" "$(tail -n 1 "$TMP/warm.txt")" "$(tail -n 1 "$TMP/direct.txt")" >&2
    done

    local m_cold m_warm m_direct m_logged
    m_cold=$(median <"$TMP/cold.txt")
    m_warm=$(median <"$TMP/warm.txt")
    m_direct=$(median <"$TMP/direct.txt")
    m_logged=$(median <"$TMP/logged.txt")
    local info
    info=$(
        machine_info
        echo "backend: \$ROUSE static --body hello (exec route, ready=tcp), $ITER runs, fresh rouse per run, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    )
    local table
    table=$(awk -v c="$m_cold" -v w="$m_warm" -v d="$m_direct" -v l="$m_logged" 'BEGIN {
        printf "first request via rouse, cold route (curl time_total)\t%.2f\n", c
        printf "backend alone: spawn to first 200\t%.2f\n", d
        printf "difference (cold start overhead of rouse)\t%.2f\n", c - d
        printf "rouse log: backend ready elapsed_ms\t%s\n", l
        printf "second request via rouse, warm (curl time_total)\t%.2f\n", w
    }')
    echo
    echo "$info"
    echo
    { echo "median of $ITER	ms"; echo "$table"; } | column -t -s $'\t'
    {
        echo "# rouse cold-start benchmark"
        echo
        echo "- ${info//$'\n'/$'\n'- }"
        echo
        echo "| median of $ITER | ms |"
        echo "|---|--:|"
        while IFS= read -r line; do echo "| ${line//	/ | } |"; done <<<"$table"
        echo
        echo "Per run (ms): cold $(paste -sd' ' "$TMP/cold.txt"); alone $(paste -sd' ' "$TMP/direct.txt")"
    } >"$OUT/cold.md"
    # The same medians for scripts (benches/compare.sh): key<TAB>value, ms.
    {
        printf 'iterations\t%s\n' "$ITER"
        awk -v c="$m_cold" -v d="$m_direct" 'BEGIN {
            printf "rouse_ms\t%.3f\nalone_ms\t%.3f\noverhead_ms\t%.3f\n", c, d, c - d }'
        printf 'warm_ms\t%s\n' "$m_warm"
        printf 'logged_ready_ms\t%s\n' "$m_logged"
        printf 'rouse_runs_ms\t%s\n' "$(paste -sd' ' "$TMP/cold.txt")"
        printf 'alone_runs_ms\t%s\n' "$(paste -sd' ' "$TMP/direct.txt")"
        for line in "${problems[@]}"; do printf 'problem\t%s\n' "$line"; done
    } >"$OUT/cold.tsv"
    cp "$TMP/rouse-all.log" "$OUT/cold-rouse.log"
    echo
    echo "written: $OUT/cold.md, $OUT/cold.tsv"
    if ((${#problems[@]})); then
        echo
        printf 'PROBLEM: %s\n' "${problems[@]}"
        return 1
    fi
}

if [[ $MODE == load ]]; then run_load; else run_cold; fi
