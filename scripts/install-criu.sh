#!/usr/bin/env bash
# Provide a CRIU that can checkpoint what this kernel runs (see the installer
# itself, which the preflight role also ships to managed nodes).
exec bash "$(dirname "$0")/../roles/preflight/files/install-criu.sh" "$@"
