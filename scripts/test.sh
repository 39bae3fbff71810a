#!/usr/bin/env bash
# The whole test suite: ansible-test sanity, ansible-lint (production
# profile), then unit and integration tests with pytest against real CRIU.
# Any failure fails the run; pytest finding no test fails it too.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PATH=$here/.venv/bin:$PATH
export ANSIBLE_CONFIG=$here/ansible.cfg
t0=$(date +%s)
step() { echo; echo "==== $* ($(( $(date +%s) - t0 )) s)"; }

step "ansible-test sanity"
copy=$(bash scripts/sync-collection.sh)
(cd "$copy" && ansible-test sanity --python "$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
   --color no ${CKPT_SANITY_ARGS:-})

step "ansible-lint (profile production)"
ansible-lint --offline -q

step "pytest: unit and integration (real CRIU, real processes)"
rc=0
python -m pytest -p no:cacheprovider ${CKPT_PYTEST_ARGS:-} tests/unit tests/integration || rc=$?
if [[ $rc -eq 5 ]]; then echo "pytest collected no tests: failing"; exit 1; fi
step "finished with rc=$rc"
exit $rc
