#!/usr/bin/env python3
"""Draw the benchmark chart, docs/benchmarks.svg, as a hand-written SVG (standard library only).

The inputs are the results.json files of the two benchmark drivers: bench/bench.py (kube-dns
against NSD and Knot) and bench/cache/cache_bench.py (dns-cache against dnsmasq and Unbound).
The script first copies the plotted numbers into a small JSON file, then draws the SVG from that
file alone, so the chart can be redrawn from what is committed.

    # extract from raw results, then draw
    python3 bench/chart.py --kube-dns KD/results.json --cache DC/results.json \
        [--cache-misses DC2/results.json] \
        --out-svg docs/benchmarks.svg --out-data docs/benchmarks-data.json

    # redraw from the extracted numbers only
    python3 bench/chart.py --data docs/benchmarks-data.json --out-svg docs/benchmarks.svg

--cache-misses is a later cache_bench.py run whose miss and ndots phases replace those of --cache
(hits and RSS always come from --cache). A missing field skips its bar and leaves a note in the
panel instead of failing. The SVG is parsed back with xml.etree.ElementTree before exiting.
"""

import argparse
import json
import math
import os
import statistics
import sys
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

# ----------------------------------------------------------------------------- names and colours

OURS = "#1f63b4"
PEER_DARK = "#6e6e6e"
PEER_LIGHT = "#ababab"
INK = "#1a1a1a"
MUTED = "#555555"
GRID = "#e3e3e3"

COLOURS = {"kube-dns": OURS, "dns-cache": OURS, "nsd": PEER_DARK, "knot": PEER_LIGHT,
           "dnsmasq": PEER_DARK, "unbound": PEER_LIGHT}
LABELS = {"kube-dns": "kube-dns", "nsd": "NSD 4.6.1", "knot": "Knot 3.2.6",
          "dns-cache": "dns-cache", "dnsmasq": "dnsmasq 2.90", "unbound": "Unbound 1.17.1"}
KD_SERVERS = ("kube-dns", "nsd", "knot")
FORWARDERS = ("dns-cache", "dnsmasq", "unbound")
NDOTS_ORDER = {  # profile key -> label, in drawing order
    "dns-cache-secondary": "dns-cache, zone copy (--secondary)",
    "dns-cache-c10000": "dns-cache, 10,000 entries",
    "dns-cache-c100000": "dns-cache, 100,000 entries",
    "dns-cache-kubedns": "dns-cache, 1,000, no-negcache",
    "dnsmasq-default": "dnsmasq, 150 (its defaults)",
    "dnsmasq-kubedns": "dnsmasq, 1,000, no-negcache",
    "unbound": "Unbound, 64m msg cache",
}
# A miss run counts as a forwarded-query cost only if at least this share of its queries missed the cache.
MIN_FORWARDED_PCT = 99.0

# ----------------------------------------------------------------------------- extraction


def get(d, *path):
    """d[path[0]][path[1]]..., or None when any step is missing."""
    for p in path:
        if isinstance(d, dict) and p in d:
            d = d[p]
        elif isinstance(d, list) and isinstance(p, int) and -len(d) <= p < len(d):
            d = d[p]
        else:
            return None
    return d


def median(values):
    vals = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None


def rnd(v, digits=2):
    if not isinstance(v, (int, float)):
        return None
    return int(round(v)) if digits == 0 else round(float(v), digits)


def kind_of(key):
    for k in ("dns-cache", "dnsmasq", "unbound"):
        if key.startswith(k):
            return k
    return key


def extract_kube_dns(raw, path):
    runs = get(raw, "runs") or {}
    out = {"source": "kube_dns", "rate": get(raw, "params", "rate"), "reps": get(raw, "params", "reps"),
           "duration_s": get(raw, "params", "duration"), "servers": [], "values": {}}
    for s in KD_SERVERS:
        m = get(raw, "medians", s) or {}
        sat = get(runs, "saturated", s) or []
        fix = get(runs, "fixed", s) or []

        qps = m.get("qps") if m.get("qps") is not None else median(r.get("qps") for r in sat)
        sat_usq = m.get("sat_usq") if m.get("sat_usq") is not None else median(r.get("cpu_us_per_query") for r in sat)
        fix_usq = m.get("fix_usq") if m.get("fix_usq") is not None else median(r.get("cpu_us_per_query") for r in fix)
        lat = {}
        for q in ("p50", "p99", "p999"):
            lat[q] = m.get(q) if m.get(q) is not None else median(get(r, "latency_us", q) for r in fix)
        pooled = get(raw, "pooled_latency_us", s) or {}
        out["servers"].append({"key": s, "label": LABELS[s], "ours": s == "kube-dns"})
        out["values"][s] = {
            "qps": rnd(qps, 0), "sat_us_per_query": rnd(sat_usq), "us_per_query_at_rate": rnd(fix_usq),
            # As in the docs table: p50 and p99.9 are medians of the runs, p99 pools all runs' samples.
            "latency_us": {"p50": rnd(lat["p50"], 1), "p99": rnd(pooled.get("p99", lat["p99"]), 1),
                           "p999": rnd(lat["p999"], 1)},
            "latency_runs_median_us": {q: rnd(v, 1) for q, v in lat.items()},
            "latency_pooled_us": {q: rnd(pooled.get(q), 1) for q in ("p50", "p90", "p99", "p999")},
        }
    reps = out["reps"] or 3
    pooled_n = get(raw, "pooled_latency_us", "kube-dns", "n")
    out["latency_basis"] = {
        "p50": f"median of the {reps} runs' p50",
        "p99": (f"the {reps} runs' samples pooled" + (f" ({pooled_n:,} per server)" if isinstance(pooled_n, int) else ""))
        if get(raw, "pooled_latency_us") else f"median of the {reps} runs' p99",
        "p999": f"median of the {reps} runs' p99.9"}
    return out


