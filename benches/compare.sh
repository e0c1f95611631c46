#!/usr/bin/env bash
# One-command comparison: rouse vs nginx vs haproxy vs systemd-socket-proxyd vs the
# backend itself, every scenario against every installed target, with oha.
# Every throughput row is measured ROUNDS times, interleaved: round 1 runs all
# rows of all scenarios in order, then round 2 runs them all again, and so on,
# so that a slow drift of the machine hits every target alike. Per row, the
# report shows the run with the median req/s (req/s, p50, p99 and CPU µs/req
# all from that one run; for an even ROUNDS the lower of the two middle runs),
# the spread of req/s over the rounds (min-max) and the peak RSS over all
# rounds; compare.json keeps every round's figures. A row marked * reuses
# another row's runs (same target, URL and flags), round for round. The cold
# scenario and the memory rows are not throughput rows: they run once.
#
#   benches/compare.sh
#
# Targets (TARGETS, default all that are installed):
#   direct         the backend: nginx serving a small body and a 1 MiB file
#                  (or `rouse static --root` when nginx is absent)
#   rouse          Host-routed to the backend, route kind "none"
#   nginx          proxy_pass, upstream keepalive 64, proxy_http_version 1.1
#   haproxy        mode http, Host ACL, http-reuse always (apt-get installs it
#                  if missing and we are root; INSTALL=0 prevents that)
#   socket-proxyd  systemd-socket-activate + systemd-socket-proxyd (L4: it
#                  cannot route by Host; keepalive, newconn, 1mib, tcp only)
# Scenarios (SCENARIOS, default all):
#   keepalive  warm keep-alive, small body, oha -c 64
#   newconn    a new connection per request, --disable-keepalive -c 32
#   1mib       a 1 MiB response, -c 8
#   routes     rouse with 1,000 routes (990 exact, 10 wildcards): Host = first
#              route, last route, a wildcard match; vs the 1-route rouse row
#   https      TLS termination (ECDSA P-256): keep-alive -c 64 and a TLS
#              handshake per request -c 32 (rouse, nginx, haproxy)
#   tcp        raw TCP relays: rouse tcp listener, haproxy mode tcp, nginx
#              stream (if its module is installed), socket-proxyd; keep-alive,
#              new connection, 1 MiB
#   cold       rouse only (needs rouse in TARGETS), median of ITER runs each:
#              - exec route: first 200 through rouse on a stopped route vs the
#                backend's own spawn-to-first-200 (runs `benches/load.sh cold`;
#                needs jq); target: overhead <= 5 ms
#              - podman container: first 200 through rouse vs the libpod API
#                start until it answers (runs `benches/cold-backends.sh
#                podman`; needs root, podman, runc, busybox-static, else
#                skipped with a note); target: overhead <= 10 ms
#              - BURST concurrent requests (oha -n BURST -c BURST) at a cold
#                exec route, fresh rouse (RUST_LOG=info) per run: p50, p99,
#                how many got 200 (must be all), how many backend starts
#                rouse logged ("backend ready"; must be 1) and the host's
#                listen-queue overflows; for reference the same burst at the
#                backend alone, already up
# Memory: peak RSS of each target's process tree during each row (VmRSS
# sampled every 50 ms, max over the rounds; nginx = master + workers), and for
# the HTTP proxies the RSS right after start and with IDLE_CONNS idle
# keep-alive connections open.
# CPU µs/req: the CPU time (user + system, all threads, /proc/PID/stat ticks)
# of the target's process tree (nginx master + workers; for direct, the
# backend itself) from just before to just after the measured oha run,
# divided by the responses oha got. CPU per request is less sensitive than
# req/s to how the cores are shared between oha, the proxy and the backend.
#
# Environment knobs:
#   DURATION=10s      oha -z per run (a row takes ROUNDS runs, so the whole
#                     run lasts about ROUNDS x rows x DURATION, plus cold)
#   ROUNDS=3          interleaved rounds of every throughput row (see above)
#   TARGETS="..."     subset of: direct rouse nginx haproxy socket-proxyd
#   SCENARIOS="..."   subset of: keepalive newconn 1mib routes https tcp cold
#   IDLE_CONNS=1000   idle connections for the memory row (0 skips it)
#   ITER=10           runs per cold-start measurement (cold)
#   BURST=200         concurrent requests at the cold route (cold)
#   COLD_PODMAN=0     skip the podman part of cold
#   NO_BUILD=1        skip `cargo build --release`
#   OHA=path          oha binary (default: oha on PATH, then ~/.cargo/bin/oha)
#   NGINX=path|none   nginx binary; none runs without nginx
#   INSTALL=0         never apt-get install haproxy
#
# Needs: cargo, curl, python3, oha; openssl for https; jq for cold. Results: a
# table on stdout, target/bench/compare.{json,md}, target/bench/targets.md (the
# project's targets, met or not), target/bench/latency.svg
# (latency percentiles of the keepalive scenario, median runs) and raw oha JSON
# as target/bench/compare-<row>-r<round>.json (cold: compare-cold-burst-
# {rouse,alone}-<run>.json, and the helpers' own cold.{md,tsv} and
# cold-backends.{md,tsv}).
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LC_ALL=C

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
IDLE_CONNS=${IDLE_CONNS:-1000}
ITER=${ITER:-10}
BURST=${BURST:-200}
HOST=bench.local
ALL_TARGETS="direct rouse nginx haproxy socket-proxyd"
ALL_SCENARIOS="keepalive newconn 1mib routes https tcp cold"
TARGETS=${TARGETS:-$ALL_TARGETS}
SCENARIOS=${SCENARIOS:-$ALL_SCENARIOS}
TARGETS=${TARGETS//,/ }
SCENARIOS=${SCENARIOS//,/ }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ROUSE=$TARGET_DIR/release/rouse
OUT=$TARGET_DIR/bench
HELPER=$ROOT/benches/compare.py

case ${1:-} in
    -h | --help | help) show_help; exit 0 ;;
    "") ;;
    *) die "no arguments expected (see --help)" ;;
