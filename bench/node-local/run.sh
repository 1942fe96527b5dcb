#!/usr/bin/env bash
# The node-local benchmark, run by hand as root (see node_local_bench.py for what it measures):
#   bench/node-local/run.sh                  # builds release binaries, then runs
#   BENCH_SKIP_BUILD=1 BENCH_RATE=5000 BENCH_SECONDS=10 BENCH_REPS=3 bench/node-local/run.sh
# Needs dnsperf, iptables and iproute2; makes and deletes its own network namespaces.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${BENCH_WORK:-/tmp/kdrs-node-local-bench}"
[ "$(id -u)" -eq 0 ] || { echo "bench/node-local/run.sh: needs root (network namespaces, iptables)" >&2; exit 1; }
for tool in dnsperf iptables ip conntrack; do
    command -v "$tool" >/dev/null || { echo "bench/node-local/run.sh: $tool missing (Debian: dnsperf, iptables, iproute2, conntrack)" >&2; exit 1; }
done
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    (cd "$REPO" && cargo build --release --locked -p kube-dns -p dns-cache -p kube-dns-test-support --bin kube-dns --bin dns-cache --bin fake-apiserver)
fi
rm -rf "$WORK"
mkdir -p "$WORK/bin"
cp "$REPO/target/release/kube-dns" "$REPO/target/release/dns-cache" "$REPO/target/release/fake-apiserver" "$WORK/bin/"
exec python3 "$REPO/bench/node-local/node_local_bench.py" --bin-dir "$WORK/bin" --work "$WORK" \
    --cluster "$REPO/tests/fixtures/cluster.yaml" --rate "${BENCH_RATE:-5000}" \
    --seconds "${BENCH_SECONDS:-10}" --reps "${BENCH_REPS:-3}"
