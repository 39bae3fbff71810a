#!/usr/bin/env bash
# make demo: start a local test fleet (2 hosts: namespaces with their own sshd),
# start a counter on node1, migrate it live to node2 with playbooks/migrate.yml
# over real SSH, print the fleet report and the counter's continuity, tear the
# fleet down. Needs root and `make setup`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
py=$here/.venv/bin/python
state=${CKPT_DEMO_STATE_DIR:-/run/ckpt-demo-fleet}
work=$(mktemp -d /tmp/ckpt-demo.XXXXXX)
fleet() { "$py" tests/system/fleet/fleet.py --state-dir "$state" "$@"; }
cleanup() { fleet down >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

echo "== starting the test fleet (node1, node2)"
fleet down >/dev/null 2>&1 || true
fleet up --hosts 2 --name ckdem --subnet 10.217.0.0/24

echo "== starting a counter on node1 (a daemon: own session, stdio on /dev/null)"
pid=$(fleet ssh node1 -- python3 "$here/tests/integration/targets/setup_workloads/files/spawn.py" --stdio devnull --pidfile /srv/counter.pid \
      -- python3 "$here/tests/integration/targets/setup_workloads/files/counter.py" --out "$work/ticks" --interval 0.02 --mem 64)
echo "   counter PID $pid on node1, ticks in $work/ticks"
sleep 2

cat > "$work/inventory.ini" <<INV
[ckpt_sources]
node1 ansible_host=$(fleet status --json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["hosts"]["node1"]["address"])') ckpt_migrate_destination=node2

[spares]
node2 ansible_host=$(fleet status --json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["hosts"]["node2"]["address"])')

[all:vars]
ansible_user=root
ansible_ssh_private_key_file=$state/id_ed25519
ansible_ssh_common_args='-F $state/ssh_config'
ansible_python_interpreter=/usr/bin/python3
INV

echo "== ansible-playbook playbooks/migrate.yml (node1 -> node2)"
ANSIBLE_CONFIG=$here/ansible.cfg "$here/.venv/bin/ansible-playbook" -i "$work/inventory.ini" playbooks/migrate.yml \
  -e ckpt_become=false -e ckpt_migrate_pidfiles=/srv/counter.pid -e ckpt_report_dir="$work/report" \
  -e ckpt_report_name=demo | sed -n '/Print the fleet summary/,/^$/p;/PLAY RECAP/,$p'

sleep 1
echo "== where the counter runs now"
for h in node1 node2; do
  if fleet exec "$h" -- kill -0 "$pid" 2>/dev/null; then echo "   $h: PID $pid running"; else echo "   $h: no PID $pid"; fi
done
echo "== continuity of the counter (every tick exactly once, in order)"
"$py" - "$work/ticks" "$work/report/demo.json" <<'PY'
import json, sys
ticks = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
seqs = [s for s, _ in ticks]
gaps = [(b[1] - a[1]) / 1e9 for a, b in zip(ticks, ticks[1:])]
row = json.load(open(sys.argv[2]))["processes"][0]
print("   %d ticks, sequence %s, longest gap between two ticks %.3f s"
      % (len(seqs), "unbroken" if seqs == list(range(1, len(seqs) + 1)) else "BROKEN", max(gaps)))
print("   report: %s, frozen %s s (freeze on the source to resume on the destination), criu freezing %s s, images %.1f MiB"
      % (row["result"], row["frozen_s"], row.get("criu_frozen_s"), (row["image_bytes"] or 0) / 1048576.0))
sys.exit(0 if seqs == list(range(1, len(seqs) + 1)) and row["result"] == "migrated" else 1)
PY
echo "== report: $work/report/demo.{json,md,html} (removed with the fleet)"
cat "$work/report/demo.md"
