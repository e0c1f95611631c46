# Helpers shared by the bench scripts (load.sh, tls.sh, tcp.sh, cold-backends.sh,
# compare.sh). Source it right after `set -euo pipefail`:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It only defines functions and BENCH_SELF / BENCH_SCRIPT; nothing is started.
# Processes are only ever stopped by PID (stop_pid), never by name.
# shellcheck shell=bash

# The sourcing script's file name ("load.sh") and absolute path; the name is
# the prefix of messages.
BENCH_SELF=${BASH_SOURCE[1]##*/}
BENCH_SCRIPT=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)/$BENCH_SELF

# die MSG...: print "SCRIPT: MSG" on stderr and exit 1.
die() { echo "$BENCH_SELF: $*" >&2; exit 1; }

# say MSG...: print "SCRIPT: MSG" on stderr.
say() { echo "$BENCH_SELF: $*" >&2; }

# show_help: print the script's header comment (its usage) without the "# ".
show_help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$BENCH_SCRIPT"; }

# find_oha: set OHA to the oha binary ($OHA, else oha on PATH, else
# ~/.cargo/bin/oha); die if it is not executable.
find_oha() {
    OHA=${OHA:-$(command -v oha || true)}
    [[ -n $OHA ]] || OHA=$HOME/.cargo/bin/oha
    [[ -x $OHA ]] || die "oha not found (cargo install oha --locked)"
}

# find_nginx: set NGINX to the nginx binary: $NGINX if set (even to ""), else
# nginx on PATH, else /usr/sbin/nginx if there; empty if none, or NGINX=none.
find_nginx() {
    NGINX=${NGINX-$(command -v nginx || true)}
    [[ -n $NGINX ]] || { [[ -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx; } || true
    [[ $NGINX != none ]] || NGINX=
}

# nap_init DIR: make nap sleep without forking, by reading with a timeout from
# a fifo in DIR that nobody writes to (sets NAP_FD). Without it, nap is sleep.
nap_init() {
    mkfifo "$1/nap.fifo"
    exec {NAP_FD}<>"$1/nap.fifo"
}

# nap SECONDS: sleep (fork-free after nap_init).
nap() {
    if [[ -n ${NAP_FD:-} ]]; then
        read -r -t "$1" -u "$NAP_FD" _ || true
    else
        sleep "$1"
    fi
}

# stop_pid PID [SIGNAL]: send SIGNAL (TERM), wait up to 5 s, then SIGKILL;
# reaps the process. A PID that is already gone is only reaped.
stop_pid() {
    local pid=$1 sig=${2:-TERM} i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -s "$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        nap 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "pid $pid ignored SIG$sig for 5 s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# forget PID: drop PID from the PIDS array (after we stopped it ourselves).
forget() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# free_port_init DIR: set up free_port; DIR/ports keeps the ports handed out.
# Ports are drawn below the kernel's ephemeral range (so client sockets and
# other programs' port-0 listeners can't take one between our check and the
# bind); with an odd range, 10000..60999.
free_port_init() {
    EPH_LO=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    ((EPH_LO > 12000)) || EPH_LO=61000
    PORTS_FILE=$1/ports
    : >"$PORTS_FILE"
}

# free_port: print a random loopback port that nothing answers on and that
# was not handed out before. Callers run in $(...), hence the ports file.
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((10000 + RANDOM % (EPH_LO - 10000)))
        grep -qx "$p" "$PORTS_FILE" && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p" >>"$PORTS_FILE"
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# median: numbers on stdin, one a line -> their median ("nan" if none).
median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
