#!/usr/bin/env bash
# Cold-start benchmark for real backends: the first response through rouse for a stopped podman
# container and for a stopped systemd unit, next to the time the same backend takes on its own
# (`podman start` / `systemctl start` until it answers HTTP).
#
#   benches/cold-backends.sh [podman|systemd|all]     (default: all; as root)
#
# Needs podman, runc, busybox-static, curl and python3. The systemd part boots a real systemd as
# PID 1 of a podman container (the host's /usr read-only, a throw-away root), never on the host
# itself. ITER=10 sets the repetitions; NO_BUILD=1 skips `cargo build --release`; SETTLE=0.5 is
# the pause (s) after each stop before the next start, the same in every loop.
#
# The podman container's own start-to-ready time is measured twice: with the `podman start` CLI
# (what a person would type), and through the same libpod API call rouse makes (POST
# .../containers/NAME/start on the service socket, then probing the port every 0.2 ms from one
# python process, so no process start is counted). The second is the reference for rouse.
# Results: a table on stdout, target/bench/cold-backends.md, and the medians as
# target/bench/cold-backends.tsv (key<TAB>value, ms; read by benches/compare.sh).
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LC_ALL=C

MODE=${1:-all}
ITER=${ITER:-10}
# Pause after each stop before the next start, the same in every loop: the engine still tidies
# up (conmon, network) for a moment after a stop returns.
SETTLE=${SETTLE:-0.5}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUSE=${CARGO_TARGET_DIR:-$ROOT/target}/release/rouse
OUT=${CARGO_TARGET_DIR:-$ROOT/target}/bench
for tool in podman runc busybox curl python3; do command -v "$tool" >/dev/null || die "$tool is required"; done

