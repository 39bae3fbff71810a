#!/usr/bin/env bash
# Provide a CRIU that can checkpoint what this kernel runs, idempotently.
#
# A criu is accepted only when it passes two probes on this host (not a
# version number): `criu check`, and a real dump of a throwaway process that
# holds a TCP listener (CRIU before 4.2 cannot dump any inet socket on kernel
# 6.16 and newer: checkpoint-restore/criu#2705).
#
# - A criu already provided (the private prefix, or the distro's) that passes
#   both probes is used as it is.
# - Else the distro package, if the distro has one that passes.
# - Else the oldest Debian suite (trixie, trixie-backports, forky, sid) whose
#   criu is CKPT_CRIU_MIN_VERSION (4.2) or newer is unpacked with its library
#   closure into a private prefix and run through that prefix's own dynamic
#   loader. The suite is added only to a private apt configuration that reuses
#   the mirror URI already configured on this machine; nothing from it is
#   installed system-wide (never another suite's libc).
#
# The preflight role of the ckpt.criu collection ships this file to managed
# nodes (ckpt_preflight_install_criu); `make setup` runs it through
# scripts/install-criu.sh. Environment:
#   CKPT_CRIU_PREFIX       the private prefix (default /opt/ckpt-criu)
#   CKPT_CRIU_MIN_VERSION  the oldest criu worth installing (default 4.2)
#   CKPT_CRIU_PACKAGE      the distro package name (default criu)
#   CKPT_CRIU_SUITES       the Debian suites to look in, oldest first
#   CKPT_CRIU_DEBS         a directory of .deb files (criu and its library
#                          closure) to unpack instead of downloading: hosts
#                          without a route to a mirror
#   CKPT_CRIU_CHECK_ONLY=1 change nothing: say whether an install is needed
#
# Prints CKPT_CRIU_CHANGED=yes|no, then the path of a working criu executable
# on the last line of stdout (nothing after CHANGED with CKPT_CRIU_CHECK_ONLY
# when an install would be needed).
set -euo pipefail

PREFIX=${CKPT_CRIU_PREFIX:-/opt/ckpt-criu}
WRAPPER=$PREFIX/bin/criu
MIN_VERSION=${CKPT_CRIU_MIN_VERSION:-4.2}
PACKAGE=${CKPT_CRIU_PACKAGE:-criu}
SUITES=${CKPT_CRIU_SUITES:-trixie trixie-backports forky sid}
DEBS=${CKPT_CRIU_DEBS:-}
CHECK_ONLY=${CKPT_CRIU_CHECK_ONLY:-0}

log() { echo "install-criu: $*" >&2; }

# The inet probe: dump (leaving it running) a process that holds a TCP
# listener on loopback. Prints nothing; returns criu's verdict.
# The process leads a session of its own, as a daemon does: CRIU refuses a
# process whose session leader is outside its PID namespace, which is where
# this script's own session may be (a launcher that made no session, a
# container's exec).
inet_probe() {  # $1 = criu executable
  local dir pid rc=0 i
  dir=$(mktemp -d)
  python3 -c 'import os, socket, sys, time
os.setsid()
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
time.sleep(60)' "$dir/ready" </dev/null >/dev/null 2>&1 &
  pid=$!
  for ((i = 0; i < 100; i++)); do
    [[ -e $dir/ready ]] && break
    sleep 0.05
  done
  "$1" dump -t "$pid" -D "$dir" -o "$dir/dump.log" -v4 --leave-running --shell-job \
    </dev/null >/dev/null 2>&1 || rc=$?
  if ((rc)) || ! grep -q "Dumping finished successfully" "$dir/dump.log"; then
    rc=1
    grep -E "Error|can't|Can't" "$dir/dump.log" 2>/dev/null | grep -v RLIMIT_NOFILE | tail -3 | sed 's/^/install-criu:   /' >&2 || true
  fi
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
  return "$rc"
}

criu_ok() {  # $1 = criu executable
  "$1" --version >/dev/null 2>&1 || return 1
  if ! "$1" check >/dev/null 2>&1; then
    log "$1: criu check fails"; return 1
  fi
  if ! inet_probe "$1"; then
    log "$1 ($("$1" --version | head -1)) cannot dump a TCP listener on this kernel ($(uname -r))"
    return 1
  fi
}

version_ge() {  # $1 >= $2 (Debian version strings)
  dpkg --compare-versions "$1" ge "$2"
}

if [[ $(id -u) -ne 0 ]]; then
  log "must run as root (CRIU needs root, and so does installing it)"; exit 1
fi

# 1. Already provided?
if [[ -x $WRAPPER ]] && criu_ok "$WRAPPER"; then
  log "using $WRAPPER ($("$WRAPPER" --version | head -1))"; echo "CKPT_CRIU_CHANGED=no"; echo "$WRAPPER"; exit 0