def extract_hits(raw):
    h = get(raw, "hits")
    if not h:
        return None
    out = {"source": "cache", "rate": get(raw, "params", "rate"), "reps": get(raw, "params", "hit_reps"),
           "distinct": get(raw, "data", "q_hot", "distinct"), "forwarders": []}
    for s in FORWARDERS:
        sat = get(h, s, "saturated") or []
        fix = get(h, s, "fixed") or []
        out["forwarders"].append({
            "key": s, "label": LABELS[s], "ours": s == "dns-cache",
            "qps": rnd(median(r.get("qps") for r in sat), 0),
            "sat_us_per_query": rnd(median(r.get("cpu_us_per_query") for r in sat)),
            "sat_cpu_pct": rnd(median(r.get("server_cpu_pct") for r in sat), 1),
            "us_per_query_at_rate": rnd(median(r.get("cpu_us_per_query") for r in fix)),
        })
    return out


def miss_row(key, r):
    fix = get(r, "fixed") or {}
    hits, misses = get(fix, "counters", "hits"), get(fix, "counters", "misses")
    fwd = None
    if isinstance(hits, (int, float)) and isinstance(misses, (int, float)) and hits + misses > 0:
        fwd = 100.0 * misses / (hits + misses)
    return {"key": key, "kind": get(r, "kind") or kind_of(key), "cache_size": get(r, "cache_size"),
            "us_per_query_at_rate": rnd(get(fix, "cpu_us_per_query")),
            "sat_qps": rnd(get(r, "saturated", "qps"), 0),
            "sat_us_per_query": rnd(get(r, "saturated", "cpu_us_per_query")),
            "forwarded_pct": rnd(fwd, 1)}


def valid_miss(row):
    return row["forwarded_pct"] is None or row["forwarded_pct"] >= MIN_FORWARDED_PCT


def extract_misses(raw, src, earlier_raw=None):
    mi = get(raw, "misses")
    if not mi:
        return None
    out = {"source": src, "rate": get(raw, "params", "miss_rate"), "rows": [], "earlier": []}
    for key, r in mi.items():
        row = miss_row(key, r)
        out["rows"].append(row)
        # A later run whose fixed-rate phase was answered from cache is no miss cost: keep the
        # earlier run's valid figure for the same configuration next to it.
        if not valid_miss(row) and earlier_raw is not None and get(earlier_raw, "misses", key):
            old = miss_row(key, get(earlier_raw, "misses", key))
            if valid_miss(old) and old["us_per_query_at_rate"] is not None:
                old["source"] = "cache"
                out["earlier"].append(old)
    return out


def extract_ndots(raw, src):
    nd = get(raw, "ndots")
    if not nd:
        return None
    rc = get(raw, "data", "q_ndots", "expected_rcodes") or {}
    nx = None
    if isinstance(rc.get("NXDOMAIN"), (int, float)) and sum(v for v in rc.values() if isinstance(v, (int, float))):
        nx = 100.0 * rc["NXDOMAIN"] / sum(v for v in rc.values() if isinstance(v, (int, float)))
    out = {"source": src, "distinct": get(raw, "data", "q_ndots", "distinct"), "nxdomain_pct": rnd(nx, 1),
           "profiles": []}
    keys = [k for k in NDOTS_ORDER if k in nd] + [k for k in nd if k not in NDOTS_ORDER]
    for key in keys:
        rs = get(nd, key, "runs") or []
        kind = kind_of(key)
        out["profiles"].append({
            "key": key, "kind": kind, "ours": kind == "dns-cache",
            "label": NDOTS_ORDER.get(key) or get(nd, key, "describe") or key,
            "flags": get(nd, key, "describe"),
            "qps": rnd(median(r.get("qps") for r in rs), 0),
            "us_per_query": rnd(median(r.get("cpu_us_per_query") for r in rs)),
            "hit_pct": rnd(median(r.get("hit_pct") for r in rs), 1),
        })
    return out


def extract_rss(raw):
    rs = get(raw, "rss")
    if not rs:
        return None
    out = {"source": "cache", "forwarders": []}

    def mib(kb):
        return rnd(kb / 1024.0) if isinstance(kb, (int, float)) else None

    for s in FORWARDERS:
        r = get(rs, s) or {}
        out["forwarders"].append({
            "key": s, "label": LABELS[s], "ours": s == "dns-cache", "describe": get(r, "describe"),
            "start_mib": mib(get(r, "start_kb")),
            "after_10k_names_mib": mib(get(r, "after_a", "rss_kb")),
            "after_20k_names_mib": mib(get(r, "after_b", "rss_kb")),
            "entries_after_20k_names": get(r, "after_b", "entries"),
            "hwm_mib": mib(get(r, "after_b", "hwm_kb")),
        })
    return out


def load(path):
    with open(path) as f:
        return json.load(f)


