#!/usr/bin/env bash
# Stop the SLURM that scripts/slurm/start.sh started: cancel the jobs left in it, then stop only
# the daemons whose PIDs start.sh recorded (never by name).
set -euo pipefail

RUN_DIR=${CLIPVIS_SLURM_RUN_DIR:-/run/clipvis-slurm}
STOP_TIMEOUT_S=10

if [[ -s $RUN_DIR/slurmctld.pid ]] && command -v squeue >/dev/null; then
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [[ -n $jobs ]]; then
        # shellcheck disable=SC2086  # one argument per job id
        scancel $jobs || true
        for _ in $(seq $(( STOP_TIMEOUT_S * 2 ))); do
            [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
fi

# SIGTERM to all at once (each takes ~2 s to exit), then SIGKILL to any still running.
pids=()
for name in slurmd slurmctld munged; do
    pid_file=$RUN_DIR/$name.pid
    [[ -s $pid_file ]] || continue
    pid=$(cat "$pid_file")
    # Only if that PID is still the program we started (PIDs get reused).
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
        kill "$pid"
        pids+=("$pid")
    fi
    rm -f "$pid_file"
done
for _ in $(seq $(( STOP_TIMEOUT_S * 10 ))); do
    running=()
    for pid in "${pids[@]}"; do
        [[ -e /proc/$pid ]] && running+=("$pid")
    done
    [[ ${#running[@]} == 0 ]] && exit 0
    sleep 0.1
done
echo "stop.sh: ${running[*]} ignored SIGTERM for ${STOP_TIMEOUT_S} s; killing them" >&2
kill -KILL "${running[@]}"
