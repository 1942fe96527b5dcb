#!/usr/bin/env python3
"""The kube-dns benchmark driver (called by run.sh; standard library only).

Steps, in one process:
  1. fake-apiserver on CPU 0, loaded with the generated cluster over HTTP (PUT per object).
  2. NSD and Knot, each confined to CPU 1 by the cpuset cgroup run.sh created, serving the
     generated zones.
  3. kube-dns (1 DNS worker) in the same cpuset, started 3 times: time from exec to
     /readiness 200, VmRSS and VmHWM after sync. The third instance stays up for the rest.
  4. Answer comparison: every line of queries-check.txt asked of all three servers.
  5. DNS programming latency: PUT a new Service, poll kube-dns over UDP every ~1 ms until the
     ClusterIP appears (then DELETE it and poll until NXDOMAIN); plus the server-side
     kubedns_programming_latency_seconds histogram. 5b: the same through dns-cache holding
     the cluster zone (--secondary; every kube-dns is started with --notify to its port), as
     the manifest runs it: a change reaches the answer by NOTIFY and IXFR.
  6. dnsperf on CPU 0 against each server on CPU 1, 3 interleaved rounds: saturated
     (-c 1 -q 100 -l 10) and fixed rate (-Q 10000 -l 10 -v) with server CPU from /proc.
Writes results.json and results.md into --work and prints the table.
"""

import argparse
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnswire  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVERS = ["kube-dns", "nsd", "knot"]
LOG = None


def log(msg):
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, file=sys.stderr, flush=True)
    if LOG:
        LOG.write(line + "\n")
        LOG.flush()


# ----------------------------------------------------------------------------- /proc helpers


def read_stat(pid):
    """(ppid, starttime, utime+stime ticks, flags) of a pid, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2 :].split()
    # rest[0] is state (field 3); field n is rest[n - 3].
    return int(rest[1]), int(rest[19]), int(rest[11]) + int(rest[12]), int(rest[6])


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(root):
    """root and every process below it."""
    children = {}
    for pid in all_pids():
        st = read_stat(pid)
        if st:
            children.setdefault(st[0], []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_ticks(root):
    total = 0
    for pid in descendants(root):
        st = read_stat(pid)
        if st:
            total += st[2]
    return total


def tree_cpu_split(root):
    """(user ticks, system ticks) over a process tree."""
    user = system = 0
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            user += int(rest[11])
            system += int(rest[12])
        except (OSError, IndexError):
            pass
    return user, system


def status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def tree_status_kb(root, field):
    return sum(status_kb(p, field) or 0 for p in descendants(root))


def thread_cpu(pid):
    """{thread name: utime+stime ticks} over the threads of one process."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                data = f.read()
        except OSError:
            continue
        comm = data[data.index("(") + 1 : data.rindex(")")]
        rest = data[data.rindex(")") + 2 :].split()
        out[comm] = out.get(comm, 0) + int(rest[11]) + int(rest[12])
    return out


PF_KTHREAD = 0x00200000


class ForeignCpu:
    """CPU used by non-kernel processes outside the benchmark's own process tree."""

    def __init__(self, root_pid):
        self.root = root_pid

    def snapshot(self):
        ours = set(descendants(self.root))
        snap = {}
        for pid in all_pids():
            if pid in ours:
                continue
            st = read_stat(pid)
            if st is None or st[3] & PF_KTHREAD or pid == 2 or st[0] == 2:
                continue
            snap[pid] = (st[1], st[2])
        return time.monotonic(), snap

    @staticmethod
    def percent(before, after):
        (t0, a), (t1, b) = before, after
        ticks = 0
        for pid, (start, cpu) in b.items():
            prev = a.get(pid)
            ticks += cpu - prev[1] if prev and prev[0] == start else cpu if prev is None and start > 0 else 0
        return 100.0 * ticks / CLK_TCK / max(t1 - t0, 1e-6)

    def wait_quiet(self, limit_pct=10.0, max_wait=20.0):
        """Waits until foreign processes use < limit_pct of a core for 1 s (at most max_wait)."""
        deadline = time.monotonic() + max_wait
        while True:
            before = self.snapshot()
            time.sleep(1.0)
            pct = self.percent(before, self.snapshot())
            if pct < limit_pct or time.monotonic() > deadline:
                return pct


# ----------------------------------------------------------------------------- processes


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    raise RuntimeError("no free port")


class Procs:
    def __init__(self, work, cgroup):
        self.work = work
        self.cgroup = cgroup
        self.procs = {}
        self.pidfile = os.path.join(work, "pids")

    def start(self, name, argv, cpus, cgroup=False, env=None):
        out = open(os.path.join(self.work, f"{name}.out"), "wb")
        err_path = os.path.join(self.work, f"{name}.err")
        err = open(err_path, "wb")
        procs_file = os.path.join(self.cgroup, "cgroup.procs") if cgroup else None

        def pre():
            os.setpgid(0, 0)
            if procs_file:
                with open(procs_file, "w") as f:
                    f.write(str(os.getpid()))
            os.sched_setaffinity(0, cpus)

        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, preexec_fn=pre, env=env)
        out.close()
        err.close()
        self.procs[name] = proc
        with open(self.pidfile, "a") as f:
            f.write(f"{proc.pid}\n")
        return proc, t0, err_path

    def stop(self, name, timeout=5.0):
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self):
        for name in reversed(list(self.procs)):
            self.stop(name)


def wait_log(path, pattern, proc, timeout):
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, errors="replace") as f:
                m = rx.search(f.read())
            if m:
                return m
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"process exited (rc {proc.returncode}) before logging {pattern!r}; see {path}")
        time.sleep(0.002)
    raise RuntimeError(f"timed out waiting for {pattern!r} in {path}")


