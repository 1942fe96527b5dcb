#!/usr/bin/env python3
"""Zone and dnsperf query files for the dns-cache benchmark (standard library only).

The zones are bench/gen_cluster.py's synthetic cluster (10,000 Services over 100 namespaces,
every 10th headless with 10 named endpoints), served by Knot as the upstream. Writes, into
--out:

  cluster.local.zone, 10.in-addr.arpa.zone   the upstream's zones (gen_cluster.write_zones)
  q-hot.txt          pure cache-hit mix: gen_cluster's realistic mix restricted to 300
                     ClusterIP and 6 headless services, without NXDOMAIN names and without
                     headless SRV (those are truncated without EDNS and so never cached)
  q-hot-unique.txt   its distinct lines (the warm-up pass)
  q-ndots.txt        the search-path mix pods send with `ndots:5` (see NDOTS below), A then
                     AAAA for every candidate, like glibc and musl
  q-ndots-unique.txt its distinct lines (the warm-up pass)
  q-ndots.expect     the rcode each line of q-ndots.txt must get (NOERROR or NXDOMAIN)
  q-miss-prefill.txt 12,000 unique NXDOMAIN names (fill the cache before a miss run)
  q-miss-sat.txt     unique NXDOMAIN names for the saturated miss runs
  q-miss-fixed.txt   unique NXDOMAIN names for the fixed-rate miss runs
  q-fill-a.txt, q-fill-b.txt   10,000 distinct existing names each (RSS with a full cache)
  q-check.txt        a sample of distinct lines of all mixes with the expected rcode, for the
                     answer check against the upstream
  summary.json       counts

Every query file line is `name TYPE`; nothing is ever repeated across the miss files, so
every miss-file query is forwarded whatever the cache holds.
"""

import argparse
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import gen_cluster  # noqa: E402

ZONE = gen_cluster.ZONE
NAMESPACES = 100

# The ndots:5 search-path mix, in percent of lookups (as in the peer-baseline measurements):
NDOTS = [
    ("same_ns", 35),    # "svc-i" from its own namespace: hit on the first candidate
    ("cross_ns", 30),   # "svc-i.ns-j": one NXDOMAIN candidate, then the hit
    ("fqdn_nodot", 5),  # "svc-i.ns-j.svc.cluster.local" without the trailing dot: 3 NXDOMAINs, then the hit
    ("external", 30),   # "google.com" and friends: 3 NXDOMAINs inside cluster.local (the final
                        # upstream query is left out: there is no internet here)
]
EXTERNAL = [
    "google.com", "www.google.com", "api.github.com", "github.com", "registry-1.docker.io",
    "auth.docker.io", "s3.amazonaws.com", "sts.amazonaws.com", "quay.io", "gcr.io",
    "storage.googleapis.com", "login.microsoftonline.com", "api.stripe.com", "pypi.org",
    "files.pythonhosted.org", "registry.npmjs.org", "ntp.ubuntu.com", "api.segment.io",
    "hooks.slack.com", "o123.ingest.sentry.io",
]
HOT_MIX = [(k, w) for k, w in gen_cluster.MIX if k not in ("nx_search", "srv_headless")]


def ndots_lines(cluster, rng, lookups):
    """[(line, expected rcode, kind)] for `lookups` pod lookups."""
    plain = [s for s in cluster.services if not s["headless"]]
    kinds = [k for k, _ in NDOTS]
    weights = [w for _, w in NDOTS]
    out = []

    def both(name, rcode, kind):
        out.append((f"{name} A", rcode, kind))
        out.append((f"{name} AAAA", rcode, kind))  # NOERROR/NODATA for existing names

    for _ in range(lookups):
        kind = rng.choices(kinds, weights)[0]
        svc = rng.choice(plain)
        if kind == "same_ns":
            own = svc["ns"]
        else:
            own = f"ns-{rng.randrange(NAMESPACES)}"
            if own == svc["ns"]:
                own = f"ns-{(int(own[3:]) + 1) % NAMESPACES}"
        search = [f"{own}.svc.{ZONE}", f"svc.{ZONE}", ZONE]
        fq = gen_cluster.Cluster.fqdn(svc)
        if kind == "same_ns":
            both(f"{svc['name']}.{search[0]}", "NOERROR", kind)
        elif kind == "cross_ns":
            short = f"{svc['name']}.{svc['ns']}"
            both(f"{short}.{search[0]}", "NXDOMAIN", kind)
            both(f"{short}.{search[1]}", "NOERROR", kind)
        elif kind == "fqdn_nodot":
            for domain in search:
                both(f"{fq}.{domain}", "NXDOMAIN", kind)
            both(fq, "NOERROR", kind)
        else:
            name = rng.choice(EXTERNAL)
            for domain in search:
                both(f"{name}.{domain}", "NXDOMAIN", kind)
    return out


def hot_lines(cluster, rng, lines):
    plain = [s for s in cluster.services if not s["headless"]][:300]
    headless = [s for s in cluster.services if s["headless"]][:6]
    sub = gen_cluster.Cluster.__new__(gen_cluster.Cluster)
    sub.services = plain + headless
    kinds = [k for k, _ in HOT_MIX]
    weights = [w for _, w in HOT_MIX]
    return [gen_cluster.make_query(rng.choices(kinds, weights)[0], sub, rng, NAMESPACES) for _ in range(lines)]


