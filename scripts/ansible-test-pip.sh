#!/usr/bin/env bash
# ansible-test bootstraps pip into its sanity-test virtualenvs with a script it
# downloads from a host these machines cannot reach; give the ansible-test of
# the virtualenv PYTHON (argument) a local one, for the pip version it wants.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
python=$1
pipver=$("$python" - <<'PY'
import re, ansible_test, os
src = open(os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py")).read()
print(re.search(r"default_packages = dict\(\s*pip='([0-9.]+)'", src).group(1))
PY
)
getpip=$HOME/.ansible/test/cache/get_pip_${pipver//./_}.py
if ! cmp -s "$here/scripts/get-pip-offline.py" "$getpip"; then
  mkdir -p "$(dirname "$getpip")"
  cp "$here/scripts/get-pip-offline.py" "$getpip"
  echo "installed the pip bootstrap for ansible-test at $getpip"
fi