def http_get(port, path, timeout=2.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def wait_dns(port, name, qtype, timeout):
    deadline = time.monotonic() + timeout
    client = dnswire.Client("127.0.0.1", port, timeout=0.2)
    try:
        while time.monotonic() < deadline:
            try:
                r = client.query(name, qtype)
                if r["rcode"] == "NOERROR" and r["answer"]:
                    return
            except (socket.timeout, ConnectionRefusedError, OSError):
                pass
            time.sleep(0.01)
    finally:
        client.close()
    raise RuntimeError(f"no answer for {name} {qtype} on port {port}")


# ----------------------------------------------------------------------------- fake apiserver


def api_path(obj):
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    if obj["kind"] == "Service":
        return f"/api/v1/namespaces/{ns}/services/{name}"
    return f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/{name}"


def load_cluster(port, path):
    with open(path) as f:
        items = json.load(f)["items"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for obj in items:
        conn.request("PUT", api_path(obj), body=json.dumps(obj, separators=(",", ":")),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        if r.status not in (200, 201):
            raise RuntimeError(f"PUT {api_path(obj)}: HTTP {r.status}")
    conn.close()
    return len(items)


# ----------------------------------------------------------------------------- servers


def nsd_conf(d, port):
    return f"""server:
    ip-address: 127.0.0.1@{port}
    server-count: 1
    reuseport: yes
    database: ""
    username: ""
    chroot: ""
    zonesdir: "{d}"
    pidfile: "{d}/nsd.pid"
    xfrdfile: "{d}/xfrd.state"
    zonelistfile: "{d}/zone.list"
    logfile: "{d}/nsd.log"
    verbosity: 1
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: "cluster.local."
    zonefile: "cluster.local.zone"
zone:
    name: "10.in-addr.arpa."
    zonefile: "10.in-addr.arpa.zone"
"""


def knot_conf(d, port):
    return f"""server:
    rundir: "{d}"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: notice
database:
    storage: "{d}"
acl:
  - id: transfer
    address: 127.0.0.0/8
    action: transfer
template:
  - id: default
    storage: "{d}"
    acl: transfer
    semantic-checks: off
    journal-content: none
    zonefile-sync: -1
    zonefile-load: whole
zone:
  - domain: cluster.local.
    file: cluster.local.zone
  - domain: 10.in-addr.arpa.
    file: 10.in-addr.arpa.zone
"""


def prepare_zone_dir(work, name, data):
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    for z in ("cluster.local.zone", "10.in-addr.arpa.zone"):
        with open(os.path.join(data, z), "rb") as src, open(os.path.join(d, z), "wb") as dst:
            dst.write(src.read())
    return d


def start_peer(procs, kind, work, data, first_svc_name):
    d = prepare_zone_dir(work, kind, data)
    port = free_port()
    conf = os.path.join(d, f"{kind}.conf")
    with open(conf, "w") as f:
        f.write(nsd_conf(d, port) if kind == "nsd" else knot_conf(d, port))
    argv = ["nsd", "-d", "-c", conf] if kind == "nsd" else ["knotd", "-c", conf]
    proc, t0, _ = procs.start(kind, argv, {1}, cgroup=True)
    wait_dns(port, first_svc_name, "A", 60)
    wait_dns(port, "10.in-addr.arpa", "SOA", 60)
    load_s = time.monotonic() - t0
    time.sleep(0.3)
    return {
        "port": port,
        "pid": proc.pid,
        "load_s": load_s,
        "rss_kb": tree_status_kb(proc.pid, "VmRSS"),
        "hwm_kb": tree_status_kb(proc.pid, "VmHWM"),
        "procs": len(descendants(proc.pid)),
    }


def start_kube_dns(procs, name, binary, api_port, notify=None):
    dns_port, health_port = free_port(), free_port()
    argv = [
        binary,
        f"--kube-master-url=http://127.0.0.1:{api_port}",
        "--domain=cluster.local.",
        "--dns-bind-address=127.0.0.1",
        f"--dns-port={dns_port}",
        "--healthz-bind-address=127.0.0.1",
        f"--healthz-port={health_port}",
        "--dns-workers=1",
        # Nothing in the benchmark should be forwarded; if something is, keep it on loopback.
        "--nameservers=127.0.0.1:9",
        # Stop at once when the benchmark is done with an instance.
        "--lameduck=0s",
    ] + ([f"--notify=127.0.0.1:{notify}"] if notify else [])
    env = dict(os.environ, RUST_LOG="warn")
    proc, t0, err = procs.start(name, argv, {1}, cgroup=True, env=env)
    ready_at = None
    deadline = t0 + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kube-dns exited with {proc.returncode}; see {err}")
        try:
            status, body = http_get(health_port, "/readiness", timeout=1.0)
            if status == 200:
                ready_at = time.monotonic()
                break
        except OSError:
            pass
        time.sleep(0.005)
    if ready_at is None:
        raise RuntimeError("kube-dns never became ready")
    return {
        "pid": proc.pid,
        "port": dns_port,
        "health_port": health_port,
        "sync_s": ready_at - t0,
        "rss_kb": status_kb(proc.pid, "VmRSS"),
        "hwm_kb": status_kb(proc.pid, "VmHWM"),
    }


# ----------------------------------------------------------------------------- answer check


def normalise(resp):
    if resp is None:
        return None
    return {
        "rcode": resp["rcode"],
        "aa": resp["aa"],
        "tc": resp["tc"],
        "answer": sorted(resp["answer"]),
        "authority": sorted(resp["authority"]),
        "additional": sorted(resp["additional"]),
    }


def ask_all(clients, name, qtype, edns=None):
    answers = {}
    for s, c in clients.items():
        try:
            answers[s] = normalise(c.query(name, qtype, edns=edns))
        except socket.timeout:
            answers[s] = None
    return answers


def compare_answers(ports, check_file):
    """Asks every line of check_file of every server (no EDNS, like glibc/musl stub resolvers;
    when any server truncates, again with EDNS 1232 for the full answers) and compares the
    responses with kube-dns's. TTLs are compared too; the SOA serial is left out."""
    clients = {s: dnswire.Client("127.0.0.1", p, timeout=1.0) for s, p in ports.items()}
    lines = [l.split() for l in open(check_file) if l.strip()]
    result = {
        "queries": len(lines),
        "unexpected_rcode": {s: 0 for s in ports},
        "unexpected_examples": [],
        "truncated_without_edns": {s: 0 for s in ports},
        "truncated_examples": {s: [] for s in ports},
        "pairs": {},
    }
    per = {}
    for name, qtype, kind in lines:
        plain = ask_all(clients, name, qtype)
        full = plain
        if any(a is not None and a["tc"] for a in plain.values()):
            for s, a in plain.items():
                if a is not None and a["tc"]:
                    result["truncated_without_edns"][s] += 1
                    if len(result["truncated_examples"][s]) < 5:
                        result["truncated_examples"][s].append(f"{name} {qtype}")
            full = ask_all(clients, name, qtype, edns=1232)
        per[(name, qtype, kind)] = full
        want_nx = kind.startswith("nx_")
        for s, a in full.items():
            ok = a is not None and (a["rcode"] == "NXDOMAIN" if want_nx else a["rcode"] == "NOERROR" and a["answer"])
            if not ok:
                result["unexpected_rcode"][s] += 1
                if len(result["unexpected_examples"]) < 10:
                    result["unexpected_examples"].append(f"{s}: {name} {qtype} -> {a and a['rcode']}")
    for peer in [s for s in ports if s != "kube-dns"]:
        diffs = {"rcode": [], "answer": [], "aa": [], "tc": [], "authority": [], "additional": []}
        by_kind = {}
        authority_patterns = {}
        for (name, qtype, kind), answers in per.items():
            ours, theirs = answers["kube-dns"], answers[peer]
            if ours is None or theirs is None:
                diffs["rcode"].append(f"{name} {qtype}: timeout")
                continue
            for field in ("rcode", "answer", "aa", "tc", "additional", "authority"):
                if ours[field] != theirs[field]:
                    diffs[field].append(f"{name} {qtype} ({kind})")
                    by_kind.setdefault(kind, {}).setdefault(field, 0)
                    by_kind[kind][field] += 1
            if ours["authority"] != theirs["authority"]:
                only_theirs = sorted({r[1] for r in theirs["authority"]} - {r[1] for r in ours["authority"]})
                only_ours = sorted({r[1] for r in ours["authority"]} - {r[1] for r in theirs["authority"]})
                key = f"{peer} adds {','.join(only_theirs) or '-'}; kube-dns adds {','.join(only_ours) or '-'}"
                authority_patterns[key] = authority_patterns.get(key, 0) + 1
        result["pairs"][peer] = {
            "mismatch_counts": {k: len(v) for k, v in diffs.items()},
            "by_kind": by_kind,
            "examples": {k: v[:8] for k, v in diffs.items() if v},
            "authority_patterns": authority_patterns,
        }
    # One full example of each kind, for the write-up.
    examples = {}
    for (name, qtype, kind), answers in per.items():
        if kind not in examples:
            examples[kind] = {"query": f"{name} {qtype}", **{s: answers[s] for s in answers}}
    result["examples_by_kind"] = examples
    for c in clients.values():
        c.close()
    return result


# ----------------------------------------------------------------------------- programming latency


HIST = re.compile(r'^(\w*programming_latency_seconds)_(bucket|sum|count)(?:\{le="([^"]+)"\})?\s+(\S+)', re.M)


def scrape_hist(health_port):
    status, body = http_get(health_port, "/metrics")
    buckets, total, count = {}, 0.0, 0
    for name, part, le, value in HIST.findall(body):
        if part == "bucket":
            buckets[float("inf") if le == "+Inf" else float(le)] = float(value)
        elif part == "sum":
            total = float(value)
        else:
            count = int(float(value))
    return buckets, total, count, body


def hist_quantile(before, after, q):
    """Upper bound of the bucket holding quantile q of the observations between two scrapes."""
    les = sorted(after[0])
    delta = [after[0][le] - before[0].get(le, 0.0) for le in les]
    n = after[2] - before[2]
    if n <= 0:
        return None
    target = q * n
    for le, cum in zip(les, delta):
        if cum >= target:
            return le
    return float("inf")


def service_body(ns, name, ip):
    return json.dumps({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}]},
    })