esac

# normalise and check the knobs
t2=()
for t in $TARGETS; do
    case $t in
        direct | rouse | nginx | haproxy) t2+=("$t") ;;
        socket-proxyd | proxyd | systemd-socket-proxyd) t2+=(socket-proxyd) ;;
        *) die "unknown target '$t' (use: $ALL_TARGETS)" ;;
    esac
done
TARGETS=" ${t2[*]} "
for s in $SCENARIOS; do
    [[ " $ALL_SCENARIOS " == *" $s "* ]] || die "unknown scenario '$s' (use: $ALL_SCENARIOS)"
done
SCENARIOS=" $SCENARIOS "
want_t() { [[ $TARGETS == *" $1 "* ]]; }
want_s() { local s; for s in "$@"; do [[ $SCENARIOS == *" $s "* ]] && return 0; done; return 1; }
[[ $ITER =~ ^[1-9][0-9]*$ ]] || die "ITER must be a positive integer"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[[ $BURST =~ ^[1-9][0-9]*$ ]] || die "BURST must be a positive integer"

for tool in curl python3; do command -v "$tool" >/dev/null || die "$tool is required"; done
find_oha

# --- process bookkeeping: everything we start is stopped by PID on exit ---------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/rouse-compare.XXXXXX")
PIDS=()
NOTES=()
note() { NOTES+=("$*"); say "note: $*"; }

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    # newest first: samplers and idle-connection holders before the proxies
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    if [[ $rc -ne 0 && -d $TMP ]]; then
        mkdir -p "$OUT"
        cp "$TMP"/*.log "$OUT"/ 2>/dev/null || true
        say "failed (exit $rc); logs copied to $OUT/"
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

nap_init "$TMP"       # nap: sleep without forking
free_port_init "$TMP" # free_port: loopback port below the ephemeral range

# wait_ok URL HOSTHEADER PID LOG [STATUS]: until URL answers STATUS (200; 10 s
# max, https via --resolve so SNI is the host), or the process dies.
wait_ok() {
    local url=$1 host=$2 pid=$3 log=$4 want=${5:-200} i code port
    port=${url##*:}
    port=${port%%/*}
    for ((i = 0; i < 200; i++)); do
        if [[ $url == https://* ]]; then
            code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 --resolve "$host:$port:127.0.0.1" \
                "https://$host:$port/" 2>/dev/null || true)
        else
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "Host: $host" "$url" 2>/dev/null || true)
        fi
        if [[ $code == "$want" ]]; then
            nap 0.1 # make sure the answer came from our process, not a squatter
            kill -0 "$pid" 2>/dev/null && return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            say "process $pid exited before $url answered; log:"
            tail -n 20 "$log" >&2 || true
            return 1
        fi
        nap 0.05
    done
    say "$url did not answer $want within 10 s (last: ${code:-none}); log:"
    tail -n 20 "$log" >&2 || true
    return 1
}

# start NAME CMD...: in the background, logs in $TMP/NAME.log, pid in SPID[NAME].
declare -A SPID SPORT
start() {
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    SPID[$name]=$!
    PIDS+=("$!")
    say "started $name (pid $!)"
}

# --- tools and versions -----------------------------------------------------------
if [[ -z ${NO_BUILD:-} ]]; then
    say "building rouse (release)..."
    cargo build --release --quiet || die "cargo build --release failed"
fi
[[ -x $ROUSE ]] || die "$ROUSE not found (build it, or drop NO_BUILD)"
mkdir -p "$OUT"
CORES=$(nproc)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

find_nginx
NGINX_STREAM_MOD=
if [[ -n $NGINX ]]; then
    for m in /usr/lib/nginx/modules/ngx_stream_module.so /usr/share/nginx/modules/ngx_stream_module.so; do
        [[ -f $m ]] && NGINX_STREAM_MOD=$m && break
    done
    if [[ -z $NGINX_STREAM_MOD ]] && "$NGINX" -V 2>&1 | grep -q -- '--with-stream\( \|$\)'; then
        NGINX_STREAM_MOD=builtin
    fi
fi
if want_t nginx && [[ -z $NGINX ]]; then
    note "nginx not installed: no nginx rows, backend is rouse static"
    TARGETS=${TARGETS/ nginx / }
fi

HAPROXY=$(command -v haproxy || true)
[[ -n $HAPROXY || ! -x /usr/sbin/haproxy ]] || HAPROXY=/usr/sbin/haproxy
if want_t haproxy && [[ -z $HAPROXY ]]; then
    if [[ ${INSTALL:-1} != 0 && $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        say "installing haproxy (apt-get install -y haproxy)..."
        DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy >"$TMP/apt-haproxy.log" 2>&1 ||
            { tail -n 5 "$TMP/apt-haproxy.log" >&2; say "apt-get install haproxy failed"; }
        HAPROXY=$(command -v haproxy || true)
        [[ -n $HAPROXY || ! -x /usr/sbin/haproxy ]] || HAPROXY=/usr/sbin/haproxy
    fi
    if [[ -z $HAPROXY ]]; then
        note "haproxy not installed: no haproxy rows"
        TARGETS=${TARGETS/ haproxy / }
    fi
fi

ACTIVATE=$(command -v systemd-socket-activate || true)
PROXYD=
for p in /lib/systemd/systemd-socket-proxyd /usr/lib/systemd/systemd-socket-proxyd; do
    [[ -x $p ]] && PROXYD=$p && break
done
if want_t socket-proxyd && [[ -z $ACTIVATE || -z $PROXYD ]]; then
    note "systemd-socket-activate or systemd-socket-proxyd not installed: no socket-proxyd rows"
    TARGETS=${TARGETS/ socket-proxyd / }
fi
if want_s https && ! command -v openssl >/dev/null; then
    note "openssl not installed: https scenario skipped"
    SCENARIOS=${SCENARIOS/ https / }
fi
if want_s cold && ! want_t rouse; then
    note "cold measures rouse, and rouse is not in TARGETS: cold scenario skipped"
    SCENARIOS=${SCENARIOS/ cold / }
fi

first_line() { "$@" 2>&1 | head -n 1 || true; }
{
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    printf 'machine\tnproc=%s, kernel %s, cpu: %s\n' "$CORES" "$(uname -r)" "${cpu:-unknown}"
    printf 'load average at start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    dirty=
    [[ -z $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] || dirty=" + uncommitted changes"
    printf 'rouse\t%s (%s%s)\n' "$("$ROUSE" --version 2>/dev/null || echo '?')" \
        "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit')" "$dirty"
    [[ -z $NGINX ]] || printf 'nginx\t%s\n' "$(first_line "$NGINX" -v | sed 's/^nginx version: //')"
    [[ -z $HAPROXY ]] || printf 'haproxy\t%s\n' "$(first_line "$HAPROXY" -v)"
    [[ -z $ACTIVATE ]] || printf 'systemd\t%s\n' "$(first_line "$ACTIVATE" --version)"
    printf 'oha\t%s\n' "$(first_line "$OHA" --version)"
    printf 'python3\t%s\n' "$(first_line python3 --version)"
    printf 'date\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$TMP/machine.tsv"
{
    printf 'DURATION\t%s\n' "$DURATION"
    printf 'ROUNDS\t%s\n' "$ROUNDS"
    printf 'targets\t%s\n' "$(xargs <<<"$TARGETS")"
    printf 'scenarios\t%s\n' "$(xargs <<<"$SCENARIOS")"
    printf 'idle_conns\t%s\n' "$IDLE_CONNS"
    ! want_s cold || printf 'ITER\t%s\nBURST\t%s\n' "$ITER" "$BURST"
} >"$TMP/settings.tsv"

# --- backend: nginx (small body at /, 1 MiB at /1m) or rouse static --root --------
mkdir -p "$TMP/www"
printf 'hello\n' >"$TMP/www/index.html"
head -c 1048576 /dev/urandom >"$TMP/www/1m"
chmod -R a+rX "$TMP/www" "$TMP"

nginx_common() { # nginx_common DIR [MAIN-CONTEXT-LINE]: boilerplate up to "http {"
    local d=$1
    mkdir -p "$d/tmp"
    cat <<EOF
${2:-}
worker_processes $CORES;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 8192; }
EOF
}
nginx_http_open() {
    cat <<EOF
http {
    access_log off;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    sendfile on;
EOF
}
start_nginx() { # NAME: config in $TMP/NAME/nginx.conf
    start "$1" "$NGINX" -c "$TMP/$1/nginx.conf" -p "$TMP/$1" -g 'daemon off;'
}

# (cold brings its own backends: none needed when it is the only scenario)
BACKEND_PORT=$(free_port)
SPORT[backend]=$BACKEND_PORT
B=127.0.0.1:$BACKEND_PORT
if ! want_s keepalive newconn 1mib routes https tcp; then
    :
elif [[ -n $NGINX ]]; then
    BACKEND_KIND="nginx, $CORES workers"
    mkdir -p "$TMP/backend"
    {
        nginx_common "$TMP/backend"
        nginx_http_open "$TMP/backend"
        cat <<EOF
    server {
        listen 127.0.0.1:$BACKEND_PORT default_server backlog=4096;
        default_type text/plain;
        location = /1m { default_type application/octet-stream; alias $TMP/www/1m; }
        location / { return 200 "hello\n"; }
    }
}
EOF
    } >"$TMP/backend/nginx.conf"
    start_nginx backend
else
    BACKEND_KIND="rouse static --root (index.html = hello, /1m)"
    start backend "$ROUSE" static --listen "127.0.0.1:$BACKEND_PORT" --root "$TMP/www"
fi
if [[ -n ${SPID[backend]:-} ]]; then
    wait_ok "http://127.0.0.1:$BACKEND_PORT/" "$HOST" "${SPID[backend]}" "$TMP/backend.log"
    printf 'backend\t%s\n' "$BACKEND_KIND" >>"$TMP/machine.tsv"
fi

if want_s https; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$HOST" \
        -addext "subjectAltName=DNS:$HOST" -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
    cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/haproxy.pem"
fi

# --- the targets --------------------------------------------------------------------
start_rouse() { # NAME: config in $TMP/NAME.toml
    "$ROUSE" check -c "$TMP/$1.toml" >"$TMP/$1-check.log" 2>&1 ||
        { cat "$TMP/$1-check.log" >&2; die "rouse check rejected $1.toml"; }
    RUST_LOG=${RUST_LOG:-warn} start "$1" "$ROUSE" serve -c "$TMP/$1.toml"
}

svc_rouse_http() {
    cat >"$TMP/rouse-http.toml" <<EOF
[[listener]]
name = "http"
bind = "127.0.0.1:$1"
protocol = "http"

[[route]]
name = "bench"
hosts = ["$HOST"]
upstream = "$B"
[route.backend]
kind = "none"
EOF
    start_rouse rouse-http
}

# 1,000 routes: r0000.bench.local ... r0999.bench.local, except every 100th
# (i % 100 == 50) is a wildcard *.w0NNN.bench.local: 990 exact + 10 wildcards.
ROUTES_FIRST=r0000.$HOST
ROUTES_LAST=r0999.$HOST
ROUTES_WILD=app.w0950.$HOST
svc_rouse_1k() {
    {
        printf '[[listener]]\nname = "http"\nbind = "127.0.0.1:%s"\nprotocol = "http"\n' "$1"
        local i h
        for ((i = 0; i < 1000; i++)); do
            if ((i % 100 == 50)); then printf -v h '*.w%04d.%s' "$i" "$HOST"; else printf -v h 'r%04d.%s' "$i" "$HOST"; fi
            printf '\n[[route]]\nname = "r%04d"\nhosts = ["%s"]\nupstream = "%s"\n[route.backend]\nkind = "none"\n' "$i" "$h" "$B"
        done
    } >"$TMP/rouse-1k.toml"
    start_rouse rouse-1k
}

svc_rouse_tls() {
    cat >"$TMP/rouse-tls.toml" <<EOF
[[listener]]
name = "https"
bind = "127.0.0.1:$1"
protocol = "https"

[[route]]
name = "bench"
hosts = ["$HOST"]
upstream = "$B"
tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }
[route.backend]
kind = "none"
EOF
    start_rouse rouse-tls
}

svc_rouse_tcp() {
    cat >"$TMP/rouse-tcp.toml" <<EOF
[[listener]]
name = "tcp"
bind = "127.0.0.1:$1"
protocol = "tcp"
route = "bench"

[[route]]
name = "bench"
upstream = "$B"
[route.backend]
kind = "none"
EOF
    start_rouse rouse-tcp
}

nginx_proxy_location() {
    cat <<EOF
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
EOF
}
nginx_upstream() {
    cat <<EOF
    upstream backend {
        server $B;
        keepalive 64;
        keepalive_requests 1000000;
    }
EOF
}

svc_nginx_http() {
    mkdir -p "$TMP/nginx-http"
    {
        nginx_common "$TMP/nginx-http"
        nginx_http_open "$TMP/nginx-http"
        nginx_upstream
        # Host-routed like the others: a named server, and a default that says 404.
        echo "    server { listen 127.0.0.1:$1 default_server; return 404; }"
        echo "    server {"
        echo "        listen 127.0.0.1:$1;"
        echo "        server_name $HOST;"
        nginx_proxy_location
        echo "    }"
        echo "}"
    } >"$TMP/nginx-http/nginx.conf"
    start_nginx nginx-http
}

svc_nginx_tls() {
    mkdir -p "$TMP/nginx-tls"
    {
        nginx_common "$TMP/nginx-tls"
        nginx_http_open "$TMP/nginx-tls"
        nginx_upstream
        echo "    server {"
        echo "        listen 127.0.0.1:$1 ssl;"
        echo "        server_name $HOST;"
        echo "        ssl_certificate $TMP/cert.pem; ssl_certificate_key $TMP/key.pem;"
        echo "        ssl_protocols TLSv1.2 TLSv1.3;"
        nginx_proxy_location
        echo "    }"
        echo "}"
    } >"$TMP/nginx-tls/nginx.conf"
    start_nginx nginx-tls
}

svc_nginx_stream() {
    local load=
    [[ $NGINX_STREAM_MOD == builtin ]] || load="load_module $NGINX_STREAM_MOD;"
    mkdir -p "$TMP/nginx-stream"
    {
        nginx_common "$TMP/nginx-stream" "$load"
        echo "stream { server { listen 127.0.0.1:$1; proxy_pass $B; } }"
    } >"$TMP/nginx-stream/nginx.conf"
    start_nginx nginx-stream
}

haproxy_global() { # MODE
    cat <<EOF
global
    maxconn 8000
    nbthread $CORES
defaults
    mode $1
    timeout connect 5s
    timeout client 75s
    timeout server 75s
    timeout http-keep-alive 75s
EOF
}
svc_haproxy_http() { # PORT [ssl]
    local bind="bind 127.0.0.1:$1"
    [[ ${2:-} != ssl ]] || bind+=" ssl crt $TMP/haproxy.pem"
    {
        haproxy_global http
        cat <<EOF
frontend fe
    $bind
    option forwardfor
    acl host_bench req.hdr(host),field(1,:) -i $HOST
    use_backend be if host_bench
backend be
    http-reuse always
    server b $B
EOF
    } >"$TMP/$3.cfg"
    start "$3" "$HAPROXY" -db -f "$TMP/$3.cfg"
}
svc_haproxy_tcp() {
    {
        haproxy_global tcp
        printf 'frontend fe\n    bind 127.0.0.1:%s\n    default_backend be\nbackend be\n    server b %s\n' "$1" "$B"
    } >"$TMP/haproxy-tcp.cfg"
    start haproxy-tcp "$HAPROXY" -db -f "$TMP/haproxy-tcp.cfg"
}

svc_proxyd() {
    # systemd-socket-activate execs the proxy: same pid
    start proxyd "$ACTIVATE" -l "127.0.0.1:$1" "$PROXYD" "$B"
}

# launch NAME FUNCTION [ARGS]: pick a port, start, wait for a 200.
launch() {
    local name=$1 fn=$2 port scheme=http host=$HOST
    shift 2
    [[ $name != rouse-1k ]] || host=$ROUTES_FIRST
    port=$(free_port)
    SPORT[$name]=$port
    "$fn" "$port" "$@"
    [[ $name != *-tls ]] || scheme=https
    wait_ok "$scheme://127.0.0.1:$port/" "$host" "${SPID[$name]}" "$TMP/$name.log" ||
        die "$name did not come up"
}

HTTP_SCEN=(keepalive newconn 1mib)
if want_t rouse; then
    ! want_s "${HTTP_SCEN[@]}" routes || launch rouse-http svc_rouse_http
    ! want_s routes || launch rouse-1k svc_rouse_1k
    ! want_s https || launch rouse-tls svc_rouse_tls
    ! want_s tcp || launch rouse-tcp svc_rouse_tcp
fi
if want_t nginx; then
    ! want_s "${HTTP_SCEN[@]}" routes || launch nginx-http svc_nginx_http
    ! want_s https || launch nginx-tls svc_nginx_tls
    if want_s tcp; then
        if [[ -n $NGINX_STREAM_MOD ]]; then
            launch nginx-stream svc_nginx_stream
        else
            note "nginx stream module not installed (libnginx-mod-stream): no nginx row in the tcp scenario"
        fi
    fi
fi
if want_t haproxy; then
    ! want_s "${HTTP_SCEN[@]}" || launch haproxy-http svc_haproxy_http "" haproxy-http
    ! want_s https || launch haproxy-tls svc_haproxy_http ssl haproxy-tls
    ! want_s tcp || launch haproxy-tcp svc_haproxy_tcp
fi
if want_t socket-proxyd && want_s "${HTTP_SCEN[@]}" tcp; then
    launch proxyd svc_proxyd
fi

# --- memory: idle after start, then with IDLE_CONNS idle keep-alive connections -----
rss() { python3 "$HELPER" rss "$1" "${2:-VmRSS}"; }
: >"$TMP/memory.tsv"
declare -A IDLE_KIB CONNS_KIB CONNS_HELD
for name in rouse-http rouse-1k rouse-tls rouse-tcp nginx-http nginx-tls nginx-stream haproxy-http haproxy-tls haproxy-tcp proxyd; do
    [[ -n ${SPID[$name]:-} ]] && IDLE_KIB[$name]=$(rss "${SPID[$name]}")
done
if ((IDLE_CONNS > 0)); then
    for name in rouse-http nginx-http haproxy-http; do
        [[ -n ${SPID[$name]:-} ]] || continue
        say "memory: $IDLE_CONNS idle connections to $name ..."
        rm -f "$TMP/hold.ready"
        python3 "$HELPER" hold 127.0.0.1 "${SPORT[$name]}" "$IDLE_CONNS" "$HOST" "$TMP/hold.ready" >"$TMP/hold-$name.log" 2>&1 &
        hp=$!
        PIDS+=("$hp")
        for ((i = 0; i < 600; i++)); do
            [[ -s $TMP/hold.ready ]] && break
            kill -0 "$hp" 2>/dev/null || break
            nap 0.05
        done
        if [[ -s $TMP/hold.ready ]]; then
            nap 0.3
            CONNS_KIB[$name]=$(rss "${SPID[$name]}")
            read -r held ok <"$TMP/hold.ready"
            CONNS_HELD[$name]="$held open, $ok answered 200"
        else
            note "idle-connection holder for $name failed: $(tail -n 1 "$TMP/hold-$name.log" 2>/dev/null)"
        fi
        stop_pid "$hp"
        forget "$hp"
    done
fi

# --- measurement --------------------------------------------------------------------
OHA_BASE=(--no-tui --output-format json -t 10s --wait-ongoing-requests-after-deadline)
: >"$TMP/rows.tsv"
declare -A DONE_JSON DONE_RSS DONE_CPU
ROUND=0 # the round being measured (1..ROUNDS)
SEQ=0   # the row's position in its round (orders the report's rows)
rm -f "$OUT"/compare-*.json "$OUT/latency.svg"

# row SCENARIO TARGET LABEL SERVICE KEY CONNS URL [OHA FLAGS...]
# One oha run of round ROUND (warm-up first, in round 1 only); meanwhile the
# RSS of SERVICE's process tree is sampled and its CPU time (user + system)
# taken from just before oha starts to just after it ends; appends "SCENARIO
# TARGET LABEL ROUND SEQ JSON RSS REUSED CPU-SECONDS" to rows.tsv. A KEY already
# measured in this round (same target, URL and flags) is reused, not re-run.
row() {
    local scen=$1 target=$2 label=$3 svc=$4 key=$5 conns=$6 url=$7 json pid sp rss cpu procs run i
    shift 7
    SEQ=$((SEQ + 1))
    if [[ -n ${DONE_JSON[$key]:-} ]]; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t1\t%s\n' "$scen" "$target" "$label" "$ROUND" "$SEQ" \
            "${DONE_JSON[$key]}" "${DONE_RSS[$key]}" "${DONE_CPU[$key]}" >>"$TMP/rows.tsv"
        return 0
    fi
    pid=${SPID[$svc]}
    run=$key-r$ROUND
    json=$OUT/compare-$run.json
    say "round $ROUND/$ROUNDS: $scen: $label: oha -c $conns -z $DURATION $* $url"
    ((ROUND > 1)) || "$OHA" "${OHA_BASE[@]}" -c "$conns" -n $((conns * 20)) "$@" "$url" >/dev/null 2>&1 || true
    # the sampler takes its first CPU reading before oha starts (it writes the
    # ready file then), and its last one when stop_pid sends it SIGTERM
    python3 "$HELPER" rss-peak "$pid" "$TMP/rss-$run" "$TMP/rss-$run.ready" &
    sp=$!
    PIDS+=("$sp")
    for ((i = 0; i < 500; i++)); do
        [[ -e $TMP/rss-$run.ready ]] && break
        kill -0 "$sp" 2>/dev/null || break
        nap 0.01
    done
    [[ -e $TMP/rss-$run.ready ]] || note "rss/cpu sampler not ready for $scen/$label in round $ROUND"
    if ! "$OHA" "${OHA_BASE[@]}" -c "$conns" -z "$DURATION" "$@" "$url" >"$json" 2>"$TMP/oha-$run.log"; then
        note "oha failed for $scen/$label in round $ROUND: $(tail -n 1 "$TMP/oha-$run.log")"
        stop_pid "$sp"; forget "$sp"
        rm -f "$json"
        return 0
    fi
    stop_pid "$sp"
    forget "$sp"
    # the sampler's file: peak RSS KiB, CPU seconds, "procs N appeared A exited E"
    rss=0 cpu='' procs=''
    { read -r rss && read -r cpu && read -r procs; } 2>/dev/null <"$TMP/rss-$run" || true
    [[ $rss =~ ^[0-9]+$ ]] || rss=0
    [[ $cpu =~ ^[0-9]+(\.[0-9]+)?$ ]] || cpu=
    [[ -z $procs || $procs == *" appeared 0 exited 0" ]] ||
        note "$scen/$label, round $ROUND: the process tree changed during the run ($procs); CPU: a process counts up to its last 50 ms sample"
    kill -0 "$pid" 2>/dev/null || note "$svc (pid $pid) died during $scen/$label in round $ROUND; see its log"
    DONE_JSON[$key]=$json
    DONE_RSS[$key]=$rss
    DONE_CPU[$key]=$cpu
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t0\t%s\n' "$scen" "$target" "$label" "$ROUND" "$SEQ" \
        "$json" "$rss" "$cpu" >>"$TMP/rows.tsv"
}

url() { echo "http://127.0.0.1:${SPORT[$1]}${2:-/}"; }
DIRECT_LABEL="direct (rouse static backend)"
[[ -z $NGINX ]] || DIRECT_LABEL="direct (nginx backend)"
HH=(-H "Host: $HOST")

# http_rows SCENARIO CONNS PATH [FLAGS]: every HTTP target, plus socket-proxyd.
http_rows() {
    local scen=$1 conns=$2 path=$3
    shift 3
    ! want_t direct || row "$scen" direct "$DIRECT_LABEL" backend "$scen-direct" "$conns" "$(url backend "$path")" "${HH[@]}" "$@"
    [[ -z ${SPID[rouse-http]:-} ]] || row "$scen" rouse rouse rouse-http "$scen-rouse" "$conns" "$(url rouse-http "$path")" "${HH[@]}" "$@"
    [[ -z ${SPID[nginx-http]:-} ]] || row "$scen" nginx "nginx proxy" nginx-http "$scen-nginx" "$conns" "$(url nginx-http "$path")" "${HH[@]}" "$@"
    [[ -z ${SPID[haproxy-http]:-} ]] || row "$scen" haproxy haproxy haproxy-http "$scen-haproxy" "$conns" "$(url haproxy-http "$path")" "${HH[@]}" "$@"
    [[ -z ${SPID[proxyd]:-} ]] || row "$scen" socket-proxyd "socket-proxyd (L4)" proxyd "$scen-socket-proxyd" "$conns" "$(url proxyd "$path")" "${HH[@]}" "$@"
}

declare -A HELP=(
    [keepalive]="warm keep-alive, small body, oha -c 64"
    [newconn]="a new TCP connection per request, oha --disable-keepalive -c 32"
    [1mib]="1 MiB response body, oha -c 8"
    [routes-1k]="rouse with 1,000 routes (990 exact names, 10 wildcards) vs 1 route; keep-alive -c 64"
    [cold]="first 200 through rouse on a stopped route vs the backend's own start-to-ready time, median of $ITER runs; target: overhead <= 5 ms (exec), <= 10 ms (podman)"
    [cold-burst]="$BURST concurrent requests (oha -n $BURST -c $BURST) at a cold exec route (\$ROUSE static), a fresh rouse each run, median of $ITER runs; reference: the same burst at that backend alone, already up"
    [https-keepalive]="TLS termination (ECDSA P-256), keep-alive, oha --insecure -c 64; direct is plain HTTP"
    [https-newconn]="a TLS handshake per request, oha --insecure --disable-keepalive -c 32; direct is plain HTTP"
    [tcp-keepalive]="L4 relays, HTTP keep-alive over them, -c 64"
    [tcp-newconn]="L4 relays, a new connection per request, -c 32"
    [tcp-1mib]="L4 relays, 1 MiB response, -c 8"
)

# throughput_round: every throughput row of every scenario, once (round ROUND).
throughput_round() {
    local mode conns flags path t svc p label
    ! want_s keepalive || http_rows keepalive 64 /
    ! want_s newconn || http_rows newconn 32 / --disable-keepalive
    ! want_s 1mib || http_rows 1mib 8 /1m

    if want_s routes; then
        ! want_t direct || row routes-1k direct "$DIRECT_LABEL" backend keepalive-direct 64 "$(url backend)" "${HH[@]}"
        [[ -z ${SPID[nginx-http]:-} ]] || row routes-1k nginx "nginx proxy (1 server)" nginx-http keepalive-nginx 64 "$(url nginx-http)" "${HH[@]}"
        if [[ -n ${SPID[rouse-1k]:-} ]]; then
            row routes-1k rouse "rouse, 1 route" rouse-http keepalive-rouse 64 "$(url rouse-http)" "${HH[@]}"
            row routes-1k rouse "rouse, 1k routes, Host = first route" rouse-1k routes-first 64 "$(url rouse-1k)" -H "Host: $ROUTES_FIRST"
            row routes-1k rouse "rouse, 1k routes, Host = last route" rouse-1k routes-last 64 "$(url rouse-1k)" -H "Host: $ROUTES_LAST"
            row routes-1k rouse "rouse, 1k routes, Host = wildcard match" rouse-1k routes-wildcard 64 "$(url rouse-1k)" -H "Host: $ROUTES_WILD"
        fi
    fi

    if want_s https; then
        for mode in keepalive newconn; do
            conns=64 flags=()
            [[ $mode == keepalive ]] || { conns=32; flags=(--disable-keepalive); }
            ! want_t direct || row "https-$mode" direct "direct (plain HTTP, reference)" backend "$mode-direct" "$conns" "$(url backend)" "${HH[@]}" "${flags[@]}"
            for t in rouse nginx haproxy; do
                svc=$t-tls
                [[ -n ${SPID[$svc]:-} ]] || continue
                p=${SPORT[$svc]}
                label=$t
                [[ $t != nginx ]] || label="nginx proxy"
                row "https-$mode" "$t" "$label" "$svc" "https-$mode-$t" "$conns" "https://$HOST:$p/" \
                    --insecure --connect-to "$HOST:$p:127.0.0.1:$p" "${flags[@]}"
            done
        done
    fi

    if want_s tcp; then
        for mode in keepalive newconn 1mib; do
            conns=64 flags=() path=/
            case $mode in
                newconn) conns=32 flags=(--disable-keepalive) ;;
                1mib) conns=8 path=/1m ;;
            esac
            ! want_t direct || row "tcp-$mode" direct "$DIRECT_LABEL" backend "$mode-direct" "$conns" "$(url backend "$path")" "${HH[@]}" "${flags[@]}"
            [[ -z ${SPID[rouse-tcp]:-} ]] || row "tcp-$mode" rouse "rouse (tcp listener)" rouse-tcp "tcp-$mode-rouse" "$conns" "$(url rouse-tcp "$path")" "${HH[@]}" "${flags[@]}"
            [[ -z ${SPID[nginx-stream]:-} ]] || row "tcp-$mode" nginx "nginx (stream)" nginx-stream "tcp-$mode-nginx" "$conns" "$(url nginx-stream "$path")" "${HH[@]}" "${flags[@]}"
            [[ -z ${SPID[haproxy-tcp]:-} ]] || row "tcp-$mode" haproxy "haproxy (mode tcp)" haproxy-tcp "tcp-$mode-haproxy" "$conns" "$(url haproxy-tcp "$path")" "${HH[@]}" "${flags[@]}"
            [[ -z ${SPID[proxyd]:-} ]] || row "tcp-$mode" socket-proxyd "socket-proxyd" proxyd "$mode-socket-proxyd" "$conns" "$(url proxyd "$path")" "${HH[@]}" "${flags[@]}"
        done
    fi
}

for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    DONE_JSON=() DONE_RSS=() DONE_CPU=() SEQ=0
    throughput_round
done

# --- cold start -----------------------------------------------------------------------
# run_child NAME CMD...: run a helper script to its end, in the background so that the
# cleanup can stop it by PID (its own trap then stops what it started); output in
# $TMP/NAME.log; returns its exit status.
run_child() {
    local name=$1 pid rc=0
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    forget "$pid"
    return "$rc"
}

# take_tsv NAME FILE LABEL RC: a helper's key<TAB>value results -> $TMP/NAME.tsv; its
# problems and failures become notes (and its log goes to $OUT/compare-NAME.log).
take_tsv() {
    local name=$1 file=$2 label=$3 rc=$4 line
    if [[ ! -s $file ]]; then
        cp "$TMP/$name.log" "$OUT/compare-$name.log"
        note "$label failed (exit $rc): $(grep -v '^ *$' "$TMP/$name.log" | tail -n 1); log: $OUT/compare-$name.log"
        return 0
    fi
    cp "$file" "$TMP/$name.tsv"
    while IFS=$'\t' read -r _ line; do note "$label: $line"; done < <(grep '^problem' "$file" || true)
    if ((rc != 0)); then
        cp "$TMP/$name.log" "$OUT/compare-$name.log"
        note "$label exited $rc; log: $OUT/compare-$name.log"
    fi
}

cold_exec() { # benches/load.sh cold: exec route vs the backend alone
    local rc=0
    if ! command -v jq >/dev/null; then
        note "jq not installed: exec cold start (benches/load.sh cold) skipped"
        return 0
    fi
    say "cold: exec route, benches/load.sh cold, ITER=$ITER ..."
    rm -f "$OUT/cold.tsv"
    run_child cold-exec env NO_BUILD=1 ITER="$ITER" bash "$ROOT/benches/load.sh" cold || rc=$?
    take_tsv cold-exec "$OUT/cold.tsv" "benches/load.sh cold" "$rc"
}

cold_podman() { # benches/cold-backends.sh podman: container vs libpod API start
    local rc=0 why='' t
    [[ $(id -u) == 0 ]] || why="not running as root"
    for t in podman runc busybox; do
        [[ -n $why ]] || command -v "$t" >/dev/null || why="$t is not installed"
    done
    [[ ${COLD_PODMAN:-1} != 0 ]] || why="COLD_PODMAN=0"
    if [[ -n $why ]]; then
        note "podman cold start skipped: $why (benches/cold-backends.sh podman needs root, podman, runc, busybox-static)"
        return 0
    fi
    say "cold: podman container, benches/cold-backends.sh podman, ITER=$ITER ..."
    rm -f "$OUT/cold-backends.tsv"
    run_child cold-podman env NO_BUILD=1 ITER="$ITER" bash "$ROOT/benches/cold-backends.sh" podman || rc=$?
    take_tsv cold-podman "$OUT/cold-backends.tsv" "benches/cold-backends.sh podman" "$rc"
}

# listen_overflows: the host's TcpExt ListenOverflows counter (SYNs dropped because an accept
# queue was full; the client retries after 1 s).
listen_overflows() {
    awk '/^TcpExt:/ { if (!seen) { for (i = 1; i <= NF; i++) if ($i == "ListenOverflows") f = i; seen = 1 }
        else if (f) print $f }' /proc/net/netstat 2>/dev/null || true
}

# burst RUN KIND PORT: oha -n BURST -c BURST at PORT; appends "RUN<TAB>JSON<TAB>OVERFLOWS" to
# $TMP/cold-burst-KIND.tsv (nothing if oha failed).
burst() {
    local i=$1 kind=$2 port=$3 json o0 o1
    json=$OUT/compare-cold-burst-$kind-$i.json
    say "cold: run $i/$ITER: oha -n $BURST -c $BURST, $kind"
    o0=$(listen_overflows)
    if ! "$OHA" --no-tui --output-format json -t 30s -n "$BURST" -c "$BURST" -H "Host: $HOST" \
        "http://127.0.0.1:$port/" >"$json" 2>"$TMP/oha-cold-$kind-$i.log"; then
        note "cold burst: oha failed in run $i ($kind): $(tail -n 1 "$TMP/oha-cold-$kind-$i.log")"
        rm -f "$json"
        return 0
    fi
    o1=$(listen_overflows)
    printf '%s\t%s\t%s\n' "$i" "$json" "$((${o1:-0} - ${o0:-0}))" >>"$TMP/cold-burst-$kind.tsv"
}

# cold_burst: ITER times, a fresh rouse (RUST_LOG=info) with one cold exec route takes BURST
# concurrent requests; $TMP/cold-burst-rouse.tsv also gets the "backend ready" and "backend
# starting" log lines of each run. For reference, the same backend started on its own, once it
# answers, takes the same burst ($TMP/cold-burst-alone.tsv).
cold_burst() {
    local port bport aport i t pid ready starting
    port=$(free_port)
    bport=$(free_port)
    aport=$(free_port)
    cat >"$TMP/rouse-cold.toml" <<EOF
[[listener]]
name = "http"
bind = "127.0.0.1:$port"
protocol = "http"

[[route]]
name = "cold"
hosts = ["$HOST"]
upstream = "127.0.0.1:$bport"
idle_timeout = "1h"
start_timeout = "10s"
ready = "tcp"
[route.backend]
kind = "exec"
command = ["\$ROUSE", "static", "--listen", "127.0.0.1:$bport", "--body", "hello"]
EOF
    : >"$TMP/cold-burst-rouse.tsv"
    : >"$TMP/cold-burst-alone.tsv"
    : >"$TMP/cold-burst-starts.tsv"
    : >"$TMP/rouse-cold-all.log"
    for ((i = 1; i <= ITER; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$bport") 2>/dev/null; then
            note "cold burst: something answers on the backend port $bport before run $i (not cold); stopped after $((i - 1)) runs"
            break
        fi
        RUST_LOG=info start_rouse rouse-cold
        pid=${SPID[rouse-cold]}
        # an unknown Host gets 404 from rouse itself: up, and the route still cold
        wait_ok "http://127.0.0.1:$port/" probe.invalid "$pid" "$TMP/rouse-cold.log" 404 || die "rouse-cold did not come up"
        burst "$i" rouse "$port"
        kill -0 "$pid" 2>/dev/null || note "cold burst: rouse (pid $pid) died in run $i; see its log"
        stop_pid "$pid"
        forget "$pid"
        sed 's/\x1b\[[0-9;]*m//g' "$TMP/rouse-cold.log" >"$TMP/rouse-cold.plain"
        cat "$TMP/rouse-cold.plain" >>"$TMP/rouse-cold-all.log"
        ready=$(grep -c 'backend ready' "$TMP/rouse-cold.plain" || true)
        starting=$(grep -c 'backend starting' "$TMP/rouse-cold.plain" || true)
        printf '%s\t%s\t%s\n' "$i" "$ready" "$starting" >>"$TMP/cold-burst-starts.tsv"
        # rouse stopped its backend before exiting; the next run checks that the port is free
        for ((t = 0; t < 20; t++)); do
            (exec 3<>"/dev/tcp/127.0.0.1/$bport") 2>/dev/null || break
            nap 0.05
        done

        start cold-alone "$ROUSE" static --listen "127.0.0.1:$aport" --body hello
        pid=${SPID[cold-alone]}
        wait_ok "http://127.0.0.1:$aport/" "$HOST" "$pid" "$TMP/cold-alone.log" || die "rouse static did not come up"
        burst "$i" alone "$aport"
        stop_pid "$pid"
        forget "$pid"
    done
    cp "$TMP/rouse-cold-all.log" "$OUT/compare-cold-burst-rouse.log"
}

if want_s cold; then
    rm -f "$OUT"/compare-cold-*
    cold_exec
    cold_burst
    cold_podman
fi

# --- report ---------------------------------------------------------------------------
for name in rouse-http rouse-1k rouse-tls rouse-tcp nginx-http nginx-tls nginx-stream haproxy-http haproxy-tls haproxy-tcp proxyd; do
    [[ -n ${SPID[$name]:-} ]] || continue
    kill -0 "${SPID[$name]}" 2>/dev/null || { note "$name exited before the end of the run"; continue; }
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "${IDLE_KIB[$name]:-}" "${CONNS_KIB[$name]:-}" \
        "${CONNS_HELD[$name]:-}" "$(rss "${SPID[$name]}" VmHWM)" >>"$TMP/memory.tsv"
done
for k in "${!HELP[@]}"; do printf '%s\t%s\n' "$k" "${HELP[$k]}"; done >"$TMP/help.tsv"
printf '%s\n' "${NOTES[@]}" >"$TMP/notes.txt"
echo >&2
python3 "$HELPER" report "$TMP" "$OUT"
echo >&2
echo "== the project's targets (python3 benches/compare.py targets $OUT/compare.json)"
python3 "$HELPER" targets "$OUT/compare.json" "$OUT/targets.md"
