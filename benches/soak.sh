#!/usr/bin/env bash
# Soak run: DURATION (default 30m) of mixed load on one rouse while routes
# start and stop underneath it and its config is reloaded; reports every
# failed request and whether memory and open descriptors stayed flat. Not
# part of CI.
#
#   benches/soak.sh                 # 30 minutes
#   DURATION=5m benches/soak.sh     # a shorter run
#
# What runs (on loopback; everything is started, and stopped by PID, here):
#   rouse (release build), one http and one tcp listener, and routes:
#     steady        kind "none", to a `rouse static` started here (always up)
#     cold1..cold3  exec `rouse static`, idle_timeout 1s: stopped between the
#                   bursts below, so nearly every burst is a cold start
#     tcp           exec `rouse static` behind the tcp listener, idle 1s
#     extra         exec, added and removed again by a reload (SIGHUP)
#   load, all at once:
#     oha -c 16 -q RATE (default 1000 req/s) for DURATION at steady (requests
#     under way at the deadline are waited for, not counted as errors)
#     every 1.5-4 s: oha -n 100 -c 20 at one of cold1..cold3, in turn
#     every 2 s: one curl through the tcp listener (HTTP relayed as raw TCP)
#     every RELOAD_EVERY (default 60 s): the config rewritten with or without
#     "extra", SIGHUP, and while it is there a curl at extra (must be 200)
#   every 10 s: rouse's VmRSS and open file descriptors
#
# Knobs: DURATION (oha -z syntax: 30m, 300s), RATE, RELOAD_EVERY (seconds),
# NO_BUILD=1, OHA=path. Needs cargo, curl, python3, oha.
# Results: target/bench/soak.md (the summary, also printed) and
# target/bench/soak.tsv (the samples). Exit status 1 if any request failed.
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LC_ALL=C

[[ ${1:-} == -h || ${1:-} == --help ]] && { show_help; exit 0; }
DURATION=${DURATION:-30m}
RATE=${RATE:-1000}
RELOAD_EVERY=${RELOAD_EVERY:-60}
find_oha
command -v curl >/dev/null || die "curl not found"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/target/bench
mkdir -p "$OUT"
[[ ${NO_BUILD:-} == 1 ]] || (cd "$ROOT" && cargo build --release --quiet)
ROUSE=$ROOT/target/release/rouse
[[ -x $ROUSE ]] || die "$ROUSE not built"

TMP=$(mktemp -d /tmp/rouse-soak.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    rm -rf "$TMP"
}
trap cleanup EXIT
free_port_init "$TMP"
nap_init "$TMP"

# DURATION in seconds.
case $DURATION in
*h) SECONDS_TOTAL=$((${DURATION%h} * 3600)) ;;
*m) SECONDS_TOTAL=$((${DURATION%m} * 60)) ;;
*s) SECONDS_TOTAL=${DURATION%s} ;;
*) SECONDS_TOTAL=$DURATION ;;
esac

HTTP_PORT=$(free_port)
TCP_PORT=$(free_port)
STEADY_PORT=$(free_port)
declare -A PORT
for r in cold1 cold2 cold3 tcp extra; do PORT[$r]=$(free_port); done

"$ROUSE" static --listen "127.0.0.1:$STEADY_PORT" --body steady >/dev/null 2>&1 &
PIDS+=($!)

exec_route() { # NAME IDLE
    cat <<EOF
[[route]]
name = "$1"
hosts = ["$1.test"]
upstream = "127.0.0.1:${PORT[$1]}"
idle_timeout = "$2"
[route.backend]
kind = "exec"
command = ["\$ROUSE", "static", "--listen", "127.0.0.1:${PORT[$1]}", "--body", "$1"]

EOF
}

# config WITH_EXTRA: the whole config file on stdout.
config() {
    cat <<EOF
[[listener]]
name = "http"
bind = "127.0.0.1:$HTTP_PORT"

[[listener]]
name = "tcp"
bind = "127.0.0.1:$TCP_PORT"
protocol = "tcp"
route = "tcp"

[[route]]
name = "steady"
hosts = ["steady.test"]
upstream = "127.0.0.1:$STEADY_PORT"
[route.backend]
kind = "none"

EOF
    exec_route cold1 1s
    exec_route cold2 1s
    exec_route cold3 1s
    exec_route tcp 1s
    [[ $1 == 1 ]] && exec_route extra 5s
    return 0
}