def poll_until(client, name, want, timeout=5.0, period=0.001):
    """Polls `name A` every `period` until `want(response)`; returns the moment it did."""
    deadline = time.perf_counter() + timeout
    while True:
        sent = time.perf_counter()
        try:
            r = client.query(name, "A")
            if want(r):
                return time.perf_counter()
        except socket.timeout:
            pass
        if sent > deadline:
            return None
        pause = period - (time.perf_counter() - sent)
        if pause > 0:
            time.sleep(pause)


def start_secondary_cache(procs, binary, kd, port):
    """dns-cache in front of kube-dns holding the cluster zone (--secondary), as the manifest
    runs it; returns once the copy answers, with its size."""
    metrics_port = free_port()
    argv = [binary, "-k", "-p", str(port), "-a", "127.0.0.1", "--no-resolv", "--no-hosts",
            "--cache-size=10000", "--workers=1", "--lameduck=0",
            f"--server=/cluster.local/127.0.0.1#{kd['port']}", "--secondary=/cluster.local/",
            f"--metrics-address=127.0.0.1:{metrics_port}"]
    proc, t0, err = procs.start("dns-cache-secondary", argv, {1}, cgroup=True,
                                env=dict(os.environ, RUST_LOG="warn"))
    deadline = t0 + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dns-cache exited with {proc.returncode}; see {err}")
        try:
            status, body = http_get(metrics_port, "/metrics", timeout=1.0)
            if 'dnscache_secondary_loaded{zone="cluster.local"} 1' in body:
                values = dict(re.findall(r'^(dnscache_secondary_\w+)\{zone="cluster.local"\} (\d+)$', body, re.M))
                return {"pid": proc.pid, "port": port, "load_s": time.monotonic() - t0,
                        "zone_bytes": int(values.get("dnscache_secondary_bytes", 0)),
                        "zone_records": int(values.get("dnscache_secondary_records", 0)),
                        "rss_kb": tree_status_kb(proc.pid, "VmRSS")}
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError("dns-cache never loaded the zone")