fi
for c in /usr/sbin/criu /usr/bin/criu; do
  if [[ -x $c ]] && criu_ok "$c"; then
    log "using $c ($("$c" --version | head -1))"; echo "CKPT_CRIU_CHANGED=no"; echo "$c"; exit 0
  fi
done
if [[ $CHECK_ONLY == 1 ]]; then
  log "no criu here passes the probes; one would be installed (prefix $PREFIX)"
  echo "CKPT_CRIU_CHANGED=yes"; exit 0
fi
if [[ -n $DEBS && ! -d $DEBS ]]; then
  log "CKPT_CRIU_DEBS=$DEBS is not a directory; give the directory that holds criu's .deb files"; exit 1
fi

# 2. The distro's criu, if the distro has one new enough (Debian 13+).
. /etc/os-release
distro_ver=$(apt-cache policy "$PACKAGE" 2>/dev/null | sed -n 's/^ *Candidate: //p' | head -1)
if [[ -n $distro_ver && $distro_ver != "(none)" ]] && version_ge "$distro_ver" "$MIN_VERSION"; then
  log "installing the distro package $PACKAGE $distro_ver"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$PACKAGE" >&2
  for c in /usr/sbin/criu /usr/bin/criu; do
    if [[ -x $c ]] && criu_ok "$c"; then echo "CKPT_CRIU_CHANGED=yes"; echo "$c"; exit 0; fi
  done
  log "the distro's criu does not pass the probes; trying a private prefix"
else
  log "the distro's criu (${distro_ver:-none}) is older than $MIN_VERSION; using a private prefix"
fi

# 3. Private prefix from the oldest suite that has criu >= MIN_VERSION (or
# from the .debs given), unpacked, never installed.
root=$PREFIX/root
unpack() {  # $1 = directory of .deb files, $2 = where they came from
  local deb loader libpath
  rm -rf "$root.new"; mkdir -p "$root.new"
  for deb in "$1"/*.deb; do dpkg -x "$deb" "$root.new"; done
  [[ -x $root.new/usr/sbin/criu ]] || { log "no criu in the packages from $2"; rm -rf "$root.new"; exit 1; }
  rm -rf "$root"; mv "$root.new" "$root"
  libpath=$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu
  loader=$root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
  [[ -e $loader ]] || loader=$root/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
  mkdir -p "$PREFIX/bin"
  cat >"$WRAPPER.new" <<WRAP
#!/bin/sh
# criu from $2, run through its own loader and libraries ($PREFIX).
exec "$loader" --library-path "$libpath" "$root/usr/sbin/criu" "\$@"
WRAP
  chmod 0755 "$WRAPPER.new"; mv "$WRAPPER.new" "$WRAPPER"
  if criu_ok "$WRAPPER"; then
    log "installed $WRAPPER ($("$WRAPPER" --version | head -1))"
    echo "CKPT_CRIU_CHANGED=yes"; echo "$WRAPPER"; exit 0
  fi
  log "criu in $PREFIX does not pass the probes (criu check, a TCP listener dump):"
  "$WRAPPER" check >&2 || true
  exit 1
}
if [[ -n $DEBS ]]; then
  if ! compgen -G "$DEBS/*.deb" >/dev/null; then
    log "CKPT_CRIU_DEBS=$DEBS holds no .deb file"; exit 1
  fi
  log "unpacking the packages in $DEBS into $PREFIX"
  unpack "$DEBS" "the packages in $DEBS"
fi

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

APT=$PREFIX/apt
mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/etc/preferences.d"
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
suite=""
for s in $SUITES; do
  echo "deb [signed-by=$keyring] $mirror $s main" >"$APT/etc/sources.list"
  rm -rf "$APT/lists"; mkdir -p "$APT/lists/partial"
  if ! apt-get "${aptopts[@]}" -qq update >/dev/null 2>&1; then
    log "suite $s: not on the mirror $mirror"; continue
  fi
  v=$(apt-cache "${aptopts[@]}" policy criu 2>/dev/null | sed -n 's/^ *Candidate: //p' | head -1)
  if [[ -n $v && $v != "(none)" ]] && version_ge "$v" "$MIN_VERSION"; then
    suite=$s; log "suite $s has criu $v (mirror $mirror)"; break
  fi
  log "suite $s has criu ${v:-none}, older than $MIN_VERSION"
done
if [[ -z $suite ]]; then
  log "no suite among ($SUITES) on $mirror has criu >= $MIN_VERSION"; exit 1
fi
rm -rf "$APT/debs"; mkdir -p "$APT/debs"

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

unpack "$APT/debs" "Debian $suite"
