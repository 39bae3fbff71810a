#!/usr/bin/env bash
# The whole test suite: ansible-test sanity, ansible-lint (production
# profile), antsibull-docs lint, then unit and integration tests with pytest
# against real CRIU, real processes and real SSH. Every stage runs; the run
# fails if any stage fails, and pytest collecting no test counts as failure.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 1
export PATH=$here/.venv/bin:$PATH
export ANSIBLE_CONFIG=$here/ansible.cfg
t0=$(date +%s)
failed=()
step() { echo; echo "==== $* ($(( $(date +%s) - t0 )) s)"; }
# Extra arguments for ansible-test sanity and pytest, split on whitespace.
read -r -a sanity_args <<<"${CKPT_SANITY_ARGS:-}"
read -r -a pytest_args <<<"${CKPT_PYTEST_ARGS:-}"
pyver=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')

step "ansible-test sanity"
copy=$(bash scripts/sync-collection.sh) || failed+=(sync)
# ansible-test only warns when a sanity test's program is missing (shellcheck,
# for one) and counts the skipped test as passed: a skip fails this stage.
sanity_log=$(mktemp)
(cd "$copy" && ansible-test sanity --python "$pyver" --color no "${sanity_args[@]}") 2>&1 | tee "$sanity_log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || failed+=(sanity)
if grep -E 'Required program .* not found' "$sanity_log"; then
  echo "a sanity test was skipped for a missing program: scripts/setup.sh should install it"
  failed+=(sanity-skipped)
fi
rm -f "$sanity_log"

step "ansible-lint (profile production)"
ansible-lint --offline -q || failed+=(ansible-lint)

step "antsibull-docs lint (module documentation)"
antsibull-docs lint-collection-docs --plugin-docs "$copy" || failed+=(docs-lint)

step "pytest: unit and integration (real CRIU, real processes, real SSH)"
rc=0
python -m pytest -p no:cacheprovider "${pytest_args[@]}" tests/unit tests/integration || rc=$?
if [[ $rc -eq 5 ]]; then echo "pytest collected no tests"; failed+=(pytest-no-tests)
elif [[ $rc -ne 0 ]]; then failed+=(pytest); fi

step "done"
if ((${#failed[@]})); then
  echo "FAILED stages: ${failed[*]}"
  exit 1
fi
echo "all stages passed"
