#!/usr/bin/env bash
# One command to run the platform: set up (idempotent), then the embedded all-in-one cluster in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/titus dev "$@"
