#!/usr/bin/env python3
"""The dns-cache benchmark driver (called by bench/cache/run.sh; standard library only).

dns-cache against dnsmasq 2.90 and Unbound as caching forwarders in front of the same Knot,
each forwarder confined to CPU 1 (cpuset cgroup + sched_setaffinity), dnsperf and Knot on
CPU 0. Reuses bench/bench.py's process, /proc and dnsperf helpers. Steps:

  0. Knot (1 UDP worker) serving bench/gen_cluster.py's zones; answer check: every line of
     q-check.txt asked of dns-cache and dnsmasq cold (forwarded) and warm (cached), compared
     with Knot's own answer.
  1. cache hits (q-hot): warm-up pass, saturated `-c 1 -q 100 -l D`, then fixed rate
     `-Q RATE -v` (CPU us/query from /proc, p50/p99 from dnsperf's per-query lines).
  2. misses (unique NXDOMAIN names): cache pre-filled with 12,000 unique names, then saturated
     and fixed-rate runs, at --cache-size 150, 1000, 10000 (dns-cache and dnsmasq) and once
     for Unbound.
  3. the ndots:5 search-path mix (q-ndots): warm-up pass over its distinct lines, then
     saturated, per forwarder profile.
  4. RSS after 10,000 and 20,000 distinct names.
Every run records lost queries, the rcode mix (checked against what the query file must
get) and the forwarder's own hit/miss counters (CHAOS *.bind, /metrics, unbound-control).
Writes results.json and results.md into --work and prints the tables.
"""

import argparse
import json
import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
import bench as B  # noqa: E402  (bench/bench.py: /proc, process and dnsperf helpers)
import dnswire  # noqa: E402
import gen_cache  # noqa: E402

DNSMASQ = "/usr/sbin/dnsmasq"
CHAOS_NAMES = ["misses.bind", "insertions.bind", "evictions.bind", "hits.bind"]


def log(msg):
    B.log(msg)


# ----------------------------------------------------------------------------- stats clients


def chaos_txt(port, names, timeout=1.0):
    """{name: first TXT string} for CH TXT queries (dnsmasq's *.bind statistics)."""
    out = {}
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    try:
        for i, name in enumerate(names):
            qid = 0x5000 + i
            s.send(struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + dnswire.encode_name(name)
                   + struct.pack("!HH", 16, 3))
            while True:
                msg = s.recv(4096)
                if struct.unpack_from("!H", msg, 0)[0] == qid:
                    break
            an = struct.unpack_from("!H", msg, 6)[0]
            off = dnswire.read_name(msg, 12)[1] + 4
            value = None
            if an:
                off = dnswire.read_name(msg, off)[1]
                rtype, _, _, rdlen = struct.unpack_from("!HHIH", msg, off)
                off += 10
                if rtype == 16 and rdlen:
                    value = msg[off + 1 : off + 1 + msg[off]].decode("ascii", "replace")
            out[name] = value
    finally:
        s.close()
    return out


METRIC = re.compile(r"^(dnscache_\w+)(\{[^}]*\})?\s+(\S+)$", re.M)


def scrape_metrics(port):
    status, body = B.http_get(port, "/metrics")
    out = {}
    for name, labels, value in METRIC.findall(body):
        out[name + (labels or "")] = float(value)
    return out


def unbound_stats(conf):
    r = subprocess.run(["unbound-control", "-c", conf, "stats_noreset"], capture_output=True, text=True, timeout=10)
    out = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition("=")
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


# ----------------------------------------------------------------------------- servers


def unbound_conf(d, port, up, extra_zones=()):
    extra = "".join(f"""forward-zone:
    name: "{zone}."
    forward-addr: 127.0.0.1@{zport}
""" for zone, zport in extra_zones)
    return f"""server:
    interface: 127.0.0.1@{port}
    port: {port}
    num-threads: 1
    so-reuseport: yes
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    module-config: "iterator"
    do-not-query-localhost: no
    qname-minimisation: no
    prefetch: no
    msg-cache-size: 64m
    rrset-cache-size: 128m
    num-queries-per-thread: 4096
    outgoing-range: 8192
    local-zone: "10.in-addr.arpa." nodefault
    domain-insecure: "cluster.local"
    domain-insecure: "10.in-addr.arpa"
remote-control:
    control-enable: yes
    control-interface: "{d}/ctl.sock"
    control-use-cert: no
forward-zone:
    name: "cluster.local."
    forward-addr: 127.0.0.1@{up}
forward-zone:
    name: "10.in-addr.arpa."
    forward-addr: 127.0.0.1@{up}
""" + extra


def wait_answer(port, proc, timeout=30.0, err=None):
    """Waits until the server answers anything on UDP (a CHAOS query: it is not cached)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {err}")
        try:
            chaos_txt(port, ["version.bind"], timeout=0.2)
            return
        except (OSError, socket.timeout, struct.error):
            time.sleep(0.02)
    raise RuntimeError(f"no answer on port {port}")


class Server:
    """One forwarder instance: kind dns-cache, dnsmasq or unbound."""

    def __init__(self, ctx, label, kind, cache_size=None, flags=(), upstream=None):
        self.ctx, self.label, self.kind = ctx, label, kind
        self.cache_size, self.flags = cache_size, list(flags)
        # (zone, port): forward the zone there instead of to Knot (dns-cache and dnsmasq send
        # everything there; Unbound gets a forward-zone for it).
        self.upstream = upstream
        self.proc = None
        self.metrics_port = None
        self.conf = None

    def describe(self):
        if self.kind == "unbound":
            return "unbound (1 thread, msg-cache 64m, rrset-cache 128m)"
        flags = " ".join([f"--cache-size={self.cache_size}"] + self.flags)
        return f"{self.kind} {flags}"

    def start(self):
        ctx = self.ctx
        self.port = B.free_port()
        name = f"{self.label}-{ctx.seq()}"
        self.name = name
        if self.kind == "unbound":
            d = os.path.join(ctx.work, name)
            os.makedirs(d, exist_ok=True)
            self.conf = os.path.join(d, "unbound.conf")
            with open(self.conf, "w") as f:
                f.write(unbound_conf(d, self.port, ctx.up_port, [self.upstream] if self.upstream else []))
            argv = ["unbound", "-d", "-c", self.conf]
            env = None
        else:
            # dns-cache refuses --user (it never changes user); dnsmasq needs it to stay root.
            common = ["-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--pid-file=",
                      f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--log-facility=-",
                      f"--server=127.0.0.1#{self.upstream[1] if self.upstream else ctx.up_port}",
                      f"--cache-size={self.cache_size}"] + self.flags
            if self.kind == "dnsmasq":
                argv = [DNSMASQ, "--user=root"] + common
                env = None
            else:
                self.metrics_port = B.free_port()
                argv = [ctx.dns_cache] + common + ["--workers=1", f"--metrics-address=127.0.0.1:{self.metrics_port}"]
                env = dict(os.environ, RUST_LOG="info")
        self.argv = argv
        self.proc, _, self.err = ctx.srv.start(name, argv, {1}, cgroup=True, env=env)
        if self.kind == "dns-cache":
            B.wait_log(self.err, r"listening on udp 127\.0\.0\.1:(\d+)", self.proc, 30)
            if any(f.startswith("--secondary=") for f in self.flags):
                deadline = time.monotonic() + 60
                while scrape_metrics(self.metrics_port).get('dnscache_secondary_loaded{zone="cluster.local"}') != 1.0:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"dns-cache never loaded the zone; see {self.err}")
                    time.sleep(0.05)
        if self.kind == "unbound":
            deadline = time.monotonic() + 30
            while True:
                try:
                    dnswire.Client("127.0.0.1", self.port, timeout=0.2).query("10.in-addr.arpa", "SOA")
                    break
                except (OSError, socket.timeout):
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"unbound did not start; see {self.err}")
                    time.sleep(0.05)
        else:
            wait_answer(self.port, self.proc, err=self.err)
        self.pid = self.proc.pid
        self.rss_start_kb = B.status_kb(self.pid, "VmRSS")
        return self

    def stop(self):
        self.ctx.srv.stop(self.name)
        self.exit_code = self.proc.returncode

    def alive(self):
        return self.proc.poll() is None

    def stats(self):
        """Normalised counters: hits, misses (+ insertions, evictions, coalesced, ...)."""
        if self.kind == "unbound":
            u = unbound_stats(self.conf)
            return {"hits": u.get("total.num.cachehits", 0), "misses": u.get("total.num.cachemiss", 0),
                    "queries": u.get("total.num.queries", 0)}
        c = chaos_txt(self.port, CHAOS_NAMES)
        out = {n.split(".")[0]: int(v) if v is not None else None for n, v in c.items()}
        if self.kind == "dns-cache":
            m = scrape_metrics(self.metrics_port)
            out["metrics"] = {k: v for k, v in m.items()}
            out["coalesced"] = m.get("dnscache_coalesced_total", 0)
            out["refused_over_limit"] = m.get("dnscache_refused_over_limit_total", 0)
            out["servfail"] = m.get("dnscache_servfail_total", 0)
            out["entries"] = m.get("dnscache_entries", 0)
            for k, v in m.items():
                if k.startswith("dnscache_upstream_failures_total"):
                    out["upstream_failures"] = out.get("upstream_failures", 0) + v
        return out

    def log_problems(self):
        """WARN/ERROR lines and panics in the server's stderr."""
        try:
            with open(self.err, errors="replace") as f:
                text = f.read()
        except OSError:
            return []
        bad = [l for l in text.splitlines()
               if re.search(r"\b(WARN|ERROR)\b|panick|panicked", l) and "accepted but not implemented" not in l]
        return bad


