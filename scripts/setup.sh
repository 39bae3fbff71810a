#!/usr/bin/env bash
# One-step, idempotent setup of a development / CI machine (Debian 12 or 13,
# as root): system packages, a CRIU that passes `criu check`, a virtualenv with
# the pinned controller and dev tools, and the collection importable as
# ckpt.criu. A second run checks everything and changes nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
t0=$(date +%s)
say() { echo "setup: $*"; }

if [[ $(id -u) -ne 0 ]]; then
  say "run as root: CRIU and the test fleet need root"; exit 1
fi

# 1. System packages (only installed when missing).
# redis-server and nginx are the real services the tests checkpoint and move;
# nftables is the network lock criu uses for TCP connections (no iptables);
# openssl makes the page server's per-migration TLS credentials.
pkgs=(openssh-server openssh-client rsync iproute2 util-linux procps psmisc python3 python3-venv ca-certificates
      nftables redis-server nginx shellcheck openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  apt-get update -qq
  # The daemons are started by the tests, each on its own address and port;
  # keep the packages' maintainer scripts from starting them machine-wide.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# ckpt.criu setup: no service starts during package installation\nexit 101\n' >"$policy"
    chmod 0755 "$policy"; own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if ((own_policy)); then rm -f "$policy"; fi
else
  say "system packages present"
fi

# 2. CRIU that passes criu check and a TCP-listener dump here: the distro's,
#    else a private prefix from the oldest Debian suite with 4.2 or newer.
criu=$(bash scripts/install-criu.sh | tail -1)
say "criu: $criu"

# 3. Virtualenv with pinned tools.
py=${CKPT_PYTHON:-python3}
want=$(sha256sum requirements/dev.txt | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$want" ]]; then
  say "creating .venv with requirements/dev.txt"
  "$py" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements/dev.txt 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  .venv/bin/ansible --version >/dev/null
  echo "$want" > .venv/.requirements.sha256
else
  v=$(.venv/bin/ansible --version)
  say ".venv up to date (${v%%$'\n'*})"
fi

# ansible-test's pip bootstrap, from here rather than from the network.
bash scripts/ansible-test-pip.sh .venv/bin/python | while read -r line; do say "$line"; done

# 4. An unprivileged local user for the attack tests (tests/system/
#    test_trust.py): the one who plants symlinks and owns directories.
if ! id -u ckpt-attacker >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ckpt-attacker
  say "created the system user ckpt-attacker (attack tests)"
fi

# 5. The collection as ckpt.criu for ansible-playbook (symlink; ansible.cfg
#    points collections_path here).
link=.build/collections/ansible_collections/ckpt/criu
mkdir -p "$(dirname "$link")"
if [[ "$(readlink "$link" 2>/dev/null)" != "$here" ]]; then
  ln -sfn "$here" "$link"
  say "linked $link -> $here"
fi

say "done in $(( $(date +%s) - t0 )) s"