def extract(args):
    kd, dc = load(args.kube_dns), load(args.cache)
    dm = load(args.cache_misses) if args.cache_misses else None
    sources = {"kube_dns": {"file": args.kube_dns, "started": get(kd, "started")},
               "cache": {"file": args.cache, "started": get(dc, "started"),
                         "phases": "hits and RSS" + ("" if dm else ", misses and ndots")}}
    if dm:
        sources["cache_misses"] = {"file": args.cache_misses, "started": get(dm, "started"),
                                   "phases": "misses and ndots"}
    later, src = (dm, "cache_misses") if dm else (dc, "cache")
    return {
        "about": "Numbers plotted in docs/benchmarks.svg, extracted by bench/chart.py from the benchmark drivers' "
                 "results.json files. Redraw with: python3 bench/chart.py --data docs/benchmarks-data.json "
                 "--out-svg docs/benchmarks.svg",
        "sources": sources,
        "kube_dns": extract_kube_dns(kd, args.kube_dns),
        "hits": extract_hits(dc),
        "misses": extract_misses(later, src, dc if dm else None),
        "ndots": extract_ndots(later, src),
        "rss": extract_rss(dc),
    }


# ----------------------------------------------------------------------------- SVG primitives

# Advance widths of a wide sans-serif face, in em, so that labels are placed conservatively.
_NARROW = set("ijl|!.,:;'`")
_SEMI = set("frt()[]-/ I")


def text_width(s, size):
    w = 0.0
    for ch in str(s):
        if ch in _NARROW:
            w += 0.30
        elif ch in _SEMI:
            w += 0.40
        elif ch in "mwMW":
            w += 0.95
        elif ch.isupper():
            w += 0.72
        elif ch in "=×≥≤+<>~":
            w += 0.84
        else:
            w += 0.62
    return w * size


def wrap(text, size, width):
    words, lines, cur = str(text).split(), [], ""
    for w in words:
        trial = (cur + " " + w).strip()
        if cur and text_width(trial, size) > width:
            lines.append(cur)
            cur = w
        else:
            cur = trial
    if cur:
        lines.append(cur)
    return lines


def num(v):
    return f"{v:.1f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)


class Svg:
    def __init__(self, width, height):
        self.w, self.h, self.parts = width, height, []

    def add(self, s):
        self.parts.append(s)

    def rect(self, x, y, w, h, fill, **attrs):
        extra = "".join(f' {k.replace("_", "-")}="{escape(str(v))}"' for k, v in attrs.items())
        self.add(f'<rect x="{num(round(x, 1))}" y="{num(round(y, 1))}" width="{num(round(max(w, 0), 1))}" '
                 f'height="{num(round(max(h, 0), 1))}" fill="{fill}"{extra}/>')

    def line(self, x1, y1, x2, y2, stroke, width=1, **attrs):
        extra = "".join(f' {k.replace("_", "-")}="{escape(str(v))}"' for k, v in attrs.items())
        self.add(f'<line x1="{num(round(x1, 1))}" y1="{num(round(y1, 1))}" x2="{num(round(x2, 1))}" '
                 f'y2="{num(round(y2, 1))}" stroke="{stroke}" stroke-width="{width}"{extra}/>')

    def text(self, x, y, s, size=12, anchor="start", fill=INK, weight=None, italic=False, rotate=None):
        a = [f'x="{num(round(x, 1))}"', f'y="{num(round(y, 1))}"', f'font-size="{size}"', f'fill="{fill}"']
        if anchor != "start":
            a.append(f'text-anchor="{anchor}"')
        if weight:
            a.append(f'font-weight="{weight}"')
        if italic:
            a.append('font-style="italic"')
        if rotate is not None:
            a.append(f'transform="rotate({rotate} {num(round(x, 1))} {num(round(y, 1))})"')
        self.add(f'<text {" ".join(a)}>{escape(str(s))}</text>')

    def render(self):
        head = (f'<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
                f'viewBox="0 0 {self.w} {self.h}" font-family="sans-serif">\n'
                '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
                'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff"/>'
                f'<line x1="0" y1="0" x2="0" y2="6" stroke="{PEER_LIGHT}" stroke-width="3"/></pattern></defs>\n'
                f'<rect width="{self.w}" height="{self.h}" fill="#ffffff"/>\n')
        return head + "\n".join(self.parts) + "\n</svg>\n"


def text_on(fill):
    """Text colour for a value printed inside a bar of this fill."""
    if not fill.startswith("#") or len(fill) != 7:
        return INK
    r, g, b = (int(fill[i:i + 2], 16) for i in (1, 3, 5))
    return "#ffffff" if 0.299 * r + 0.587 * g + 0.114 * b < 150 else INK


def nice_ticks(vmax, n=5):
    if not vmax or vmax <= 0:
        return [0, 1]
    raw = vmax / n
    mag = 10 ** math.floor(math.log10(raw))
    step = mag
    for m in (1, 2, 2.5, 5, 10):
        step = m * mag
        if step >= raw:
            break
    top = math.ceil(vmax / step - 1e-9) * step
    return [i * step for i in range(int(round(top / step)) + 1)]


def fmt_int(v):
    return f"{v:,.0f}"


def fmt_1(v):
    return f"{v:,.1f}"


def fmt_k(v):
    return "0" if v == 0 else (f"{v / 1000:g}k" if v >= 1000 else f"{v:g}")


def fmt_tick(v):
    return f"{v:,g}" if v < 1e6 else f"{v:,.0f}"


# ----------------------------------------------------------------------------- chart pieces

VALUE_SIZE = 11
NOTE_SIZE = 10.5


