#!/usr/bin/env bash
# The kube-dns benchmark, start to finish: build, generate the synthetic cluster, then measure
# kube-dns against NSD and Knot on loopback (see bench.py for the steps and docs/benchmarks.md
# for the method). Prints the results table; keeps results.json/results.md in the work dir.
#
# Environment:
#   BENCH_SKIP_BUILD=1    use the existing target/release binaries
#   BENCH_KEEP=1          keep the work directory (default: only results are kept)
#   BENCH_OUT=DIR         where to leave results.json, results.md and bench.log
#                         (default: a new /tmp/kube-dns-bench-results.XXXXXX)
#   BENCH_SERVICES=N      cluster size (default 10000)
#   BENCH_REPS, BENCH_DURATION, BENCH_RATE, BENCH_PROG_ITERATIONS: see bench.py --help
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

for tool in dnsperf nsd knotd python3 taskset; do
    command -v "$tool" >/dev/null || {
        echo "run.sh: $tool missing; apt-get install -y --no-install-recommends dnsperf nsd knot bind9-dnsutils" >&2
        exit 1
    }
done
[ "$(nproc)" -ge 2 ] || { echo "run.sh: needs at least 2 CPUs (server on CPU 1, dnsperf on CPU 0)" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
[ -w "$CPUSET_ROOT" ] || { echo "run.sh: needs a writable cgroup-v1 cpuset hierarchy at $CPUSET_ROOT (run as root)" >&2; exit 1; }

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    echo "run.sh: cargo build --release --locked -p kube-dns -p kube-dns-test-support -p dns-cache" >&2
    (cd "$REPO" && cargo build --release --locked -p kube-dns -p kube-dns-test-support -p dns-cache) >&2
fi

WORK="$(mktemp -d /tmp/kube-dns-bench.XXXXXX)"
OUT="${BENCH_OUT:-$(mktemp -d /tmp/kube-dns-bench-results.XXXXXX)}"
mkdir -p "$OUT"
CGROUP="$CPUSET_ROOT/kube-dns-bench-$$"

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
    remove_cgroup "$CGROUP"
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

make_cpuset_cgroup "$CGROUP" 1

# Private copies, so a rebuild while the benchmark runs cannot swap the binaries under it.
mkdir -p "$WORK/bin"
cp "$REPO/target/release/kube-dns" "$REPO/target/release/fake-apiserver" "$REPO/target/release/dns-cache" "$WORK/bin/"
{
    echo "git: $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$REPO" && [ -n "$(git status --porcelain -- crates tests 2>/dev/null)" ] && echo ' (+ uncommitted changes in crates/ or tests/)')"
    echo "kube-dns sha256: $(sha256sum "$WORK/bin/kube-dns" | cut -c1-16)"
    echo "kernel: $(uname -r); cpus: $(nproc); model: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "dnsperf: $(dpkg-query -W -f '${Version}' dnsperf 2>/dev/null || echo '?'); nsd: $(nsd -v 2>&1 | head -1); knot: $(knotd -V 2>&1 | head -1)"
} | tee "$WORK/bench.log" >&2

python3 "$HERE/gen_cluster.py" --out "$WORK/data" --services "${BENCH_SERVICES:-10000}"

python3 "$HERE/bench.py" \
    --bin-dir "$WORK/bin" --data "$WORK/data" --work "$WORK" --cgroup "$CGROUP" --root-pid $$ \
    --reps "${BENCH_REPS:-3}" --duration "${BENCH_DURATION:-10}" --rate "${BENCH_RATE:-10000}" \
    --prog-iterations "${BENCH_PROG_ITERATIONS:-200}" &
BENCH_PID=$!
wait "$BENCH_PID"
