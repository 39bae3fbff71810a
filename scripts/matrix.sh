#!/usr/bin/env bash
# The support matrix: for each ansible-core of requirements/matrix.txt (the
# versions requires_ansible claims besides the pinned one), in a virtualenv of
# its own under .build/matrix/: ansible-test sanity, the unit tests, and a smoke
# run of the playbooks on the SSH test fleet (migrate with rsync and with the
# page server; preflight, checkpoint and restore with check mode and reruns).
# Every version runs; the script fails if any step of any version fails.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 1
smoke=${CKPT_MATRIX_SMOKE:-test_migrate_counter or test_checkpoint_restore_preflight_idempotent}
failed=()
while read -r req; do
  [[ -z $req || $req == \#* ]] && continue
  ver=${req#ansible-core==}
  venv=.build/matrix/$ver
  t0=$(date +%s)
  echo; echo "==== ansible-core $ver"
  want=("$req" pytest==9.2.0 pytest-timeout==2.4.0)
  if [[ "$(cat "$venv/.requirements" 2>/dev/null)" != "${want[*]}" ]]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${want[@]}" 2>&1 \
      | grep -v "is ignored: it is neither a file nor a directory" || true
    "$venv/bin/ansible" --version >/dev/null || { failed+=("$ver:venv"); continue; }
    echo "${want[*]}" >"$venv/.requirements"
  fi
  bash scripts/ansible-test-pip.sh "$venv/bin/python"
  CKPT_TEST_COPY=${CKPT_TEST_COPY:-/var/tmp/ckpt-criu-test}-$ver bash scripts/sanity.sh "$here/$venv/bin" \
    || failed+=("$ver:sanity")
  echo "---- $ver: unit tests"
  "$venv/bin/python" -m pytest -p no:cacheprovider -q tests/unit || failed+=("$ver:unit")
  echo "---- $ver: smoke run of the playbooks with $("$venv/bin/ansible-playbook" --version | head -1)"
  CKPT_ANSIBLE_BIN=$here/$venv/bin "$venv/bin/python" -m pytest -p no:cacheprovider -q \
    tests/system/fleet/test_playbooks.py -k "$smoke" || failed+=("$ver:smoke")
  echo "==== ansible-core $ver: $(( $(date +%s) - t0 )) s"
done <requirements/matrix.txt
if ((${#failed[@]})); then echo "support matrix FAILED: ${failed[*]}"; exit 1; fi
echo "support matrix passed"
