#!/usr/bin/env bash
# The whole test suite: ansible-test sanity, ansible-lint (production
# profile), antsibull-docs lint, then unit and integration tests with pytest
# against real CRIU, real processes and real SSH. Every stage runs; the run
# fails if any stage fails, and pytest collecting no test counts as failure.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PATH=$here/.venv/bin:$PATH
export ANSIBLE_CONFIG=$here/ansible.cfg
t0=$(date +%s)
failed=()
step() { echo; echo "==== $* ($(( $(date +%s) - t0 )) s)"; }
pyver=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')

step "ansible-test sanity"
copy=$(bash scripts/sync-collection.sh) || failed+=(sync)
(cd "$copy" && ansible-test sanity --python "$pyver" --color no ${CKPT_SANITY_ARGS:-}) || failed+=(sanity)

step "ansible-lint (profile production)"
ansible-lint --offline -q || failed+=(ansible-lint)

step "antsibull-docs lint (module documentation)"
antsibull-docs lint-collection-docs --plugin-docs "$copy" || failed+=(docs-lint)

step "pytest: unit and integration (real CRIU, real processes, real SSH)"
rc=0
python -m pytest -p no:cacheprovider ${CKPT_PYTEST_ARGS:-} tests/unit tests/integration || rc=$?
if [[ $rc -eq 5 ]]; then echo "pytest collected no tests"; failed+=(pytest-no-tests)
elif [[ $rc -ne 0 ]]; then failed+=(pytest); fi

step "done"
if ((${#failed[@]})); then
  echo "FAILED stages: ${failed[*]}"
  exit 1
fi
echo "all stages passed"
