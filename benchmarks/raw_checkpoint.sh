#!/usr/bin/env bash
# Raw baseline of a host's checkpoint: criu dump --leave-running of each PID,
# one after another (as the checkpoint role does). Run on the controller:
#   raw_checkpoint.sh SSH_CONFIG HOST CRIU IMAGES_ROOT PID...
# Prints "dump PID START END RC" lines (the host's clock = the machine's).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benchmarks/raw_common.sh
. "$HERE/raw_common.sh"
SSH_CONFIG=$1 HOST=$2 CRIU=$3 ROOT=$4
shift 4
safe "$SSH_CONFIG" "$HOST" "$CRIU" "$ROOT" "$@"
trap cleanup_ctl EXIT
open_master "$HOST"
# One remote loop, so the per-dump time is criu's alone (no ssh per process).
on "$HOST" "for p in $*; do d=$ROOT/pid-\$p; mkdir -p -m 0700 \$d; t0=\$(date +%s.%N);
  rc=0; $CRIU dump -t \$p -D \$d -o dump.log -v4 --leave-running || rc=\$?;
  echo \"dump \$p \$t0 \$(date +%s.%N) \$rc\"; done"
