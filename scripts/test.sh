#!/usr/bin/env bash
# One command to run the tests: set up (idempotent), start every server the tests use, run the whole suite.
#
#   scripts/test.sh [pytest args...]
# Servers started here and left running for reuse: dockerd, a registry on 127.0.0.1:5000 with a busybox image
# built offline, ZooKeeper on 127.0.0.1:2181 and Cassandra on 127.0.0.1:9042 (when their scripts exist).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
bash scripts/services/dockerd.sh install
bash scripts/services/dockerd.sh start
bash scripts/services/registry.sh install
bash scripts/services/registry.sh start
bash scripts/images/busybox.sh
export PYTHON="$PWD/.venv/bin/python"   # cassandra.sh checks CQL readiness with this interpreter's driver
for service in zookeeper cassandra; do
  if [ -f "scripts/services/$service.sh" ]; then
    bash "scripts/services/$service.sh" install
    bash "scripts/services/$service.sh" start
  fi
done
# The project's venv first on PATH: the tests and the programs they start (titus, moto_server, ...) must run
# the versions setup installed, not whatever another install put earlier on PATH.
export PATH="$PWD/.venv/bin:$PATH"
# --durations: the slowest tests in every run's output, to keep the suite inside its time budget.
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=30 "$@"