def hbars(svg, x, y, w, groups, axis_label, value_fmt, tick_fmt=fmt_tick, bar_h=17, inner_gap=3, group_gap=9,
          label_size=11.5, height=None):
    """Horizontal bars. groups: [{"label", "bars": [{"value", "fill", "note", "hatch", "sublabel"}]}].
    Bars whose value is None must be filtered out by the caller. With height (the room down to the
    axis label's baseline), bar_h is the largest bar thickness and the bars grow to fill that room.
    Returns the y below the axis label."""
    groups = [g for g in groups if g["bars"]]
    if not groups:
        return y
    if height:
        nb = sum(len(g["bars"]) for g in groups)
        fixed = (nb - len(groups)) * inner_gap + (len(groups) - 1) * group_gap + 36
        bar_h = max(11, min(bar_h, (height - fixed) / nb))
    label_w = max(text_width(g["label"], label_size) * (1.08 if g.get("ours") else 1) for g in groups) + 10
    subs = [b.get("sublabel") for g in groups for b in g["bars"] if b.get("sublabel")]
    sub_w = (max(text_width(s, 10) for s in subs) + 8) if subs else 0
    x0 = x + label_w + sub_w
    avail = w - label_w - sub_w - 6
    vmax = max(b["value"] for g in groups for b in g["bars"])
    ticks = nice_ticks(vmax)
    top = ticks[-1]
    # Shrink the scale if a value or note printed past a bar's end would leave the panel.
    plot_w = avail
    for g in groups:
        for b in g["bars"]:
            frac = b["value"] / top if top else 0
            tw = text_width(value_fmt(b["value"]), VALUE_SIZE)
            extra = 0 if frac * avail >= tw + 10 else tw + 8
            if b.get("note"):
                extra += text_width(b["note"], NOTE_SIZE) + 8
            if extra and frac > 0:
                plot_w = min(plot_w, (avail - extra) / frac)
    plot_w = max(plot_w, avail * 0.4)
    height = sum(len(g["bars"]) * bar_h + (len(g["bars"]) - 1) * inner_gap for g in groups) + group_gap * (len(groups) - 1)
    for t in ticks:
        tx = x0 + plot_w * t / top
        svg.line(tx, y - 3, tx, y + height + 3, GRID)
        svg.text(tx, y + height + 15, tick_fmt(t), size=10, anchor="middle", fill=MUTED)
    svg.line(x0, y - 3, x0, y + height + 3, "#888888")
    svg.text(x0 + plot_w / 2, y + height + 30, axis_label, size=11, anchor="middle", fill=MUTED)
    cy = y
    for g in groups:
        gh = len(g["bars"]) * bar_h + (len(g["bars"]) - 1) * inner_gap
        svg.text(x + label_w - 8, cy + gh / 2 + 4, g["label"], size=label_size, anchor="end",
                 weight="bold" if g.get("ours") else None)
        for b in g["bars"]:
            bw = plot_w * b["value"] / top if top else 0
            if b.get("hatch"):
                svg.rect(x0, cy, bw, bar_h, "url(#hatch)", stroke=PEER_DARK, stroke_width=1, stroke_dasharray="3 2")
            else:
                svg.rect(x0, cy, bw, bar_h, b["fill"])
            if b.get("sublabel"):
                svg.text(x0 - 5, cy + bar_h / 2 + 3.5, b["sublabel"], size=10, anchor="end", fill=MUTED)
            vt = value_fmt(b["value"])
            tw = text_width(vt, VALUE_SIZE)
            fill = INK if b.get("hatch") else text_on(b["fill"])
            if bw >= tw + 10:
                svg.text(x0 + bw - 5, cy + bar_h / 2 + 4, vt, size=VALUE_SIZE, anchor="end", fill=fill, weight="bold")
                end = x0 + bw
            else:
                svg.text(x0 + bw + 4, cy + bar_h / 2 + 4, vt, size=VALUE_SIZE, fill=INK, weight="bold")
                end = x0 + bw + 4 + tw
            if b.get("note"):
                svg.text(end + 8, cy + bar_h / 2 + 3.5, b["note"], size=NOTE_SIZE, fill=MUTED, italic=True)
            cy += bar_h + inner_gap
        cy += group_gap - inner_gap
    return y + height + 36


def vbars_log(svg, x, y, w, h, groups, series, axis_label, value_fmt):
    """Vertical grouped bars on a log scale. groups: [{"label", "values": {series_key: value or None}}];
    series: [{"key", "fill"}]. Draws in the box (x, y, w, h)."""
    vals = [v for g in groups for v in g["values"].values() if isinstance(v, (int, float)) and v > 0]
    if not vals:
        return
    lo = 10 ** math.floor(math.log10(min(vals)))
    hi = 10 ** math.ceil(math.log10(max(vals) * 1.15))
    axis_w = text_width(fmt_tick(hi), 10) + 34
    x0, y0, pw, ph = x + axis_w, y + 14, w - axis_w - 6, h - 14 - 34

    def ypos(v):
        return y0 + ph - ph * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    decade = lo
    while decade <= hi * 1.0001:
        yy = ypos(decade)
        svg.line(x0 - 3, yy, x0 + pw, yy, GRID)
        svg.text(x0 - 6, yy + 3.5, fmt_tick(decade), size=10, anchor="end", fill=MUTED)
        if decade < hi:
            for m in (2, 5):
                svg.line(x0, ypos(decade * m), x0 + pw, ypos(decade * m), GRID, stroke_dasharray="2 3")
                svg.text(x0 - 6, ypos(decade * m) + 3.5, fmt_tick(decade * m), size=8.5, anchor="end", fill="#999999")
        decade *= 10
    svg.line(x0, y0 + ph, x0 + pw, y0 + ph, "#888888")
    svg.text(x + 11, y0 + ph / 2, axis_label, size=11, anchor="middle", fill=MUTED, rotate=-90)
    gw = pw / len(groups)
    bw = min(40, (gw - 24) / len(series))
    for i, g in enumerate(groups):
        gx = x0 + i * gw + (gw - bw * len(series)) / 2
        for j, s in enumerate(series):
            v = g["values"].get(s["key"])
            bx = gx + j * bw
            if not isinstance(v, (int, float)) or v <= 0:
                continue
            yy = ypos(v)
            svg.rect(bx + 1, yy, bw - 2, y0 + ph - yy, s["fill"])
            svg.text(bx + bw / 2, yy - 4, value_fmt(v), size=10, anchor="middle", fill=INK, weight="bold")
        svg.text(x0 + i * gw + gw / 2, y0 + ph + 16, g["label"], size=11.5, anchor="middle")


