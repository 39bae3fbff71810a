#!/usr/bin/env bash
# Copy the working tree to .build/ansible_collections/ckpt/criu, the path
# ansible-test requires (it resolves symlinks, so a link will not do). Prints
# the copy's path.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dest=$here/.build/test/ansible_collections/ckpt/criu
mkdir -p "$dest"
rsync -a --delete \
  --exclude /.venv --exclude /.build --exclude /.git --exclude /tests/output \
  --exclude __pycache__ --exclude .pytest_cache --exclude '/docs/benchmarks/raw' \
  "$here/" "$dest/"
echo "$dest"
