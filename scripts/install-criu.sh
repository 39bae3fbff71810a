#!/usr/bin/env bash
# Provide a CRIU >= 4.1 that passes `criu check`, idempotently.
#
# - If a `criu` on PATH (or the distro package) is >= 4.1 and passes
#   `criu check`, use it.
# - Else (Debian 12: criu 3.17 fails on new kernels) unpack Debian 13's criu
#   and its library closure into a private prefix and run it through that
#   prefix's own dynamic loader. The trixie suite is added only to a private
#   apt configuration that reuses the mirror URI already configured on this
#   machine; nothing from trixie is installed system-wide.
#
# Prints the path of a working criu executable on the last line of stdout.
set -euo pipefail

PREFIX=${CKPT_CRIU_PREFIX:-/opt/ckpt-criu}
WRAPPER=$PREFIX/bin/criu
MIN_MAJOR=4
MIN_MINOR=1

log() { echo "install-criu: $*" >&2; }

criu_ok() {  # $1 = criu executable
  local out major minor
  out=$("$1" --version 2>/dev/null) || return 1
  # "Version: 4.1.1"
  major=$(sed -n 's/^Version: \([0-9]*\)\.\([0-9]*\).*/\1/p' <<<"$out")
  minor=$(sed -n 's/^Version: \([0-9]*\)\.\([0-9]*\).*/\2/p' <<<"$out")
  [[ -n $major ]] || return 1
  if (( major < MIN_MAJOR || (major == MIN_MAJOR && minor < MIN_MINOR) )); then
    return 1
  fi
  "$1" check >/dev/null 2>&1
}

if [[ $(id -u) -ne 0 ]]; then
  log "must run as root (CRIU needs root, and so does installing it)"; exit 1
fi

# 1. Already provided?
if [[ -x $WRAPPER ]] && criu_ok "$WRAPPER"; then
  log "using $WRAPPER ($("$WRAPPER" --version | head -1))"; echo "$WRAPPER"; exit 0
fi
for c in /usr/sbin/criu /usr/bin/criu; do
  if [[ -x $c ]] && criu_ok "$c"; then
    log "using $c ($("$c" --version | head -1))"; echo "$c"; exit 0
  fi
done

# 2. The distro's criu, if the distro's is recent enough (Debian 13+).
. /etc/os-release
if [[ ${VERSION_CODENAME:-} != bookworm ]]; then
  log "installing the distro package criu"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq criu >&2
  for c in /usr/sbin/criu /usr/bin/criu; do
    if [[ -x $c ]] && criu_ok "$c"; then echo "$c"; exit 0; fi
  done
  log "the distro's criu does not pass 'criu check'; trying the private prefix"
fi

# 3. Private prefix from Debian 13 (trixie).
# Reuse the mirror URI configured for the main Debian archive on this machine.
mirror=""
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
  mirror=$(awk '
    /^URIs:/ {u=$2} /^Suites:/ {s=$0}
    /^$/ { if (u != "" && s !~ /security/) {print u; exit} u=""; s="" }
    END { if (u != "" && s !~ /security/) print u }' /etc/apt/sources.list.d/debian.sources | head -1)
fi
if [[ -z $mirror && -f /etc/apt/sources.list ]]; then
  mirror=$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^[a-z+]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
fi
if [[ -z $mirror ]]; then
  log "cannot find the Debian mirror URI in /etc/apt/sources.list(.d); configure apt first"; exit 1
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
log "private apt configuration for trixie using mirror $mirror"

APT=$PREFIX/apt
mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/etc/preferences.d" "$APT/debs"
cat >"$APT/etc/sources.list" <<SRC
deb [signed-by=$keyring] $mirror trixie main
SRC
aptopts=(
  -o Dir::Etc::SourceList="$APT/etc/sources.list"
  -o Dir::Etc::SourceParts=/dev/null
  -o Dir::Etc::Preferences=/dev/null
  -o Dir::Etc::PreferencesParts="$APT/etc/preferences.d"
  -o Dir::State::Lists="$APT/lists"
  -o Dir::State::Status=/dev/null
  -o Dir::Cache="$APT"
  -o Dir::Cache::Archives="$APT/archives"
  -o APT::Architecture=amd64
  -o APT::Architectures::=amd64
  -o Debug::NoLocking=1
)
apt-get "${aptopts[@]}" -qq update >&2

# criu and its whole run-time library closure (Depends/Pre-Depends only).
mapfile -t pkgs < <(apt-cache "${aptopts[@]}" depends --recurse --no-recommends \
    --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances criu \
  | grep -v '^ ' | grep -v '^<' | sort -u)
keep=()
for p in "${pkgs[@]}"; do
  case $p in
    # Tools and data criu does not load: keep the prefix small.
    debconf*|perl*|python3*|libpython*|dpkg|tar|install-info|iptables|nftables|libxtables*|gcc-*-base|libcrypt1|debianutils|*-data) continue ;;
  esac
  keep+=("$p")
done
log "downloading ${#keep[@]} packages: ${keep[*]}"
( cd "$APT/debs" && apt-get "${aptopts[@]}" -qq download "${keep[@]}" >&2 )

root=$PREFIX/root
rm -rf "$root.new"; mkdir -p "$root.new"
for deb in "$APT"/debs/*.deb; do dpkg -x "$deb" "$root.new"; done
rm -rf "$root"; mv "$root.new" "$root"

libpath=$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu
loader=$root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
[[ -e $loader ]] || loader=$root/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
mkdir -p "$PREFIX/bin"
cat >"$WRAPPER.new" <<WRAP
#!/bin/sh
# criu from Debian 13, run through its own loader and libraries ($PREFIX).
exec "$loader" --library-path "$libpath" "$root/usr/sbin/criu" "\$@"
WRAP
chmod 0755 "$WRAPPER.new"; mv "$WRAPPER.new" "$WRAPPER"

if criu_ok "$WRAPPER"; then
  log "installed $WRAPPER ($("$WRAPPER" --version | head -1))"
  echo "$WRAPPER"
else
  log "criu in $PREFIX does not pass 'criu check':"
  "$WRAPPER" check >&2 || true
  exit 1
fi
