"""Stand-in for the get-pip.py bootstrap script that ansible-test downloads.

ansible-test creates a virtualenv per sanity test and bootstraps pip into it
with a script it fetches from its own CI file host, which this project's
machines cannot reach. This script does the same from what is here: pip from
the interpreter's bundled ``ensurepip`` wheel, then ``pip install`` of the
requested packages (e.g. ``pip==24.2``) from the package index.

scripts/setup.sh copies it to ~/.ansible/test/cache/get_pip_<version>.py.
"""
import subprocess
import sys


def main():
    args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
    # In a child process: ensurepip sets PIP_CONFIG_FILE=/dev/null in its own
    # environment, which would hide the machine's pip configuration (index,
    # certificates) from the install below.
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
    subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)


if __name__ == "__main__":
    main()
