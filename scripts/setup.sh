#!/usr/bin/env bash
# Installs what Titus needs on a fresh Debian 12 machine (run as root). Idempotent.
#
#   scripts/setup.sh          # the platform: Python venv in .venv with titus installed
#   scripts/setup.sh --test   # also everything the test suite uses (Debian packages, test extras, checkov)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="${TITUS_VENV:-$ROOT/.venv}"
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c "import venv, ensurepip" 2>/dev/null || need_apt+=(python3-venv)
if [ "${1:-}" = "--test" ]; then
  for cmd_pkg in ip:iproute2 iptables:iptables bash:bash pgrep:procps vagrant:vagrant debootstrap:debootstrap; do
    command -v "${cmd_pkg%%:*}" >/dev/null || need_apt+=("${cmd_pkg#*:}")
  done
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
if [ "${1:-}" = "--test" ]; then
  "$VENV/bin/pip" install -q -e ".[test,docker,aws,zookeeper,cassandra,cluster]"
  PYTHON="$VENV/bin/python" bash scripts/install-pymesos.sh
  bash scripts/install-fault-test-deps.sh
  bash scripts/install-checkov.sh
  bash scripts/install-ansible.sh
  PYTHON="$VENV/bin/python" bash scripts/install-terraform-providers.sh
else
  "$VENV/bin/pip" install -q -e .
fi
echo "setup: titus installed in $VENV ($("$VENV/bin/titus" --version))"