TMP=$(mktemp -d /var/tmp/rouse-cold.XXXXXX)
PIDS=()
CONTAINERS=()
export CONTAINERS_CONF=$TMP/containers.conf
printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' >"$CONTAINERS_CONF"
cleanup() {
    local rc=$? pid c
    for c in "${CONTAINERS[@]}"; do podman rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    cp "$TMP"/*.log "$OUT"/ 2>/dev/null || true
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT

now_ms() { local t=$EPOCHREALTIME; echo "${t/./}" | awk '{ printf "%.3f", $1 / 1000 }'; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# wait_200 PORT: poll until GET / answers 200 (1 ms apart, 10 s at most).
wait_200() {
    local i
    for ((i = 0; i < 10000; i++)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/" 2>/dev/null) == 200 ]] && return 0
        sleep 0.001
    done
    die "port $1 did not answer 200"
}
free_port_init "$TMP" # free_port: a loopback port nothing answers on, below the ephemeral range

[[ -n ${NO_BUILD:-} ]] || cargo build --release --quiet
[[ -x $ROUSE ]] || die "$ROUSE not found (build it, or drop NO_BUILD)"
mkdir -p "$OUT"
rm -f "$OUT/cold-backends.tsv" # written only by a run that gets to the end

# The test image: busybox httpd serving one page.
if ! podman image exists localhost/rouse-bench-httpd:latest 2>/dev/null; then
    mkdir -p "$TMP/rootfs/bin" "$TMP/rootfs/www"
    cp "$(command -v busybox)" "$TMP/rootfs/bin/busybox"
    ln -s busybox "$TMP/rootfs/bin/httpd"
    echo "hello" >"$TMP/rootfs/www/index.html"
    tar -C "$TMP/rootfs" -cf "$TMP/img.tar" .
    podman import -q "$TMP/img.tar" localhost/rouse-bench-httpd:latest >/dev/null
fi

rows=()
tsv=() # key<TAB>value lines for cold-backends.tsv
# add_tsv PREFIX NAME VALUES...: PREFIX_NAME_ms = median, PREFIX_NAME_runs_ms = every run.
add_tsv() {
    local key=$1_$2
    shift 2
    tsv+=("${key}_ms	$(printf '%s\n' "$@" | median)" "${key}_runs_ms	$*")
}

# api_start_ms SOCKET CONTAINER PORT N SETTLE: N times, POST .../start on the libpod API, then
# probe 127.0.0.1:PORT until GET / answers 200; print the ms from just before the call to that
# answer, one line per run; after each run stop the container through the API, pause SETTLE s.
api_start_ms() {
    python3 - "$@" <<'PY'
import socket, sys, time

sock, name, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
SETTLE = float(sys.argv[5])


def api(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(f"POST /v4.0.0/libpod/containers/{name}/{path} HTTP/1.1\r\nHost: d\r\n"
              "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
    buf = b""
    while b"\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    s.close()
    return buf.split(b"\r\n", 1)[0].decode(errors="replace")


def answers_200():
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return s.recv(64).split(b"\r\n", 1)[0].split(b" ")[1:2] == [b"200"]
    except (OSError, IndexError):
        return False


for _ in range(n):
    t0 = time.perf_counter()
    status = api("start")
    if " 204 " not in status + " ":
        sys.exit(f"start {name}: {status}")
    while not answers_200():
        if time.perf_counter() - t0 > 10:
            sys.exit(f"port {port} did not answer 200 within 10 s")
        time.sleep(0.0002)
    print(f"{(time.perf_counter() - t0) * 1000:.1f}", flush=True)
    api("stop?timeout=1")
    time.sleep(SETTLE)
PY
}

# wait_stopped NAME N: until rouse's log NAME shows N finished stops ("backend stopped").
wait_stopped() {
    local i
    for ((i = 0; i < 600; i++)); do
        (($(grep -c 'backend stopped' "$TMP/rouse-$1.log" || true) >= $2)) && { sleep "$SETTLE"; return 0; }
        sleep 0.05
    done
    die "rouse did not stop the $1 backend; see $OUT/rouse-$1.log"
}

# start_rouse NAME PROXY_PORT UPSTREAM_PORT BACKEND_KEYS: rouse in front of one route "web".
start_rouse() {
    cat >"$TMP/$1.toml" <<EOF
[[listener]]
name = "http"
bind = "127.0.0.1:$2"
[[route]]
name = "web"
hosts = ["web.bench"]
upstream = "127.0.0.1:$3"
idle_timeout = "300ms"
[route.backend]
$4
EOF
    "$ROUSE" serve -c "$TMP/$1.toml" >"$TMP/rouse-$1.log" 2>&1 &
    PIDS+=($!)
    sleep 0.3
}

bench_podman() {
    local sock=$TMP/podman.sock port proxy_port name=rouse-bench-web-$$ i t0 t1
    podman system service --time=0 "unix://$sock" >"$TMP/podman-service.log" 2>&1 &
    PIDS+=($!)
    for ((i = 0; i < 100; i++)); do [[ -S $sock ]] && break; sleep 0.05; done
    port=$(free_port)
    # busybox httpd as PID 1 ignores SIGTERM: stop with SIGKILL rather than wait out a timeout.
    podman create -q --name "$name" --stop-signal KILL --stop-timeout 1 -p "127.0.0.1:$port:8080" \
        localhost/rouse-bench-httpd:latest /bin/httpd -f -p 8080 -h /www >/dev/null
    CONTAINERS+=("$name")
    local alone=() api=() through=()
    for ((i = 0; i < ITER; i++)); do
        t0=$(now_ms); podman start "$name" >/dev/null; wait_200 "$port"; t1=$(now_ms)
        alone+=("$(elapsed "$t0" "$t1")")
        podman stop -t 1 "$name" >/dev/null
        sleep "$SETTLE"
    done
    mapfile -t api < <(api_start_ms "$sock" "$name" "$port" "$ITER" "$SETTLE")
    ((${#api[@]} == ITER)) || die "libpod API start of $name failed (see above)"
    proxy_port=$(free_port)
    start_rouse podman "$proxy_port" "$port" "kind = \"podman\"
container = \"$name\"
socket = \"unix://$sock\""
    for ((i = 0; i < ITER; i++)); do
        # Cold: wait until rouse has finished its idle stop.
        wait_stopped podman "$i"
        through+=("$(curl -s -o /dev/null -w '%{time_total}' -H 'Host: web.bench' "http://127.0.0.1:$proxy_port/" | awk '{ printf "%.1f", $1 * 1000 }')")
    done
    local a p b
    a=$(printf '%s\n' "${alone[@]}" | median)
    p=$(printf '%s\n' "${api[@]}" | median)
    b=$(printf '%s\n' "${through[@]}" | median)
    rows+=("| podman container: \`podman start\` until it answers | $a |")
    rows+=("| podman container: libpod API start until it answers | $p |")
    rows+=("| podman container: first response through rouse | $b |")
    rows+=("| podman: through rouse minus \`podman start\` | $(elapsed "$a" "$b") |")
    rows+=("| podman: through rouse minus libpod API start | $(elapsed "$p" "$b") |")
    tsv+=("podman_iterations	$ITER")
    add_tsv podman cli "${alone[@]}"
    add_tsv podman api "${api[@]}"
    add_tsv podman rouse "${through[@]}"
    tsv+=("podman_overhead_ms	$(elapsed "$p" "$b")" "podman_overhead_cli_ms	$(elapsed "$a" "$b")")
}

bench_systemd() {
    local name=rouse-bench-sbx-$$ root=/var/tmp/rouse-bench-sbx-$$ bus=$TMP/sbx-dbus port proxy_port i t0 t1 s
    port=$(free_port)
    rm -rf "$root"; mkdir -p "$root"/{usr,proc,sys,dev,run,tmp,var/tmp,var/log,var/lib,root,srv} "$bus"
    for d in bin lib lib64 sbin; do ln -s "usr/$d" "$root/$d"; done
    cp -a /etc "$root/etc"; rm -f "$root/etc/machine-id"
    for u in postgresql nftables podman podman-restart podman-auto-update podman-clean-transient nginx haproxy systemd-firstboot; do
        ln -sf /dev/null "$root/etc/systemd/system/$u.service"
    done
    cat >"$root/etc/systemd/system/web.service" <<EOF
[Service]
ExecStart=/bin/busybox httpd -f -p 127.0.0.1:$port -h /srv
TimeoutStopSec=2
EOF
    echo hello >"$root/srv/index.html"
    podman run -d --name "$name" --systemd=always --network host -v "$bus:/run/dbus" -v /usr:/usr:ro \
        --rootfs "$root" /lib/systemd/systemd --unit=multi-user.target >/dev/null
    CONTAINERS+=("$name")
    for ((i = 0; i < 100; i++)); do
        s=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
        [[ $s == running || $s == degraded ]] && break
        sleep 0.2
    done
    local alone=() through=()
    # Timed inside the sandbox, so `podman exec` itself is not counted.
    for ((i = 0; i < ITER; i++)); do
        alone+=("$(podman exec "$name" sh -c "t0=\$(date +%s%N); systemctl start web.service;
            until [ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$port/)\" = 200 ]; do sleep 0.001; done;
            t1=\$(date +%s%N); echo \$(( (t1 - t0) / 100000 ))" | awk '{ printf "%.1f", $1 / 10 }')")
        podman exec "$name" systemctl stop web.service
    done
    proxy_port=$(free_port)
    start_rouse systemd "$proxy_port" "$port" "kind = \"systemd\"
unit = \"web.service\"
bus = \"unix:path=$bus/system_bus_socket\""
    for ((i = 0; i < ITER; i++)); do
        wait_stopped systemd "$i"
        through+=("$(curl -s -o /dev/null -w '%{time_total}' -H 'Host: web.bench' "http://127.0.0.1:$proxy_port/" | awk '{ printf "%.1f", $1 * 1000 }')")
    done
    rm -rf "$root"
    local a b
    a=$(printf '%s\n' "${alone[@]}" | median)
    b=$(printf '%s\n' "${through[@]}" | median)
    rows+=("| systemd unit (busybox httpd): \`systemctl start\` until it answers | $a |")
    rows+=("| systemd unit: first response through rouse | $b |")
    tsv+=("systemd_iterations	$ITER")
    add_tsv systemd alone "${alone[@]}"
    add_tsv systemd rouse "${through[@]}"
    tsv+=("systemd_overhead_ms	$(elapsed "$a" "$b")")
}

case $MODE in
    podman) bench_podman ;;
    systemd) bench_systemd ;;
    all) bench_podman; bench_systemd ;;
    *) die "unknown mode '$MODE' (use: podman | systemd | all)" ;;
esac

{
    echo "machine: nproc=$(nproc), kernel $(uname -r); $("$ROUSE" --version); median of $ITER runs"
    echo
    echo "| cold start | ms |"
    echo "|---|--:|"
    printf '%s\n' "${rows[@]}"
} | tee "$OUT/cold-backends.md"
printf '%s\n' "${tsv[@]}" >"$OUT/cold-backends.tsv"
