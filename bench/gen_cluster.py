#!/usr/bin/env python3
"""Deterministic synthetic cluster for the kube-dns benchmark.

Writes, into --out (default: a `data` directory next to this script):

  cluster.json           a `kind: List` of Services and EndpointSlices for fake-apiserver
                         (JSON is YAML, and parses much faster than block YAML)
  cluster.local.zone     the equivalent forward zone for NSD / Knot
  10.in-addr.arpa.zone   the equivalent reverse zone (PTR for ClusterIPs and named endpoints)
  queries-mix.txt        dnsperf input, the realistic mix (see MIX below)
  queries-check.txt      a deterministic sample of the mix's distinct lines, used to compare
                         answers between servers
  summary.json           counts and the expected rcode mix

Cluster model (defaults): 10,000 Services over 100 namespaces (`ns-<i % 100>`), every 10th one
headless (`hl-<i>`, the others `svc-<i>`), each with one EndpointSlice of 10 ready endpoints
(100,000 endpoints). ClusterIPs come from 10.96.0.0/12, pod IPs from the 10.244.0.0/14 pod
CIDR (100k addresses do not fit a /16). Every service has one named port `http` 80/TCP; the
endpoints of headless services have hostnames `pod-<k>`.

Records kube-dns serves for this (and that the zone files therefore hold):
  <svc>.<ns>.svc.cluster.local.                 A   ClusterIP        (ClusterIP services)
  _http._tcp.<svc>.<ns>.svc.cluster.local.      SRV 10 100 80 <svc>.<ns>.svc.cluster.local.
  <hl>.<ns>.svc.cluster.local.                  A   every ready endpoint (headless)
  pod-<k>.<hl>.<ns>.svc.cluster.local.          A   that endpoint
  _http._tcp.<hl>.<ns>.svc.cluster.local.       SRV 10 10 80 pod-<k>.<hl>.<ns>.svc.cluster.local.
  reverse: ClusterIP -> service name, named endpoint IP -> pod-<k>.<hl>.<ns>.svc.cluster.local.
"""

import argparse
import ipaddress
import json
import os
import random
import sys

ZONE = "cluster.local"
TTL = 30
CLUSTER_IP_BASE = int(ipaddress.IPv4Address("10.96.0.16"))
POD_IP_BASE = int(ipaddress.IPv4Address("10.244.0.10"))

# Query mix, in percent of lines. Every name here is answered authoritatively by kube-dns and by
# the zone files: kube-dns forwards reverse names it holds no record for, so only existing PTRs
# are asked.
MIX = [
    ("a_service", 48),     # A <svc>.<ns>.svc  (ClusterIP service)
    ("a_headless", 6),     # A <hl>.<ns>.svc   (10 records)
    ("a_endpoint", 6),     # A pod-<k>.<hl>.<ns>.svc
    ("srv_service", 13),   # SRV _http._tcp.<svc>.<ns>.svc
    ("srv_headless", 2),   # SRV _http._tcp.<hl>.<ns>.svc (10 SRV + 10 glue A)
    ("ptr_service", 8),    # PTR of a ClusterIP
    ("ptr_endpoint", 2),   # PTR of a named headless endpoint
    ("nx_search", 15),     # NXDOMAIN names an ndots:5 search path produces
]
NXDOMAIN_KINDS = {"nx_search"}


def ip_str(value):
    return str(ipaddress.IPv4Address(value))


def reverse_name(ip):
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa"


class Cluster:
    def __init__(self, services, namespaces, headless_every, endpoints_per_service):
        self.services = []
        for i in range(services):
            headless = headless_every > 0 and i % headless_every == headless_every - 1
            name = f"hl-{i}" if headless else f"svc-{i}"
            ns = f"ns-{i % namespaces}"
            cluster_ip = None if headless else ip_str(CLUSTER_IP_BASE + i)
            eps = []
            for k in range(endpoints_per_service):
                ip = ip_str(POD_IP_BASE + i * endpoints_per_service + k)
                eps.append((ip, f"pod-{k}" if headless else None))
            self.services.append(
                {"i": i, "name": name, "ns": ns, "headless": headless, "ip": cluster_ip, "eps": eps}
            )
        if POD_IP_BASE + services * endpoints_per_service > int(ipaddress.IPv4Address("10.247.255.255")):
            sys.exit("too many endpoints for the 10.244.0.0/14 pod CIDR")
        if CLUSTER_IP_BASE + services > int(ipaddress.IPv4Address("10.111.255.255")):
            sys.exit("too many services for 10.96.0.0/12")

    @staticmethod
    def fqdn(svc):
        return f"{svc['name']}.{svc['ns']}.svc.{ZONE}"


