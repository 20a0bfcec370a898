#!/bin/sh
# `snakemake ARGS` that takes up a run killed before (kill -9, a crash, a power loss) where it stopped, as
# `make toy` runs it: the outputs of jobs that were running are rerun, never taken as done
# (--rerun-incomplete), and the locks the killed Snakemake left in .snakemake/ are removed first (--unlock),
# which would otherwise stop every later run. Removing them is safe from other runs of this script: only
# one at a time gets past flock (whose lock dies with its process); a second stops at once (exit 75).
# A Snakemake run started by hand in the same folder at the same time is not protected.
set -eu
mkdir -p .snakemake
status=0
flock --nonblock --conflict-exit-code 75 .snakemake/resume.lock \
    sh -c 'snakemake --unlock "$@" && snakemake --rerun-incomplete "$@"' snakemake_resume "$@" || status=$?
if [ "$status" -eq 75 ]; then
    echo "snakemake_resume.sh: another run holds $(pwd)/.snakemake/resume.lock; wait for it to end" >&2
fi
exit "$status"
