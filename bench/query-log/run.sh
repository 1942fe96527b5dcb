#!/usr/bin/env bash
# The cost of query logging: CPU time per query of dns-cache and kube-dns with logging off and
# on (each format, no rate limit, and the default limit), at one fixed query rate, measured from
# /proc/<pid>/stat (every thread, the log writer included). dns-cache answers from its cache
# (1,000 names its upstream, a dnsmasq, gives a 300 s TTL); kube-dns answers the cluster zone
# (half NOERROR, half NXDOMAIN). The server runs on CPU 1, dnsperf and the upstream or the fake
# API server on CPU 0. Log lines go to a file, as the container runtime's log pipe would take
# them. Run by hand; results are in docs/benchmarks.md.
#
# Environment:
#   BENCH_SKIP_BUILD=1   use the existing target/release binaries
#   BENCH_RATE=Q         queries per second (default 20000)
#   BENCH_DURATION=S     seconds per run (default 10)
#   BENCH_REPS=N         runs per setting, interleaved (default 3)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
RATE="${BENCH_RATE:-20000}"
DURATION="${BENCH_DURATION:-10}"
REPS="${BENCH_REPS:-3}"

for tool in dnsperf dnsmasq taskset python3; do
    command -v "$tool" >/dev/null || {
        echo "run.sh: $tool missing; apt-get install -y --no-install-recommends dnsperf dnsmasq-base util-linux" >&2
        exit 1
    }
done
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    (cd "$REPO" && cargo build --release --locked -p dns-cache -p kube-dns -p kube-dns-test-support) >&2
fi
BIN="$REPO/target/release"
WORK="$(mktemp -d /tmp/query-log-bench.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_udp() { # port
    for _ in $(seq 1 100); do
        dig +time=1 +tries=1 @127.0.0.1 -p "$1" kubernetes.default.svc.cluster.local >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "run.sh: nothing answers on port $1" >&2
    exit 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# The upstream of dns-cache: dnsmasq answering every bench name itself (CPU 0).
UP=$(free_port)
taskset -c 0 dnsmasq -k -p "$UP" --listen-address=127.0.0.1 --bind-interfaces --no-resolv \
    --no-hosts --user=root --pid-file= --log-facility=/dev/null \
    --address=/bench.example/10.0.0.1 --local-ttl=300 &
PIDS+=($!)
for i in $(seq 1 1000); do echo "n$i.bench.example A"; done >"$WORK/cache-queries"

# kube-dns's API: the fake API server with the test cluster (CPU 0).
API_LOG="$WORK/api.log"
taskset -c 0 "$BIN/fake-apiserver" --cluster "$REPO/tests/fixtures/cluster.yaml" \
    --kubeconfig-out "$WORK/kubeconfig" 2>"$API_LOG" &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$WORK/kubeconfig" ] && break; sleep 0.1; done
{
    for i in $(seq 1 500); do echo "kubernetes.default.svc.cluster.local A"; done
    for i in $(seq 1 500); do echo "n$i.default.svc.cluster.local A"; done
} >"$WORK/zone-queries"

# run SERVER LABEL ARGS...: starts the server on CPU 1, measures one run, prints a result line.
run() {
    local server=$1 label=$2
    shift 2
    local port
    port=$(free_port)
    local log="$WORK/$server-$label.log"
    case $server in
    dns-cache)
        taskset -c 1 "$BIN/dns-cache" -k -p "$port" -a 127.0.0.1 --no-hosts --no-resolv \
            --workers=1 --cache-size=10000 "--server=127.0.0.1#$UP" "$@" 2>"$log" &
        ;;
    kube-dns)
        taskset -c 1 "$BIN/kube-dns" "--kubecfg-file=$WORK/kubeconfig" --dns-bind-address=127.0.0.1 \
            "--dns-port=$port" --healthz-bind-address=127.0.0.1 --healthz-port=0 --dns-workers=1 \
            --nameservers=127.0.0.1:9 "$@" 2>"$log" &
        ;;
    esac
    local pid=$!
    wait_udp "$port"
    local queries="$WORK/cache-queries"
    [ "$server" = kube-dns ] && queries="$WORK/zone-queries"
    # Warm the cache (and the kernel's buffers) first.
    taskset -c 0 dnsperf -s 127.0.0.1 -p "$port" -d "$queries" -l 2 -Q "$RATE" -c 4 >/dev/null 2>&1
    local before after out
    before=$(cpu_ticks "$pid")
    out=$(taskset -c 0 dnsperf -s 127.0.0.1 -p "$port" -d "$queries" -l "$DURATION" -Q "$RATE" -c 4 2>&1)
    after=$(cpu_ticks "$pid")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    local completed lost
    completed=$(echo "$out" | awk '/Queries completed:/ {print $3}')
    lost=$(echo "$out" | awk '/Queries lost:/ {print $3}')
    local ticks=$((after - before)) hz
    hz=$(getconf CLK_TCK)
    python3 -c "
ticks, hz, n = $ticks, $hz, $completed
print(f'$server\t$label\t{n}\t$lost\t{ticks / hz * 1e6 / n:.2f}\t$(stat -c %s "$log")')"
}

printf 'server\tsetting\tanswered\tlost\tcpu_us_per_query\tlog_bytes\n'
for rep in $(seq 1 "$REPS"); do
    run dns-cache off
    run dns-cache dnsmasq-lines --log-queries --log-rate=0
    run dns-cache json --log-queries --log-format=json --log-rate=0
    run dns-cache json-default-limit --log-queries --log-format=json
    run kube-dns off
    run kube-dns json --log-queries --log-rate=0
    run kube-dns json-default-limit --log-queries
    echo "run.sh: round $rep of $REPS done" >&2
done
