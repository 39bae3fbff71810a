# shellcheck shell=bash
# Shared by raw_rsync.sh, raw_pageserver.sh and raw_checkpoint.sh (sourced).
# The hand-written operator baseline: plain criu over plain ssh, no Ansible.

safe() {
  # Every value goes into a remote command line: allow only plain path/host characters.
  local v
  for v in "$@"; do
    case "$v" in
      ''|*[!A-Za-z0-9_./:@-]*) echo "unsafe argument: '$v'" >&2; exit 2 ;;
    esac
  done
}

now() { date +%s.%N; }

# Controller -> host connections are multiplexed (one master per host, opened
# before the freeze), as an operator's ~/.ssh/config with ControlMaster would.
CTL_DIR=$(mktemp -d /tmp/.ckb-raw-ctl.XXXXXX)
cleanup_ctl() {
  local h
  for h in "${CTL_HOSTS[@]}"; do
    ssh -F "$SSH_CONFIG" -o ControlPath="$CTL_DIR/%C" -O exit "$h" >/dev/null 2>&1 || true
  done
  rm -rf "$CTL_DIR"
}
CTL_HOSTS=()

open_master() {
  CTL_HOSTS+=("$1")
  ssh -F "$SSH_CONFIG" -n -o ControlMaster=auto -o ControlPersist=120 -o ControlPath="$CTL_DIR/%C" "$1" true
}

on() {
  # on HOST COMMAND...: run on HOST over the open master (the words are joined
  # by ssh into one remote command line; every value passed `safe`).
  local h=$1
  shift
  ssh -F "$SSH_CONFIG" -n -o ControlPath="$CTL_DIR/%C" "$h" "$@"
}

# CKB_RAW_KEEP_SOURCE=1: the source stays, stopped, holding its memory until the
# restore is done (criu dump --leave-stopped, then SIGKILL), as the migrate role
# keeps it until the copy is verified; default: criu kills it as the dump ends.
# KEEP_OPT is read by the scripts that source this file.
# shellcheck disable=SC2034
if [ "${CKB_RAW_KEEP_SOURCE:-0}" = 1 ]; then KEEP_OPT=" --leave-stopped"; else KEEP_OPT=; fi

stage() {
  # stage NAME HOST COMMAND...: run and print "stage NAME START END RC".
  local name=$1 t0 t1 rc
  shift
  t0=$(now)
  rc=0
  on "$@" || rc=$?
  t1=$(now)
  echo "stage $name $t0 $t1 $rc"
  if [ "$rc" -ne 0 ]; then
    exit "$rc"
  fi
}