def programming_latency(api_port, kd, iterations, port=None):
    """Create and delete a Service through the API; the time until `port` (kube-dns's by
    default) answers the change."""
    ns = "bench-prog"
    client = dnswire.Client("127.0.0.1", port or kd["port"], timeout=0.5)
    conn = http.client.HTTPConnection("127.0.0.1", api_port, timeout=10)
    before = scrape_hist(kd["health_port"])
    create, delete, failures = [], [], 0
    for i in range(iterations):
        name = f"prog-{i}"
        ip = f"10.100.{i // 250}.{i % 250 + 1}"
        fqdn = f"{name}.{ns}.svc.cluster.local"
        path = f"/api/v1/namespaces/{ns}/services/{name}"
        t0 = time.perf_counter()
        conn.request("PUT", path, body=service_body(ns, name, ip), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        if r.status not in (200, 201):
            raise RuntimeError(f"PUT {path}: HTTP {r.status}")
        t1 = poll_until(client, fqdn, lambda resp: any(rec[3] == ip for rec in resp["answer"]))
        if t1 is None:
            failures += 1
        else:
            create.append((t1 - t0) * 1000)
        time.sleep(0.005)
        t0 = time.perf_counter()
        conn.request("DELETE", path)
        r = conn.getresponse()
        r.read()
        t1 = poll_until(client, fqdn, lambda resp: resp["rcode"] == "NXDOMAIN")
        if t1 is None:
            failures += 1
        else:
            delete.append((t1 - t0) * 1000)
        time.sleep(0.005)
    after = scrape_hist(kd["health_port"])
    conn.close()
    client.close()
    n = after[2] - before[2]
    return {
        "iterations": iterations,
        "failures": failures,
        "create_ms": summary_ms(create),
        "delete_ms": summary_ms(delete),
        "server_side": {
            "observations": n,
            "mean_ms": (after[1] - before[1]) / n * 1000 if n else None,
            "p50_le_ms": ms_or_none(hist_quantile(before, after, 0.50)),
            "p99_le_ms": ms_or_none(hist_quantile(before, after, 0.99)),
        },
    }


def ms_or_none(v):
    return None if v is None else v * 1000


def percentile(sorted_values, q):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, int(-(-q * len(sorted_values) // 100)))  # ceil(q/100 * n)
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary_ms(values):
    v = sorted(values)
    if not v:
        return {"n": 0}
    return {"n": len(v), "p50": percentile(v, 50), "p90": percentile(v, 90), "p99": percentile(v, 99),
            "max": v[-1], "mean": statistics.fmean(v)}


# ----------------------------------------------------------------------------- dnsperf


STAT = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "qps": re.compile(r"Queries per second:\s+([\d.]+)"),
    "runtime": re.compile(r"Run time \(s\):\s+([\d.]+)"),
    "avg_latency": re.compile(r"Average Latency \(s\):\s+([\d.]+)"),
}
RCODES_LINE = re.compile(r"Response codes:\s+(.*)")


def parse_dnsperf(text):
    out = {}
    for key, rx in STAT.items():
        m = rx.search(text)
        out[key] = float(m.group(1)) if m else None
    m = RCODES_LINE.search(text)
    out["rcodes"] = {}
    if m:
        for code, count in re.findall(r"([A-Z]+) (\d+)", m.group(1)):
            out["rcodes"][code] = int(count)
    return out


def running_cpus(root):
    """The CPUs the threads of a process tree last ran on (field 39 of /proc/<pid>/task/<tid>/stat)."""
    cpus = set()
    for pid in descendants(root):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
                cpus.add(int(rest[36]))
            except (OSError, IndexError, ValueError):
                pass
    return sorted(cpus)


def run_dnsperf(work, server, port, args, label, pid, foreign, verbose=False):
    """One dnsperf run on CPU 0 while measuring the server's CPU. Returns a dict."""
    duration = float(args[args.index("-l") + 1])
    out_path = os.path.join(work, f"dnsperf-{label}.txt")
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port)] + args + (["-v"] if verbose else [])
    f0 = foreign.snapshot()
    threads0 = thread_cpu(pid)
    u0, s0 = tree_cpu_split(pid)
    t0 = time.monotonic()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: os.sched_setaffinity(0, {0}))
        try:
            # Mid-run: which CPUs the server's threads and dnsperf are running on.
            time.sleep(min(1.0, duration / 2))
            placement = {"server": running_cpus(pid), "dnsperf": running_cpus(proc.pid)}
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    wall = time.monotonic() - t0
    u1, s1 = tree_cpu_split(pid)
    threads1 = thread_cpu(pid)
    f1 = foreign.snapshot()
    with open(out_path, errors="replace") as f:
        text = f.read()
    res = parse_dnsperf(text)
    res["rc"] = rc
    res["server"] = server
    res["wall_s"] = wall
    cpu_s = ((u1 - u0) + (s1 - s0)) / CLK_TCK
    runtime = res["runtime"] or wall
    res["server_cpu_pct"] = 100.0 * cpu_s / runtime
    res["server_user_pct"] = 100.0 * (u1 - u0) / CLK_TCK / runtime
    res["server_sys_pct"] = 100.0 * (s1 - s0) / CLK_TCK / runtime
    res["cpu_us_per_query"] = cpu_s * 1e6 / res["completed"] if res["completed"] else None
    res["foreign_cpu_pct"] = ForeignCpu.percent(f0, f1)
    res["placement"] = placement
    res["thread_cpu_pct"] = {
        comm: 100.0 * (ticks - threads0.get(comm, 0)) / CLK_TCK / runtime
        for comm, ticks in threads1.items() if ticks - threads0.get(comm, 0) > 0
    }
    if verbose:
        lat = sorted(float(l.rsplit(None, 1)[1]) * 1e6 for l in text.splitlines() if l.startswith("> "))
        res["_lat"] = lat
        res["latency_us"] = {"n": len(lat), "p50": percentile(lat, 50), "p90": percentile(lat, 90),
                             "p99": percentile(lat, 99), "p999": percentile(lat, 99.9),
                             "max": lat[-1] if lat else None}
        os.remove(out_path)  # 100k lines; the summary is kept in results.json
    return res


def median_of(runs, key, sub=None):
    vals = [(r[key][sub] if sub else r[key]) for r in runs]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def range_of(runs, key, sub=None):
    vals = [(r[key][sub] if sub else r[key]) for r in runs]
    vals = [v for v in vals if v is not None]
    return (min(vals), max(vals)) if vals else (None, None)


# ----------------------------------------------------------------------------- main


