#!/usr/bin/env bash
# Start a single-node SLURM on localhost (munged, slurmctld, slurmd) for tests and CI. Run as root.
# Idempotent: installs the Debian packages only if missing, starts only the daemons that are not
# running yet, and records every PID it starts in $RUN_DIR so that stop.sh stops exactly those.
set -euo pipefail

RUN_DIR=${CLIPVIS_SLURM_RUN_DIR:-/run/clipvis-slurm}
CONF=/etc/slurm/slurm.conf
MARKER="# written by clipvis scripts/slurm/start.sh"
READY_TIMEOUT_S=30

fail() { echo "start.sh: $*" >&2; exit 1; }

# A PID file names a live process of the expected program.
alive() { [[ -s $1 ]] && [[ $(cat "/proc/$(cat "$1")/comm" 2>/dev/null) == "$2" ]]; }

[[ $(id -u) == 0 ]] || fail "must run as root (it installs packages and starts system daemons)"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q slurm-wlm munge; then
        apt-get update -q
        apt-get install -y -q slurm-wlm munge
    fi
fi

mkdir -p "$RUN_DIR" /etc/munge /run/munge /var/lib/munge /var/log/munge \
         /var/spool/slurm/ctld /var/spool/slurm/d /var/log/slurm
chown munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge

# ---------------------------------------------------------------- munge
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

if ! alive "$RUN_DIR/munged.pid" munged; then
    if { munge -n </dev/null | unmunge; } >/dev/null 2>&1; then
        echo "start.sh: a munged not started by this script is already answering; using it"
    else
        rm -f /run/munge/munged.pid
        runuser -u munge -- munged --pid-file=/run/munge/munged.pid
        cp /run/munge/munged.pid "$RUN_DIR/munged.pid"
    fi
fi

# ---------------------------------------------------------------- slurm.conf
# Written only when slurmctld starts, so running daemons never see a changed file.
write_conf() {
    if [[ -e $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
        fail "$CONF exists and was not written by this script; not overwriting it"
    fi
    local available_mb real_memory_mb
    available_mb=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
    real_memory_mb=$(( available_mb > 2048 ? available_mb - 1024 : 1024 ))
    mkdir -p /etc/slurm
    cat >"$CONF.tmp" <<EOF
$MARKER
ClusterName=clipvis
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
# A requeued job may start again cred_expire seconds after the requeue (default 120) and is picked
# up by the next main scheduling pass (default every 60 s): both short, so submitit's preemption
# requeue resumes within seconds.
AuthInfo=cred_expire=10
SchedulerParameters=sched_interval=2
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobRequeue=1
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
StateSaveLocation=/var/spool/slurm/ctld
SlurmdSpoolDir=/var/spool/slurm/d
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$real_memory_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

# ---------------------------------------------------------------- daemons
# Both daemonize and write their own PID files (SlurmctldPidFile, SlurmdPidFile above).
if ! alive "$RUN_DIR/slurmctld.pid" slurmctld; then
    write_conf
    slurmctld -c   # -c: start clean, without jobs left from an earlier run
fi
if ! alive "$RUN_DIR/slurmd.pid" slurmd; then
    slurmd -N localhost
fi

for _ in $(seq $(( READY_TIMEOUT_S * 2 ))); do
    # Ready once the node answers (a trailing '*' would mean "not responding").
    if [[ $(sinfo -h -N -o %t 2>/dev/null) =~ ^(idle|mix|alloc)$ ]]; then
        echo "start.sh: SLURM is up: $(sinfo -h -N -o '%P %N %c CPUs %m MB')"
        exit 0
    fi
    sleep 0.5
done
sinfo -N -l >&2 || true
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
fail "SLURM did not become ready within ${READY_TIMEOUT_S} s"
