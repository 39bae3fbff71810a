#!/usr/bin/env bash
# Copy the working tree to .../ansible_collections/ckpt/criu, the path
# ansible-test requires (it resolves symlinks, so a link will not do). The copy
# lives outside this git checkout: inside it, ansible-test would list files with
# git and find the (ignored) copy empty. Prints the copy's path.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dest=${CKPT_TEST_COPY:-/var/tmp/ckpt-criu-test}/ansible_collections/ckpt/criu
mkdir -p "$dest"
rsync -a --delete \
  --exclude /.venv --exclude /.build --exclude /.git --exclude /tests/output \
  --exclude __pycache__ --exclude .pytest_cache --exclude '/docs/benchmarks/raw' \
  "$here/" "$dest/"
echo "$dest"