def main():
    global LOG
    p = argparse.ArgumentParser()
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--cgroup", required=True, help="cpuset cgroup (v1) directory holding CPU 1")
    p.add_argument("--root-pid", type=int, default=os.getppid(), help="the benchmark's own process tree")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--rate", type=int, default=10000)
    p.add_argument("--sync-runs", type=int, default=3)
    p.add_argument("--prog-iterations", type=int, default=200)
    p.add_argument("--foreign-limit", type=float, default=15.0,
                   help="repeat a run when other processes used more than this %% of a core")
    p.add_argument("--max-retries", type=int, default=6)
    args = p.parse_args()

    os.sched_setaffinity(0, {0})
    LOG = open(os.path.join(args.work, "bench.log"), "a")
    procs = Procs(args.work, args.cgroup)
    foreign = ForeignCpu(args.root_pid)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "params": vars(args)}
    with open(os.path.join(args.data, "summary.json")) as f:
        results["cluster"] = json.load(f)
    mix = os.path.join(args.data, "queries-mix.txt")
    try:
        # 1. fake-apiserver
        # Bookmarks once a minute, as a real API server sends them (the fake's default of 1 s
        # would wake kube-dns's watch tasks every second during the latency runs).
        fa, _, fa_err = procs.start("fake-apiserver", [os.path.join(args.bin_dir, "fake-apiserver"),
                                                       "--listen", "127.0.0.1:0",
                                                       "--bookmark-interval-ms", "60000"], {0})
        api_port = int(wait_log(fa_err, r"listening on http 127\.0\.0\.1:(\d+)", fa, 30).group(1))
        t = time.monotonic()
        n = load_cluster(api_port, os.path.join(args.data, "cluster.json"))
        results["api_load"] = {"objects": n, "seconds": time.monotonic() - t}
        log(f"fake-apiserver :{api_port} holds {n} objects ({results['api_load']['seconds']:.1f} s)")

        # 2. peers
        first = "svc-0.ns-0.svc.cluster.local"
        peers = {}
        for kind in ("nsd", "knot"):
            peers[kind] = start_peer(procs, kind, args.work, args.data, first)
            log(f"{kind} :{peers[kind]['port']} loaded in {peers[kind]['load_s']:.2f} s, "
                f"RSS {peers[kind]['rss_kb'] / 1024:.1f} MiB over {peers[kind]['procs']} process(es)")
        results["peers"] = peers

        # 3. kube-dns sync
        kdbin = os.path.join(args.bin_dir, "kube-dns")
        # dns-cache's port in step 5b: each kube-dns NOTIFYs it (nothing listens before then).
        cache_port = free_port()
        syncs = []
        kd = None
        for i in range(args.sync_runs):
            foreign.wait_quiet()
            f0 = foreign.snapshot()
            kd = start_kube_dns(procs, f"kube-dns-{i}", kdbin, api_port, notify=cache_port)
            kd["foreign_cpu_pct"] = ForeignCpu.percent(f0, foreign.snapshot())
            time.sleep(0.5)
            kd["rss_settled_kb"] = status_kb(kd["pid"], "VmRSS")
            syncs.append(kd)
            log(f"kube-dns sync #{i + 1}: {kd['sync_s']:.2f} s, RSS {kd['rss_kb'] / 1024:.1f} MiB, "
                f"HWM {kd['hwm_kb'] / 1024:.1f} MiB (other load {kd['foreign_cpu_pct']:.0f}%)")
            if i + 1 < args.sync_runs:
                procs.stop(f"kube-dns-{i}")
        _, _, _, metrics = scrape_hist(kd["health_port"])
        results["kube_dns_metrics_after_sync"] = [
            l for l in metrics.splitlines()
            if re.match(r"^\w*(services|endpoints)\b", l) or l.startswith("kubedns_ready")
        ]
        results["sync"] = {
            "runs": [{k: s[k] for k in ("sync_s", "rss_kb", "hwm_kb", "rss_settled_kb", "foreign_cpu_pct")}
                     for s in syncs],
            "median_s": statistics.median(s["sync_s"] for s in syncs),
            "max_rss_kb": max(s["rss_settled_kb"] for s in syncs),
            "max_hwm_kb": max(s["hwm_kb"] for s in syncs),
        }
        ports = {"kube-dns": kd["port"], "nsd": peers["nsd"]["port"], "knot": peers["knot"]["port"]}
        pids = {"kube-dns": kd["pid"], "nsd": peers["nsd"]["pid"], "knot": peers["knot"]["pid"]}

        # 4. answers
        t = time.monotonic()
        results["answers"] = compare_answers(ports, os.path.join(args.data, "queries-check.txt"))
        log(f"answer check of {results['answers']['queries']} queries done in {time.monotonic() - t:.1f} s: "
            + "; ".join(f"vs {peer}: {pr['mismatch_counts']}" for peer, pr in results["answers"]["pairs"].items()))

        # 5. programming latency
        foreign.wait_quiet()
        f0 = foreign.snapshot()
        results["programming"] = programming_latency(api_port, kd, args.prog_iterations)
        results["programming"]["foreign_cpu_pct"] = ForeignCpu.percent(f0, foreign.snapshot())
        pr = results["programming"]
        log(f"programming latency: create p50 {pr['create_ms'].get('p50', 0):.2f} ms p99 "
            f"{pr['create_ms'].get('p99', 0):.2f} ms; delete p50 {pr['delete_ms'].get('p50', 0):.2f} ms; "
            f"failures {pr['failures']}")

        # 5b. the same through dns-cache holding the zone (kube-dns NOTIFY, dns-cache IXFR)
        cache = start_secondary_cache(procs, os.path.join(args.bin_dir, "dns-cache"), kd, cache_port)
        foreign.wait_quiet()
        f0 = foreign.snapshot()
        through = programming_latency(api_port, kd, args.prog_iterations, port=cache_port)
        through["foreign_cpu_pct"] = ForeignCpu.percent(f0, foreign.snapshot())
        through["cache"] = cache
        results["through_cache"] = through
        procs.stop("dns-cache-secondary")
        log(f"change to answer through dns-cache --secondary: create p50 {through['create_ms'].get('p50', 0):.2f} ms "
            f"p99 {through['create_ms'].get('p99', 0):.2f} ms; delete p99 {through['delete_ms'].get('p99', 0):.2f} ms; "
            f"failures {through['failures']}; zone copy {cache['zone_records']} records in "
            f"{cache['zone_bytes'] / 1024 / 1024:.2f} MiB, loaded in {cache['load_s']:.2f} s")

        # 6. dnsperf
        for s in SERVERS:  # warm-up
            run_dnsperf(args.work, s, ports[s], ["-d", mix, "-c", "1", "-q", "100", "-l", "2"],
                        f"warmup-{s}", pids[s], foreign)
        runs = {"saturated": {s: [] for s in SERVERS}, "fixed": {s: [] for s in SERVERS}}
        discarded = []
        retries = 0
        for rep in range(args.reps):
            order = SERVERS[rep % 3:] + SERVERS[:rep % 3]
            for s in order:
                for mode in ("saturated", "fixed"):
                    if mode == "saturated":
                        dargs = ["-d", mix, "-c", "1", "-q", "100", "-l", str(args.duration)]
                    else:
                        dargs = ["-d", mix, "-c", "1", "-q", "100", "-Q", str(args.rate), "-l", str(args.duration)]
                    while True:
                        quiet = foreign.wait_quiet()
                        r = run_dnsperf(args.work, s, ports[s], dargs, f"{mode}-{s}-{rep}", pids[s], foreign,
                                        verbose=(mode == "fixed"))
                        r["rep"] = rep
                        r["quiet_before_pct"] = quiet
                        msg = (f"{mode:9s} {s:8s} rep {rep + 1}: {r['qps'] or 0:9.0f} qps, "
                               f"server CPU {r['server_cpu_pct']:5.1f}% ({r['cpu_us_per_query'] or 0:.2f} us/q), "
                               f"lost {int(r['lost'] or 0)}, rcodes {r['rcodes']}, other load {r['foreign_cpu_pct']:.0f}%")
                        if mode == "fixed":
                            msg += f", p50 {r['latency_us']['p50']:.0f} us p99 {r['latency_us']['p99']:.0f} us"
                        if r["foreign_cpu_pct"] > args.foreign_limit and retries < args.max_retries:
                            retries += 1
                            r["kind"] = "discarded"
                            discarded.append(r)
                            log(msg + "  -> discarded (foreign CPU), repeating")
                            continue
                        log(msg)
                        runs[mode][s].append(r)
                        break
        pooled = {}
        for s in SERVERS:
            lat = sorted(x for r in runs["fixed"][s] for x in r["_lat"])
            pooled[s] = {"n": len(lat), "p50": percentile(lat, 50), "p90": percentile(lat, 90),
                         "p99": percentile(lat, 99), "p999": percentile(lat, 99.9)}
            for r in runs["fixed"][s]:
                del r["_lat"]
        for r in discarded:
            r.pop("_lat", None)
        results["pooled_latency_us"] = pooled
        results["runs"] = runs
        results["discarded"] = discarded
        kd["rss_after_load_kb"] = status_kb(kd["pid"], "VmRSS")
        kd["hwm_after_load_kb"] = status_kb(kd["pid"], "VmHWM")
        results["kube_dns_after_load"] = {"rss_kb": kd["rss_after_load_kb"], "hwm_kb": kd["hwm_after_load_kb"]}
        _, _, _, metrics = scrape_hist(kd["health_port"])
        results["kube_dns_metrics_at_end"] = [
            l for l in metrics.splitlines() if l.startswith("kubedns_") and "_bucket" not in l
        ]
        for kind in peers:
            peers[kind]["rss_after_load_kb"] = tree_status_kb(peers[kind]["pid"], "VmRSS")
        results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    finally:
        procs.stop_all()
        if os.path.isdir(args.work):
            with open(os.path.join(args.work, "results.json"), "w") as f:
                json.dump(results, f, indent=1, default=str)
    summarise(results, args.work)