def service_object(svc):
    spec = {
        "type": "ClusterIP",
        "clusterIP": svc["ip"] if svc["ip"] else "None",
        "clusterIPs": [svc["ip"] if svc["ip"] else "None"],
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "internalTrafficPolicy": "Cluster",
        "sessionAffinity": "None",
        "selector": {"app": svc["name"]},
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}],
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": svc["name"],
            "namespace": svc["ns"],
            "labels": {"app": svc["name"]},
        },
        "spec": spec,
    }


def slice_object(svc):
    endpoints = []
    for k, (ip, hostname) in enumerate(svc["eps"]):
        ep = {
            "addresses": [ip],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": f"node-{(svc['i'] + k) % 50}",
            "targetRef": {"kind": "Pod", "namespace": svc["ns"], "name": f"{svc['name']}-{k}"},
            "zone": f"zone-{k % 3}",
        }
        if hostname:
            ep["hostname"] = hostname
        endpoints.append(ep)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{svc['name']}-x{svc['i']:05d}",
            "namespace": svc["ns"],
            "labels": {
                "kubernetes.io/service-name": svc["name"],
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def write_cluster(cluster, path):
    with open(path, "w") as f:
        f.write('{"apiVersion": "v1", "kind": "List", "items": [\n')
        first = True
        for svc in cluster.services:
            for obj in (service_object(svc), slice_object(svc)):
                if not first:
                    f.write(",\n")
                first = False
                f.write(json.dumps(obj, separators=(",", ":")))
        f.write("\n]}\n")


def soa_lines(origin):
    return [
        f"$ORIGIN {origin}.",
        f"$TTL {TTL}",
        f"@ IN SOA ns.dns.{ZONE}. hostmaster.{ZONE}. 1 28800 7200 604800 {TTL}",
        f"@ IN NS ns.dns.{ZONE}.",
    ]


def write_zones(cluster, forward_path, reverse_path):
    fwd = soa_lines(ZONE)
    rev = soa_lines("10.in-addr.arpa")
    counts = {"forward_rrs": 2, "reverse_rrs": 2}
    for svc in cluster.services:
        owner = f"{svc['name']}.{svc['ns']}.svc"
        fq = Cluster.fqdn(svc)
        if not svc["headless"]:
            fwd.append(f"{owner} IN A {svc['ip']}")
            fwd.append(f"_http._tcp.{owner} IN SRV 10 100 80 {fq}.")
            rev.append(f"{reverse_name(svc['ip'])[:-len('.10.in-addr.arpa')]} IN PTR {fq}.")
            counts["forward_rrs"] += 2
            counts["reverse_rrs"] += 1
        else:
            named = [(ip, h) for ip, h in svc["eps"]]
            weight = max(1, 100 // len(named)) if named else 100
            for ip, hostname in named:
                fwd.append(f"{owner} IN A {ip}")
                fwd.append(f"{hostname}.{owner} IN A {ip}")
                fwd.append(f"_http._tcp.{owner} IN SRV 10 {weight} 80 {hostname}.{fq}.")
                rev.append(f"{reverse_name(ip)[:-len('.10.in-addr.arpa')]} IN PTR {hostname}.{fq}.")
                counts["forward_rrs"] += 3
                counts["reverse_rrs"] += 1
    with open(forward_path, "w") as f:
        f.write("\n".join(fwd) + "\n")
    with open(reverse_path, "w") as f:
        f.write("\n".join(rev) + "\n")
    return counts


def make_query(kind, cluster, rng, namespaces):
    services = cluster.services
    if kind in ("a_service", "srv_service", "ptr_service"):
        while True:
            svc = rng.choice(services)
            if not svc["headless"]:
                break
    elif kind in ("a_headless", "a_endpoint", "srv_headless", "ptr_endpoint"):
        while True:
            svc = rng.choice(services)
            if svc["headless"]:
                break
    else:
        svc = rng.choice(services)
    fq = Cluster.fqdn(svc)
    if kind in ("a_service", "a_headless"):
        return f"{fq} A"
    if kind == "a_endpoint":
        _, hostname = rng.choice(svc["eps"])
        return f"{hostname}.{fq} A"
    if kind in ("srv_service", "srv_headless"):
        return f"_http._tcp.{fq} SRV"
    if kind == "ptr_service":
        return f"{reverse_name(svc['ip'])} PTR"
    if kind == "ptr_endpoint":
        ip, _ = rng.choice(svc["eps"])
        return f"{reverse_name(ip)} PTR"
    # Search-path misses of a pod in namespace `own` (search own.svc.<zone> svc.<zone> <zone>):
    own = f"ns-{rng.randrange(namespaces)}"
    if own == svc["ns"]:
        own = f"ns-{(int(svc['ns'][3:]) + 1) % namespaces}"
    short = f"{svc['name']}.{svc['ns']}"
    choice = rng.randrange(6)
    if choice == 0:  # "svc.ns" tried in the pod's own namespace first
        return f"{short}.{own}.svc.{ZONE} A"
    if choice == 1:  # "svc.ns.svc" (ndots:5 candidate)
        return f"{short}.svc.{own}.svc.{ZONE} A"
    if choice == 2:  # "svc.ns.svc.cluster.local" without a trailing dot: 3 misses
        return f"{fq}.{own}.svc.{ZONE} A"
    if choice == 3:
        return f"{fq}.svc.{ZONE} A"
    if choice == 4:
        return f"{fq}.{ZONE} A"
    # "svc" resolved in a namespace it is not in, second candidate: <svc>.svc.<zone>
    return f"{svc['name']}.svc.{ZONE} A"


def write_queries(cluster, path, check_path, lines, check_lines, namespaces, seed):
    rng = random.Random(seed)
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    out = []
    kind_counts = {k: 0 for k in kinds}
    for _ in range(lines):
        kind = rng.choices(kinds, weights)[0]
        kind_counts[kind] += 1
        out.append((kind, make_query(kind, cluster, rng, namespaces)))
    with open(path, "w") as f:
        f.write("\n".join(q for _, q in out) + "\n")
    # The check sample: distinct lines, proportional to the mix, deterministic.
    seen = set()
    sample = []
    for kind, q in out:
        if q not in seen:
            seen.add(q)
            sample.append((kind, q))
    rng2 = random.Random(seed + 1)
    rng2.shuffle(sample)
    sample = sample[:check_lines]
    with open(check_path, "w") as f:
        f.write("\n".join(f"{q} {kind}" for kind, q in sample) + "\n")
    nx = sum(kind_counts[k] for k in NXDOMAIN_KINDS)
    return {
        "lines": lines,
        "distinct_lines": len(seen),
        "kinds": kind_counts,
        "expected_rcodes": {"NOERROR": lines - nx, "NXDOMAIN": nx},
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=10000)
    p.add_argument("--namespaces", type=int, default=100)
    p.add_argument("--headless-every", type=int, default=10, help="every Nth service is headless")
    p.add_argument("--endpoints", type=int, default=10, help="endpoints per service")
    p.add_argument("--queries", type=int, default=200000, help="lines in queries-mix.txt")
    p.add_argument("--check-queries", type=int, default=4000, help="lines in queries-check.txt")
    p.add_argument("--seed", type=int, default=20251125)
    p.add_argument("--out", default=os.path.join(here, "data"))
    args = p.parse_args()

    os.makedirs(args.out, exist_ok=True)
    cluster = Cluster(args.services, args.namespaces, args.headless_every, args.endpoints)
    write_cluster(cluster, os.path.join(args.out, "cluster.json"))
    counts = write_zones(
        cluster,
        os.path.join(args.out, "cluster.local.zone"),
        os.path.join(args.out, "10.in-addr.arpa.zone"),
    )
    qsum = write_queries(
        cluster,
        os.path.join(args.out, "queries-mix.txt"),
        os.path.join(args.out, "queries-check.txt"),
        args.queries,
        args.check_queries,
        args.namespaces,
        args.seed,
    )
    headless = sum(1 for s in cluster.services if s["headless"])
    summary = {
        "services": args.services,
        "headless_services": headless,
        "namespaces": args.namespaces,
        "endpoints": args.services * args.endpoints,
        "named_endpoints": headless * args.endpoints,
        "seed": args.seed,
        **counts,
        "queries": qsum,
        "mix_percent": dict(MIX),
    }
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(
        f"gen_cluster: {args.services} services ({headless} headless) in {args.namespaces} namespaces, "
        f"{summary['endpoints']} endpoints; zone {counts['forward_rrs']} + {counts['reverse_rrs']} RRs; "
        f"{qsum['lines']} queries ({qsum['distinct_lines']} distinct) -> {args.out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