def fill_lines(cluster, rng):
    """20,000 distinct existing names (A of every service, PTR and SRV of ClusterIP ones),
    shuffled, split in two halves of 10,000."""
    lines = []
    for svc in cluster.services:
        fq = gen_cluster.Cluster.fqdn(svc)
        lines.append(f"{fq} A")
        if not svc["headless"]:
            lines.append(f"{gen_cluster.reverse_name(svc['ip'])} PTR")
            lines.append(f"_http._tcp.{fq} SRV")
    rng.shuffle(lines)
    return lines[:10000], lines[10000:20000]


def unique(seq):
    seen = set()
    out = []
    for x in seq:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def write(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def miss_names(prefix, count):
    # nx-<n>.ns-<m>.svc.cluster.local: inside the zone, never existing, never repeated.
    return [f"{prefix}{n}.ns-{n % NAMESPACES}.svc.{ZONE} A" for n in range(count)]


def generate(out, services=10000, ndots_lines_n=200000, hot_lines_n=200000, miss_sat=600000,
             miss_fixed=200000, seed=20251126):
    os.makedirs(out, exist_ok=True)
    cluster = gen_cluster.Cluster(services, NAMESPACES, 10, 10)
    counts = gen_cluster.write_zones(cluster, os.path.join(out, "cluster.local.zone"),
                                     os.path.join(out, "10.in-addr.arpa.zone"))
    rng = random.Random(seed)
    hot = hot_lines(cluster, rng, hot_lines_n)
    write(os.path.join(out, "q-hot.txt"), hot)
    hot_u = unique(hot)
    write(os.path.join(out, "q-hot-unique.txt"), hot_u)

    nd = []
    while len(nd) < ndots_lines_n:
        nd.extend(ndots_lines(cluster, rng, 1000))
    nd = nd[:ndots_lines_n]
    write(os.path.join(out, "q-ndots.txt"), [l for l, _, _ in nd])
    write(os.path.join(out, "q-ndots.expect"), [r for _, r, _ in nd])
    nd_u = unique(l for l, _, _ in nd)
    write(os.path.join(out, "q-ndots-unique.txt"), nd_u)
    nd_rc = {}
    for _, r, _ in nd:
        nd_rc[r] = nd_rc.get(r, 0) + 1
    nd_kinds = {}
    for _, _, k in nd:
        nd_kinds[k] = nd_kinds.get(k, 0) + 1

    write(os.path.join(out, "q-miss-prefill.txt"), miss_names("pf-", 12000))
    write(os.path.join(out, "q-miss-sat.txt"), miss_names("nxs-", miss_sat))
    write(os.path.join(out, "q-miss-fixed.txt"), miss_names("nxf-", miss_fixed))
    fa, fb = fill_lines(cluster, rng)
    write(os.path.join(out, "q-fill-a.txt"), fa)
    write(os.path.join(out, "q-fill-b.txt"), fb)

    # Answer-check sample: distinct lines of every mix with the rcode they must get.
    check = []
    nd_seen = {}
    for l, r, k in nd:
        nd_seen.setdefault(l, (r, k))
    nd_items = list(nd_seen.items())
    rng.shuffle(nd_items)
    check += [(l, r, f"ndots_{k}") for l, (r, k) in nd_items[:1200]]
    hot_sample = hot_u[:]
    rng.shuffle(hot_sample)
    check += [(l, "NOERROR", "hot") for l in hot_sample[:300]]
    check += [(l, "NOERROR", "fill") for l in fa[:300]]
    check += [(f"_http._tcp.{gen_cluster.Cluster.fqdn(s)} SRV", "NOERROR", "srv_headless")
              for s in cluster.services if s["headless"]][:20]
    check += [(l, "NXDOMAIN", "miss") for l in miss_names("chk-", 100)]
    write(os.path.join(out, "q-check.txt"), [f"{l} {r} {k}" for l, r, k in check])

    summary = {
        "services": services,
        "namespaces": NAMESPACES,
        "seed": seed,
        **counts,
        "q_hot": {"lines": len(hot), "distinct": len(hot_u)},
        "q_ndots": {"lines": len(nd), "distinct": len(nd_u), "expected_rcodes": nd_rc,
                    "lines_by_kind": nd_kinds, "lookup_mix_percent": dict(NDOTS)},
        "q_miss": {"prefill": 12000, "saturated": miss_sat, "fixed": miss_fixed},
        "q_fill": {"a": len(fa), "b": len(fb)},
        "q_check": len(check),
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--services", type=int, default=10000)
    p.add_argument("--seed", type=int, default=20251126)
    args = p.parse_args()
    s = generate(args.out, args.services, seed=args.seed)
    print(f"gen_cache: zone {s['forward_rrs']} + {s['reverse_rrs']} RRs; q-hot {s['q_hot']['distinct']} distinct, "
          f"q-ndots {s['q_ndots']['distinct']} distinct, rcodes {s['q_ndots']['expected_rcodes']} -> {args.out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
