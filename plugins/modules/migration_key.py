#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_key
short_description: Make an SSH key and known hosts for the transfers of migrations
version_added: 0.1.0
description:
  - Makes, in one step, what the source of migrations uses to send their checkpoints with a key of its
    own (the migrate role makes one per source host and run). That is a fresh root-only directory O(path), an ed25519 key pair C(id) and C(id.pub) in it (no
    passphrase, comment O(comment)), and the file C(known_hosts) with O(known_hosts), the only host keys
    the source's C(ssh) accepts. Returns the public key, for the destination's C(authorized_keys).
  - O(path) is made 0700 after the trust rule of M(ckpt.criu.images_dir) (checked on its parent; the
    parent is created 0700 when missing); every file in it is 0600. A directory, file or symlink of that name from an earlier attempt is removed first,
    never followed.
  - Runs C(ssh-keygen).
  - O(state=absent) takes it all away again in one run, once the migrations are done. It closes the key's SSH
    master connection (its control socket C(cm) in O(path), when there is one, with C(ssh -O exit)), then
    removes O(path) with all in it through its verified parent, never following a symlink.
extends_documentation_fragment:
  - ckpt.criu.attributes
  - ckpt.criu.attributes.ONE_USE
options:
  path:
    description:
      - Absolute path of the key's directory.
    type: path
    required: true
  state:
    description:
      - V(present) makes a fresh key (every run); V(absent) closes its SSH master and removes O(path).
    type: str
    choices: [present, absent]
    default: present
    version_added: 0.2.0
  comment:
    description:
      - The key's comment, which names the migration in the destination's C(authorized_keys).
      - Required with O(state=present).
    type: str
  known_hosts:
    description:
      - The content of C(known_hosts) (the C(ckpt.criu.migrate_known_hosts) filter makes it from the
        destination's host keys).
      - Required with O(state=present).
    type: str
  route_to:
    description:
      - An address of the destination. With O(state=present) the module first reads C(ip -o route get) to
        it, also in check mode, and returns it as RV(route). Its C(src) is the address the destination sees
        this source come from, which the role writes into the key's C(from=) restriction there.
      - A route that cannot be read is not a failure; RV(route) then says why.
    type: str
    version_added: 0.2.0
notes:
  - Must run as root on the managed node.
seealso:
  - module: ckpt.criu.images_dir
"""

EXAMPLES = r"""
- name: Make the migration's key and known hosts on the source
  ckpt.criu.migration_key:
    path: /run/ckpt-criu-ssh/key-node2
    comment: ckpt.criu migrate from node1
    known_hosts: "{{ hostkeys.results | ckpt.criu.migrate_known_hosts('10.0.0.2', 22) }}"
    route_to: 10.0.0.2
  register: key

- name: The address the destination sees this source come from
  ansible.builtin.debug:
    msg: "{{ key.route.stdout | regex_search('src (\\S+)', '\\1') | first }}"

- name: Close the key's SSH connection and remove the key, once the migrations are done
  ckpt.criu.migration_key:
    path: /run/ckpt-criu-ssh/key-node2
    state: absent
"""

RETURN = r"""
path:
  description: The normalised directory.
  returned: always
  type: str
  sample: /run/ckpt-criu-ssh/key-node2
public_key:
  description: The public key, one line (C(ssh-ed25519 ... comment)).
  returned: success with O(state=present), not in check mode
  type: str
close:
  description:
    - How C(ssh -O exit) ended for the key's SSH master (C(rc), C(stderr)); C(rc) 255 is ssh saying that no
      master runs any more. Empty when there was no control socket.
  returned: O(state=absent), not in check mode
  type: dict
route:
  description:
    - C(ip -o route get) to O(route_to), in the shape M(ansible.builtin.command) registers (C(cmd), C(rc),
      C(stdout), C(stderr)); C(rc) is not 0 when there is no route, or -1 when C(ip) could not run.
  returned: O(state=present) with O(route_to), also in check mode
  type: dict
  sample:
    cmd: [/usr/sbin/ip, -o, route, get, 10.213.0.12]
    rc: 0
    stdout: "10.213.0.12 dev eth0 src 10.213.0.11 uid 0"
    stderr: ""
"""

import os
import subprocess

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils import _safedir
from ansible_collections.ckpt.criu.plugins.module_utils._commands import run_command


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            comment=dict(type="str"),
            known_hosts=dict(type="str"),
            route_to=dict(type="str"),
        ),
        required_if=[("state", "present", ("comment", "known_hosts"))],
        supports_check_mode=True,
    )
    p = module.params
    path = _safedir.root_module_path(module, "migration_key")
    if p["state"] == "absent":
        absent(module, path)
    if not p["known_hosts"].strip():
        module.fail_json(msg="known_hosts is empty: the source would accept no host key of the destination",
                         path=path)
    extra = {"route": route(module, p["route_to"])} if p["route_to"] else {}
    try:
        if module.check_mode:
            _safedir.check(os.path.dirname(path))
            module.exit_json(changed=True, path=path, **extra)
        keygen = module.get_bin_path("ssh-keygen", required=True)
        old = os.umask(0o077)
        try:
            with _safedir.fresh_dir(path) as held:
                text = p["known_hosts"]
                held.write_new("known_hosts", text if text.endswith("\n") else text + "\n")
                argv = [keygen, "-q", "-t", "ed25519", "-N", "", "-C", p["comment"], "-f", os.path.join(path, "id")]
                res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     universal_newlines=True, check=False, timeout=60)
                if res.returncode != 0:
                    module.fail_json(msg="ssh-keygen failed (rc=%d): %s" % (
                        res.returncode, (res.stderr or res.stdout or "no output").strip().splitlines()[-1]),
                        rc=res.returncode, stderr=res.stderr, cmd=argv, path=path)
                public = held.read_text("id.pub").strip()
        finally:
            os.umask(old)
    except _safedir.UntrustedDirError as exc:
        module.fail_json(msg="cannot make the migration's key in %s: %s; nothing was changed" % (path, exc.msg),
                         path=path, **extra)
    except (OSError, subprocess.TimeoutExpired) as exc:
        module.fail_json(msg="cannot make the migration's key in %s: %s"
                         % (path, getattr(exc, "strerror", None) or exc), path=path, **extra)
    module.exit_json(changed=True, path=path, public_key=public, **extra)


def route(module, address):
    """``ip -o route get ADDRESS`` as ansible.builtin.command registers it; never a failure."""
    ip = module.get_bin_path("ip")
    argv = [ip or "ip", "-o", "route", "get", address]
    if not ip:
        return {"cmd": argv, "rc": -1, "stdout": "", "stderr": "ip (iproute2) is not installed"}
    try:
        return run_command(argv, 30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"cmd": argv, "rc": -1, "stdout": "", "stderr": "ip route get could not run: %s" % exc}


def absent(module, path):
    """Close the key's SSH master, if its socket is there, then remove PATH."""
    existed = os.path.lexists(path)
    if module.check_mode:
        module.exit_json(changed=existed, path=path)
    close = {}
    if os.path.lexists(os.path.join(path, "cm")):
        argv = [module.get_bin_path("ssh", required=True), "-F", "none", "-o",
                "ControlPath=%s" % os.path.join(path, "cm"), "-O", "exit", "ckpt-migration-key"]
        try:
            res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 universal_newlines=True, check=False, timeout=30)
            close = {"rc": res.returncode, "stderr": res.stderr.strip()}
        except (OSError, subprocess.TimeoutExpired) as exc:
            close = {"rc": -1, "stderr": "ssh -O exit could not run: %s" % exc}
    try:
        _safedir.remove_dir(path)
    except FileNotFoundError:
        pass   # not even its parent is there
    except _safedir.UntrustedDirError as exc:
        module.fail_json(msg="cannot remove the migration's key %s: %s" % (path, exc.msg), path=path, close=close)
    except OSError as exc:
        module.fail_json(msg="cannot remove the migration's key %s: %s" % (path, exc.strerror or exc),
                         path=path, close=close)
    module.exit_json(changed=existed, path=path, close=close)


if __name__ == "__main__":
    main()
