#!/usr/bin/env bash
# Raw baseline, transfer by criu page server. Run on the controller:
#   raw_pageserver.sh SSH_CONFIG SRC DST DST_ADDR PID SRC_DIR DST_DIR CRIU PORT [tls|plain]
# The 10th argument (default: $CKB_RAW_TLS, else plain) turns criu's TLS on.
# Before the freeze: ssh masters, empty image dirs, `criu page-server -d` on
# DST; with TLS also a throw-away CA, a server and a client certificate made
# with openssl in a private mktemp -d directory on the controller and copied
# into root-only 0700 directories SRC_DIR.tls on SRC and DST_DIR.tls on DST
# (next to the image dirs). Frozen: criu dump --page-server (pages stream to
# DST; plain dump: criu kills the task once the dump is complete), rsync of the
# remaining images (everything but the pages), criu restore -d on DST.
# Prints "stage NAME START END RC" lines (epoch seconds); with TLS also
# "tls handshakes N" (N = "TLS handshake completed" lines in the page server's
# log). The credentials are removed from the controller and both hosts at exit.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benchmarks/raw_common.sh
. "$HERE/raw_common.sh"
SSH_CONFIG=$1 SRC=$2 DST=$3 DST_ADDR=$4 PID=$5 SRC_DIR=$6 DST_DIR=$7 CRIU=$8 PORT=$9
TLS=${10:-${CKB_RAW_TLS:-plain}}
safe "$SSH_CONFIG" "$SRC" "$DST" "$DST_ADDR" "$PID" "$SRC_DIR" "$DST_DIR" "$CRIU" "$PORT"
case "$TLS" in
  tls|on|1|true) TLS=1 ;;
  plain|off|0|false) TLS=0 ;;
  *) echo "10th argument / CKB_RAW_TLS: tls or plain, not '$TLS'" >&2; exit 2 ;;
esac
HOPT="-o ControlPath=/tmp/.ckb-raw-hop-%C"
SRC_TLS=$SRC_DIR.tls
DST_TLS=$DST_DIR.tls
CERT_DIR=

cleanup() {
  if [ "$TLS" = 1 ]; then
    on "$SRC" "rm -rf $SRC_TLS" >/dev/null 2>&1 || true
    on "$DST" "rm -rf $DST_TLS" >/dev/null 2>&1 || true
    if [ -n "$CERT_DIR" ]; then
      rm -rf "$CERT_DIR"
    fi
  fi
  cleanup_ctl
}
trap cleanup EXIT

make_certs() {
  # A CA, a server certificate for the page server and a client certificate for
  # the dump, like the migrate role's (P-256 keys, one-day validity). criu checks
  # the peer's certificate name against its own --address on both sides, so
  # both name DST_ADDR; the extended key usage tells them apart.
  local d=$1 san name eku
  if [[ $DST_ADDR == *:* || $DST_ADDR != *[!0-9.]* ]]; then
    san=IP:$DST_ADDR
  else
    san=DNS:$DST_ADDR
  fi
  (
    umask 077
    cd "$d"
    for name in ca server client; do
      openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key" 2>/dev/null
    done
    openssl req -x509 -new -key ca.key -days 1 -subj "/CN=ckb raw page-server CA" \
      -addext basicConstraints=critical,CA:TRUE,pathlen:0 -addext keyUsage=critical,keyCertSign -out ca.pem
    for name in server client; do
      if [ "$name" = server ]; then eku=serverAuth; else eku=clientAuth; fi
      openssl req -x509 -new -key "$name.key" -CA ca.pem -CAkey ca.key -days 1 -subj "/CN=$DST_ADDR" \
        -addext "subjectAltName=$san" -addext basicConstraints=critical,CA:FALSE \
        -addext "extendedKeyUsage=$eku" -out "$name.pem"
    done
    chmod 0600 ./*.key ./*.pem
  ) >/dev/null
}

put() {
  # put HOST DIR FILE...: a fresh root-only 0700 DIR on HOST holding FILEs of
  # CERT_DIR (0600, owned by root), over the open master.
  local h=$1 d=$2
  shift 2
  tar -C "$CERT_DIR" -cf - "$@" |
    ssh -F "$SSH_CONFIG" -o ControlPath="$CTL_DIR/%C" "$h" \
      "umask 077 && rm -rf $d && mkdir -m 0700 $d && tar -xf - --no-same-owner -C $d"
}

tls_args() {
  # tls_args DIR ROLE: criu's TLS options with the files of ROLE in DIR.
  echo "--tls --tls-cacert $1/ca.pem --tls-cert $1/$2.pem --tls-key $1/$2.key"
}

# ---- before the freeze
open_master "$SRC"
open_master "$DST"
on "$SRC" "rm -rf $SRC_DIR && mkdir -p -m 0700 $SRC_DIR"
on "$DST" "rm -rf $DST_DIR && mkdir -p -m 0700 $DST_DIR"
on "$SRC" "ssh -n -o ControlMaster=auto -o ControlPersist=120 $HOPT $DST_ADDR true"
PS_TLS=
DUMP_TLS=
if [ "$TLS" = 1 ]; then
  CERT_DIR=$(mktemp -d /tmp/.ckb-raw-tls.XXXXXX)
  make_certs "$CERT_DIR"
  put "$DST" "$DST_TLS" ca.pem server.pem server.key
  put "$SRC" "$SRC_TLS" ca.pem client.pem client.key
  rm -rf "$CERT_DIR"
  CERT_DIR=
  PS_TLS=" $(tls_args "$DST_TLS" server)"
  DUMP_TLS=" $(tls_args "$SRC_TLS" client)"
fi
on "$DST" "$CRIU page-server -D $DST_DIR --address $DST_ADDR --port $PORT -d -o page-server.log -v4$PS_TLS </dev/null >/dev/null 2>&1"

# ---- frozen
stage dump "$SRC" "$CRIU dump -t $PID -D $SRC_DIR -o dump.log -v4 --page-server --address $DST_ADDR --port $PORT$DUMP_TLS$KEEP_OPT"
stage transfer "$SRC" "rsync --archive --rsh='ssh $HOPT' $SRC_DIR/ $DST_ADDR:$DST_DIR/"
stage restore "$DST" "$CRIU restore -d -D $DST_DIR -o restore.log -v4"
if [ -n "$KEEP_OPT" ]; then
  on "$SRC" "kill -KILL $PID" || true
fi

# ---- after the resume
if [ "$TLS" = 1 ]; then
  echo "tls handshakes $(on "$DST" "grep -c 'TLS handshake completed' $DST_DIR/page-server.log" || true)"
fi
on "$SRC" "ssh $HOPT -O exit $DST_ADDR >/dev/null 2>&1; rm -rf $SRC_DIR" || true
on "$DST" "rm -rf $DST_DIR" || true
