#!/usr/bin/env python3
"""Helpers for benches/compare.sh (standard library only).

  compare.py rss PID                 print the RSS (KiB) of PID and its descendants, once
  compare.py rss-peak PID OUTFILE [READYFILE]
                                     sample that sum every 50 ms until SIGTERM, and the CPU time
                                     (user + system) of the same process tree; write READYFILE
                                     after the first sample; at SIGTERM write OUTFILE: the peak
                                     (KiB), the CPU seconds used between the first and the last
                                     sample, and "procs N appeared A exited E" (one a line; see
                                     cmd_rss_peak)
  compare.py hold ADDR PORT N HOST READYFILE
                                     open N keep-alive connections, send one GET on each, read
                                     the answer, then write READYFILE and hold them idle until
                                     SIGTERM
  compare.py targets JSON [OUT]      check the project's performance targets against a
                                     compare.json; print (and write to OUT) a Markdown table
  compare.py report DIR OUT          read the TSVs compare.sh left in DIR (machine, settings,
                                     help, notes, memory, rows (one line per row and round:
                                     scenario, target, label, round, position in the round, oha
                                     JSON, peak RSS KiB, 1 if reused, CPU seconds of the target's
                                     process tree during the run); for the cold scenario
                                     cold-exec and cold-podman, key<TAB>value from
                                     benches/load.sh cold and benches/cold-backends.sh;
                                     cold-burst-rouse and -alone: run, oha JSON, listen
                                     overflows; cold-burst-starts: run, "backend ready" and
                                     "backend starting" log lines); write compare.json,
                                     compare.md and latency.svg to OUT; print the tables
"""

import json
import os
import signal
import socket
import sys
import time


# ------------------------------------------------------------------ memory ---
def children(pid):
    """Direct children of pid, from /proc/PID/task/*/children."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def tree(pid):
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(children(p))
    return seen


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_kib(pid, key="VmRSS"):
    return sum(status_kib(p, key) for p in tree(pid))


def cmd_rss(pid, key="VmRSS"):
    print(tree_kib(int(pid), key))


def stat_ticks(pid):
    """(start time, utime + stime) of pid from /proc/PID/stat, in clock ticks, or None if it is gone.
    utime and stime of a process cover all its threads, exited ones included."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ")"
    rest = s[s.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): utime = field 14, stime = 15, starttime = 22
    return int(rest[19]), int(rest[11]) + int(rest[12])


def uptime_ticks(hz):
    try:
        with open("/proc/uptime") as f:
            return float(f.read().split()[0]) * hz
    except (OSError, ValueError, IndexError):
        return None


def cmd_rss_peak(pid, outfile, readyfile=None):
    """Sample the tree of pid every 50 ms until SIGTERM or SIGINT: peak VmRSS sum, and the CPU time
    (user + system) the tree used between the first sample and the last. OUTFILE gets three lines:
    peak KiB; CPU seconds (empty if pid was gone at the start); "procs N appeared A exited E"
    (processes of the tree seen, started during the sampling, gone before its end).

    CPU: every process is identified by (pid, start time); it counts its utime + stime at its last
    sample minus at its first. A process already there at the first sample starts from that
    reading; one that appears later and started after the first sample starts from 0, so all its
    CPU counts; one that exits counts up to its last sample (at most 50 ms of its CPU are lost, and
    its ticks do not count again through its parent's cutime); one that starts and exits between
    two samples is missed. READYFILE, if given, is written once the first sample is taken."""
    pid = int(pid)
    hz = os.sysconf("SC_CLK_TCK")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    procs = {}  # (pid, starttime) -> [ticks at first sample, ticks at last sample]
    peak = 0
    seen_now = set()  # the processes of the latest sample

    def sample(first=False):
        nonlocal peak, seen_now
        rss = 0
        seen_now = set()
        for p in tree(pid):
            rss += status_kib(p, "VmRSS")
            st = stat_ticks(p)
            if st is None:
                continue
            key = (p, st[0])
            seen_now.add(key)
            if key in procs:
                procs[key][1] = st[1]
            else:
                born_after = not first and t0 is not None and st[0] > t0
                procs[key] = [0 if born_after else st[1], st[1]]
        peak = max(peak, rss)

    t0 = uptime_ticks(hz)
    sample(first=True)
    alive_at_start = bool(procs)
    at_start = set(procs)
    if readyfile:
        with open(readyfile, "w") as f:
            f.write("ready\n")
    while not stop:
        time.sleep(0.05)
        sample()
    ticks = sum(last - first for first, last in procs.values())
    cpu = f"{ticks / hz:.3f}" if alive_at_start else ""
    appeared = len(set(procs) - at_start)
    exited = len(set(procs) - seen_now)
    with open(outfile, "w") as f:
        f.write(f"{peak}\n{cpu}\nprocs {len(procs)} appeared {appeared} exited {exited}\n")


