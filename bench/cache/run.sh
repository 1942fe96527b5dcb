#!/usr/bin/env bash
# The dns-cache benchmark, start to finish: build, generate zones and query files, then measure
# dns-cache against dnsmasq 2.90 and Unbound as caching forwarders in front of one Knot, on
# loopback (see cache_bench.py for the steps and docs/benchmarks.md, section "dns-cache", for
# the method). Prints the results tables; keeps results.json/results.md/bench.log.
#
# Environment:
#   BENCH_SKIP_BUILD=1    use the existing target/release/dns-cache
#   BENCH_KEEP=1          keep the work directory (default: only results are kept)
#   BENCH_OUT=DIR         where to leave results.json, results.md and bench.log
#                         (default: a new /tmp/dns-cache-bench-results.XXXXXX)
#   BENCH_HIT_REPS=N      rounds of the cache-hit runs (default 3)
#   BENCH_NDOTS_REPS=N    rounds of the ndots runs (default 1)
#   BENCH_DURATION=S      seconds per hit/ndots run (default 10)
#   BENCH_MISS_SAT_DURATION=S, BENCH_MISS_DURATION=S
#                         seconds per saturated / fixed-rate miss run (default 5 / 8)
#   BENCH_RATE=Q          fixed rate of the hit runs (default 10000)
#   BENCH_MISS_RATE=Q     fixed rate of the miss runs (default 3000)
#   BENCH_INTERNET_RATE=Q, BENCH_INTERNET_DURATION=S, BENCH_INTERNET_REPS=N
#                         the internet-like upstream phase (default 300 qps, 30 s, 1 round)
#   BENCH_PHASES=LIST     subset of check,hits,misses,ndots,rss,internet (default: all)
#   BENCH_NDOTS_ONLY=LIST the ndots profiles to run, by label (default: all)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

for tool in dnsperf knotd unbound unbound-control python3 taskset; do
    command -v "$tool" >/dev/null || {
        echo "run.sh: $tool missing; apt-get install -y --no-install-recommends dnsperf dnsmasq-base unbound knot" >&2
        exit 1
    }
done
[ -x /usr/sbin/dnsmasq ] || {
    echo "run.sh: /usr/sbin/dnsmasq missing; apt-get install -y --no-install-recommends dnsmasq-base" >&2
    exit 1
}
[ "$(nproc)" -ge 2 ] || { echo "run.sh: needs at least 2 CPUs (forwarder on CPU 1, dnsperf and Knot on CPU 0)" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. "$HERE/../lib.sh"
[ -w "$CPUSET_ROOT" ] || { echo "run.sh: needs a writable cgroup-v1 cpuset hierarchy at $CPUSET_ROOT (run as root)" >&2; exit 1; }

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    echo "run.sh: cargo build --release --locked -p dns-cache" >&2
    (cd "$REPO" && cargo build --release --locked -p dns-cache) >&2
fi

WORK="$(mktemp -d /tmp/dns-cache-bench.XXXXXX)"
OUT="${BENCH_OUT:-$(mktemp -d /tmp/dns-cache-bench-results.XXXXXX)}"
mkdir -p "$OUT"
CG_SRV="$CPUSET_ROOT/dns-cache-bench-$$-srv"
CG_UP="$CPUSET_ROOT/dns-cache-bench-$$-up"


cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # The driver first: it stops what it started (and dnsperf) on SIGTERM.
    if [ -n "${BENCH_PID:-}" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$BENCH_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$BENCH_PID" 2>/dev/null || true
    fi
    # Our servers: each was started in its own process group, listed in $WORK/pids.
    if [ -f "$WORK/pids" ]; then
        while read -r pid; do
            kill -TERM -- "-$pid" 2>/dev/null || true
        done <"$WORK/pids"
    fi
    remove_cgroup "$CG_SRV"
    remove_cgroup "$CG_UP"
    for f in results.json results.md bench.log; do
        [ -f "$WORK/$f" ] && cp "$WORK/$f" "$OUT/" || true
    done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "run.sh: work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    echo "run.sh: results in $OUT" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

make_cpuset_cgroup "$CG_SRV" 1
make_cpuset_cgroup "$CG_UP" 0

# A private copy, so a rebuild while the benchmark runs cannot swap the binary under it.
mkdir -p "$WORK/bin"
cp "$REPO/target/release/dns-cache" "$WORK/bin/"
{
    echo "git: $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$REPO" && [ -n "$(git status --porcelain -- crates 2>/dev/null)" ] && echo ' (+ uncommitted changes in crates/)')"
    echo "dns-cache sha256: $(sha256sum "$WORK/bin/dns-cache" | cut -c1-16)"
    echo "kernel: $(uname -r); cpus: $(nproc); model: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "dnsperf: $(dpkg-query -W -f '${Version}' dnsperf 2>/dev/null || echo '?'); $(/usr/sbin/dnsmasq --version | head -1 | cut -c1-22); unbound: $(unbound -V 2>&1 | head -1); knot: $(knotd -V 2>&1 | head -1)"
} | tee "$WORK/bench.log" >&2

python3 "$HERE/cache_bench.py" \
    --bin-dir "$WORK/bin" --work "$WORK" --cgroup-srv "$CG_SRV" --cgroup-up "$CG_UP" --root-pid $$ \
    --hit-reps "${BENCH_HIT_REPS:-3}" --ndots-reps "${BENCH_NDOTS_REPS:-1}" --duration "${BENCH_DURATION:-10}" \
    --miss-sat-duration "${BENCH_MISS_SAT_DURATION:-5}" --miss-duration "${BENCH_MISS_DURATION:-8}" \
    --rate "${BENCH_RATE:-10000}" --miss-rate "${BENCH_MISS_RATE:-3000}" \
    --internet-rate "${BENCH_INTERNET_RATE:-300}" --internet-duration "${BENCH_INTERNET_DURATION:-30}" \
    --internet-reps "${BENCH_INTERNET_REPS:-1}" \
    --phases "${BENCH_PHASES:-check,hits,misses,ndots,rss,internet}" &
BENCH_PID=$!
wait "$BENCH_PID"
