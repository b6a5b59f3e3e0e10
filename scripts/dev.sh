#!/usr/bin/env bash
# One command to run the platform: set up (idempotent), then the embedded all-in-one cluster in the foreground.
#
# Tasks run as containers from their images (the OCI runtime), so the examples' image must be somewhere to
# pull from: a local registry on 127.0.0.1:5000 (Debian's docker-registry) with a busybox image built offline
# (no Docker Hub, no dockerd needed) is started first, and left running for the next start.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services/registry.sh install
bash scripts/services/registry.sh start
bash scripts/images/busybox.sh
exec .venv/bin/titus dev "$@"