# ----------------------------------------------------------------------------- report


def fmt(v, spec=",.0f"):
    return "n/a" if v is None else format(v, spec)


def summarise(results, work):
    runs = results["runs"]
    sat, fix = runs["saturated"], runs["fixed"]
    reps = results["params"]["reps"]
    rate = results["params"]["rate"]
    rl = f"{rate // 1000}k qps"
    m = {}
    for s in SERVERS:
        m[s] = {
            "qps": median_of(sat[s], "qps"),
            "qps_range": range_of(sat[s], "qps"),
            "sat_cpu": median_of(sat[s], "server_cpu_pct"),
            "sat_usq": median_of(sat[s], "cpu_us_per_query"),
            "sat_user": median_of(sat[s], "server_user_pct"),
            "sat_sys": median_of(sat[s], "server_sys_pct"),
            "fix_qps": median_of(fix[s], "qps"),
            "fix_usq": median_of(fix[s], "cpu_us_per_query"),
            "fix_usq_range": range_of(fix[s], "cpu_us_per_query"),
            "fix_cpu": median_of(fix[s], "server_cpu_pct"),
            "fix_user": median_of(fix[s], "server_user_pct"),
            "fix_sys": median_of(fix[s], "server_sys_pct"),
            "p50": median_of(fix[s], "latency_us", "p50"),
            "p99": median_of(fix[s], "latency_us", "p99"),
            "p99_range": range_of(fix[s], "latency_us", "p99"),
            "p999": median_of(fix[s], "latency_us", "p999"),
            "lost": sum(int(r["lost"] or 0) for r in sat[s] + fix[s]),
            "rcodes": {},
        }
        for r in sat[s] + fix[s]:
            for code, count in r["rcodes"].items():
                m[s]["rcodes"][code] = m[s]["rcodes"].get(code, 0) + count
    results["medians"] = m
    kd, nsd, knot = m["kube-dns"], m["nsd"], m["knot"]

    def ratio(a, b):
        return None if a is None or b in (None, 0) else a / b

    peers = results["peers"]
    lines = []
    lines.append("| | kube-dns | NSD 4.6 | Knot 3.2 | kube-dns / NSD | kube-dns / Knot |")
    lines.append("|---|---|---|---|---|---|")

    def row(label, a, b, c, spec=",.0f", ratios=True):
        ra = fmt(ratio(a, b), ".2f") + "x" if ratios else ""
        rb = fmt(ratio(a, c), ".2f") + "x" if ratios else ""
        lines.append(f"| {label} | {fmt(a, spec)} | {fmt(b, spec)} | {fmt(c, spec)} | {ra} | {rb} |")

    def rng(x, spec=",.0f"):
        lo, hi = x
        return f"{fmt(lo, spec)}–{fmt(hi, spec)}"

    row(f"saturated qps (median of {reps})", kd["qps"], nsd["qps"], knot["qps"])
    lines.append(f"| saturated qps, min–max | {rng(kd['qps_range'])} | {rng(nsd['qps_range'])} | {rng(knot['qps_range'])} | | |")
    row("server CPU at saturation, % of 1 core", kd["sat_cpu"], nsd["sat_cpu"], knot["sat_cpu"], ".0f", False)
    lines.append(f"| server CPU at saturation: user / sys % | {fmt(kd['sat_user'], '.1f')} / {fmt(kd['sat_sys'], '.1f')} | "
                 f"{fmt(nsd['sat_user'], '.1f')} / {fmt(nsd['sat_sys'], '.1f')} | {fmt(knot['sat_user'], '.1f')} / {fmt(knot['sat_sys'], '.1f')} | | |")
    row("CPU µs/query at saturation", kd["sat_usq"], nsd["sat_usq"], knot["sat_usq"], ".2f")
    row(f"CPU µs/query at {rl} (median)", kd["fix_usq"], nsd["fix_usq"], knot["fix_usq"], ".2f")
    lines.append(f"| CPU µs/query at {rl}, min–max | {rng(kd['fix_usq_range'], '.2f')} | {rng(nsd['fix_usq_range'], '.2f')} | {rng(knot['fix_usq_range'], '.2f')} | | |")
    lines.append(f"| server CPU at {rl}: user / sys % | {fmt(kd['fix_user'], '.1f')} / {fmt(kd['fix_sys'], '.1f')} | "
                 f"{fmt(nsd['fix_user'], '.1f')} / {fmt(nsd['fix_sys'], '.1f')} | {fmt(knot['fix_user'], '.1f')} / {fmt(knot['fix_sys'], '.1f')} | | |")
    row(f"latency p50 at {rl}, µs", kd["p50"], nsd["p50"], knot["p50"])
    row(f"latency p99 at {rl}, µs (median of {reps})", kd["p99"], nsd["p99"], knot["p99"])
    lines.append(f"| latency p99 at {rl}, min–max µs | {rng(kd['p99_range'])} | {rng(nsd['p99_range'])} | {rng(knot['p99_range'])} | | |")
    pl = results["pooled_latency_us"]
    row(f"latency p99 at {rl}, µs, all {reps} runs pooled", pl["kube-dns"]["p99"], pl["nsd"]["p99"], pl["knot"]["p99"])
    row(f"latency p99.9 at {rl}, µs", kd["p999"], nsd["p999"], knot["p999"])
    lines.append(f"| queries lost (all runs) | {kd['lost']} | {nsd['lost']} | {knot['lost']} | | |")
    sync = results["sync"]
    lines.append(f"| RSS after sync / load, MiB | {fmt(sync['max_rss_kb'] / 1024, '.1f')} / "
                 f"{fmt(results['kube_dns_after_load']['rss_kb'] / 1024, '.1f')} | "
                 f"{fmt(peers['nsd']['rss_kb'] / 1024, '.1f')} / {fmt(peers['nsd'].get('rss_after_load_kb', 0) / 1024, '.1f')} ({peers['nsd']['procs']} procs) | "
                 f"{fmt(peers['knot']['rss_kb'] / 1024, '.1f')} / {fmt(peers['knot'].get('rss_after_load_kb', 0) / 1024, '.1f')} | | |")
    lines.append(f"| peak RSS (VmHWM), MiB | {fmt(max(sync['max_hwm_kb'], results['kube_dns_after_load']['hwm_kb']) / 1024, '.1f')} | "
                 f"{fmt(peers['nsd']['hwm_kb'] / 1024, '.1f')} | {fmt(peers['knot']['hwm_kb'] / 1024, '.1f')} | | |")
    lines.append(f"| start to ready, s (kube-dns: median of {len(sync['runs'])}, via fake API) | "
                 f"{fmt(sync['median_s'], '.2f')} | {fmt(peers['nsd']['load_s'], '.2f')} | {fmt(peers['knot']['load_s'], '.2f')} | | |")
    pr = results["programming"]
    lines.append(f"| programming latency, create p50 / p99 ms ({pr['iterations']} iterations) | "
                 f"{fmt(pr['create_ms'].get('p50'), '.2f')} / {fmt(pr['create_ms'].get('p99'), '.2f')} | | | | |")
    lines.append(f"| programming latency, delete p50 / p99 ms | "
                 f"{fmt(pr['delete_ms'].get('p50'), '.2f')} / {fmt(pr['delete_ms'].get('p99'), '.2f')} | | | | |")
    ss = pr["server_side"]
    lines.append(f"| server-side programming latency histogram: mean / p50 ≤ / p99 ≤ ms ({ss['observations']} events) | "
                 f"{fmt(ss['mean_ms'], '.3f')} / {fmt(ss['p50_le_ms'], '.1f')} / {fmt(ss['p99_le_ms'], '.1f')} | | | | |")

    total = {s: sum(m[s]["rcodes"].values()) for s in SERVERS}
    mixline = "| rcode mix over all dnsperf runs | " + " | ".join(
        ", ".join(f"{c} {100.0 * n / total[s]:.2f}%" for c, n in sorted(m[s]["rcodes"].items())) if total[s] else "n/a"
        for s in SERVERS) + " | | |"
    lines.append(mixline)
    exp = results["cluster"]["queries"]["expected_rcodes"]
    expected_nx = 100.0 * exp["NXDOMAIN"] / (exp["NXDOMAIN"] + exp["NOERROR"])

    targets = []

    def target(name, ok, detail):
        targets.append((name, "PASS" if ok else "FAIL", detail))

    qr_n, qr_k = ratio(kd["qps"], nsd["qps"]), ratio(kd["qps"], knot["qps"])
    target("qps >= 0.7x NSD and Knot", qr_n is not None and qr_k is not None and qr_n >= 0.7 and qr_k >= 0.7,
           f"{fmt(qr_n, '.2f')}x NSD, {fmt(qr_k, '.2f')}x Knot")
    cr_n, cr_k = ratio(kd["fix_usq"], nsd["fix_usq"]), ratio(kd["fix_usq"], knot["fix_usq"])
    target(f"CPU/query at {rl} <= 1.5x theirs", cr_n is not None and cr_k is not None and cr_n <= 1.5 and cr_k <= 1.5,
           f"{fmt(cr_n, '.2f')}x NSD, {fmt(cr_k, '.2f')}x Knot")
    pl = results["pooled_latency_us"]
    p99_ok = {peer: pl["kube-dns"]["p99"] is not None and pl[peer]["p99"] is not None
              and pl["kube-dns"]["p99"] <= pl[peer]["p99"] for peer in ("nsd", "knot")}
    target(f"p99 at {rl} no worse than theirs (each of NSD and Knot)", all(p99_ok.values()),
           f"pooled over {reps} runs: {fmt(pl['kube-dns']['p99'])} µs vs NSD {fmt(pl['nsd']['p99'])} µs "
           f"({'ok' if p99_ok['nsd'] else 'worse'}), Knot {fmt(pl['knot']['p99'])} µs "
           f"({'ok' if p99_ok['knot'] else 'worse'}); per-run ranges {rng(kd['p99_range'])} / "
           f"{rng(nsd['p99_range'])} / {rng(knot['p99_range'])} µs")
    rss_kb = max(sync["max_rss_kb"], results["kube_dns_after_load"]["rss_kb"])
    mib, mb = rss_kb / 1024, rss_kb * 1024 / 1e6
    med = statistics.median(r["rss_settled_kb"] for r in sync["runs"]) / 1024
    verdict = "PASS" if mb < 60 else ("PASS if MB means MiB; FAIL in SI MB" if mib < 60 else "FAIL")
    cl = results["cluster"]
    hwm = max(sync["max_hwm_kb"], results["kube_dns_after_load"]["hwm_kb"])
    targets.append((f"RSS < 60 MB at {cl['services']:,} services / {cl['endpoints']:,} endpoints", verdict,
                    f"max {mib:.1f} MiB = {mb:.2f} MB (VmRSS 0.5 s after sync and after the load runs); "
                    f"after-sync median {med:.1f} MiB; peak VmHWM {hwm / 1024:.1f} MiB = {hwm * 1024 / 1e6:.2f} MB"))
    target("initial sync < 3 s", sync["median_s"] < 3 and max(r["sync_s"] for r in sync["runs"]) < 3,
           f"median {sync['median_s']:.2f} s, max {max(r['sync_s'] for r in sync['runs']):.2f} s")
    p99p = pr["create_ms"].get("p99")
    target("programming latency p99 < 50 ms", p99p is not None and p99p < 50 and pr["failures"] == 0,
           f"create p99 {fmt(p99p, '.2f')} ms, delete p99 {fmt(pr['delete_ms'].get('p99'), '.2f')} ms, failures {pr['failures']}")
    tc = results.get("through_cache")
    if tc:
        worst = max(tc["create_ms"].get("p99") or float("inf"), tc["delete_ms"].get("p99") or float("inf"))
        target("change to answer through dns-cache --secondary p99 < 50 ms", worst < 50 and tc["failures"] == 0,
               f"create p50 / p99 {fmt(tc['create_ms'].get('p50'), '.2f')} / {fmt(tc['create_ms'].get('p99'), '.2f')} ms, "
               f"delete p50 / p99 {fmt(tc['delete_ms'].get('p50'), '.2f')} / {fmt(tc['delete_ms'].get('p99'), '.2f')} ms, "
               f"failures {tc['failures']} ({tc['iterations']} iterations); the copy: {tc['cache']['zone_records']:,} records, "
               f"{fmt(tc['cache']['zone_bytes'] / 1024 / 1024, '.2f')} MiB, dns-cache RSS {fmt(tc['cache']['rss_kb'] / 1024, '.1f')} MiB")

    tlines = ["| target | result | measured |", "|---|---|---|"]
    tlines += [f"| {n} | {r} | {d} |" for n, r, d in targets]

    ans = results["answers"]
    alines = [f"answer check: {ans['queries']} distinct queries asked of all three servers; "
              f"unexpected rcode/empty answer (after an EDNS retry of truncated ones): {ans['unexpected_rcode']}",
              f"  truncated (TC) without EDNS: {ans['truncated_without_edns']}; e.g. "
              + "; ".join(f"{s}: {', '.join(v[:2])}" for s, v in ans["truncated_examples"].items() if v)]
    for peer, pr2 in ans["pairs"].items():
        alines.append(f"  kube-dns vs {peer}: mismatching responses {pr2['mismatch_counts']}")
        alines.append(f"    by query kind: {pr2['by_kind']}")
        for k, v in pr2.get("examples", {}).items():
            if k != "authority":
                alines.append(f"    {k}: {', '.join(v[:5])}")
        for pat, count in pr2["authority_patterns"].items():
            alines.append(f"    authority difference x{count}: {pat}")
    threads = {}
    for r in sat["kube-dns"]:
        for comm, pct in r.get("thread_cpu_pct", {}).items():
            threads.setdefault(comm, []).append(pct)
    alines.append("kube-dns CPU by thread at saturation (median % of a core): "
                  + ", ".join(f"{c} {statistics.median(v):.1f}" for c, v in sorted(threads.items(), key=lambda kv: -statistics.median(kv[1]))))
    alines.append(f"expected NXDOMAIN share of the mix: {expected_nx:.2f}%")
    placements = {}
    for mode in ("saturated", "fixed"):
        for s in SERVERS:
            for r in runs[mode][s]:
                for who in ("server", "dnsperf"):
                    key = f"{s} {who}" if who == "server" else "dnsperf"
                    placements.setdefault(key, set()).update(r["placement"][who])
    alines.append("CPUs seen running mid-run: " + ", ".join(f"{k} {sorted(v)}" for k, v in placements.items()))

    text = "\n".join(lines) + "\n\n" + "\n".join(tlines) + "\n\n" + "\n".join(alines) + "\n"
    write_results(work, results, targets, text)


def write_results(work, results, targets, text):
    """Stores the verdicts in the results, writes results.md and results.json, prints the tables."""
    results["targets"] = targets
    with open(os.path.join(work, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    print(text)


def entry(main, summarise):
    """A driver's command line: `--summarise DIR/results.json` re-renders the tables of an earlier
    run; otherwise `main()` runs, and Ctrl-C exits 130."""
    if len(sys.argv) == 3 and sys.argv[1] == "--summarise":
        with open(sys.argv[2]) as f:
            summarise(json.load(f), os.path.dirname(os.path.abspath(sys.argv[2])))
        sys.exit(0)
    try:
        main()
    except KeyboardInterrupt as e:
        log(f"interrupted: {e}")
        sys.exit(130)


if __name__ == "__main__":
    entry(main, summarise)
