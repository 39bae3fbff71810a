#!/usr/bin/env bash
# ansible-test integration: every target in tests/integration/targets, each
# check mode -> apply -> check mode -> apply against real CRIU and real
# processes on this machine, with the ansible-core of virtualenv BIN (argument;
# default .venv/bin), from the copy at the path ansible-test needs
# (scripts/sync-collection.sh, CKPT_TEST_COPY). The targets need root and are
# destructive (they start, freeze and kill processes). Extra arguments go to
# ansible-test (a target name runs only that target). A target that fails, a
# run that finds no target, or a target that ran none of its own tasks, fails.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/.venv/bin}
shift || true
if [[ $(id -u) -ne 0 ]]; then
  echo "the integration targets need root (they checkpoint processes with CRIU): run as root"
  exit 1
fi
pyver=$("$bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
copy=$(bash "$here/scripts/sync-collection.sh") || exit 1
log=$(mktemp)
(cd "$copy" && PATH=$bin:$PATH "$bin/ansible-test" integration --local --python "$pyver" \
  --allow-destructive --color no "$@") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
ran=$(sed -n 's/^Running \(.*\) integration test role$/\1/p' "$log")
if [[ $rc -eq 0 && -z $ran ]]; then
  echo "ansible-test ran no integration target: check tests/integration/targets and their aliases"
  rc=1
fi
# A target named like a role of the collection runs that role instead (the
# collection's roles come first): every target must have run its own tasks.
for t in $ran; do
  if ! grep -q "^TASK \[$t : " "$log"; then
    echo "target $t ran none of its own tasks (a role of the collection with its name ran instead?): rename it"
    rc=1
  fi
done
rm -f "$log"
exit "$rc"