def cpu_times():
    """{cpu index: (busy ticks, total ticks, steal ticks)} from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *v = line.split()
                v = [int(x) for x in v[:8]]  # user nice system idle iowait irq softirq steal
                out[int(name[3:])] = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7], sum(v), v[7])
    return out


def cpu_usage(before, after, seconds):
    """Per CPU: busy % and steal % of one core over an interval."""
    out = {}
    for cpu in after:
        busy = after[cpu][0] - before[cpu][0]
        steal = after[cpu][2] - before[cpu][2]
        out[cpu] = (100.0 * busy / B.CLK_TCK / seconds, 100.0 * steal / B.CLK_TCK / seconds)
    return out


def delta(a, b):
    out = {}
    for k, v in b.items():
        if isinstance(v, (int, float)) and isinstance(a.get(k), (int, float)):
            out[k] = v - a[k]
    return out


# ----------------------------------------------------------------------------- runs


class Ctx:
    def __init__(self, args):
        self.args = args
        self.work = args.work
        self.data = os.path.join(args.work, "data")
        self.dns_cache = os.path.join(args.bin_dir, "dns-cache")
        self.srv = B.Procs(args.work, args.cgroup_srv)
        self.up = B.Procs(args.work, args.cgroup_up)
        self.foreign = B.ForeignCpu(args.root_pid)
        self.retries_left = args.max_retries
        self.counter = 0
        self.problems = []
        self.t0 = time.monotonic()

    def seq(self):
        self.counter += 1
        return self.counter

    def q(self, name):
        return os.path.join(self.data, name)


def expected_rcodes(expect, sent):
    """Expected rcode counts of the first `sent` queries of a file read cyclically from the start."""
    n = len(expect)
    loops, rest = divmod(int(sent), n)
    out = {}
    for code in set(expect):
        out[code] = loops * expect.count(code) if loops else 0
    for code in expect[:rest]:
        out[code] = out.get(code, 0) + 1
    return {k: v for k, v in out.items() if v}


def dnsperf_plain(ctx, server, qfile, label, extra=()):
    """A warm-up / fill pass (one pass over the file); returns the parsed dnsperf summary."""
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(server.port), "-d", qfile, "-n", "1", "-c", "1",
            "-q", "100", "-l", "120"] + list(extra)
    out_path = os.path.join(ctx.work, f"dnsperf-{label}.txt")
    with open(out_path, "wb") as out:
        subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, preexec_fn=lambda: os.sched_setaffinity(0, {0}),
                       timeout=180, check=False)
    with open(out_path, errors="replace") as f:
        return B.parse_dnsperf(f.read())


def measure(ctx, server, dargs, label, verbose=False, rewarm=None, expect=None):
    """One dnsperf run with counters before/after; repeated when foreign CPU load spoiled it
    (within the global retry budget)."""
    while True:
        if rewarm:
            dnsperf_plain(ctx, server, rewarm, f"{label}-rewarm")
        quiet = ctx.foreign.wait_quiet(max_wait=ctx.args.quiet_wait)
        s0 = server.stats()
        c0, t0 = cpu_times(), time.monotonic()
        r = B.run_dnsperf(ctx.work, server.label, server.port, dargs, label, server.pid, ctx.foreign,
                          verbose=verbose)
        use = cpu_usage(c0, cpu_times(), time.monotonic() - t0)
        s1 = server.stats()
        r["quiet_before_pct"] = quiet
        # Whatever ran on the server's CPU besides the server (other processes, including ones
        # that started and ended within the run, which the per-process census misses). A lower
        # bound: /proc/stat's busy ticks under-count short wake-ups on a tickless idle CPU, so at
        # fixed rates this goes negative; it is exact enough at saturation.
        r["cpu1_busy_pct"], r["cpu1_steal_pct"] = use.get(1, (0.0, 0.0))
        r["cpu0_busy_pct"], r["cpu0_steal_pct"] = use.get(0, (0.0, 0.0))
        r["cpu1_other_pct"] = r["cpu1_busy_pct"] - r["server_cpu_pct"]
        r["counters"] = delta(s0, s1)
        if server.kind == "dns-cache":
            r["counters"]["entries_after"] = s1.get("entries")
            m1 = s1.get("metrics", {})
            r["cache_bytes"] = m1.get("dnscache_cache_bytes")
            r["zone_bytes"] = sum(v for k, v in m1.items() if k.startswith("dnscache_secondary_bytes"))
            r["zone_answers"] = sum(v for k, v in m1.items()
                                    if k.startswith("dnscache_secondary_answers_total") and 'result="answered"' in k)
        r.pop("_lat", None)
        spoiled = []
        if r["foreign_cpu_pct"] > ctx.args.foreign_limit:
            spoiled.append(f"other processes used {r['foreign_cpu_pct']:.0f}% of a core")
        if r["cpu1_other_pct"] > ctx.args.cpu1_other_limit:
            spoiled.append(f"CPU 1 was {r['cpu1_other_pct']:.0f}% busy besides the server")
        if quiet > ctx.args.quiet_limit:
            spoiled.append(f"the machine was {quiet:.0f}% busy just before")
        if r["cpu1_steal_pct"] + r["cpu0_steal_pct"] > ctx.args.foreign_limit:
            spoiled.append(f"steal {r['cpu0_steal_pct'] + r['cpu1_steal_pct']:.0f}%")
        r["spoiled"] = spoiled
        if spoiled and ctx.retries_left > 0 and time.monotonic() - ctx.t0 < ctx.args.retry_deadline:
            ctx.retries_left -= 1
            log(f"  {label}: {'; '.join(spoiled)}; repeating")
            continue
        if spoiled:
            ctx.problems.append(f"{label}: kept although {'; '.join(spoiled)} (retry budget spent)")
        break
    r["rss_kb"] = B.status_kb(server.pid, "VmRSS")
    c = r["counters"]
    handled = c.get("hits", 0) + c.get("misses", 0)
    if server.kind != "unbound":
        # The stats call's own CHAOS queries count as hits (dnsmasq does the same).
        handled -= len(CHAOS_NAMES)
        c["hits"] = c.get("hits", 0) - len(CHAOS_NAMES)
    r["hit_pct"] = 100.0 * c.get("hits", 0) / handled if handled > 0 else None
    checks = []
    if r["lost"]:
        checks.append(f"{int(r['lost'])} queries lost")
    if r["rc"] != 0:
        checks.append(f"dnsperf exit {r['rc']}")
    sent = int(r["sent"] or 0)
    if expect is not None and sent:
        want = expected_rcodes(expect, sent)
        got = r["rcodes"]
        off = sum(abs(got.get(k, 0) - want.get(k, 0)) for k in set(got) | set(want))
        r["rcodes_expected"] = want
        r["rcode_mismatch"] = off
        # Queries still in flight when dnsperf stops are the only allowed difference.
        if off > 2 * 100 + int(r["lost"] or 0):
            checks.append(f"rcode mix {got} differs from the expected {want} by {off}")
    if server.kind == "dns-cache":
        accounted = c.get("hits", 0) + c.get("misses", 0) + c.get("coalesced", 0) + c.get("refused_over_limit", 0)
        r["counters_accounted"] = accounted
        if sent and abs(accounted - sent) > 2:
            checks.append(f"hits+misses+coalesced+refused = {accounted:.0f} but dnsperf sent {sent}")
        for k in ("servfail", "refused_over_limit", "upstream_failures"):
            if c.get(k):
                checks.append(f"{k} +{c[k]:.0f}")
    if not server.alive():
        checks.append(f"server exited with {server.proc.returncode}")
    r["checks"] = checks
    if checks:
        ctx.problems.append(f"{label} ({server.describe()}): " + "; ".join(checks))
    msg = (f"{label:28s} {r['qps'] or 0:9.0f} qps, CPU {r['server_cpu_pct']:5.1f}% "
           f"({r['cpu_us_per_query'] or 0:6.2f} us/q), hit {r['hit_pct'] if r['hit_pct'] is not None else float('nan'):5.1f}%, "
           f"lost {int(r['lost'] or 0)}, rcodes {r['rcodes']}, other load {r['foreign_cpu_pct']:.0f}%, "
           f"CPU 1 other {max(0.0, r['cpu1_other_pct']):.0f}%")
    if verbose:
        msg += f", p50 {r['latency_us']['p50'] or 0:.0f} us p99 {r['latency_us']['p99'] or 0:.0f} us"
    if checks:
        msg += "  !! " + "; ".join(checks)
    log(msg)
    return r


# ----------------------------------------------------------------------------- answer check


def norm(resp):
    if resp is None:
        return None
    return {"rcode": resp["rcode"], "tc": resp["tc"],
            "answer": sorted((o, t, d) for o, t, _, d in resp["answer"]),
            "authority": sorted((o, t) for o, t, _, _ in resp["authority"]),
            "ttls": [ttl for _, _, ttl, _ in resp["answer"] + resp["authority"]]}


def ask(client, name, qtype, edns=None):
    try:
        return norm(client.query(name, qtype, edns=edns))
    except socket.timeout:
        return None


def answer_check(ctx, servers):
    """Each q-check line asked of Knot and, cold then warm, of each forwarder."""
    lines = [l.split() for l in open(ctx.q("q-check.txt")) if l.strip()]
    knot = dnswire.Client("127.0.0.1", ctx.up_port, timeout=1.0)
    clients = {s.label: dnswire.Client("127.0.0.1", s.port, timeout=2.0) for s in servers}
    res = {s.label: {"queries": len(lines), "timeouts": 0, "wrong_rcode": 0, "mismatch_cold": 0,
                     "mismatch_warm": 0, "tc_without_edns": 0, "ttl_over_30": 0, "ttl_grew": 0,
                     "examples": []} for s in servers}
    before = {s.label: s.stats() for s in servers}
    asked_edns = 0
    for name, qtype, want, kind in lines:
        ref = ask(knot, name, qtype)
        use_edns = None
        if ref is not None and ref["tc"]:
            use_edns = 1232
        for s in servers:
            c, rr = clients[s.label], res[s.label]
            cold = ask(c, name, qtype)
            if cold is not None and cold["tc"]:
                rr["tc_without_edns"] += 1
            if use_edns or (cold is not None and cold["tc"]):
                use_edns = 1232
            if use_edns:
                cold = ask(c, name, qtype, edns=use_edns)
            warm = ask(c, name, qtype, edns=use_edns)
            if cold is None or warm is None:
                rr["timeouts"] += 1
                continue
            if cold["rcode"] != want:
                rr["wrong_rcode"] += 1
                if len(rr["examples"]) < 8:
                    rr["examples"].append(f"{name} {qtype}: {cold['rcode']} (want {want})")
            r2 = ask(knot, name, qtype, edns=use_edns) if use_edns else ref
            for tag, got in (("mismatch_cold", cold), ("mismatch_warm", warm)):
                if r2 is None or got["rcode"] != r2["rcode"] or got["answer"] != r2["answer"] \
                        or got["authority"] != r2["authority"]:
                    rr[tag] += 1
                    if len(rr["examples"]) < 8:
                        rr["examples"].append(f"{tag} {name} {qtype} ({kind}): {got} vs knot {r2}")
            if any(t > 30 for t in cold["ttls"] + warm["ttls"]):
                rr["ttl_over_30"] += 1
            if sum(warm["ttls"]) > sum(cold["ttls"]):
                rr["ttl_grew"] += 1
        if use_edns:
            asked_edns += 1
    after = {s.label: s.stats() for s in servers}
    for s in servers:
        d = delta(before[s.label], after[s.label])
        res[s.label]["counters"] = d
        res[s.label]["edns_retries"] = asked_edns
    for c in list(clients.values()) + [knot]:
        c.close()
    return res


# ----------------------------------------------------------------------------- phases


def phase_hits(ctx, results):
    a = ctx.args
    hot, hot_u = ctx.q("q-hot.txt"), ctx.q("q-hot-unique.txt")
    expect = ["NOERROR"]
    runs = {}
    profiles = [("dns-cache", "dns-cache", 10000), ("dnsmasq", "dnsmasq", 10000), ("unbound", "unbound", None)]
    for rep in range(a.hit_reps):
        order = profiles[rep % 3:] + profiles[:rep % 3]
        for label, kind, size in order:
            s = Server(ctx, label, kind, size).start()
            w = dnsperf_plain(ctx, s, hot_u, f"hits-warm-{label}-{rep}")
            sat = measure(ctx, s, ["-d", hot, "-c", "1", "-q", "100", "-l", str(a.duration)],
                          f"hits-sat-{label}-{rep}", rewarm=hot_u, expect=expect)
            fix = measure(ctx, s, ["-d", hot, "-c", "1", "-q", "100", "-Q", str(a.rate), "-l", str(a.duration)],
                          f"hits-fixed-{label}-{rep}", verbose=True, rewarm=hot_u, expect=expect)
            sat["warmup_completed"] = w["completed"]
            ctx.problems += [f"{label} stderr: {l}" for l in s.log_problems()[:5]]
            s.stop()
            runs.setdefault(label, {"saturated": [], "fixed": [], "describe": s.describe()})
            runs[label]["saturated"].append(sat)
            runs[label]["fixed"].append(fix)
    results["hits"] = runs


def phase_misses(ctx, results):
    a = ctx.args
    pre, qsat, qfix = ctx.q("q-miss-prefill.txt"), ctx.q("q-miss-sat.txt"), ctx.q("q-miss-fixed.txt")
    expect = ["NXDOMAIN"]
    runs = {}
    configs = []
    for size in (150, 1000, 10000):
        for kind in ("dnsmasq", "dns-cache"):
            configs.append((f"{kind}-c{size}", kind, size))
    configs.append(("unbound", "unbound", None))
    for label, kind, size in configs:
        s = Server(ctx, label, kind, size).start()
        fill = dnsperf_plain(ctx, s, pre, f"miss-prefill-{label}")
        st = s.stats()
        sat = measure(ctx, s, ["-d", qsat, "-c", "1", "-q", "100", "-l", str(a.miss_sat_duration)],
                      f"miss-sat-{label}", expect=expect)
        fix = measure(ctx, s, ["-d", qfix, "-c", "1", "-q", "100", "-Q", str(a.miss_rate), "-l",
                               str(a.miss_duration)], f"miss-fixed-{label}", verbose=True, expect=expect)
        for r in (sat, fix):
            c = r["counters"]
            if c.get("hits", 0) > 5:
                ctx.problems.append(f"miss run {label}: {c['hits']:.0f} cache hits on never-repeated names")
        ctx.problems += [f"{label} stderr: {l}" for l in s.log_problems()[:5]]
        runs[label] = {"kind": kind, "cache_size": size, "describe": s.describe(), "prefill": fill,
                       "after_prefill": {k: v for k, v in st.items() if k != "metrics"},
                       "saturated": sat, "fixed": fix, "rss_kb": B.status_kb(s.pid, "VmRSS")}
        s.stop()
    results["misses"] = runs


NDOTS_PROFILES = [
    # The manifest's setup: the cluster zone held as a copy transferred from Knot (the route).
    ("dns-cache-secondary", "dns-cache", 10000, ["--secondary=/cluster.local/"]),
    ("dns-cache-c10000", "dns-cache", 10000, []),
    ("unbound", "unbound", None, []),
    ("dnsmasq-default", "dnsmasq", 150, []),
    ("dnsmasq-kubedns", "dnsmasq", 1000, ["--no-negcache"]),
    ("dns-cache-kubedns", "dns-cache", 1000, ["--no-negcache"]),
    ("dns-cache-c100000", "dns-cache", 100000, []),
]


def phase_ndots(ctx, results):
    a = ctx.args
    qf, qu = ctx.q("q-ndots.txt"), ctx.q("q-ndots-unique.txt")
    with open(ctx.q("q-ndots.expect")) as f:
        expect = f.read().split()
    runs = {}
    # BENCH_NDOTS_ONLY=label,label: a subset of the profiles (for quick comparisons by hand).
    only = [x for x in os.environ.get("BENCH_NDOTS_ONLY", "").split(",") if x]
    profiles = [p for p in NDOTS_PROFILES if not only or p[0] in only]
    for rep in range(a.ndots_reps):
        n = len(profiles)
        order = profiles[rep % n:] + profiles[:rep % n]
        for label, kind, size, flags in order:
            s = Server(ctx, label, kind, size, flags).start()
            t = time.monotonic()
            w = dnsperf_plain(ctx, s, qu, f"ndots-warm-{label}-{rep}")
            warm_s = time.monotonic() - t
            r = measure(ctx, s, ["-d", qf, "-c", "1", "-q", "100", "-l", str(a.duration)],
                        f"ndots-{label}-{rep}", expect=expect)
            r["warmup_s"] = warm_s
            r["warmup_qps"] = w["qps"]
            ctx.problems += [f"{label} stderr: {l}" for l in s.log_problems()[:5]]
            s.stop()
            runs.setdefault(label, {"describe": s.describe(), "runs": []})["runs"].append(r)
    results["ndots"] = runs


def phase_rss(ctx, results):
    out = {}
    for label, kind, size in (("dns-cache", "dns-cache", 10000), ("dnsmasq", "dnsmasq", 10000),
                              ("unbound", "unbound", None)):
        s = Server(ctx, label, kind, size).start()
        time.sleep(0.2)
        rec = {"describe": s.describe(), "start_kb": B.status_kb(s.pid, "VmRSS")}
        for part in ("a", "b"):
            r = dnsperf_plain(ctx, s, ctx.q(f"q-fill-{part}.txt"), f"rss-fill-{part}-{label}")
            time.sleep(0.3)
            st = s.stats()
            rec[f"after_{part}"] = {"rss_kb": B.status_kb(s.pid, "VmRSS"), "hwm_kb": B.status_kb(s.pid, "VmHWM"),
                                    "completed": r["completed"], "lost": r["lost"], "rcodes": r["rcodes"],
                                    "entries": st.get("entries"), "misses": st.get("misses"),
                                    "insertions": st.get("insertions"), "evictions": st.get("evictions")}
            if r["lost"]:
                ctx.problems.append(f"rss fill {part} {label}: {int(r['lost'])} lost")
        ctx.problems += [f"{label} stderr: {l}" for l in s.log_problems()[:5]]
        s.stop()
        out[label] = rec
        a, b = rec["after_a"], rec["after_b"]
        log(f"RSS {label:10s}: start {rec['start_kb'] / 1024:.1f} MiB, after 10k names {a['rss_kb'] / 1024:.1f} MiB "
            f"(entries {a['entries']}), after 20k names {b['rss_kb'] / 1024:.1f} MiB (entries {b['entries']}), "
            f"HWM {b['hwm_kb'] / 1024:.1f} MiB")
    results["rss"] = out


INTERNET_ZONE = "inet.example"
# The legacy manifest's cache flags for dns-cache and dnsmasq; Unbound as it comes.
INTERNET_PROFILES = [
    ("dns-cache", "dns-cache", 1000, ["--no-negcache"]),
    ("dnsmasq", "dnsmasq", 1000, ["--no-negcache"]),
    ("unbound", "unbound", None, []),
]
CLIENT_TIMEOUT_S = 5.0


def start_slow_upstream(ctx):
    """bench/cache/slow_upstream.py on CPU 0; returns (name, port)."""
    name = f"slow-upstream-{ctx.seq()}"
    argv = [sys.executable, os.path.join(HERE, "slow_upstream.py"), "--port", "0"]
    proc, _, _ = ctx.up.start(name, argv, {0}, cgroup=True)
    out = os.path.join(ctx.work, f"{name}.out")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(out) as f:
            m = re.search(r"listening (\d+)", f.read())
        if m:
            return name, int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError("slow upstream did not start")


def dnsperf_internet(ctx, server, qfile, label):
    """One fixed-rate run with per-query lines; returns shares and latencies (client view:
    an unanswered query costs the client its whole 5 s timeout)."""
    a = ctx.args
    out_path = os.path.join(ctx.work, f"dnsperf-{label}.txt")
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(server.port), "-d", qfile, "-c", "1", "-q", "5000",
            "-Q", str(a.internet_rate), "-l", str(a.internet_duration), "-t", str(int(CLIENT_TIMEOUT_S)), "-v"]
    s0 = server.stats()
    u0, k0 = B.tree_cpu_split(server.pid)
    with open(out_path, "wb") as out:
        subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, preexec_fn=lambda: os.sched_setaffinity(0, {0}),
                       timeout=a.internet_duration + 60, check=False)
    u1, k1 = B.tree_cpu_split(server.pid)
    # Let lingering upstream tries end before reading the counters.
    time.sleep(CLIENT_TIMEOUT_S)
    s1 = server.stats()
    with open(out_path, errors="replace") as f:
        text = f.read()
    summary = B.parse_dnsperf(text)
    lat, good, rcodes = [], [], {}
    for line in text.splitlines():
        # "> RCODE name type seconds"; "> T name type" is a query dnsperf gave up on.
        if line.startswith("> ") and not line.startswith("> T "):
            parts = line.split()
            rcodes[parts[1]] = rcodes.get(parts[1], 0) + 1
            lat.append(float(parts[-1]) * 1e6)
            if parts[1] == "NOERROR":
                good.append(float(parts[-1]) * 1e6)
    sent = int(summary["sent"] or 0)
    lost = int(summary["lost"] or 0)
    answered = sorted(lat)
    # The user's view: time to a usable (NOERROR) answer; a SERVFAIL or no reply at all is a
    # failed lookup, counted as the client's whole timeout.
    client = sorted(good + [CLIENT_TIMEOUT_S * 1e6] * max(0, sent - len(good)))
    noerror, servfail = rcodes.get("NOERROR", 0), rcodes.get("SERVFAIL", 0)
    other = sum(v for k, v in rcodes.items() if k not in ("NOERROR", "SERVFAIL"))
    r = {"sent": sent, "lost": lost, "rcodes": rcodes,
         "noerror_pct": 100.0 * noerror / sent if sent else None,
         "servfail_pct": 100.0 * servfail / sent if sent else None,
         "other_pct": 100.0 * other / sent if sent else None,
         "unanswered_pct": 100.0 * lost / sent if sent else None,
         "answered_latency_us": {"p50": B.percentile(answered, 50), "p99": B.percentile(answered, 99)},
         "noerror_latency_us": {"p50": B.percentile(sorted(good), 50), "p99": B.percentile(sorted(good), 99)},
         "client_latency_us": {"p50": B.percentile(client, 50), "p90": B.percentile(client, 90),
                               "p99": B.percentile(client, 99)},
         "cpu_s": ((u1 - u0) + (k1 - k0)) / B.CLK_TCK,
         "counters": delta(s0, s1), "rss_kb": B.status_kb(server.pid, "VmRSS"),
         "hwm_kb": B.status_kb(server.pid, "VmHWM")}
    if server.kind == "dns-cache":
        m1 = s1.get("metrics", {})
        r["upstream"] = {k.split("{")[0].replace("dnscache_upstream_", ""): v for k, v in m1.items()
                         if k.startswith("dnscache_upstream_")}
    os.remove(out_path)
    log(f"{label:24s} sent {sent}, NOERROR {r['noerror_pct']:.2f}%, SERVFAIL {r['servfail_pct']:.2f}%, "
        f"other {r['other_pct']:.2f}%, unanswered {r['unanswered_pct']:.2f}%, "
        f"p50/p99 answered {r['answered_latency_us']['p50'] or 0:.0f}/{r['answered_latency_us']['p99'] or 0:.0f} us, "
        f"time to a usable answer p50/p90/p99 {r['client_latency_us']['p50'] or 0:.0f}/"
        f"{r['client_latency_us']['p90'] or 0:.0f}/{r['client_latency_us']['p99'] or 0:.0f} us")
    return r


def phase_internet(ctx, results):
    """Unique names at a fixed rate through an upstream with internet-like delays and losses."""
    a = ctx.args
    name, port = start_slow_upstream(ctx)
    count = a.internet_rate * a.internet_duration + a.internet_rate
    runs = {}
    for rep in range(a.internet_reps):
        qfile = ctx.q(f"q-internet-{rep}.txt")
        with open(qfile, "w") as f:
            for i in range(count):
                f.write(f"u{i}-r{rep}.{INTERNET_ZONE} A\n")
        n = len(INTERNET_PROFILES)
        order = INTERNET_PROFILES[rep % n:] + INTERNET_PROFILES[:rep % n]
        for label, kind, size, flags in order:
            s = Server(ctx, label, kind, size, flags, upstream=(INTERNET_ZONE, port)).start()
            r = dnsperf_internet(ctx, s, qfile, f"internet-{label}-{rep}")
            ctx.problems += [f"{label} stderr: {l}" for l in s.log_problems()[:5]
                             if "upstream marked down" not in l]
            s.stop()
            runs.setdefault(label, {"describe": s.describe(), "runs": []})["runs"].append(r)
    ctx.up.stop(name)
    results["internet"] = runs


# ----------------------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--cgroup-srv", required=True, help="cpuset cgroup (v1) holding CPU 1, for the forwarders")
    p.add_argument("--cgroup-up", required=True, help="cpuset cgroup (v1) holding CPU 0, for Knot")
    p.add_argument("--root-pid", type=int, default=os.getppid())
    p.add_argument("--hit-reps", type=int, default=3, help="rounds of the cache-hit runs")
    p.add_argument("--ndots-reps", type=int, default=1, help="rounds of the ndots runs")
    p.add_argument("--duration", type=int, default=10, help="seconds per hit/ndots run")
    p.add_argument("--miss-sat-duration", type=int, default=5, help="seconds per saturated miss run")
    p.add_argument("--miss-duration", type=int, default=8, help="seconds per fixed-rate miss run")
    p.add_argument("--rate", type=int, default=10000, help="fixed rate of the hit runs")
    p.add_argument("--miss-rate", type=int, default=3000, help="fixed rate of the miss runs")
    p.add_argument("--foreign-limit", type=float, default=15.0)
    p.add_argument("--cpu1-other-limit", type=float, default=15.0,
                   help="repeat a run when CPU 1 was this %% busy besides the server")
    p.add_argument("--quiet-limit", type=float, default=30.0,
                   help="repeat a run when the machine was this busy (%% of a core) just before it")
    p.add_argument("--max-retries", type=int, default=6, help="repeats for runs spoiled by other load (whole run)")
    p.add_argument("--retry-deadline", type=float, default=480.0, help="no repeats after this many seconds")
    p.add_argument("--quiet-wait", type=float, default=5.0, help="max seconds to wait for a quiet machine per run")
    p.add_argument("--internet-rate", type=int, default=300, help="fixed rate of the internet-like phase")
    p.add_argument("--internet-duration", type=int, default=30, help="seconds per internet-like run")
    p.add_argument("--internet-reps", type=int, default=1, help="rounds of the internet-like runs")
    p.add_argument("--phases", default="check,hits,misses,ndots,rss")
    args = p.parse_args()

    os.sched_setaffinity(0, {0})
    B.LOG = open(os.path.join(args.work, "bench.log"), "a")
    ctx = Ctx(args)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    t_start = time.monotonic()
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "params": vars(args)}
    phases = args.phases.split(",")
    try:
        t = time.monotonic()
        results["data"] = gen_cache.generate(ctx.data)
        log(f"generated zones and query files in {time.monotonic() - t:.1f} s: q-hot {results['data']['q_hot']['distinct']} "
            f"distinct lines, q-ndots {results['data']['q_ndots']['distinct']} distinct, "
            f"expected {results['data']['q_ndots']['expected_rcodes']}")
        d = B.prepare_zone_dir(args.work, "knot", ctx.data)
        ctx.up_port = B.free_port()
        with open(os.path.join(d, "knot.conf"), "w") as f:
            f.write(B.knot_conf(d, ctx.up_port))
        t = time.monotonic()
        knot, _, _ = ctx.up.start("knot", ["knotd", "-c", os.path.join(d, "knot.conf")], {0}, cgroup=True)
        B.wait_dns(ctx.up_port, "svc-0.ns-0.svc.cluster.local", "A", 60)
        B.wait_dns(ctx.up_port, "10.in-addr.arpa", "SOA", 60)
        results["knot"] = {"port": ctx.up_port, "load_s": time.monotonic() - t,
                           "rss_kb": B.status_kb(knot.pid, "VmRSS")}
        log(f"knot :{ctx.up_port} on CPU 0 loaded in {results['knot']['load_s']:.2f} s")
        ctx.knot_pid = knot.pid

        if "check" in phases:
            dc = Server(ctx, "dns-cache", "dns-cache", 10000).start()
            dm = Server(ctx, "dnsmasq", "dnsmasq", 10000).start()
            t = time.monotonic()
            results["answers"] = answer_check(ctx, [dc, dm])
            for lbl, rr in results["answers"].items():
                log(f"answer check {lbl}: " + ", ".join(f"{k} {v}" for k, v in rr.items()
                                                      if k not in ("examples", "counters")))
                log(f"  counters: {rr['counters']}")
                for e in rr["examples"][:4]:
                    log(f"  e.g. {e}")
            rr = results["answers"]["dns-cache"]
            bad = {k: rr[k] for k in ("timeouts", "wrong_rcode", "mismatch_cold", "mismatch_warm", "ttl_over_30",
                                      "ttl_grew") if rr[k]}
            if bad:
                ctx.problems.append(f"answer check dns-cache vs knot: {bad}; e.g. {rr['examples'][:3]}")
            ctx.problems += [f"dns-cache stderr: {l}" for l in dc.log_problems()[:5]]
            dc.stop()
            dm.stop()
            log(f"answer check took {time.monotonic() - t:.1f} s")
        if "hits" in phases:
            phase_hits(ctx, results)
        if "misses" in phases:
            phase_misses(ctx, results)
        if "ndots" in phases:
            phase_ndots(ctx, results)
        if "rss" in phases:
            phase_rss(ctx, results)
        if "internet" in phases:
            phase_internet(ctx, results)
        results["knot"]["rss_after_kb"] = B.status_kb(knot.pid, "VmRSS")
        results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        results["elapsed_s"] = time.monotonic() - t_start
    finally:
        ctx.srv.stop_all()
        ctx.up.stop_all()
        results["problems"] = ctx.problems
        results["retries_left"] = ctx.retries_left
        with open(os.path.join(args.work, "results.json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
    summarise(results, args.work)


# ----------------------------------------------------------------------------- report


def fmt(v, spec=",.0f"):
    return "n/a" if v is None else format(v, spec)


def med(runs, key, sub=None):
    return B.median_of(runs, key, sub)


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def summarise(results, work):
    L = []
    targets = []

    def target(name, ok, detail):
        targets.append((name, "n/a" if ok is None else ("PASS" if ok else "FAIL"), detail))

    reps = results["params"]["hit_reps"]
    nreps = results["params"]["ndots_reps"]
    rate = results["params"]["rate"]
    mrate = results["params"]["miss_rate"]
    h = results.get("hits")
    if h:
        L.append(f"### Cache hits (q-hot, {results['data']['q_hot']['distinct']:,} distinct names; "
                 f"median of {reps} run(s))\n")
        L.append("| | dns-cache | dnsmasq 2.90 | unbound 1.17 | dns-cache / dnsmasq | dns-cache / unbound |")
        L.append("|---|---|---|---|---|---|")
        m = {}
        for s in ("dns-cache", "dnsmasq", "unbound"):
            sat, fix = h[s]["saturated"], h[s]["fixed"]
            m[s] = {"qps": med(sat, "qps"), "sat_usq": med(sat, "cpu_us_per_query"), "sat_cpu": med(sat, "server_cpu_pct"),
                    "fix_usq": med(fix, "cpu_us_per_query"), "fix_qps": med(fix, "qps"),
                    "p50": med(fix, "latency_us", "p50"), "p99": med(fix, "latency_us", "p99"),
                    "p999": med(fix, "latency_us", "p999"), "hit": med(sat + fix, "hit_pct"),
                    "user": med(fix, "server_user_pct"), "sys": med(fix, "server_sys_pct"),
                    "lost": sum(int(r["lost"] or 0) for r in sat + fix),
                    "qps_range": B.range_of(sat, "qps"), "fix_range": B.range_of(fix, "cpu_us_per_query")}

        def row(label, key, spec=",.0f", ratios=True):
            a, b, c = m["dns-cache"][key], m["dnsmasq"][key], m["unbound"][key]
            ra = (fmt(ratio(a, b), ".2f") + "x") if ratios else ""
            rb = (fmt(ratio(a, c), ".2f") + "x") if ratios else ""
            L.append(f"| {label} | {fmt(a, spec)} | {fmt(b, spec)} | {fmt(c, spec)} | {ra} | {rb} |")

        row("saturated qps (`-c 1 -q 100`)", "qps")
        if reps > 1:
            L.append("| saturated qps, min–max | " + " | ".join(
                f"{fmt(m[s]['qps_range'][0])}–{fmt(m[s]['qps_range'][1])}" for s in ("dns-cache", "dnsmasq", "unbound")) + " | | |")
        row("server CPU at saturation, % of 1 core", "sat_cpu", ".0f", False)
        client_bound = [s for s in m if m[s]["sat_cpu"] is not None and m[s]["sat_cpu"] < 92]
        row("CPU µs/query at saturation", "sat_usq", ".2f")
        row(f"**CPU µs/query at {rate:,} qps**", "fix_usq", ".2f")
        row(f"server CPU at {rate:,} qps: user %", "user", ".1f", False)
        row(f"server CPU at {rate:,} qps: sys %", "sys", ".1f", False)
        row(f"latency p50 at {rate:,} qps, µs", "p50")
        row(f"latency p99 at {rate:,} qps, µs", "p99")
        row(f"latency p99.9 at {rate:,} qps, µs", "p999")
        row("cache hit % (forwarder's own counters)", "hit", ".1f", False)
        row("queries lost", "lost", "d", False)
        a, u = m["dns-cache"]["fix_usq"], m["unbound"]["fix_usq"]
        target("cache-hit CPU per query no more than Unbound's", None if a is None or u is None else a <= u,
               f"{fmt(a, '.2f')} vs {fmt(u, '.2f')} µs/q at {rate:,} qps ({fmt(ratio(a, u), '.2f')}x); "
               f"at saturation {fmt(m['dns-cache']['sat_usq'], '.2f')} vs {fmt(m['unbound']['sat_usq'], '.2f')}")
        thr = {}
        for r in h["dns-cache"]["fixed"]:
            for comm, pct in r.get("thread_cpu_pct", {}).items():
                thr.setdefault(comm, []).append(pct)
        L.append("")
        if client_bound:
            L.append(f"At saturation {', '.join(client_bound)} did not fill its core: dnsperf (one core) was the limit, "
                     f"so compare CPU µs/query there rather than qps.")
            L.append("")
        L.append(f"dns-cache CPU by thread at {rate:,} qps (% of a core): "
                 + ", ".join(f"{c} {statistics.median(v):.1f}" for c, v in sorted(thr.items(), key=lambda kv: -statistics.median(kv[1]))))
        L.append("")
    mi = results.get("misses")
    if mi:
        L.append(f"### Misses (unique NXDOMAIN names, every query forwarded; cache pre-filled with 12,000 names)\n")
        L.append(f"| forwarder | --cache-size | saturated qps | µs/q saturated | **µs/q at {mrate:,} qps** | achieved qps | "
                 f"p50 / p99 µs at {mrate:,} | insertions per forwarded query | entries after | lost |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for label, r in mi.items():
            sat, fix = r["saturated"], r["fixed"]
            c = fix["counters"]
            ins = ratio(c.get("insertions"), c.get("misses"))
            ent = fix["counters"].get("entries_after")
            L.append(f"| {r['kind']} | {r['cache_size'] if r['cache_size'] else '64m msg cache'} | {fmt(sat['qps'])} | "
                     f"{fmt(sat['cpu_us_per_query'], '.1f')} | {fmt(fix['cpu_us_per_query'], '.1f')} | {fmt(fix['qps'])} | "
                     f"{fmt(fix['latency_us']['p50'])} / {fmt(fix['latency_us']['p99'])} | {fmt(ins, '.2f')} | "
                     f"{fmt(ent)} | {int((sat['lost'] or 0) + (fix['lost'] or 0))} |")
        dm = {s: mi[f"dnsmasq-c{s}"]["fixed"]["cpu_us_per_query"] for s in (150, 1000, 10000) if f"dnsmasq-c{s}" in mi}
        dc = {s: mi[f"dns-cache-c{s}"]["fixed"]["cpu_us_per_query"] for s in (150, 1000, 10000) if f"dns-cache-c{s}" in mi}
        ub = mi.get("unbound", {}).get("fixed", {}).get("cpu_us_per_query")
        L.append("")
        L.append("dns-cache / dnsmasq µs per forwarded query at the same cache size: " + ", ".join(
            f"{s}: {fmt(ratio(dc.get(s), dm.get(s)), '.2f')}x" for s in (150, 1000, 10000))
                 + f"; dns-cache / unbound: {fmt(ratio(dc.get(150), ub), '.2f')}x (c150)")
        thr = {}
        for r in [mi[k]["fixed"] for k in mi if k.startswith("dns-cache")]:
            for comm, pct in r.get("thread_cpu_pct", {}).items():
                thr.setdefault(comm, []).append(pct)
        L.append(f"dns-cache CPU by thread at {mrate:,} qps of misses (% of a core, median over sizes): "
                 + ", ".join(f"{c} {statistics.median(v):.1f}" for c, v in sorted(thr.items(), key=lambda kv: -statistics.median(kv[1]))))
        L.append("")
        if dm and dc:
            cheapest = min(v for v in dm.values() if v is not None)
            worst = max(v for v in dc.values() if v is not None)
            growth = ratio(dc.get(10000), dc.get(150))
            target("miss CPU per forwarded query no more than dnsmasq's cheapest", worst <= cheapest,
                   f"dns-cache {', '.join(fmt(v, '.1f') for v in dc.values())} µs/q (c150, c1000, c10000) vs "
                   f"dnsmasq cheapest {fmt(cheapest, '.1f')} µs/q (all: {', '.join(fmt(v, '.1f') for v in dm.values())}); "
                   f"at {mrate:,} qps")
            target("miss CPU not growing with cache size (c10000 ≤ 1.15x c150)", growth is not None and growth <= 1.15,
                   f"dns-cache c10000 / c150 = {fmt(growth, '.2f')}x; dnsmasq c10000 / c150 = "
                   f"{fmt(ratio(dm.get(10000), dm.get(150)), '.2f')}x")
    nd = results.get("ndots")
    if nd:
        dd = results["data"]["q_ndots"]
        L.append(f"### ndots:5 search-path mix (q-ndots: {dd['lines']:,} lines, {dd['distinct']:,} distinct; "
                 f"expected {', '.join('%s %.1f%%' % (k, 100.0 * v / dd['lines']) for k, v in sorted(dd['expected_rcodes'].items()))}; "
                 f"median of {nreps} run(s))\n")
        L.append("| profile | flags | saturated qps | vs unbound | CPU % | µs/q | cache hit % | rcode mix | lost | warm-up pass | RSS MiB |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        ubq = med(nd["unbound"]["runs"], "qps") if "unbound" in nd else None
        for label, r in nd.items():
            rs = r["runs"]
            q = med(rs, "qps")
            rc = {}
            for x in rs:
                for k, v in x["rcodes"].items():
                    rc[k] = rc.get(k, 0) + v
            tot = sum(rc.values()) or 1
            L.append(f"| {label} | {r['describe']} | {fmt(q)} | {fmt(ratio(q, ubq), '.2f')}x | "
                     f"{fmt(med(rs, 'server_cpu_pct'), '.0f')} | {fmt(med(rs, 'cpu_us_per_query'), '.1f')} | "
                     f"{fmt(med(rs, 'hit_pct'), '.1f')} | "
                     f"{', '.join(f'{k} {100.0 * v / tot:.1f}%' for k, v in sorted(rc.items()))} | "
                     f"{sum(int(x['lost'] or 0) for x in rs)} | {fmt(med(rs, 'warmup_s'), '.1f')} s | "
                     f"{fmt(med(rs, 'rss_kb') / 1024 if med(rs, 'rss_kb') else None, '.1f')} |")
        L.append("")
        if "dns-cache-secondary" in nd and ubq:
            rs = nd["dns-cache-secondary"]["runs"]
            q = med(rs, "qps")
            target("ndots mix through dns-cache --secondary ≥ 1.0x Unbound's qps (goal 1.5x)",
                   ratio(q, ubq) >= 1.0, f"{fmt(q)} vs {fmt(ubq)} qps = {fmt(ratio(q, ubq), '.2f')}x")
            ours, theirs = med(rs, "rss_kb"), med(nd["unbound"]["runs"], "rss_kb")
            target("ndots mix through dns-cache --secondary with less memory than Unbound",
                   ours is not None and theirs is not None and ours < theirs,
                   f"VmRSS {fmt(ours / 1024 if ours else None, '.1f')} vs {fmt(theirs / 1024 if theirs else None, '.1f')} MiB")
            zb, cb = med(rs, "zone_bytes"), None
            if "dns-cache-c10000" in nd:
                cb = med(nd["dns-cache-c10000"]["runs"], "cache_bytes")
            L.append(f"The copy of the zone takes {fmt(zb / 1024 / 1024 if zb else None, '.2f')} MiB; without it, the "
                     f"10,000-entry cache's entries take {fmt(cb / 1024 / 1024 if cb else None, '.2f')} MiB "
                     f"({fmt(ratio(zb, cb), '.2f')}x).\n")
        if "dns-cache-c10000" in nd and ubq:
            q = med(nd["dns-cache-c10000"]["runs"], "qps")
            extra = ""
            if "dns-cache-c100000" in nd:
                q2 = med(nd["dns-cache-c100000"]["runs"], "qps")
                extra = f"; with --cache-size=100000 (holds the working set) {fmt(q2)} = {fmt(ratio(q2, ubq), '.2f')}x"
            target("ndots mix with negative caching ≥ 0.9x Unbound's qps (dns-cache --cache-size=10000)",
                   ratio(q, ubq) >= 0.9, f"{fmt(q)} vs {fmt(ubq)} qps = {fmt(ratio(q, ubq), '.2f')}x{extra}")
    rs = results.get("rss")
    if rs:
        L.append("### Memory (VmRSS; cache filled with distinct existing names, EDNS off)\n")
        L.append("| forwarder | at start | after 10,000 names | entries | after 20,000 names | entries | VmHWM |")
        L.append("|---|---|---|---|---|---|---|")
        for label, r in rs.items():
            a, b = r["after_a"], r["after_b"]
            L.append(f"| {r['describe']} | {r['start_kb'] / 1024:.1f} MiB | {a['rss_kb'] / 1024:.1f} MiB | {fmt(a['entries'])} | "
                     f"{b['rss_kb'] / 1024:.1f} MiB | {fmt(b['entries'])} | {b['hwm_kb'] / 1024:.1f} MiB |")
        L.append("")
        if "dns-cache" in rs:
            r = rs["dns-cache"]
            kb = max(r["after_a"]["rss_kb"], r["after_b"]["rss_kb"])
            target("RSS with a full 10,000-entry cache < 20 MB", kb * 1024 < 20e6,
                   f"{kb / 1024:.1f} MiB = {kb * 1024 / 1e6:.1f} MB (max of after 10k and after 20k names; "
                   f"{fmt(r['after_b']['entries'])} entries); VmHWM {r['after_b']['hwm_kb'] / 1024:.1f} MiB")
    inet = results.get("internet")
    if inet:
        p = results["params"]
        L.append(f"### Internet-like upstream (unique names at {p.get('internet_rate', 0):,} qps for "
                 f"{p.get('internet_duration', 0)} s; upstream delay by name: 70% 0-2 ms, 20% 20-200 ms, "
                 f"9% 300-1500 ms, 1% never; client timeout 5 s; 'to a usable answer' counts a SERVFAIL "
                 f"or no reply as the whole 5 s; median of {p.get('internet_reps', 1)} run(s))\n")
        L.append("| forwarder | flags | NOERROR | SERVFAIL | unanswered | p50 / p99 of replies, ms | "
                 "p50 / p90 / p99 to a usable answer, ms | CPU s | upstream tries per query |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        m = {}
        for label, r in inet.items():
            rs = r["runs"]
            m[label] = {k: med(rs, k) for k in ("noerror_pct", "servfail_pct", "unanswered_pct", "cpu_s")}
            m[label]["p99c"] = med(rs, "client_latency_us", "p99")
            tries = None
            if label == "dns-cache":
                tries = statistics.median([x["upstream"].get("queries_total", 0) / x["sent"] for x in rs if x["sent"]])
            L.append(f"| {label} | {r['describe']} | {fmt(m[label]['noerror_pct'], '.2f')}% | "
                     f"{fmt(m[label]['servfail_pct'], '.2f')}% | {fmt(m[label]['unanswered_pct'], '.2f')}% | "
                     f"{fmt(med(rs, 'answered_latency_us', 'p50') / 1e3 if med(rs, 'answered_latency_us', 'p50') else None, '.1f')} / "
                     f"{fmt(med(rs, 'answered_latency_us', 'p99') / 1e3 if med(rs, 'answered_latency_us', 'p99') else None, '.0f')} | "
                     f"{fmt(med(rs, 'client_latency_us', 'p50') / 1e3 if med(rs, 'client_latency_us', 'p50') else None, '.1f')} / "
                     f"{fmt(med(rs, 'client_latency_us', 'p90') / 1e3 if med(rs, 'client_latency_us', 'p90') else None, '.0f')} / "
                     f"{fmt(m[label]['p99c'] / 1e3 if m[label]['p99c'] else None, '.0f')} | "
                     f"{fmt(m[label]['cpu_s'], '.2f')} | {fmt(tries, '.2f') if tries is not None else 'n/a'} |")
        L.append("")
        if "dns-cache" in m and "dnsmasq" in m:
            a, b = m["dns-cache"], m["dnsmasq"]
            target("internet-like upstream: dns-cache answers (NOERROR) at least dnsmasq's share",
                   a["noerror_pct"] is not None and b["noerror_pct"] is not None and a["noerror_pct"] >= b["noerror_pct"],
                   f"{fmt(a['noerror_pct'], '.2f')}% vs {fmt(b['noerror_pct'], '.2f')}%")
            target("internet-like upstream: dns-cache p99 to a usable answer no worse than dnsmasq's",
                   a["p99c"] is not None and b["p99c"] is not None and a["p99c"] <= b["p99c"],
                   f"{fmt(a['p99c'] / 1e3 if a['p99c'] else None, '.0f')} ms vs "
                   f"{fmt(b['p99c'] / 1e3 if b['p99c'] else None, '.0f')} ms")
    ans = results.get("answers")
    if ans:
        L.append("### Answer check (each q-check line asked cold, then warm; compared with Knot's answer)\n")
        for lbl, rr in ans.items():
            L.append(f"* {lbl}: {rr['queries']} queries; timeouts {rr['timeouts']}, wrong rcode {rr['wrong_rcode']}, "
                     f"differs from Knot cold/warm {rr['mismatch_cold']}/{rr['mismatch_warm']}, TTL > 30 {rr['ttl_over_30']}, "
                     f"TTL grew on the cached copy {rr['ttl_grew']}, TC without EDNS {rr['tc_without_edns']}; "
                     f"counters during the check: hits {rr['counters'].get('hits', 0):.0f}, misses {rr['counters'].get('misses', 0):.0f}")
            for e in rr["examples"][:3]:
                L.append(f"  * {e}")
        L.append("")
    tl = ["| target | result | measured |", "|---|---|---|"] + [f"| {n} | **{r}** | {d} |" for n, r, d in targets]
    probs = results.get("problems", [])
    pl = ["Problems seen: " + ("none" if not probs else "")] + [f"* {p}" for p in probs[:40]]
    placements = {}
    every = []
    for v in (results.get("hits") or {}).values():
        every += [(v["describe"], r) for r in v["saturated"] + v["fixed"]]
    for v in (results.get("misses") or {}).values():
        every += [(v["describe"], r) for r in (v["saturated"], v["fixed"])]
    for v in (results.get("ndots") or {}).values():
        every += [(v["describe"], r) for r in v["runs"]]
    for who, r in every:
        placements.setdefault(who.split()[0], set()).update(r["placement"]["server"])
        placements.setdefault("dnsperf", set()).update(r["placement"]["dnsperf"])
    pl.append("")
    pl.append("CPUs seen running mid-run (all measured runs): " + ", ".join(f"{k} {sorted(v)}" for k, v in placements.items()))
    pl.append(f"Whole run: {fmt(results.get('elapsed_s'), '.0f')} s; runs repeated for foreign load: "
              f"{results['params']['max_retries'] - results.get('retries_left', 0)}")
    text = "\n".join(L) + "\n" + "\n".join(tl) + "\n\n" + "\n".join(pl) + "\n"
    B.write_results(work, results, targets, text)


if __name__ == "__main__":
    B.entry(main, summarise)
