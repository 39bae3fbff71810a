#!/usr/bin/env bash
# ansible-test sanity of the collection with the ansible-core of virtualenv
# BIN (argument; default .venv/bin), from a copy at the path ansible-test needs
# (scripts/sync-collection.sh, CKPT_TEST_COPY). Extra arguments go to
# ansible-test. ansible-test only warns when a sanity test's program is missing
# (shellcheck, for one) and counts the skipped test as passed: here a skip fails.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/.venv/bin}
shift || true
pyver=$("$bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
copy=$(bash "$here/scripts/sync-collection.sh") || exit 1
log=$(mktemp)
(cd "$copy" && "$bin/ansible-test" sanity --python "$pyver" --color no "$@") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if grep -E 'Required program .* not found' "$log"; then
  echo "a sanity test was skipped for a missing program: scripts/setup.sh should install it"
  rc=1
fi
rm -f "$log"
exit "$rc"
