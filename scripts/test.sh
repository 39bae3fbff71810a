#!/usr/bin/env bash
# The whole test suite: ansible-test sanity, ansible-lint (production
# profile), antsibull-docs lint, then unit and system tests with pytest
# against real CRIU, real processes and real SSH, then ansible-test integration
# (the targets in tests/integration/targets, scripts/targets.sh), then the
# support matrix (scripts/matrix.sh: sanity, unit and a playbook smoke run on
# the other ansible-core versions meta/runtime.yml claims). Every stage runs; the run
# fails if any stage fails, and pytest collecting no test counts as failure.
set -uo pipefail
# CRIU checkpoints a process only when it can see the process's session
# leader. A launcher that made no session of its own (CI's may not) hands this
# script a session whose leader is outside this PID namespace, and every
# workload the tests start would inherit it; run the suite in a session of
# its own, as from a login shell.
if [[ -z ${CKPT_TEST_OWN_SESSION:-} ]]; then
  CKPT_TEST_OWN_SESSION=1 exec setsid --wait bash "$0" "$@"
fi
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

step "ansible-test sanity"
bash scripts/sanity.sh "$here/.venv/bin" "${sanity_args[@]}" || failed+=(sanity)
copy=$(bash scripts/sync-collection.sh) || failed+=(sync)

step "ansible-lint (profile production)"
ansible-lint --offline -q || failed+=(ansible-lint)

step "antsibull-docs lint (module documentation)"
antsibull-docs lint-collection-docs --plugin-docs "$copy" || failed+=(docs-lint)

step "pytest: unit and system tests (real CRIU, real processes, real SSH)"
rc=0
python -m pytest -p no:cacheprovider "${pytest_args[@]}" tests/unit tests/system || rc=$?
if [[ $rc -eq 5 ]]; then echo "pytest collected no tests"; failed+=(pytest-no-tests)
elif [[ $rc -ne 0 ]]; then failed+=(pytest); fi

step "ansible-test integration: the targets in tests/integration/targets (real CRIU, real processes)"
bash scripts/targets.sh "$here/.venv/bin" || failed+=(targets)

step "support matrix: the other ansible-core versions requires_ansible claims (requirements/matrix.txt)"
bash scripts/matrix.sh || failed+=(matrix)

step "done"
if ((${#failed[@]})); then
  echo "FAILED stages: ${failed[*]}"
  exit 1
fi
echo "all stages passed"
