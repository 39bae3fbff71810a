"""What gets released: the collection tarball and the execution environment.

Real runs of `ansible-galaxy collection build`, `ansible-builder create` and
`ansible-galaxy collection install` (no container build: no registry is
reachable here), checked against the files git tracks.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TARBALL_LIMIT = 400 * 1024

# What only developers use: none of it may reach the tarball or the EE.
DEV_ONLY = ("Makefile", "ansible.cfg", ".ansible-lint", ".gitignore", "pytest.ini", "execution-environment.yml",
            "requirements/", "scripts/", "benchmarks/", "docs/benchmarks/", "docs/test-fleet.md", "tests/", ".ci/")
# What the collection is made of at run time: all of it must.
# Every operator doc (docs/ but for the developers' pages in DEV_ONLY) ships: the README links them.
RUNTIME_DIRS = ("plugins/", "roles/", "playbooks/", "meta/", "docs/")
RUNTIME_FILES = ("README.md", "LICENSE", "CHANGELOG.rst", "changelogs/changelog.yaml")


def _run(argv, cwd=REPO, **kw):
    p = subprocess.run([str(a) for a in argv], cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, check=False, timeout=300, **kw)
    assert p.returncode == 0, "%s failed (rc %d):\n%s" % (" ".join(map(str, argv)), p.returncode, p.stdout[-3000:])
    return p.stdout


def _tracked_runtime_files():
    files = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--"] + list(RUNTIME_DIRS)).split()
    files = [f for f in files if (REPO / f).is_file() and not _is_dev_only(f)]
    assert any(f.startswith("plugins/modules/") for f in files), files
    assert "docs/security.md" in files and "docs/awx/migrate.survey.json" in files, files
    return files


def _is_dev_only(path):
    return any(path == d.rstrip("/") or path.startswith(d) for d in DEV_ONLY)


def test_tarball_is_the_runtime_only(tmp_path):
    """`ansible-galaxy collection build` ships every runtime file, no development
    file, and stays under 400 KB."""
    _run([BIN / "ansible-galaxy", "collection", "build", "--output-path", tmp_path])
    (tarball,) = tmp_path.glob("ckpt-criu-*.tar.gz")
    size = tarball.stat().st_size
    with tarfile.open(tarball) as tf:
        names = [m.name for m in tf.getmembers() if m.isfile()]
    print("tarball %s: %d bytes, %d files" % (tarball.name, size, len(names)))

    shipped_dev = [n for n in names if _is_dev_only(n)]
    assert not shipped_dev, "development files in the tarball: %s" % shipped_dev
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    missing = [f for f in _tracked_runtime_files() + list(RUNTIME_FILES) if f not in names]
    assert not missing, "runtime files missing from the tarball: %s" % missing
    assert {"MANIFEST.json", "FILES.json"} <= set(names)
    assert size < TARBALL_LIMIT, "the tarball is %d bytes, over %d" % (size, TARBALL_LIMIT)


def test_license_is_the_full_gpl3():
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert galaxy["license"] == ["GPL-3.0-or-later"]
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE") and "Version 3, 29 June 2007" in text
    assert "END OF TERMS AND CONDITIONS" in text and "How to Apply These Terms to Your New Programs" in text
    for key in ("repository", "homepage", "documentation", "issues"):
        value = galaxy.get(key)
        assert value is None or not re.search(r"example\.(invalid|com|org)|localhost", value), (key, value)


def test_execution_environment_renders_with_the_collection(tmp_path):
    """`ansible-builder create` renders a build context whose galaxy stage
    installs ckpt.criu from files inside the context; installing it the same way
    here gives every runtime file, and ansible-builder's introspection finds the
    collection's Python and system dependencies in it."""
    ee_file = REPO / "execution-environment.yml"
    ee = yaml.safe_load(ee_file.read_text())
    assert ee["version"] == 3
    base = ee["images"]["base_image"]["name"]
    assert re.search(r"(:[0-9][\w.-]*|@sha256:[0-9a-f]{64})$", base) and not base.endswith(":latest"), \
        "the base image is not pinned to a release tag or digest: %s" % base

    context = tmp_path / "context"
    _run([BIN / "ansible-builder", "create", "-f", ee_file, "--context", context])
    containerfile = (context / "Dockerfile").read_text()
    assert 'EE_BASE_IMAGE="%s"' % base in containerfile
    assert "COPY _build /build" in containerfile
    assert "ansible-galaxy collection install" in containerfile and "-r requirements.yml" in containerfile
    build = context / "_build"
    reqs = yaml.safe_load((build / "requirements.yml").read_text())
    (req,) = [c for c in reqs["collections"] if c["name"] == "ckpt.criu"]
    assert req["type"] == "dir" and (build / req["source"] / "galaxy.yml").is_file(), req
    shipped_dev = [p for p in (build / req["source"]).rglob("*")
                   if p.is_file() and _is_dev_only(str(p.relative_to(build / req["source"])))]
    assert not shipped_dev, shipped_dev

    # What the galaxy stage runs (WORKDIR /build), into a directory of ours.
    dest = tmp_path / "collections"
    # As in the image: none of this checkout's Ansible configuration (make test exports
    # ANSIBLE_CONFIG, whose collections_path already holds ckpt.criu as a link).
    clean_env = dict((k, v) for k, v in os.environ.items()
                     if k not in ("ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS"))
    _run([BIN / "ansible-galaxy", "collection", "install", "-r", "requirements.yml", "--collections-path", dest],
         cwd=build, env=clean_env)
    installed = dest / "ansible_collections" / "ckpt" / "criu"
    missing = [f for f in _tracked_runtime_files() + list(RUNTIME_FILES) if not (installed / f).is_file()]
    assert not missing, "runtime files missing from the EE's collection: %s" % missing
    shipped_dev = [p for p in installed.rglob("*") if p.is_file() and _is_dev_only(str(p.relative_to(installed)))]
    assert not shipped_dev, "development files in the EE's collection: %s" % shipped_dev
    assert (installed / "MANIFEST.json").is_file()

    # The builder stage's introspection of the installed collections.
    introspect = build / "scripts" / "introspect.py"
    out = yaml.safe_load(_run([sys.executable, introspect, "introspect", dest]))
    wanted_py = [line.split("#")[0].strip() for line in (REPO / "meta" / "ee-requirements.txt").read_text().splitlines()
                 if line.split("#")[0].strip()]
    assert wanted_py and all(any(p.startswith(w) for p in out["python"]) for w in wanted_py), out
    assert any(s.startswith("openssh-clients [platform:rpm]") for s in out["system"]), out


