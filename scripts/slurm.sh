#!/usr/bin/env bash
# A SLURM cluster of two nodes on this machine, for trying hydra/launcher=slurm and slurm_ddp (nodes=2 included)
# and for the tests marked `slurm`:  scripts/slurm.sh up | down | status   (make slurm, make slurm-down)
#
# `up` installs Debian's slurmctld, slurmd, slurm-client and munge where missing, writes /etc/slurm/slurm.conf
# (nodes node0 and node1, each a slurmd of its own on this host with its own port, on 127.0.0.1, each offered
# this machine's CPUs and 90% of its memory; one default partition, no accounting, no GPUs), and starts munged,
# slurmctld and the two slurmd (`slurmd -N node0`). It needs root, and does nothing when the cluster already
# answers. The daemons'
# state, logs and pids live in $SLURM_STATE (default /var/tmp/mnist-lab-slurm), outside the repository.
# `down` stops the daemons that `up` started; the packages and the config stay.
set -euo pipefail

STATE=${SLURM_STATE:-/var/tmp/mnist-lab-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by mnist-lab scripts/slurm.sh"

say() { echo "slurm: $*"; }
die() { echo "slurm: error: $*" >&2; exit 1; }

# Both nodes up (idle, or running jobs).
answers() { [ "$(timeout 10 sinfo --noheader --Node --states=idle,mixed,allocated -o %N 2>/dev/null | sort -u | wc -l)" -ge 2 ]; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null && return
    say "installing slurmctld slurmd slurm-client munge (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >"$STATE/apt.log" 2>&1 \
        || { apt-get update -q >>"$STATE/apt.log" 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge \
                >>"$STATE/apt.log" 2>&1; } \
        || die "apt-get could not install the SLURM packages: see $STATE/apt.log"
}

start_munge() {
    [ -s /etc/munge/munge.key ] || { mungekey -c -k /etc/munge/munge.key && chown munge:munge /etc/munge/munge.key; }
    mkdir -p /run/munge && chown munge:munge /run/munge
    if ! munge -n >/dev/null 2>&1; then
        runuser -u munge -- munged --force
        touch "$STATE/munged.ours"
        for _ in $(seq 50); do munge -n >/dev/null 2>&1 && return; sleep 0.1; done
        die "munged did not start (see /var/log/munge/munged.log)"
    fi
}

write_conf() {
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script: leave it, or move it away and run again"
    fi
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    mkdir -p "$STATE/spool/ctld" "$STATE/spool/node0" "$STATE/spool/node1"
    cat >"$CONF" <<EOF
$MARK: two nodes on this host, state in $STATE
ClusterName=mnist-lab
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmUser=root
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd-%n.pid
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd-%n.log
ReturnToService=2
KillWait=10
MinJobAge=300
# Two nodes on one host (each slurmd started with -N): each is offered the host's CPUs and memory, which
# config_overrides lets SLURM believe instead of what the slurmd finds.
SlurmdParameters=config_overrides
NodeName=node0 NodeHostname=$host NodeAddr=127.0.0.1 Port=6818 CPUs=$cpus RealMemory=$mem State=UNKNOWN
NodeName=node1 NodeHostname=$host NodeAddr=127.0.0.1 Port=6819 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=node0,node1 Default=YES MaxTime=INFINITE State=UP
EOF
}

up() {
    if command -v sinfo >/dev/null && answers; then say "the cluster already answers"; sinfo; return; fi
    [ "$(id -u)" = 0 ] || die "starting the daemons needs root (this is user $(id -un))"
    mkdir -p "$STATE"
    install_packages
    start_munge
    write_conf
    pkill -x slurmctld 2>/dev/null || true
    pkill -x slurmd 2>/dev/null || true
    slurmctld -i >>"$STATE/slurmctld.out" 2>&1   # -i: ignore state a previous cluster left behind
    slurmd -N node0 >>"$STATE/slurmd.out" 2>&1
    slurmd -N node1 >>"$STATE/slurmd.out" 2>&1
    for _ in $(seq 100); do
        if answers; then say "up: $(sinfo --noheader -o '%P %D node(s) %c CPUs %m MB %T')"; return; fi
        sleep 0.2
    done
    die "the daemons started but sinfo shows no usable node: see $STATE/slurmctld.log and $STATE/slurmd-node*.log"
}

down() {
    local stopped=0
    for pidfile in "$STATE"/slurmd-*.pid "$STATE/slurmd.pid" "$STATE/slurmctld.pid"; do
        if [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; then
            stopped=1
            rm -f "$pidfile"
        fi
    done
    if [ -e "$STATE/munged.ours" ] && [ -s /run/munge/munged.pid ]; then
        kill "$(cat /run/munge/munged.pid)" 2>/dev/null && stopped=1
        rm -f "$STATE/munged.ours"
    fi
    [ "$stopped" = 1 ] && say "stopped the daemons it had started" || say "no daemon of this script was running"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) answers && sinfo || { say "no cluster of two nodes answers"; exit 1; } ;;
    *) echo "usage: scripts/slurm.sh up | down | status" >&2; exit 2 ;;
esac