# ------------------------------------------------------- idle connections ---
def cmd_hold(addr, port, n, host, readyfile):
    port, n = int(port), int(n)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    req = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    socks, ok = [], 0
    for _ in range(n):
        s = socket.create_connection((addr, port), timeout=10)
        socks.append(s)
        try:
            s.sendall(req)
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            head, _, body = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v.strip())
            while len(body) < length:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
            if head.startswith(b"HTTP/1.1 200") and len(body) >= length:
                ok += 1
        except OSError:
            pass
    open_now = sum(1 for s in socks if s.fileno() >= 0)
    with open(readyfile, "w") as f:
        f.write(f"{open_now} {ok}\n")
    while not stop:
        time.sleep(0.1)
    for s in socks:
        s.close()


# ------------------------------------------------------------------ report ---
def oha_stats(path):
    with open(path) as f:
        j = json.load(f)
    summ = j.get("summary", {}) or {}
    lat = j.get("latencyPercentiles", {}) or {}
    codes = j.get("statusCodeDistribution", {}) or {}
    errs = j.get("errorDistribution", {}) or {}
    ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
    responses = sum(codes.values())
    # requests cut off by the -z deadline are not failures of the target
    errors = sum(v for k, v in errs.items() if "deadline" not in k.lower())

    def ms(k):
        v = lat.get(k)
        return None if v is None else v * 1000.0

    return {
        "rps": summ.get("requestsPerSec") or 0.0,
        "p50_ms": ms("p50"),
        "p90_ms": ms("p90"),
        "p99_ms": ms("p99"),
        "p99_9_ms": ms("p99.9"),
        "success_pct": 100.0 * ok / (responses + errors) if responses + errors else 0.0,
        "ok": ok,
        "responses": responses,
        "errors": errors,
        "error_kinds": errs,
        "mib_per_s": (summ.get("sizePerSec") or 0.0) / 1048576.0,
        "slowest_ms": None if summ.get("slowest") is None else summ["slowest"] * 1000.0,
        "status_200": codes.get("200", 0),
    }


def lower_median_run(runs):
    """The run with the median req/s (for an even count, the lower of the two middle runs)."""
    return sorted(runs, key=lambda x: x["rps"])[(len(runs) - 1) // 2]


def throughput_rows(d):
    """rows.tsv (one line per row and round) -> one dict per row: the figures of its median run
    (by req/s, CPU per request included), the req/s spread, the peak RSS over the rounds and every
    round's figures in "runs"."""
    groups = {}
    for r in read_tsv(os.path.join(d, "rows.tsv")):
        scen, target, label, rnd, seq, path, rss, reused = r[:8]
        cpu = num(r[8]) if len(r) > 8 else None
        run = {"round": int(rnd), "json": os.path.basename(path), "rss_kib": kib(rss), "reused": reused == "1"}
        run.update(oha_stats(path))
        # CPU seconds of the target's process tree during the run, per response oha got
        run["cpu_s"] = cpu
        run["cpu_us_per_req"] = (round(cpu * 1e6 / run["responses"], 2)
                                 if cpu is not None and run["responses"] else None)
        g = groups.setdefault((scen, target, label), {"seq": int(seq), "runs": []})
        g["seq"] = min(g["seq"], int(seq))
        g["runs"].append(run)
    rows = []
    for (scen, target, label), g in sorted(groups.items(), key=lambda kv: kv[1]["seq"]):
        runs = sorted(g["runs"], key=lambda x: x["round"])
        med = lower_median_run(runs)
        row = {"scenario": scen, "target": target, "label": label,
               "reused": all(x["reused"] for x in runs), "rounds": len(runs), "median_round": med["round"]}
        row.update({k: v for k, v in med.items() if k not in ("round", "rss_kib", "reused")})
        rss = [x["rss_kib"] for x in runs if x["rss_kib"]]
        row["rss_kib"] = max(rss) if rss else None
        row["rps_min"] = min(x["rps"] for x in runs)
        row["rps_max"] = max(x["rps"] for x in runs)
        row["success_pct_min"] = min(x["success_pct"] for x in runs)
        cpus = [x["cpu_us_per_req"] for x in runs if x["cpu_us_per_req"] is not None]
        row["cpu_us_per_req_min"] = min(cpus) if cpus else None
        row["cpu_us_per_req_max"] = max(cpus) if cpus else None
        row["runs"] = runs
        rows.append(row)
    return rows


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.2f}"


def fmt_ms(v):
    return "n/a" if v is None else f"{v:.3f}"


def fmt_us(v):
    return "n/a" if v is None else (f"{v:,.0f}" if v >= 1000 else f"{v:.1f}")