def test_awx_doc_commands_run_as_written(tmp_path):
    """docs/awx.md's `ansible-builder create` command works from the top of a
    clone exactly as written (the build itself needs a container runtime)."""
    text = (REPO / "docs" / "awx.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    commands = [line.strip() for b in blocks for line in b.splitlines() if line.strip().startswith("ansible-builder")]
    create = [c for c in commands if shlex.split(c)[1] == "create"]
    assert create, "docs/awx.md shows no ansible-builder create command"
    for cmd in commands:
        argv = shlex.split(cmd)
        assert "-f" in argv and (REPO / argv[argv.index("-f") + 1]).is_file(), cmd
    for cmd in create:
        argv = shlex.split(cmd)
        context = REPO / argv[argv.index("--context") + 1]
        assert str(context.resolve()).startswith(str(REPO / ".build")), "keep the context under .build/: %s" % cmd
        _run([BIN / argv[0]] + argv[1:], env=dict(os.environ, PATH="%s:%s" % (BIN, os.environ.get("PATH", ""))))
        assert (context / "_build" / "ckpt_criu" / "galaxy.yml").is_file()


def test_changelog_has_the_release_of_galaxy_yml():
    """The version galaxy.yml builds is a release in changelogs/changelog.yaml and
    in the generated CHANGELOG.rst; fragments can still be added (and pass lint)."""
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    changes = yaml.safe_load((REPO / "changelogs" / "changelog.yaml").read_text())
    release = changes["releases"][version]
    assert release["changes"]["release_summary"] and release["release_date"]
    assert release.get("modules") and release.get("plugins", {}).get("filter")
    rst = (REPO / "CHANGELOG.rst").read_text()
    assert "v%s\n" % version in rst and "Release Summary" in rst
    assert (REPO / "changelogs" / "fragments").is_dir()
    _run([BIN / "antsibull-changelog", "lint"])
