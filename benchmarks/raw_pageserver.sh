#!/usr/bin/env bash
# Raw baseline, transfer by criu page server. Run on the controller:
#   raw_pageserver.sh SSH_CONFIG SRC DST DST_ADDR PID SRC_DIR DST_DIR CRIU PORT
# Before the freeze: ssh masters, empty image dirs, `criu page-server -d` on
# DST. Frozen: criu dump --page-server (pages stream to DST; plain dump: criu
# kills the task once the dump is complete), rsync of the remaining images
# (everything but the pages), criu restore -d on DST.
# Prints "stage NAME START END RC" lines (epoch seconds).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benchmarks/raw_common.sh
. "$HERE/raw_common.sh"
SSH_CONFIG=$1 SRC=$2 DST=$3 DST_ADDR=$4 PID=$5 SRC_DIR=$6 DST_DIR=$7 CRIU=$8 PORT=$9
safe "$SSH_CONFIG" "$SRC" "$DST" "$DST_ADDR" "$PID" "$SRC_DIR" "$DST_DIR" "$CRIU" "$PORT"
trap cleanup_ctl EXIT
HOPT="-o ControlPath=/tmp/.ckb-raw-hop-%C"

# ---- before the freeze
open_master "$SRC"
open_master "$DST"
on "$SRC" "rm -rf $SRC_DIR && mkdir -p -m 0700 $SRC_DIR"
on "$DST" "rm -rf $DST_DIR && mkdir -p -m 0700 $DST_DIR"
on "$SRC" "ssh -n -o ControlMaster=auto -o ControlPersist=120 $HOPT $DST_ADDR true"
on "$DST" "$CRIU page-server -D $DST_DIR --address $DST_ADDR --port $PORT -d -o page-server.log -v4 </dev/null >/dev/null 2>&1"

# ---- frozen
stage dump "$SRC" "$CRIU dump -t $PID -D $SRC_DIR -o dump.log -v4 --page-server --address $DST_ADDR --port $PORT"
stage transfer "$SRC" "rsync --archive --rsh='ssh $HOPT' $SRC_DIR/ $DST_ADDR:$DST_DIR/"
stage restore "$DST" "$CRIU restore -d -D $DST_DIR -o restore.log -v4"

# ---- after the resume
on "$SRC" "ssh $HOPT -O exit $DST_ADDR >/dev/null 2>&1; rm -rf $SRC_DIR" || true
on "$DST" "rm -rf $DST_DIR" || true
