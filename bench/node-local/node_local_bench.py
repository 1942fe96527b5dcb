#!/usr/bin/env python3
"""The node-local benchmark (called by bench/node-local/run.sh, as root; standard library only).

Two paths from a "pod" network namespace to the cluster DNS, in one run, on one "node"
namespace joined to the pod by a veth pair, laid out as kube-dns.yaml and node-local/ deploy
them (the kube-dns pod's dnsmasq container is dns-cache at 10.124.0.1:5353 in front of kube-dns;
kube-proxy is two iptables nat rules):

  node-local   pod -> 169.254.20.10:53 (dns-cache --node-local, NOTRACK rules, no conntrack)
               -> hit; or miss over the pooled TCP connections to kube-dns-upstream
               (10.96.0.11, DNAT to the kube-dns pod's cache) -> kube-dns
  service      pod -> 10.96.0.10:53, DNAT to the kube-dns pod's cache (conntrack tracks every
               flow) -> hit; or miss -> kube-dns

So a miss costs the node-local path one cache more than the Service path. The caches run the
same dns-cache binary with the same cache flags; kube-dns serves the fixture cluster from the
fake API server. Caches and kube-dns are pinned to CPU 1, dnsperf to
CPU 0. Each cell is two dnsperf runs of -l seconds, repeated, paths alternating, reported as
medians:
  - saturated (-c 4 -q 200, both CPUs busy): queries per second, and CPU per answered query:
    the caches' on the path (utime+stime; node-local: the node cache and the pod's) and the whole machine's (/proc/stat busy time of both
    CPUs, softirq included: conntrack and NAT run there; it also counts dnsperf and kube-dns).
    At saturation /proc/stat's tick sampling is exact enough; at a low fixed rate it is not
    (tickless idle under-counts short wake-ups), so CPU is read from these runs only;
  - fixed rate (-Q, -v): p50/p99 latency from dnsperf's per-query lines, lost queries, and the
    conntrack entries the run added.
Hits ask 4 questions with records over and over; misses ask unique names (NXDOMAIN, with
--no-negcache on both caches so every query goes to kube-dns).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import bench as B  # noqa: E402  (bench/bench.py: /proc and dnsperf helpers)

NODE, POD = "kdrs-bench-node", "kdrs-bench-pod"
LINK_LOCAL, SERVICE_IP, NODE_IP, POD_IP = "169.254.20.10", "10.96.0.10", "10.124.0.1", "10.124.0.2"
UPSTREAM_SERVICE_IP = "10.96.0.11"
# Questions with records (a NODATA answer would be a miss under --no-negcache).
HIT_QUESTIONS = ["kubernetes.default.svc.cluster.local A", "dual.default.svc.cluster.local A",
                 "dual.default.svc.cluster.local AAAA", "web6.default.svc.cluster.local AAAA"]


def sh(*argv, check=True, **kw):
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


def netns(ns, *argv, check=True):
    return sh("ip", "netns", "exec", ns, *argv, check=check)


def setup_namespaces():
    for ns in (NODE, POD):
        sh("ip", "netns", "del", ns, check=False)
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", NODE, "link", "add", "vnode", "type", "veth", "peer", "name", "vpod", "netns", POD)
    sh("ip", "-n", NODE, "addr", "add", f"{NODE_IP}/24", "dev", "vnode")
    sh("ip", "-n", NODE, "link", "set", "vnode", "up")
    sh("ip", "-n", POD, "addr", "add", f"{POD_IP}/24", "dev", "vpod")
    sh("ip", "-n", POD, "link", "set", "vpod", "up")
    sh("ip", "-n", POD, "route", "add", "default", "via", NODE_IP)
    # The node cache's interface (this kernel has no dummy links).
    sh("ip", "-n", NODE, "link", "add", "nodelocaldns", "type", "veth", "peer", "name", "nld-peer")
    # The Service range is routed as on a node (the route lookup comes before kube-proxy's DNAT).
    sh("ip", "-n", NODE, "route", "add", "10.96.0.0/16", "dev", "vnode")
    # kube-proxy's Service rules: the DNS Service IP (from pods) and kube-dns-upstream (from the
    # node) to the kube-dns pod's cache.
    for proto in ("udp", "tcp"):
        netns(NODE, "iptables", "-t", "nat", "-A", "PREROUTING", "-d", SERVICE_IP, "-p", proto, "--dport", "53",
              "-j", "DNAT", "--to-destination", f"{NODE_IP}:5353")
        netns(NODE, "iptables", "-t", "nat", "-A", "OUTPUT", "-d", UPSTREAM_SERVICE_IP, "-p", proto, "--dport", "53",
              "-j", "DNAT", "--to-destination", f"{NODE_IP}:5353")


def start(procs, name, argv, cpus):
    proc, _, err = procs.start(name, ["ip", "netns", "exec", NODE] + argv, cpus)
    return proc, err


def wait_line(path, pattern, proc, timeout=60):
    return B.wait_log(path, pattern, proc, timeout)


def cache_args(bin_dir, upstream, extra):
    return [os.path.join(bin_dir, "dns-cache"), "-k", "--no-resolv", "--no-hosts", "--no-negcache",
            "--cache-size=10000", "--workers=1", f"--server=/cluster.local/{upstream}",
            "--server=127.0.0.1#9"] + extra


def conntrack_count(address):
    """Entries of the node's conntrack table that name `address`."""
    out = netns(NODE, "cat", "/proc/net/nf_conntrack", check=False).stdout
    return len([l for l in out.splitlines() if f"={address} " in l])