def legend(svg, x, y, items, size=11):
    """items: [(label, fill, hatch)]. Returns the x after the last item."""
    for label, fill, hatch in items:
        if hatch:
            svg.rect(x, y - 9, 12, 11, "url(#hatch)", stroke=PEER_DARK, stroke_width=1, stroke_dasharray="3 2")
        else:
            svg.rect(x, y - 9, 12, 11, fill)
        svg.text(x + 16, y, label, size=size)
        x += 16 + text_width(label, size) + 16
    return x


class Panel:
    PAD = 14

    def __init__(self, svg, x, y, w, h, title, subtitle):
        self.svg, self.x, self.y, self.w, self.h = svg, x, y, w, h
        self.notes = []
        svg.rect(x, y, w, h, "#ffffff", stroke="#d0d0d0", stroke_width=1, rx=4)
        svg.text(x + self.PAD, y + 24, title, size=15, weight="bold")
        lines = wrap(subtitle, 11.5, w - 2 * self.PAD)
        for i, line in enumerate(lines):
            svg.text(x + self.PAD, y + 42 + 14 * i, line, size=11.5, fill=MUTED)
        self.top = y + 42 + 14 * (len(lines) - 1) + 14

    def note(self, text):
        if text:
            self.notes.append(text)

    def note_lines(self):
        return [l for n in self.notes for l in wrap(n, NOTE_SIZE, self.w - 2 * self.PAD)]

    def notes_height(self, extra=()):
        lines = [l for n in list(self.notes) + list(extra) for l in wrap(n, NOTE_SIZE, self.w - 2 * self.PAD)]
        return 13 * len(lines) + (8 if lines else 0)

    def room(self, y):
        """Height left between y and the notes at the bottom of the panel."""
        return self.y + self.h - self.notes_height() - y - 6

    def finish(self):
        lines = self.note_lines()
        yy = self.y + self.h - 10 - 13 * (len(lines) - 1)
        for line in lines:
            self.svg.text(self.x + self.PAD, yy, line, size=NOTE_SIZE, fill=MUTED, italic=True)
            yy += 13

    def empty(self, why):
        self.svg.text(self.x + self.w / 2, self.y + self.h / 2, why, size=13, anchor="middle", fill=MUTED, italic=True)


def skipped_note(names):
    return f"Not plotted, missing in the data: {', '.join(names)}." if names else None


def ratio_text(a, b):
    return f"{a / b:.2f}×" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "n/a"


# ----------------------------------------------------------------------------- the panels


def panel_kd_qps(p, kd):
    if not kd:
        return p.empty("no kube-dns results")
    groups, missing = [], []
    for s in kd["servers"]:
        v = get(kd, "values", s["key"], "qps")
        if v is None:
            missing.append(s["label"])
            continue
        groups.append({"label": s["label"], "ours": s["ours"],
                       "bars": [{"value": v, "fill": COLOURS.get(s["key"], PEER_DARK)}]})
    vals = kd["values"]
    kq = get(vals, "kube-dns", "qps")
    p.note(f"kube-dns / NSD {ratio_text(kq, get(vals, 'nsd', 'qps'))}, kube-dns / Knot "
           f"{ratio_text(kq, get(vals, 'knot', 'qps'))}. Median of {kd.get('reps') or 3} runs"
           + (f" of {kd['duration_s']} s" if kd.get("duration_s") else "")
           + ", the same 10,000-service cluster in each server.")
    p.note(skipped_note(missing))
    y = p.top + 16
    hbars(p.svg, p.x + p.PAD, y, p.w - 2 * p.PAD, groups, "queries per second", fmt_int,
          tick_fmt=fmt_k, bar_h=40, group_gap=14, height=p.room(y))


def panel_kd_latency(p, kd):
    if not kd:
        return p.empty("no kube-dns results")
    basis = kd.get("latency_basis") or {}
    names = {"p50": "p50", "p99": "p99", "p999": "p99.9"}
    groups, missing = [], []
    for q in ("p50", "p99", "p999"):
        vals = {}
        for s in kd["servers"]:
            v = get(kd, "values", s["key"], "latency_us", q)
            if v is None:
                missing.append(f"{s['label']} {names[q]}")
            vals[s["key"]] = v
        groups.append({"label": names[q], "values": vals})
    series = [{"key": s["key"], "fill": COLOURS.get(s["key"], PEER_DARK)} for s in kd["servers"]]
    legend(p.svg, p.x + p.PAD, p.top + 14,
           [(s["label"], COLOURS.get(s["key"], PEER_DARK), False) for s in kd["servers"]])
    p.note(f"Log scale. p50: {basis.get('p50', '?')}; p99: {basis.get('p99', '?')}; p99.9: "
           f"{basis.get('p999', '?')}; as in the table in docs/benchmarks.md. The tail moves a lot between runs "
           "on this VM.")
    p.note(skipped_note(missing))
    top = p.top + 26
    vbars_log(p.svg, p.x + p.PAD, top, p.w - 2 * p.PAD, p.y + p.h - p.notes_height() - top - 4,
              groups, series, "latency, µs (log scale)", fmt_int)