def fmt_mib(kib):
    return "n/a" if not kib else f"{kib / 1024:.1f}"


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def kib(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


# -------------------------------------------------------------- cold start ---
# The project's target: the first response through rouse on a stopped route comes at most this
# much after the backend's own start-to-ready time.
COLD_BUDGET_MS = {"exec": 5.0, "podman": 10.0}


def read_kv(path):
    return {r[0]: (r[1] if len(r) > 1 else "") for r in read_tsv(path) if r[0] != "problem"}


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def nums(v):
    return [x for x in (num(t) for t in (v or "").split()) if x is not None]


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def cold_row(kind, label, reference, runs, alone, via, alone_runs, via_runs, **extra):
    budget = COLD_BUDGET_MS[kind]
    over = None if alone is None or via is None else via - alone
    row = {"kind": kind, "backend": label, "reference": reference, "runs": runs,
           "alone_ms": alone, "rouse_ms": via, "overhead_ms": over, "budget_ms": budget,
           "target_ms": None if alone is None else alone + budget,
           "met": None if over is None else over <= budget,
           "alone_runs_ms": alone_runs, "rouse_runs_ms": via_runs}
    row.update(extra)
    return row


def cold_results(d, settings):
    """The cold scenario's figures, or None when it did not run."""
    ex = read_kv(os.path.join(d, "cold-exec.tsv"))
    pm = read_kv(os.path.join(d, "cold-podman.tsv"))
    burst_rows = read_tsv(os.path.join(d, "cold-burst-rouse.tsv"))
    alone_rows = read_tsv(os.path.join(d, "cold-burst-alone.tsv"))
    starts = {int(r[0]): (int(r[1]), int(r[2])) for r in read_tsv(os.path.join(d, "cold-burst-starts.tsv"))}
    if not (ex or pm or burst_rows or alone_rows) and "ITER" not in settings:
        return None
    cold = {"start": [], "burst": None}
    if ex:
        cold["start"].append(cold_row(
            "exec", "exec: $ROUSE static --body hello",
            "the same command alone: spawn to first 200 (benches/load.sh cold)",
            int(num(ex.get("iterations")) or 0), num(ex.get("alone_ms")), num(ex.get("rouse_ms")),
            nums(ex.get("alone_runs_ms")), nums(ex.get("rouse_runs_ms")),
            warm_ms=num(ex.get("warm_ms")), logged_ready_ms=num(ex.get("logged_ready_ms"))))
    if pm:
        cold["start"].append(cold_row(
            "podman", "podman: busybox httpd container",
            "libpod API start (the call rouse makes) until it answers 200 (benches/cold-backends.sh)",
            int(num(pm.get("podman_iterations")) or 0), num(pm.get("podman_api_ms")),
            num(pm.get("podman_rouse_ms")), nums(pm.get("podman_api_runs_ms")),
            nums(pm.get("podman_rouse_runs_ms")),
            cli_ms=num(pm.get("podman_cli_ms")), cli_runs_ms=nums(pm.get("podman_cli_runs_ms"))))
    n = int(num(settings.get("BURST")) or 0)

    def burst_runs(rows_):
        runs = []
        for r in rows_:
            st = oha_stats(r[1])
            run = int(r[0])
            runs.append({"run": run, "json": os.path.basename(r[1]), "requests": n,
                         "p50_ms": st["p50_ms"], "p99_ms": st["p99_ms"], "slowest_ms": st["slowest_ms"],
                         "got_200": st["status_200"], "errors": st["errors"],
                         "error_kinds": st["error_kinds"], "listen_overflows": int(r[2] or 0)})
        return runs

    def summary(runs):
        return {"count": len(runs),
                "p50_ms": median(x["p50_ms"] for x in runs),
                "p99_ms": median(x["p99_ms"] for x in runs),
                "slowest_ms": median(x["slowest_ms"] for x in runs),
                "got_200_min": min((x["got_200"] for x in runs), default=0),
                "all_200": bool(runs) and all(x["got_200"] == n and not x["errors"] for x in runs),
                "listen_overflows": sum(x["listen_overflows"] for x in runs)}

    if burst_rows or alone_rows:
        runs = burst_runs(burst_rows)
        for x in runs:
            x["backend_ready"], x["backend_starting"] = starts.get(x["run"], (None, None))
        alone = burst_runs(alone_rows)
        b = {"requests": n, "iterations": int(num(settings.get("ITER")) or 0), "runs": runs,
             "alone_runs": alone}
        b.update(summary(runs))
        b["one_start_per_run"] = bool(runs) and all(
            x["backend_ready"] == 1 and x["backend_starting"] == 1 for x in runs)
        b["met"] = b["all_200"] and b["one_start_per_run"] and b["count"] == b["iterations"]
        b["alone"] = summary(alone)
        cold["burst"] = b
    return cold


def fmt_signed(v):
    return "n/a" if v is None else f"{v:+.2f}"


def fmt_met(v):
    return "n/a" if v is None else ("yes" if v else "NO")


def cold_tables(cold):
    """(key, title, header, rows) for the start-time table and the burst table."""
    out = []
    if cold["start"]:
        header = ["backend", "runs", "alone ms", "via rouse ms", "overhead ms", "target", "met"]
        rows = []
        for c in cold["start"]:
            rows.append([c["backend"], str(c["runs"]), fmt_ms(c["alone_ms"]), fmt_ms(c["rouse_ms"]),
                         fmt_signed(c["overhead_ms"]),
                         f"<= alone + {c['budget_ms']:g} ms ({fmt_ms(c['target_ms'])})", fmt_met(c["met"])])
            if c.get("cli_ms") is not None:
                over = None if c["rouse_ms"] is None else c["rouse_ms"] - c["cli_ms"]
                rows.append(["  (`podman start` CLI instead, reference)", str(c["runs"]), fmt_ms(c["cli_ms"]),
                             fmt_ms(c["rouse_ms"]), fmt_signed(over), "", ""])
        out.append(("cold", "cold start: first 200 on a stopped route", header, rows))
    b = cold["burst"]
    if b:
        header = ["", "runs", "p50 ms", "p99 ms", "slowest ms", "got 200", "backend starts", "listen overflows", "met"]

        def got(x):
            if not x["count"]:
                return "n/a"
            return (f"{b['requests']}/{b['requests']} every run" if x["all_200"]
                    else f"min {x['got_200_min']}/{b['requests']}")

        starts = [x["backend_ready"] for x in b["runs"]]
        start_txt = "1 per run" if b["one_start_per_run"] else "per run: " + " ".join(map(str, starts))
        rows = [["cold route via rouse (median)", str(b["count"]), fmt_ms(b["p50_ms"]), fmt_ms(b["p99_ms"]),
                 fmt_ms(b["slowest_ms"]), got(b), start_txt, str(b["listen_overflows"]), fmt_met(b["met"])]]
        a = b["alone"]
        if a["count"]:
            rows.append(["backend alone, already up (reference)", str(a["count"]), fmt_ms(a["p50_ms"]),
                         fmt_ms(a["p99_ms"]), fmt_ms(a["slowest_ms"]), got(a), "", str(a["listen_overflows"]), ""])
        out.append(("cold-burst", f"cold-burst: {b['requests']} concurrent requests at a cold route", header, rows))
    return out


CPU_LEGEND = ("CPU µs/req: user + system CPU time of the target's whole process tree (all threads; nginx master + "
              "workers) during the measured run, divided by the responses oha got; direct: the backend's own. It "
              "depends less than req/s on how the cores are shared with oha and the backend.")


def cmd_report(d, out):
    meta = {
        "out": out,
        "machine": dict(read_tsv(os.path.join(d, "machine.tsv"))),
        "settings": dict(read_tsv(os.path.join(d, "settings.tsv"))),
        "scenario_help": dict(read_tsv(os.path.join(d, "help.tsv"))),
        "notes": [line[0] for line in read_tsv(os.path.join(d, "notes.txt"))],
        "memory": [{"name": m[0], "idle_kib": kib(m[1]), "conns_kib": kib(m[2]),
                    "conns_held": m[3] or "n/a", "hwm_kib": kib(m[4])}
                   for m in read_tsv(os.path.join(d, "memory.tsv"))],
    }
    rows = throughput_rows(d)
    rounds = int(num(meta["settings"].get("ROUNDS")) or 1)
    scenarios = []
    for r in rows:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
    for s in scenarios:
        rs = [r for r in rows if r["scenario"] == s]
        direct = next((r["rps"] for r in rs if r["target"] == "direct"), None)
        nginx = next((r["rps"] for r in rs if r["target"] == "nginx"), None)
        for r in rs:
            r["vs_direct"] = ratio(r["rps"], direct)
            r["vs_nginx"] = ratio(r["rps"], nginx)

    cold = cold_results(d, meta["settings"])

    out = meta["out"]
    result = {"meta": meta["machine"], "settings": meta["settings"], "notes": meta.get("notes", []),
              "scenarios": meta.get("scenario_help", {}), "rows": rows,
              "memory": meta.get("memory", [])}
    if cold is not None:
        result["cold"] = cold
    with open(os.path.join(out, "compare.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    # with ROUNDS > 1: the median run's req/s, p50, p99, and the spread over the rounds
    spread = rounds > 1 or any(r["rounds"] > 1 for r in rows)
    header = ["target", "req/s", "p50 ms", "p99 ms", "success", "CPU µs/req", "peak RSS MiB", "vs direct", "vs nginx"]
    if spread:
        header[1:2] = ["req/s (median)", "req/s min-max"]

    def cells(r):
        rps = f"{r['rps']:,.0f}"
        if r["scenario"].endswith("1mib"):
            rps += f" ({r['mib_per_s']:,.0f} MiB/s)"
        c = [r["label"] + (" *" if r.get("reused") else ""), rps, fmt_ms(r["p50_ms"]),
             fmt_ms(r["p99_ms"]), f"{r['success_pct_min']:.2f}%", fmt_us(r.get("cpu_us_per_req")),
             fmt_mib(r.get("rss_kib")),
             fmt_ratio(r["vs_direct"]), fmt_ratio(r["vs_nginx"])]
        if spread:
            sp = f"{r['rps_min']:,.0f}-{r['rps_max']:,.0f}"
            if r["rps"]:
                sp += f" ({100.0 * (r['rps_max'] - r['rps_min']) / r['rps']:.0f}%)"
            if r["rounds"] != rounds:
                sp += f" [{r['rounds']}/{rounds} runs]"
            c.insert(2, sp)
        return c

    # terminal
    lines = []
    for k, v in meta["machine"].items():
        lines.append(f"{k}: {v}")
    lines.append("settings: " + ", ".join(f"{k}={v}" for k, v in meta["settings"].items()))
    if spread and rows:
        lines.append(f"each row: {rounds} interleaved rounds; req/s, p50, p99, CPU µs/req of the run with the "
                     "median req/s; min-max (and (max-min)/median) of req/s over the rounds; success: lowest; "
                     "peak RSS: highest")
    if rows:
        lines.append(CPU_LEGEND)
    for s in scenarios:
        table = [header] + [cells(r) for r in rows if r["scenario"] == s]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines.append("")
        lines.append(f"== {s}: {meta.get('scenario_help', {}).get(s, '')}")
        for row in table:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(row, widths))))
    helps = meta.get("scenario_help", {})
    if cold is not None:
        for key, _title, header_c, rows_c in cold_tables(cold):
            table = [header_c] + rows_c
            widths = [max(len(row[i]) for row in table) for i in range(len(header_c))]
            lines.append("")
            lines.append(f"== {key}: {helps.get(key, '')}")
            for row in table:
                lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                       for i, (c, w) in enumerate(zip(row, widths))).rstrip())
            for c in cold["start"] if key == "cold" else []:
                if c["kind"] == "exec":
                    lines.append(f"exec: rouse's log says backend ready after {fmt_ms(c.get('logged_ready_ms'))} ms "
                                 f"(median); a warm request through rouse takes {fmt_ms(c.get('warm_ms'))} ms")
        if not cold["start"] and not cold["burst"]:
            lines.append("")
            lines.append("== cold start: nothing measured (see the notes)")
    if meta.get("memory"):
        lines.append("")
        lines.append("== memory (RSS of the process tree, MiB)")
        mh = ["process", "idle after start", f"{meta['settings'].get('idle_conns')} idle conns", "conns held", "peak (VmHWM sum)"]
        table = [mh] + [[m["name"], fmt_mib(m.get("idle_kib")), fmt_mib(m.get("conns_kib")),
                         str(m.get("conns_held", "n/a")), fmt_mib(m.get("hwm_kib"))] for m in meta["memory"]]
        widths = [max(len(row[i]) for row in table) for i in range(len(mh))]
        for row in table:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(row, widths))))
    if any(r.get("reused") for r in rows):
        lines.append("")
        lines.append("* same oha run" + ("s (round for round)" if spread else "")
                     + " as the row of the same target in another scenario (not re-measured)")
    for n in meta.get("notes", []):
        lines.append("note: " + n)
    print("\n".join(lines))

    # markdown
    md = ["# rouse vs nginx vs haproxy vs systemd-socket-proxyd", ""]
    md += [f"- {k}: {v}" for k, v in meta["machine"].items()]
    md.append("- settings: " + ", ".join(f"{k}={v}" for k, v in meta["settings"].items()))
    for s in scenarios:
        md += ["", f"## {s}", "", meta.get("scenario_help", {}).get(s, ""), ""]
        md.append("| " + " | ".join(header) + " |")
        md.append("|---|" + "--:|" * (len(header) - 1))
        for r in rows:
            if r["scenario"] == s:
                md.append("| " + " | ".join(cells(r)) + " |")
    if cold is not None:
        md += ["", "## cold start", "", helps.get("cold", "")]

        def md_table(header_c, rows_c):
            return (["", "| " + " | ".join(h or "&nbsp;" for h in header_c) + " |",
                     "|---|" + "--:|" * (len(header_c) - 1)]
                    + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows_c])

        tables = {key: (title, h, r) for key, title, h, r in cold_tables(cold)}
        if "cold" in tables:
            md += md_table(*tables["cold"][1:])
            md.append("")
            for c in cold["start"]:
                md.append(f"- {c['backend']}: alone = {c['reference']}; via rouse = curl's time_total "
                          f"of the first request; overhead = via rouse - alone (difference of the medians). "
                          f"Per run, alone: {' '.join(f'{v:g}' for v in c['alone_runs_ms'])}; "
                          f"via rouse: {' '.join(f'{v:g}' for v in c['rouse_runs_ms'])}.")
                if c["kind"] == "exec":
                    md.append(f"  rouse's log: backend ready after {fmt_ms(c.get('logged_ready_ms'))} ms (median); "
                              f"a warm request through rouse: {fmt_ms(c.get('warm_ms'))} ms.")
                if c.get("cli_ms") is not None:
                    md.append(f"  `podman start` (CLI process included) until it answers, per run: "
                              f"{' '.join(f'{v:g}' for v in c['cli_runs_ms'])}.")
        b = cold["burst"]
        if b:
            title, h, r = tables["cold-burst"]
            md += ["", f"### {title}", "", helps.get("cold-burst", "")]
            md += md_table(h, r)
            md += ["", "listen overflows: the host's TcpExt ListenOverflows during the runs (a full accept "
                   "queue drops the SYN and the client retries 1 s later, hence 1-second tails; `rouse "
                   "static` listens with a backlog of 128). Per run (backend starts = rouse's log lines "
                   "`backend ready` / `backend starting`; must be 1):", "",
                   "| run | p50 ms | p99 ms | slowest ms | got 200 | errors | backend ready | backend starting "
                   "| listen overflows | alone: p50 ms | alone: p99 ms | alone: overflows |",
                   "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
            alone_by_run = {x["run"]: x for x in b["alone_runs"]}
            for x in b["runs"]:
                y = alone_by_run.get(x["run"], {})
                md.append(f"| {x['run']} | {fmt_ms(x['p50_ms'])} | {fmt_ms(x['p99_ms'])} | {fmt_ms(x['slowest_ms'])} | "
                          f"{x['got_200']}/{x['requests']} | {x['errors']} | {x['backend_ready']} | "
                          f"{x['backend_starting']} | {x['listen_overflows']} | {fmt_ms(y.get('p50_ms'))} | "
                          f"{fmt_ms(y.get('p99_ms'))} | {y.get('listen_overflows', 'n/a')} |")
        if not cold["start"] and not b:
            md += ["", "Nothing measured (see the notes)."]
    if meta.get("memory"):
        md += ["", "## memory", "",
               "RSS summed over the process tree (nginx: master + workers). Idle: right after start "
               "and one request. Idle conns: that many client connections that each made one "
               "keep-alive request and then stay open, idle. Peak: VmHWM summed at the end of the run.",
               "", "| process | idle MiB | with idle conns MiB | conns held | peak MiB |", "|---|--:|--:|--:|--:|"]
        for m in meta["memory"]:
            md.append(f"| {m['name']} | {fmt_mib(m.get('idle_kib'))} | {fmt_mib(m.get('conns_kib'))} | "
                      f"{m.get('conns_held', 'n/a')} | {fmt_mib(m.get('hwm_kib'))} |")
    if rows:
        if spread:
            md += ["", f"Every row was measured in {rounds} interleaved rounds (round 1 ran every row of every "
                   "scenario, then round 2, ...). req/s, p50, p99 and CPU µs/req come from one run: the one with "
                   "the median req/s (for an even count, the lower of the two middle runs); req/s min-max is the "
                   "spread over the rounds, in brackets (max - min) / median. success is the lowest over the "
                   "rounds, peak RSS the highest. compare.json has every round's figures (`runs`)."]
        md += ["", "req/s ratios are against the `direct` and `nginx` rows of the same scenario. "
               "success = 2xx / (responses + errors); requests cut off by the -z deadline are not counted. "
               "peak RSS: VmRSS of the target's process tree sampled every 50 ms during that row's run"
               + ("s." if spread else "."),
               "CPU µs/req: the CPU time (user + system, all threads) of the target's process tree (nginx: master "
               "+ workers; for `direct`, the backend itself) from just before to just after the measured oha run, "
               "divided by the number of responses oha got in that run"
               + (" (the median run's, like req/s; compare.json has every round's `cpu_s` and `cpu_us_per_req`)"
                  if spread else "")
               + ". Clock-tick resolution (1/SC_CLK_TCK s per process). It measures the proxy's cost per request "
               "and is less sensitive than req/s to how the cores are shared between oha, the proxy and the "
               "backend: a proxy that gets less CPU serves fewer req/s but uses about as much CPU per request.",
               "Rows marked * reuse the oha run" + ("s (round for round)" if spread else "")
               + " of the same target and flags from another scenario."]
    md += [f"- note: {n}" for n in meta.get("notes", [])]
    md += ["", "Raw oha output: `compare-<scenario>-<target>-r<round>.json` next to this file"
           + ("; chart: `latency.svg`." if any(r["scenario"] == "keepalive" for r in rows) else ".")]
    with open(os.path.join(out, "compare.md"), "w") as f:
        f.write("\n".join(md) + "\n")

    ka = [r for r in rows if r["scenario"] == "keepalive"]
    svg_path = os.path.join(out, "latency.svg")
    if ka:
        with open(svg_path, "w") as f:
            f.write(svg_chart(ka, meta))
    elif os.path.exists(svg_path):
        os.remove(svg_path)
    print()
    print(f"written: {out}/compare.json, {out}/compare.md" + (f", {svg_path}" if ka else ""))


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg_chart(rows, meta):
    """Grouped bars: one group per percentile, one bar per target, hand-written SVG."""
    pcts = [("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms"), ("p99.9", "p99_9_ms")]
    colors = ["#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2", "#9c755f"]
    W, H = 860, 440
    left, right, top, bottom = 70, 200, 50, 60
    pw, ph = W - left - right, H - top - bottom
    vmax = max((r[k] or 0) for r in rows for _, k in pcts) or 1.0
    # a "nice" axis maximum
    mag = 10 ** len(str(int(vmax))) / 10 if vmax >= 1 else 0.1
    while mag * 10 < vmax:
        mag *= 10
    step = next(s * mag for s in (0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10) if s * mag * 5 >= vmax)
    ymax = step * 5
    while ymax < vmax:
        ymax += step
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         'font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{left}" y="22" font-size="15" font-weight="bold">Latency percentiles, warm keep-alive '
         f'(oha -c 64 -z {esc(meta["settings"].get("DURATION"))}'
         + (f', the median of {esc(meta["settings"].get("ROUNDS"))} runs by req/s'
            if int(num(meta["settings"].get("ROUNDS")) or 1) > 1 else "") + ')</text>',
         f'<text x="{left}" y="38" fill="#555">{esc(meta["machine"].get("machine", ""))}</text>']
    y = 0.0
    while y <= ymax + 1e-9:
        py = top + ph - ph * y / ymax
        o.append(f'<line x1="{left}" y1="{py:.1f}" x2="{left + pw}" y2="{py:.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end">{y:g}</text>')
        y += step
    o.append(f'<text transform="translate(18,{top + ph / 2}) rotate(-90)" text-anchor="middle">ms</text>')
    gw = pw / len(pcts)
    bw = min(40.0, gw * 0.8 / len(rows))
    for gi, (name, key) in enumerate(pcts):
        gx = left + gi * gw + (gw - bw * len(rows)) / 2
        for ri, r in enumerate(rows):
            v = r[key] or 0.0
            h = ph * v / ymax
            x = gx + ri * bw
            o.append(f'<rect x="{x:.1f}" y="{top + ph - h:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
                     f'fill="{colors[ri % len(colors)]}"><title>{esc(r["label"])} {name}: {v:.3f} ms</title></rect>')
            o.append(f'<text x="{x + (bw - 2) / 2:.1f}" y="{top + ph - h - 3:.1f}" text-anchor="middle" '
                     f'font-size="9">{v:.2f}</text>')
        o.append(f'<text x="{left + gi * gw + gw / 2:.1f}" y="{top + ph + 18}" text-anchor="middle" '
                 f'font-size="13">{name}</text>')
    o.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/>')
    for ri, r in enumerate(rows):
        ly = top + 10 + ri * 20
        o.append(f'<rect x="{left + pw + 20}" y="{ly - 10}" width="12" height="12" fill="{colors[ri % len(colors)]}"/>')
        o.append(f'<text x="{left + pw + 38}" y="{ly}">{esc(r["label"])}</text>')
    o.append(f'<text x="{left}" y="{H - 15}" fill="#555">req/s: ' +
             esc(", ".join(f'{r["label"]} {r["rps"]:,.0f}' for r in rows)) + '</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


def cmd_targets(json_path, out=None):
    """The project's performance targets, checked against one compare.json; Markdown table.

    Each line names the target, what this run measured, and whether it was met. A target
    whose rows are missing (target not installed, scenario not run) says so."""
    with open(json_path) as f:
        d = json.load(f)
    rows = d.get("rows", [])

    def find(scen, target=None, label=None):
        for r in rows:
            if r.get("scenario") != scen:
                continue
            if target is not None and r.get("target") != target:
                continue
            if label is not None and label not in r.get("label", ""):
                continue
            return r
        return None

    lines = []

    def add(name, measured, met):
        mark = "n/a" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {name} | {measured} | {mark} |")

    def rps(r):
        return f"{r['rps']:,.0f}"

    for scen, what, need in (
        ("keepalive", "keep-alive, small body", 1.1),
        ("newconn", "new connection per request", 1.1),
        ("1mib", "1 MiB responses", 1.2),
        ("https-keepalive", "HTTPS keep-alive", None),
        ("https-newconn", "HTTPS, TLS handshake per request", None),
    ):
        ro = find(scen, "rouse")
        if ro is None:
            continue
        for other in ("nginx", "haproxy"):
            if other == "haproxy" and scen == "1mib":
                continue
            o = find(scen, other)
            if o is None:
                add(f"{what}: rouse vs {other}", f"{other} not measured", None)
                continue
            ratio = ro["rps"] / o["rps"] if o.get("rps") else 0
            p99_ok = ro["p99_ms"] <= o["p99_ms"]
            measured = (
                f"{rps(ro)} vs {rps(o)} req/s = **{ratio:.2f}x**; "
                f"p99 {ro['p99_ms']:.2f} vs {o['p99_ms']:.2f} ms"
            )
            if ro.get("cpu_us_per_req") and o.get("cpu_us_per_req"):
                measured += f"; CPU {ro['cpu_us_per_req']:.1f} vs {o['cpu_us_per_req']:.1f} µs/req"
            if need is None:
                add(f"{what}: rouse vs {other} (no target)", measured, None)
            else:
                p99_needed = scen != "1mib"
                met = ratio >= need and (p99_ok or not p99_needed)
                goal = f">= {need}x {other}" + (", p99 no worse" if p99_needed else "")
                add(f"{what}: rouse {goal}", measured, met)
    for scen, what in (("tcp-keepalive", "keep-alive"), ("tcp-newconn", "new connection"), ("tcp-1mib", "1 MiB")):
        ro, sp = find(scen, "rouse"), find(scen, "socket-proxyd")
        if ro and sp:
            ratio = ro["rps"] / sp["rps"]
            add(
                f"raw TCP ({what}): rouse >= 2x systemd-socket-proxyd",
                f"{rps(ro)} vs {rps(sp)} req/s = **{ratio:.2f}x**",
                ratio >= 2.0,
            )
    one = find("routes-1k", "rouse", "1 route")
    for which in ("first route", "last route", "wildcard match"):
        r = find("routes-1k", "rouse", which)
        if one and r:
            delta = r["rps"] / one["rps"] - 1
            measured = f"{rps(r)} vs {rps(one)} req/s ({delta:+.1%})"
            if r.get("cpu_us_per_req") and one.get("cpu_us_per_req"):
                cpu = r["cpu_us_per_req"] / one["cpu_us_per_req"] - 1
                measured += f"; CPU {r['cpu_us_per_req']:.1f} vs {one['cpu_us_per_req']:.1f} µs/req ({cpu:+.1%})"
            add(f"1,000 routes ({which}) within 3% of 1 route", measured, delta >= -0.03)
    mem = {m["name"]: m for m in d.get("memory", [])}
    if "rouse-http" in mem:
        m = mem["rouse-http"]
        idle = m.get("idle_kib")
        if idle:
            add("idle RSS <= 15 MiB", f"{idle / 1024:.1f} MiB", idle <= 15 * 1024)
        conns = m.get("conns_kib")
        if conns:
            add(
                "RSS with 1,000 open connections <= 64 MiB",
                f"{conns / 1024:.1f} MiB ({m.get('conns_held', '')})",
                conns <= 64 * 1024,
            )
    for c in d.get("cold", {}).get("start", []):
        add(
            f"cold start, {c['kind']}: first response <= backend alone + {c['budget_ms']:g} ms",
            f"{c['rouse_ms']:.2f} vs {c['alone_ms']:.2f} ms ({c['overhead_ms']:+.2f} ms), median of {c['runs']}",
            c.get("met"),
        )
    burst = d.get("cold", {}).get("burst")
    if burst and burst.get("runs"):
        runs = burst["runs"]
        n = burst.get("requests", 0)
        all_ok = all(r.get("got_200") == n for r in runs)
        one_start = all(r.get("backend_ready") == 1 for r in runs)
        p50 = sorted(r["p50_ms"] for r in runs)[len(runs) // 2]
        p99 = sorted(r["p99_ms"] for r in runs)[len(runs) // 2]
        add(
            f"{n} concurrent requests at a cold route: all answered, one start",
            f"{n}/{n} in every one of {len(runs)} runs: {all_ok}; one start each: {one_start}; "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (medians)",
            all_ok and one_start,
        )
    head = ["| target | measured | met |", "|---|---|---|"]
    text = "\n".join(head + lines) + "\n"
    if out:
        with open(out, "w") as f:
            f.write(text)
    sys.stdout.write(text)


def main():
    cmds = {
        "rss": cmd_rss,
        "rss-peak": cmd_rss_peak,
        "hold": cmd_hold,
        "report": cmd_report,
        "targets": cmd_targets,
    }
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.stderr.write(__doc__)
        sys.exit(2)
    cmds[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
