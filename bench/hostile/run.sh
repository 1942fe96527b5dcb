#!/usr/bin/env bash
# bench/hostile: issue 12's attacks at full size against dns-cache, kube-dns, the sidecar and the
# nanny (release builds) and, for the DNS rows, a real dnsmasq 2.90 with the legacy manifest's
# flags, each against a fresh server, in one run. Prints a Markdown table (peak memory, the
# well-behaved client's answers during the attack, what the attacker got) and keeps it with a
# JSON copy and the log. Not part of the test suite; the results go in docs/security.md.
#
# Environment:
#   BENCH_SKIP_BUILD=1   use the existing target/release binaries
#   BENCH_OUT=DIR        where to leave results.md, results.json and bench.log
#                        (default: a new /tmp/hostile-bench-results.XXXXXX)
#   BENCH_ONLY=a,b       only the attacks or servers whose label contains one of these words
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export PATH="$PATH:/usr/sbin:/sbin"

command -v dnsmasq >/dev/null || {
    echo "run.sh: dnsmasq missing; apt-get install -y --no-install-recommends dnsmasq-base" >&2
    exit 1
}
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    echo "run.sh: cargo build --release --locked (the servers and the benchmark)" >&2
    (cd "$REPO" && cargo build --release --locked -p kube-dns -p dns-cache -p sidecar \
        -p dnsmasq-nanny -p hostile-bench) >&2
fi
# 4,000 attacking connections plus the servers' own sockets: as many as the hard limit allows.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 9000 ] || {
    echo "run.sh: needs at least 9000 open files (ulimit -Hn is $(ulimit -Hn))" >&2
    exit 1
}

OUT="${BENCH_OUT:-$(mktemp -d /tmp/hostile-bench-results.XXXXXX)}"
mkdir -p "$OUT"
{
    echo "git: $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "kernel: $(uname -r); cpus: $(nproc); $(dnsmasq --version | head -1 | cut -c1-22)"
} | tee "$OUT/bench.log" >&2
"$REPO/target/release/hostile-bench" \
    --bin-dir "$REPO/target/release" \
    --cluster "$REPO/tests/fixtures/cluster.yaml" \
    --json-out "$OUT/results.json" \
    --only "${BENCH_ONLY:-}" \
    2>>"$OUT/bench.log" | tee "$OUT/results.md"
echo "run.sh: results in $OUT" >&2
