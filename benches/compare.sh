#!/usr/bin/env bash
# One-run comparison: rouse vs nginx vs haproxy vs systemd-socket-proxyd vs the
# backend itself, every scenario against every installed target, with oha.
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
# Memory: peak RSS of each target's process tree during each row (VmRSS
# sampled every 50 ms; nginx = master + workers), and for the HTTP proxies the
# RSS right after start and with IDLE_CONNS idle keep-alive connections open.
#
# Environment knobs:
#   DURATION=10s      oha -z per row
#   TARGETS="..."     subset of: direct rouse nginx haproxy socket-proxyd
#   SCENARIOS="..."   subset of: keepalive newconn 1mib routes https tcp
#   IDLE_CONNS=1000   idle connections for the memory row (0 skips it)
#   NO_BUILD=1        skip `cargo build --release`
#   OHA=path          oha binary (default: oha on PATH, then ~/.cargo/bin/oha)
#   NGINX=path|none   nginx binary; none runs without nginx
#   INSTALL=0         never apt-get install haproxy
#
# Needs: cargo, curl, python3, oha; openssl for https. Results: a table on
# stdout, target/bench/compare.{json,md}, target/bench/latency.svg (latency
# percentiles of the keepalive scenario) and raw oha JSON as
# target/bench/compare-<row>.json.
set -euo pipefail
export LC_ALL=C

DURATION=${DURATION:-10s}
IDLE_CONNS=${IDLE_CONNS:-1000}
HOST=bench.local
ALL_TARGETS="direct rouse nginx haproxy socket-proxyd"
ALL_SCENARIOS="keepalive newconn 1mib routes https tcp"
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

die() { echo "compare.sh: $*" >&2; exit 1; }
say() { echo "compare.sh: $*" >&2; }

case ${1:-} in
    -h | --help | help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
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

for tool in curl python3; do command -v "$tool" >/dev/null || die "$tool is required"; done
OHA=${OHA:-$(command -v oha || true)}
[[ -n $OHA ]] || OHA=$HOME/.cargo/bin/oha
[[ -x $OHA ]] || die "oha not found (cargo install oha --locked)"

# --- process bookkeeping: everything we start is stopped by PID on exit ---------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/rouse-compare.XXXXXX")
PIDS=()
NOTES=()
note() { NOTES+=("$*"); say "note: $*"; }

stop_pid() { # stop_pid PID: SIGTERM, wait up to 5 s, then SIGKILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        nap 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "pid $pid ignored SIGTERM for 5 s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
forget() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}
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

# Sleep without forking: read with a timeout on a fifo nobody writes to.
mkfifo "$TMP/nap.fifo"
exec {NAP_FD}<>"$TMP/nap.fifo"
nap() { read -r -t "$1" -u "$NAP_FD" _ || true; }

# Free loopback port: random, below the kernel's ephemeral range (so client
# sockets and other programs' port-0 listeners can't take it between our check
# and the bind), and nothing answers on it. Chosen ports are kept in a file
# because callers run in $(...).
EPH_LO=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((EPH_LO > 12000)) || EPH_LO=61000
: >"$TMP/ports"
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((10000 + RANDOM % (EPH_LO - 10000)))
        grep -qx "$p" "$TMP/ports" && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p" >>"$TMP/ports"
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# wait_ok URL HOSTHEADER PID LOG: until URL answers 200 (10 s max, https via
# --resolve so SNI is the host), or the process dies.
wait_ok() {
    local url=$1 host=$2 pid=$3 log=$4 i code port
    port=${url##*:}
    port=${port%%/*}
    for ((i = 0; i < 200; i++)); do
        if [[ $url == https://* ]]; then
            code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 --resolve "$host:$port:127.0.0.1" \
                "https://$host:$port/" 2>/dev/null || true)
        else
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "Host: $host" "$url" 2>/dev/null || true)
        fi
        if [[ $code == 200 ]]; then
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
    say "$url did not answer 200 within 10 s (last: ${code:-none}); log:"
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

NGINX=${NGINX-$(command -v nginx || true)}
[[ -n $NGINX ]] || { [[ -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx; } || true
[[ $NGINX != none ]] || NGINX=
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
    printf 'targets\t%s\n' "$(echo $TARGETS)"
    printf 'scenarios\t%s\n' "$(echo $SCENARIOS)"
    printf 'idle_conns\t%s\n' "$IDLE_CONNS"
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

BACKEND_PORT=$(free_port)
SPORT[backend]=$BACKEND_PORT
if [[ -n $NGINX ]]; then
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
wait_ok "http://127.0.0.1:$BACKEND_PORT/" "$HOST" "${SPID[backend]}" "$TMP/backend.log"
printf 'backend\t%s\n' "$BACKEND_KIND" >>"$TMP/machine.tsv"
B=127.0.0.1:$BACKEND_PORT

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
declare -A DONE_JSON DONE_RSS
rm -f "$OUT"/compare-*.json "$OUT/latency.svg"

# row SCENARIO TARGET LABEL SERVICE KEY CONNS URL [OHA FLAGS...]
# One oha run (warm-up first), RSS of SERVICE's process tree sampled meanwhile.
# A KEY already measured (same target, URL and flags) is reused, not re-run.
row() {
    local scen=$1 target=$2 label=$3 svc=$4 key=$5 conns=$6 url=$7 json pid sp rss
    shift 7
    if [[ -n ${DONE_JSON[$key]:-} ]]; then
        printf '%s\t%s\t%s\t%s\t%s\t1\n' "$scen" "$target" "$label" "${DONE_JSON[$key]}" "${DONE_RSS[$key]}" >>"$TMP/rows.tsv"
        return 0
    fi
    pid=${SPID[$svc]}
    json=$OUT/compare-$key.json
    say "$scen: $label: oha -c $conns -z $DURATION $* $url"
    "$OHA" "${OHA_BASE[@]}" -c "$conns" -n $((conns * 20)) "$@" "$url" >/dev/null 2>&1 || true
    python3 "$HELPER" rss-peak "$pid" "$TMP/rss-$key" &
    sp=$!
    PIDS+=("$sp")
    if ! "$OHA" "${OHA_BASE[@]}" -c "$conns" -z "$DURATION" "$@" "$url" >"$json" 2>"$TMP/oha-$key.log"; then
        note "oha failed for $scen/$label: $(tail -n 1 "$TMP/oha-$key.log")"
        stop_pid "$sp"; forget "$sp"
        rm -f "$json"
        return 0
    fi
    stop_pid "$sp"
    forget "$sp"
    rss=$(cat "$TMP/rss-$key" 2>/dev/null || echo 0)
    kill -0 "$pid" 2>/dev/null || note "$svc (pid $pid) died during $scen/$label; see its log"
    DONE_JSON[$key]=$json
    DONE_RSS[$key]=$rss
    printf '%s\t%s\t%s\t%s\t%s\t0\n' "$scen" "$target" "$label" "$json" "$rss" >>"$TMP/rows.tsv"
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
    [https-keepalive]="TLS termination (ECDSA P-256), keep-alive, oha --insecure -c 64; direct is plain HTTP"
    [https-newconn]="a TLS handshake per request, oha --insecure --disable-keepalive -c 32; direct is plain HTTP"
    [tcp-keepalive]="L4 relays, HTTP keep-alive over them, -c 64"
    [tcp-newconn]="L4 relays, a new connection per request, -c 32"
    [tcp-1mib]="L4 relays, 1 MiB response, -c 8"
)

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