config 0 >"$TMP/rouse.toml"
RUST_LOG=info "$ROUSE" serve -c "$TMP/rouse.toml" >"$TMP/rouse.log" 2>&1 &
ROUSE_PID=$!
PIDS+=("$ROUSE_PID")
for ((i = 0; i < 100; i++)); do
    curl -s -o /dev/null "http://127.0.0.1:$HTTP_PORT/" -H 'Host: steady.test' && break
    nap 0.05
done

END=$((SECONDS + SECONDS_TOTAL))
say "rouse pid $ROUSE_PID on :$HTTP_PORT (tcp :$TCP_PORT); soaking for $DURATION"

# Samples: seconds since start, VmRSS KiB, open descriptors.
sampler() {
    local t0=$SECONDS
    while ((SECONDS < END)); do
        local rss fds
        rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$ROUSE_PID/status" 2>/dev/null || echo 0)
        fds=$(find "/proc/$ROUSE_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        printf '%s\t%s\t%s\n' "$((SECONDS - t0))" "$rss" "$fds" >>"$OUT/soak.tsv"
        nap 10
    done
}
printf 'seconds\trss_kib\tfds\n' >"$OUT/soak.tsv"
sampler &
SAMPLER=$!
PIDS+=("$SAMPLER")

# The steady keep-alive load.
"$OHA" --no-tui --output-format json -z "$DURATION" --wait-ongoing-requests-after-deadline -c 16 -q "$RATE" \
    -H 'Host: steady.test' "http://127.0.0.1:$HTTP_PORT/" >"$TMP/steady.json" 2>"$TMP/steady.err" &
STEADY_OHA=$!
PIDS+=("$STEADY_OHA")

# Cold bursts, one route after the other.
bursts() {
    local n=0 route
    while ((SECONDS < END)); do
        route=cold$((n % 3 + 1))
        "$OHA" --no-tui --output-format json -n 100 -c 20 -t 20s -H "Host: $route.test" \
            "http://127.0.0.1:$HTTP_PORT/" >"$TMP/burst-$n.json" 2>/dev/null || true
        n=$((n + 1))
        local tenths=$((15 + RANDOM % 26))
        nap "$((tenths / 10)).$((tenths % 10))"
    done
}
bursts &
BURSTS=$!
PIDS+=("$BURSTS")

# Raw TCP: a curl every 2 s through the tcp listener (the backend stops in between).
tcp_probes() {
    local code
    while ((SECONDS < END)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 20 -H 'Host: tcp.test' \
            "http://127.0.0.1:$TCP_PORT/" || true)
        echo "$code" >>"$TMP/tcp.codes"
        nap 2
    done
}
tcp_probes &
PROBES=$!
PIDS+=("$PROBES")

# Reloads: "extra" in, then out, and so on.
with=0 reloads=0
: >"$TMP/extra.codes"
while ((SECONDS + RELOAD_EVERY < END)); do
    nap "$RELOAD_EVERY"
    with=$((1 - with))
    config "$with" >"$TMP/rouse.toml.new"
    mv "$TMP/rouse.toml.new" "$TMP/rouse.toml"
    before=$(grep -c 'config reloaded' "$TMP/rouse.log" || true)
    kill -HUP "$ROUSE_PID"
    reloads=$((reloads + 1))
    for ((i = 0; i < 100; i++)); do
        (($(grep -c 'config reloaded' "$TMP/rouse.log" || true) > before)) && break
        nap 0.05
    done
    if ((with)); then
        curl -s -o /dev/null -w '%{http_code}\n' --max-time 20 -H 'Host: extra.test' \
            "http://127.0.0.1:$HTTP_PORT/" >>"$TMP/extra.codes" || echo "curl-failed" >>"$TMP/extra.codes"
    fi
done
say "load phase ending; waiting for the load to finish"
for p in "$STEADY_OHA" "$BURSTS" "$PROBES" "$SAMPLER"; do
    wait "$p" || true
    forget "$p"
done

python3 - "$TMP" "$OUT" "$DURATION" "$RATE" "$reloads" <<'EOF'
import glob, json, sys, statistics
tmp, out, duration, rate, reloads = sys.argv[1:]

def oha(path):
    try:
        d = json.load(open(path))
    except Exception as e:
        return None
    codes = {int(k): v for k, v in d.get("statusCodeDistribution", {}).items()}
    errors = d.get("errorDistribution", {})
    return codes, errors, d.get("latencyPercentiles", {})

failures = []
steady = oha(f"{tmp}/steady.json")
if steady is None:
    failures.append("steady: oha gave no result")
    steady_ok = 0
else:
    codes, errors, lat = steady
    steady_ok = codes.get(200, 0)
    bad = {c: n for c, n in codes.items() if c != 200}
    if bad: failures.append(f"steady: non-200 {bad}")
    if errors: failures.append(f"steady: errors {errors}")
    steady_p99 = lat.get("p99")

burst_ok = burst_runs = 0
for path in sorted(glob.glob(f"{tmp}/burst-*.json")):
    r = oha(path)
    burst_runs += 1
    if r is None:
        failures.append(f"{path}: no result"); continue
    codes, errors, _ = r
    burst_ok += codes.get(200, 0)
    bad = {c: n for c, n in codes.items() if c != 200}
    if bad or errors: failures.append(f"{path.rsplit('/',1)[1]}: {bad} {errors}")

def codes_file(name):
    try:
        lines = [l.strip() for l in open(f"{tmp}/{name}") if l.strip()]
    except FileNotFoundError:
        lines = []
    return lines
tcp = codes_file("tcp.codes")
extra = codes_file("extra.codes")
for name, lines in (("tcp", tcp), ("extra", extra)):
    bad = [c for c in lines if c != "200"]
    if bad: failures.append(f"{name}: {len(bad)} failed ({sorted(set(bad))})")

log = open(f"{tmp}/rouse.log", errors="replace").read().splitlines()
count = lambda s: sum(1 for l in log if s in l)
starts, stops = count("backend ready"), count("backend stopped")
reloaded, refused = count("config reloaded"), count("config not reloaded")
warns = [l for l in log if " WARN " in l or " ERROR " in l]

samples = []
for line in open(f"{out}/soak.tsv").read().splitlines()[1:]:
    t, rss, fds = line.split("\t")
    samples.append((int(t), int(rss), int(fds)))
# Flat: after a minute of warm-up, compare the first and the last fifth.
warm = [s for s in samples if s[0] >= 60] or samples
fifth = max(1, len(warm) // 5)
first, last = warm[:fifth], warm[-fifth:]
mib = lambda kib: kib / 1024
rss_first, rss_last = max(s[1] for s in first), max(s[1] for s in last)
fds_first, fds_last = max(s[2] for s in first), max(s[2] for s in last)
rss_max, fds_max = max(s[1] for s in samples), max(s[2] for s in samples)

total = steady_ok + burst_ok + len(tcp) + len(extra)
md = []
md.append(f"# Soak: {duration}, steady {rate} req/s plus cold bursts, raw TCP and reloads\n")
md.append("| figure | value |\n|---|---|")
md.append(f"| requests answered 200 | {total - sum(1 for c in tcp + extra if c != '200'):,} of {total:,} counted |")
md.append(f"| steady keep-alive (oha -c 16 -q {rate}) | {steady_ok:,} × 200, p99 {steady_p99 * 1000 if steady and steady_p99 else float('nan'):.2f} ms |")
md.append(f"| cold bursts (oha -n 100 -c 20) | {burst_runs} runs, {burst_ok:,} × 200 |")
md.append(f"| raw TCP probes (curl through the tcp listener) | {len(tcp)}, {sum(c == '200' for c in tcp)} × 200 |")
md.append(f"| reloads (SIGHUP) | {reloads} sent, {reloaded} applied, {refused} refused; `extra` answered {sum(c == '200' for c in extra)}/{len(extra)} |")
md.append(f"| backend starts / stops | {starts} / {stops} |")
md.append(f"| RSS, first fifth → last fifth (max) | {mib(rss_first):.1f} MiB → {mib(rss_last):.1f} MiB (max {mib(rss_max):.1f}) |")
md.append(f"| open descriptors, first fifth → last fifth (max) | {fds_first} → {fds_last} (max {fds_max}) |")
md.append(f"| warnings and errors logged | {len(warns)} |")
md.append("")
if failures:
    md.append("Failures:\n")
    md.extend(f"- {f}" for f in failures[:50])
else:
    md.append("No request failed.")
if warns:
    md.append("\nFirst warnings:\n")
    md.extend(f"    {w}" for w in warns[:10])
text = "\n".join(md) + "\n"
open(f"{out}/soak.md", "w").write(text)
print(text)
sys.exit(1 if failures else 0)
EOF
