#!/usr/bin/env bash
# A Ray cluster of two nodes on this machine's loopback, for sweeps with hydra.launcher.ray.init.address and
# for the tests marked `ray_cluster`:  scripts/ray-cluster.sh up | down | status | address
#   (make ray-cluster, make ray-cluster-down)
#
# `up` starts a head node on 127.0.0.1:$RAY_CLUSTER_PORT (default 6390) and a second node joined to it, each
# with $RAY_CLUSTER_CPUS CPUs (default 1), their session files in $RAY_CLUSTER_STATE (default
# /var/tmp/mnist-lab-ray). Both run with RAY_AUTH_MODE=disabled: they listen on loopback only; a cluster across
# machines keeps Ray's token authentication and gives every node the head's token (see docs/scale-out.md).
# `down` stops the two nodes `up` started (by their process ids), and nothing else of Ray's on this machine.
set -euo pipefail

STATE=${RAY_CLUSTER_STATE:-/var/tmp/mnist-lab-ray}
PORT=${RAY_CLUSTER_PORT:-6390}
CPUS=${RAY_CLUSTER_CPUS:-1}
RAY=${RAY:-$(dirname "$0")/../.venv/bin/ray}
export RAY_AUTH_MODE=disabled

say() { echo "ray-cluster: $*"; }
die() { echo "ray-cluster: error: $*" >&2; exit 1; }

address() { echo "127.0.0.1:$PORT"; }
ray_processes() { pgrep -f "ray" | sort || true; }  # Ray's daemons, agents and workers (ray::... titles included)
nodes() {  # alive nodes of the cluster at the address, or nothing when none answers
    timeout 60 "$(dirname "$RAY")/python" -c "
import ray, sys
ray.init(address='$(address)', logging_level='ERROR', log_to_driver=False)
print(sum(n['Alive'] for n in ray.nodes()))" 2>/dev/null || true
}

up() {
    [ -x "$RAY" ] || die "no Ray at $RAY: install the ray extra (make install)"
    if [ "$(nodes)" = 2 ]; then say "the cluster already answers at $(address): 2 nodes"; return; fi
    mkdir -p "$STATE"
    local before
    before=$(ray_processes)
    common=(--node-ip-address=127.0.0.1 --num-cpus="$CPUS" --num-gpus=0 --disable-usage-stats)
    "$RAY" start --head --port="$PORT" --temp-dir="$STATE" --include-dashboard=false "${common[@]}" \
        >"$STATE/head.log" 2>&1 || die "the head node did not start: see $STATE/head.log"
    "$RAY" start --address="$(address)" "${common[@]}" >"$STATE/node.log" 2>&1 \
        || die "the second node did not join: see $STATE/node.log"
    for _ in $(seq 100); do
        if [ "$(nodes)" = 2 ]; then
            comm -13 <(echo "$before") <(ray_processes) >"$STATE/pids"  # the processes `down` stops
            say "up at $(address): 2 nodes of $CPUS CPU(s)"
            return
        fi
        sleep 0.3
    done
    die "the nodes started but the cluster does not show two: see $STATE/head.log and $STATE/node.log"
}

descendants() {  # the processes below the given ones (a raylet's workers, started after `up` returned)
    local kids
    for pid in "$@"; do
        kids=$(pgrep -P "$pid" || true)
        if [ -n "$kids" ]; then echo "$kids"; descendants $kids; fi
    done
}

ours() {  # what `up` started, and what those started since, still running
    local started
    started=$(cat "$STATE/pids")
    { echo "$started"; descendants $started; } | sort -u | comm -12 - <(ray_processes)
}

down() {
    # `ray stop` would stop every Ray process of this machine: only those `up` started are ours to stop.
    [ -s "$STATE/pids" ] || { say "no cluster of this script was running"; return; }
    local pids
    pids=$(ours)
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
    for _ in $(seq 50); do
        [ -z "$(comm -12 <(echo "$pids") <(ray_processes))" ] && break
        sleep 0.2
    done
    pids=$(comm -12 <(echo "$pids") <(ray_processes))
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    rm -f "$STATE/pids"
    say "stopped the cluster at $(address)"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) n=$(nodes); [ -n "$n" ] && say "$(address): $n node(s)" || { say "no cluster answers at $(address)"; exit 1; } ;;
    address) address ;;
    *) echo "usage: scripts/ray-cluster.sh up | down | status | address" >&2; exit 2 ;;
esac