def panel_hits(p, hits):
    if not hits:
        return p.empty("no cache-hit results")
    rate = hits.get("rate") or 10000
    missing = []

    def groups_for(key):
        out = []
        for f in hits["forwarders"]:
            v = f.get(key)
            if v is None:
                missing.append(f"{f['label']} ({'qps' if key == 'qps' else 'µs/query'})")
                continue
            out.append({"label": f["label"], "ours": f["ours"],
                        "bars": [{"value": v, "fill": COLOURS.get(f["key"], PEER_DARK)}]})
        return out

    by = {f["key"]: f for f in hits["forwarders"]}
    cpu_groups, qps_groups = groups_for("us_per_query_at_rate"), groups_for("qps")
    dc_cpu = get(by, "dns-cache", "sat_cpu_pct")
    p.note(f"dns-cache / Unbound: {ratio_text(get(by, 'dns-cache', 'us_per_query_at_rate'), get(by, 'unbound', 'us_per_query_at_rate'))} "
           f"the CPU at {rate:,} qps. Saturated, dns-cache was limited by the load generator's core"
           + (f" (it used {dc_cpu:.0f}% of its own)" if dc_cpu is not None else "")
           + f". Median of {hits.get('reps') or 3} rounds.")
    p.note(skipped_note(missing))
    y = p.top + 8
    half = (p.room(y) - 8) / 2
    p.svg.text(p.x + p.PAD, y + 4, f"CPU µs per query at {rate:,} qps (lower is better)", size=11.5, weight="bold")
    hbars(p.svg, p.x + p.PAD, y + 18, p.w - 2 * p.PAD, cpu_groups, "CPU µs per query", fmt_1, bar_h=24,
          height=half - 18)
    y += half + 8
    p.svg.text(p.x + p.PAD, y + 4, "saturated qps (higher is better)", size=11.5, weight="bold")
    hbars(p.svg, p.x + p.PAD, y + 18, p.w - 2 * p.PAD, qps_groups, "queries per second", fmt_int,
          tick_fmt=fmt_k, bar_h=24, height=half - 18)


def panel_misses(p, mi):
    if not mi:
        return p.empty("no miss results")
    rate = mi.get("rate") or 3000
    rows = {r["key"]: r for r in mi["rows"]}
    groups, missing, hatched = [], [], False
    for size in (150, 1000, 10000):
        bars = []
        for kind in ("dns-cache", "dnsmasq"):
            r = rows.get(f"{kind}-c{size}")
            v = get(r, "us_per_query_at_rate") if r else None
            if v is None:
                missing.append(f"{kind} {size:,}")
                continue
            bad = not valid_miss(r)
            hatched |= bad
            bars.append({"value": v, "fill": COLOURS[kind], "hatch": bad,
                         "note": "answered from cache" if bad else None})
        groups.append({"label": f"{size:,} entries", "bars": bars})
    extra = [r for r in mi["rows"] if not r["key"].startswith(("dns-cache-c", "dnsmasq-c"))]
    earlier = {r["key"]: r for r in mi.get("earlier") or []}
    for r in extra:
        kind = r.get("kind") or kind_of(r["key"])
        label = LABELS.get(r["key"], r["key"])
        bars = []
        v = r.get("us_per_query_at_rate")
        if v is None:
            missing.append(label)
        else:
            bad = not valid_miss(r)
            hatched |= bad
            note = None
            if bad:
                note = f"answered from cache ({r['forwarded_pct']:.0f}% forwarded), not a miss cost"
            bars.append({"value": v, "fill": COLOURS.get(kind, PEER_LIGHT), "hatch": bad, "note": note,
                         "sublabel": "re-run" if r["key"] in earlier else None})
        if r["key"] in earlier and earlier[r["key"]].get("us_per_query_at_rate") is not None:
            bars.append({"value": earlier[r["key"]]["us_per_query_at_rate"], "fill": COLOURS.get(kind, PEER_LIGHT),
                         "note": "all forwarded", "sublabel": "earlier run"})
        groups.append({"label": "Unbound" if kind == "unbound" else label, "bars": bars})
    items = [("dns-cache", OURS, False), (LABELS["dnsmasq"], PEER_DARK, False), (LABELS["unbound"] + ", 64m msg cache", PEER_LIGHT, False)]
    if hatched:
        items.append(("not a miss", None, True))
    legend(p.svg, p.x + p.PAD, p.top + 14, items, size=10.5)
    dc = [get(rows, f"dns-cache-c{s}", "us_per_query_at_rate") for s in (150, 1000, 10000)]
    dm = [get(rows, f"dnsmasq-c{s}", "us_per_query_at_rate") for s in (150, 1000, 10000)]
    p.note("dns-cache / dnsmasq at the same size: " + ", ".join(ratio_text(a, b) for a, b in zip(dc, dm))
           + ". Every query is a never-seen NXDOMAIN name, forwarded to Knot; the cache is full, so each miss also evicts.")
    if hatched:
        p.note("Hatched: the forwarder's own counters say that run was answered from its cache, so it measures no "
               "forwarding" + ("; the earlier run's figure, all forwarded, is below it." if earlier else "."))
    p.note(skipped_note(missing))
    y = p.top + 28
    hbars(p.svg, p.x + p.PAD, y, p.w - 2 * p.PAD, groups,
          f"CPU µs per forwarded query at {rate:,} qps", fmt_1, bar_h=20, group_gap=10, height=p.room(y))