def process_ticks(pid):
    st = B.read_stat(pid)
    return st[2] if st else 0


def machine_busy():
    busy = total = 0
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:9]]
                busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
                total = sum(v)
    return busy, total


def dnsperf(work, server, qfile, seconds, label, extra):
    out_path = os.path.join(work, f"dnsperf-{label}.txt")
    with open(out_path, "w") as out:
        subprocess.run(["ip", "netns", "exec", POD, "dnsperf", "-s", server, "-p", "53", "-d", qfile,
                        "-l", str(seconds), "-t", "2"] + extra,
                       stdout=out, stderr=subprocess.STDOUT, check=False,
                       preexec_fn=lambda: os.sched_setaffinity(0, {0}))
    with open(out_path, errors="replace") as f:
        text = f.read()
    os.remove(out_path)
    return text


def run_cell(work, server, qfile, rate, seconds, cache_pids, label):
    # Saturated: CPU per query (of the caches on the path together, and of the machine).
    ticks = lambda: sum(process_ticks(p) for p in cache_pids)  # noqa: E731
    c0, (m0, _) = ticks(), machine_busy()
    text = dnsperf(work, server, qfile, seconds, f"{label}-sat", ["-c", "4", "-q", "200"])
    c1, (m1, _) = ticks(), machine_busy()
    sat = B.parse_dnsperf(text)
    done = sat["completed"] or 0
    # Fixed rate: latency, and the conntrack entries of the path's address (table flushed).
    netns(NODE, "conntrack", "-F", check=False)
    text = dnsperf(work, server, qfile, seconds, f"{label}-fixed", ["-c", "1", "-Q", str(rate), "-v"])
    fixed = B.parse_dnsperf(text)
    lat = sorted(float(l.rsplit(None, 1)[1]) * 1e6 for l in text.splitlines() if l.startswith("> "))
    return {
        "qps": sat["qps"], "sat_lost": sat["lost"], "sat_completed": done,
        "cache_us_per_query": (c1 - c0) / B.CLK_TCK * 1e6 / done if done else None,
        "machine_us_per_query": (m1 - m0) / B.CLK_TCK * 1e6 / done if done else None,
        "completed": fixed["completed"], "sent": fixed["sent"], "lost": fixed["lost"],
        "p50_us": B.percentile(lat, 50), "p99_us": B.percentile(lat, 99),
        "conntrack_new": conntrack_count(server),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--cluster", required=True)
    p.add_argument("--rate", type=int, default=5000)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    hits = os.path.join(a.work, "q-hit.txt")
    with open(hits, "w") as f:
        for q in HIT_QUESTIONS:
            f.write(f"{q}\n")
    procs = B.Procs(a.work, None)
    results = {"rate": a.rate, "seconds": a.seconds, "reps": a.reps, "cells": {}}
    try:
        setup_namespaces()
        api, api_err = start(procs, "fake-apiserver", [os.path.join(a.bin_dir, "fake-apiserver"),
                                                       "--listen", "127.0.0.1:18080", "--cluster", a.cluster,
                                                       "--bookmark-interval-ms", "60000"], {0})
        wait_line(api_err, r"listening on http", api)
        kd, kd_err = start(procs, "kube-dns", [os.path.join(a.bin_dir, "kube-dns"),
                                               "--kube-master-url=http://127.0.0.1:18080",
                                               "--dns-bind-address=127.0.0.1", "--dns-port=10053",
                                               "--healthz-bind-address=127.0.0.1", "--healthz-port=18081",
                                               "--nameservers=127.0.0.1:9", "--lameduck=0s",
                                               "--dns-workers=1"], {1})
        wait_line(kd_err, r"Initialized services", kd)
        svc, svc_err = start(procs, "kube-dns-pod-cache", cache_args(a.bin_dir, "127.0.0.1#10053", [
            "-p", "5353", "-a", NODE_IP, "--metrics-address=127.0.0.1:19254"]), {1})
        wait_line(svc_err, r"listening on udp", svc)
        nl, nl_err = start(procs, "node-local", cache_args(a.bin_dir, f"{UPSTREAM_SERVICE_IP}#53", [
            "--node-local", f"--local-ip={LINK_LOCAL}", "--interface-kind=existing",
            "--netfilter=iptables", f"--tcp-upstream={UPSTREAM_SERVICE_IP}#53",
            "--metrics-address=127.0.0.1:19253"]), {1})
        wait_line(nl_err, r"listening on udp", nl)
        # conntrack is on in the node (the nat rule), so the count is meaningful for both.
        paths = {"node-local": (LINK_LOCAL, [nl.pid, svc.pid]), "service": (SERVICE_IP, [svc.pid])}
        for rep in range(a.reps):
            for kind in ("hit", "miss"):
                order = list(paths) if rep % 2 == 0 else list(reversed(paths))
                for path in order:
                    server, pids = paths[path]
                    if kind == "hit":
                        qfile = hits
                    else:
                        qfile = os.path.join(a.work, f"q-miss-{path}-{rep}.txt")
                        with open(qfile, "w") as f:
                            # Enough unique names for a saturated run (dnsperf loops the file).
                            for i in range(max(300_000, a.rate * a.seconds + 1000)):
                                f.write(f"miss-{rep}-{i}.{path}.svc.cluster.local A\n")
                    r = run_cell(a.work, server, qfile, a.rate, a.seconds, pids, f"{path}-{kind}-{rep}")
                    results["cells"].setdefault(f"{path}/{kind}", []).append(r)
                    B.log(f"{path:10} {kind:4} rep {rep}: saturated {r['qps']:.0f} qps, "
                          f"cache {r['cache_us_per_query']:.1f} us/q, machine {r['machine_us_per_query']:.1f} us/q; "
                          f"at {a.rate}/s {r['completed']:.0f}/{r['sent']:.0f} answered, "
                          f"p50 {r['p50_us']:.0f} us, p99 {r['p99_us']:.0f} us, conntrack +{r['conntrack_new']}")
        summary = {}
        for cell, runs in results["cells"].items():
            med = lambda k: statistics.median(r[k] for r in runs if r[k] is not None)  # noqa: E731
            summary[cell] = {k: med(k) for k in ("qps", "cache_us_per_query", "machine_us_per_query", "p50_us",
                                                  "p99_us", "lost", "conntrack_new", "completed")}
        results["summary"] = summary
        with open(os.path.join(a.work, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        print(f"\n| path | saturated qps | caches' CPU us/q | machine CPU us/q | p50 us at {a.rate}/s | p99 us | lost | conntrack entries added |")
        print("|---|---|---|---|---|---|---|---|")
        for cell, s in summary.items():
            print(f"| {cell} | {s['qps']:,.0f} | {s['cache_us_per_query']:.1f} | {s['machine_us_per_query']:.1f} "
                  f"| {s['p50_us']:.0f} | {s['p99_us']:.0f} | {s['lost']:.0f} | +{s['conntrack_new']:.0f} |")
        for kind in ("hit", "miss"):
            nl_s, sv_s = summary[f"node-local/{kind}"], summary[f"service/{kind}"]
            print(f"{kind}: node-local/service machine CPU {nl_s['machine_us_per_query'] / sv_s['machine_us_per_query']:.2f}x, "
                  f"p99 {nl_s['p99_us'] / sv_s['p99_us']:.2f}x")
    finally:
        procs.stop_all()
        for ns in (NODE, POD):
            sh("ip", "netns", "del", ns, check=False)


if __name__ == "__main__":
    main()
