# Shell helpers shared by bench/run.sh and bench/cache/run.sh (sourced, not run).

CPUSET_ROOT=/sys/fs/cgroup/cpuset

# make_cpuset_cgroup DIR CPUS: a cgroup-v1 cpuset holding CPUS (e.g. 1) on every memory node.
make_cpuset_cgroup() {
    local cg=$1 cpus=$2
    mkdir "$cg"
    cat "$CPUSET_ROOT/cpuset.mems" >"$cg/cpuset.mems"
    echo "$cpus" >"$cg/cpuset.cpus"
}

# remove_cgroup DIR: waits up to 3 s for its processes to leave, kills the rest, removes it.
remove_cgroup() {
    local cg=$1
    [ -d "$cg" ] || return 0
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        [ -s "$cg/cgroup.procs" ] || break
        sleep 0.3
    done
    while read -r pid; do
        kill -KILL "$pid" 2>/dev/null || true
    done <"$cg/cgroup.procs"
    sleep 0.2
    rmdir "$cg" 2>/dev/null || echo "run.sh: could not remove $cg" >&2
}