def panel_ndots(p, nd):
    if not nd:
        return p.empty("no ndots results")
    groups, missing = [], []
    for pr in nd["profiles"]:
        if pr.get("qps") is None:
            missing.append(pr["label"])
            continue
        hit = pr.get("hit_pct")
        groups.append({"label": pr["label"], "ours": pr.get("ours"),
                       "bars": [{"value": pr["qps"], "fill": COLOURS.get(pr.get("kind"), PEER_DARK),
                                 "note": f"{hit:.0f}% hits" if hit is not None else None}]})
    by = {pr["key"]: pr for pr in nd["profiles"]}
    ub = get(by, "unbound", "qps")
    distinct = nd.get("distinct")
    p.note("dns-cache vs Unbound: " + ", ".join(
        f"{ratio_text(get(by, k, 'qps'), ub)} at {n} entries" for k, n in (("dns-cache-c10000", "10,000"),
                                                                              ("dns-cache-c100000", "100,000")))
           + (f". The mix has {distinct:,} distinct names" if distinct else ". The working set")
           + " and does not fit in 10,000 entries; hit rates from each forwarder's own counters. no-negcache: "
             "the legacy kube-dns flags.")
    if "dns-cache-secondary" in by:
        ca = nd.get("change_to_answer") or {}
        p.note(f"With the cluster zone held as a copy (--secondary): {ratio_text(get(by, 'dns-cache-secondary', 'qps'), ub)}"
               + (f"; an API change reaches its answer in {get(ca, 'create_ms', 'p50')} ms p50, "
                  f"{get(ca, 'create_ms', 'p99')} ms p99" if get(ca, "create_ms", "p99") is not None else "") + ".")
    p.note(skipped_note(missing))
    y = p.top + 12
    hbars(p.svg, p.x + p.PAD, y, p.w - 2 * p.PAD, groups, "queries per second", fmt_int,
          tick_fmt=fmt_k, bar_h=30, group_gap=8, label_size=11, height=p.room(y))


def panel_rss(p, rss):
    if not rss:
        return p.empty("no RSS results")
    groups, missing = [], []
    for f in rss["forwarders"]:
        v = f.get("after_20k_names_mib")
        if v is None:
            missing.append(f["label"])
            continue
        notes = []
        if f.get("hwm_mib") is not None:
            notes.append(f"peak {f['hwm_mib']:.1f}")
        if f.get("start_mib") is not None:
            notes.append(f"at start {f['start_mib']:.1f}")
        groups.append({"label": f["label"], "ours": f["ours"],
                       "bars": [{"value": v, "fill": COLOURS.get(f["key"], PEER_DARK), "note": ", ".join(notes)}]})
    by = {f["key"]: f for f in rss["forwarders"]}
    ent = get(by, "dns-cache", "entries_after_20k_names")
    p.note("VmRSS after 20,000 distinct names (A, SRV, PTR) were sent to a freshly started forwarder"
           + (f"; dns-cache then held {ent:,.0f} entries" if isinstance(ent, (int, float)) else "")
           + ". dnsmasq and dns-cache ran with --cache-size=10000; Unbound with a 64m message cache. "
             "Peak is VmHWM.")
    p.note(skipped_note(missing))
    y = p.top + 16
    hbars(p.svg, p.x + p.PAD, y, p.w - 2 * p.PAD, groups, "RSS, MiB", fmt_1, bar_h=40, group_gap=14,
          height=p.room(y))


# ----------------------------------------------------------------------------- the page

W, PANEL_W, PANEL_H, GAP, MARGIN, HEADER = 1280, 614, 356, 16, 18, 78


def started(data, key):
    return get(data, "sources", key, "started") or "unknown"


