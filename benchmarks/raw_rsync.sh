#!/usr/bin/env bash
# Raw baseline, transfer by rsync. Run on the controller:
#   raw_rsync.sh SSH_CONFIG SRC DST DST_ADDR PID SRC_DIR DST_DIR CRIU
# Before the freeze: ssh masters to both hosts and from SRC to DST, empty image
# dirs. Frozen: criu dump (plain: criu kills the task once the dump is
# complete), rsync SRC_DIR -> DST:DST_DIR, criu restore -d on DST.
# Prints "stage NAME START END RC" lines (epoch seconds).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benchmarks/raw_common.sh
. "$HERE/raw_common.sh"
SSH_CONFIG=$1 SRC=$2 DST=$3 DST_ADDR=$4 PID=$5 SRC_DIR=$6 DST_DIR=$7 CRIU=$8
safe "$SSH_CONFIG" "$SRC" "$DST" "$DST_ADDR" "$PID" "$SRC_DIR" "$DST_DIR" "$CRIU"
trap cleanup_ctl EXIT
HOPT="-o ControlPath=/tmp/.ckb-raw-hop-%C"

# ---- before the freeze
open_master "$SRC"
open_master "$DST"
on "$SRC" "rm -rf $SRC_DIR && mkdir -p -m 0700 $SRC_DIR"
on "$DST" "rm -rf $DST_DIR && mkdir -p -m 0700 $DST_DIR"
on "$SRC" "ssh -n -o ControlMaster=auto -o ControlPersist=120 $HOPT $DST_ADDR true"

# ---- frozen
stage dump "$SRC" "$CRIU dump -t $PID -D $SRC_DIR -o dump.log -v4$KEEP_OPT"
stage transfer "$SRC" "rsync --archive --rsh='ssh $HOPT' $SRC_DIR/ $DST_ADDR:$DST_DIR/"
stage restore "$DST" "$CRIU restore -d -D $DST_DIR -o restore.log -v4"
if [ -n "$KEEP_OPT" ]; then
  on "$SRC" "kill -KILL $PID" || true
fi

# ---- after the resume
on "$SRC" "ssh $HOPT -O exit $DST_ADDR >/dev/null 2>&1; rm -rf $SRC_DIR" || true
on "$DST" "rm -rf $DST_DIR" || true