def draw(data):
    rows = 3
    footer_lines_text = [
        "One run each (the median of its rounds where a phase has several), on a shared 2-core VM: the server under test "
        "pinned to one core, the load generator on the other. The ratios between bars of one panel matter more than the "
        "absolute values, which drift by 10–15% between runs on this VM (the latency tail by much more).",
        f"Runs: kube-dns vs NSD and Knot started {started(data, 'kube_dns')}; dns-cache cache hits and RSS "
        f"{started(data, 'cache')}"
        + (f"; misses and ndots re-run with newer dns-cache code {started(data, 'cache_misses')}" if get(data, "sources", "cache_misses") else "")
        + ". Method and full tables: docs/benchmarks.md; numbers: docs/benchmarks-data.json.",
    ]
    footer = [l for t in footer_lines_text for l in wrap(t, 11.5, W - 2 * MARGIN)]
    H = HEADER + rows * PANEL_H + (rows - 1) * GAP + 16 + 15 * len(footer) + 10
    svg = Svg(W, H)
    svg.text(MARGIN, 32, "kube-dns-rs benchmarks: kube-dns and dns-cache against established DNS servers", size=20,
             weight="bold")
    x = legend(svg, MARGIN, 58, [("ours (kube-dns, dns-cache)", OURS, False)], size=12)
    legend(svg, x, 58, [("peers (NSD, Knot, dnsmasq, Unbound)", PEER_DARK, False)], size=12)
    svg.text(W - MARGIN, 58, "each panel says whether higher or lower is better", size=12, anchor="end",
             fill=MUTED, italic=True)

    def box(i):
        col, row = i % 2, i // 2
        return MARGIN + col * (PANEL_W + GAP), HEADER + row * (PANEL_H + GAP), PANEL_W, PANEL_H

    kd, hits, mi, nd, rss = (data.get(k) for k in ("kube_dns", "hits", "misses", "ndots", "rss"))
    rate_kd = get(kd, "rate") or 10000
    mrate = get(mi, "rate") or 3000
    hrate = get(hits, "rate") or 10000
    specs = [
        ("a. kube-dns: saturated throughput", "queries per second on one core, higher is better", panel_kd_qps, kd),
        (f"b. kube-dns: latency at {rate_kd:,} qps", "p50, p99 and p99.9 in µs, lower is better", panel_kd_latency, kd),
        ("c. dns-cache: cache hits", (f"{get(hits, 'distinct'):,} distinct names, " if get(hits, "distinct") else "")
         + "all answered from the cache", panel_hits, hits),
        ("d. dns-cache: cache misses", f"CPU per forwarded query at {mrate:,} qps by --cache-size, lower is better",
         panel_misses, mi),
        ("e. dns-cache: the ndots:5 search-path mix", "saturated qps per profile, higher is better; a pod's "
         "search-path lookups" + (f", {get(nd, 'nxdomain_pct'):.0f}% NXDOMAIN" if get(nd, "nxdomain_pct") is not None else ""),
         panel_ndots, dict(nd, change_to_answer=data.get("change_to_answer")) if nd else nd),
        ("f. dns-cache: memory with a full cache", "RSS with 10,000 entries cached, MiB, lower is better",
         panel_rss, rss),
    ]
    for i, (title, sub, fn, part) in enumerate(specs):
        p = Panel(svg, *box(i), title, sub)
        fn(p, part)
        p.finish()
    y = HEADER + rows * PANEL_H + (rows - 1) * GAP + 22
    for line in footer:
        svg.text(MARGIN, y, line, size=11.5, fill=MUTED)
        y += 15
    return svg.render()


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description="Draw docs/benchmarks.svg from benchmark results.")
    ap.add_argument("--kube-dns", help="bench/bench.py results.json")
    ap.add_argument("--cache", help="bench/cache/cache_bench.py results.json (hits, RSS; misses and ndots "
                                    "unless --cache-misses is given)")
    ap.add_argument("--cache-misses", help="a later cache_bench.py results.json whose misses and ndots replace --cache's")
    ap.add_argument("--data", help="redraw from this extracted JSON instead of raw results")
    ap.add_argument("--update-ndots", help="with --data: a later cache_bench.py results.json whose ndots phase "
                                           "replaces the data's (the other panels stay)")
    ap.add_argument("--update-change", help="with --data: a bench/bench.py results.json whose change-to-answer "
                                            "through dns-cache --secondary is noted in the ndots panel")
    ap.add_argument("--out-data", help="write the extracted numbers here")
    ap.add_argument("--out-svg", required=True)
    args = ap.parse_args()
    if args.data:
        if args.kube_dns or args.cache or args.cache_misses:
            ap.error("--data excludes --kube-dns, --cache and --cache-misses")
        data = load(args.data)
        if args.update_ndots:
            raw = load(args.update_ndots)
            data["ndots"] = extract_ndots(raw, "cache_ndots")
            data["sources"]["cache_ndots"] = {"file": args.update_ndots, "started": get(raw, "started"),
                                              "phases": "ndots"}
        if args.update_change:
            raw = load(args.update_change)
            tc = get(raw, "through_cache") or {}
            data["change_to_answer"] = {
                "source": args.update_change, "started": get(raw, "started"),
                "iterations": tc.get("iterations"),
                "create_ms": {q: rnd(get(tc, "create_ms", q)) for q in ("p50", "p99")},
                "delete_ms": {q: rnd(get(tc, "delete_ms", q)) for q in ("p50", "p99")},
            }
        if args.update_ndots or args.update_change:
            text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
            with open(args.out_data or args.data, "w", encoding="utf-8") as f:
                f.write(text)
    else:
        if not (args.kube_dns and args.cache):
            ap.error("give --kube-dns and --cache, or --data")
        data = extract(args)
        text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
        if args.out_data:
            os.makedirs(os.path.dirname(os.path.abspath(args.out_data)), exist_ok=True)
            with open(args.out_data, "w", encoding="utf-8") as f:
                f.write(text)
        data = json.loads(text)  # draw exactly what a later --data redraw would see
    svg = draw(data)
    os.makedirs(os.path.dirname(os.path.abspath(args.out_svg)), exist_ok=True)
    with open(args.out_svg, "w", encoding="utf-8") as f:
        f.write(svg)
    root = ET.parse(args.out_svg).getroot()
    if not root.tag.endswith("svg"):
        sys.exit(f"{args.out_svg}: root element is {root.tag}, not svg")
    print(f"wrote {args.out_svg} ({len(svg.encode('utf-8')):,} bytes, {sum(1 for _ in root.iter())} elements, parses)"
          + (f" and {args.out_data}" if args.out_data and not args.data else ""))


if __name__ == "__main__":
    main()
