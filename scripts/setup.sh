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
# The OCI runtime (the agent's default): runc runs containers, skopeo pulls images. Debian 12's own
# builds (runc 1.1.5, skopeo 1.9.3); not pinned to an exact revision, because security updates replace
# them in the archive, but checked for the minimum versions below after the install.
for cmd_pkg in runc:runc skopeo:skopeo; do
  command -v "${cmd_pkg%%:*}" >/dev/null || need_apt+=("${cmd_pkg#*:}")
done
if [ "${1:-}" = "--test" ]; then
  # gcc + libc6-dev: the attack suite builds its static attack binary (tests/security/attack.c)
  for cmd_pkg in ip:iproute2 iptables:iptables bash:bash pgrep:procps vagrant:vagrant debootstrap:debootstrap \
      gcc:gcc; do
    command -v "${cmd_pkg%%:*}" >/dev/null || need_apt+=("${cmd_pkg#*:}")
  done
  dpkg -s libc6-dev >/dev/null 2>&1 || need_apt+=(libc6-dev)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

check_min() {  # name, installed version, minimum
  if ! printf '%s\n%s\n' "$3" "$2" | sort -V -C; then
    echo "setup: $1 $2 is older than the required $3" >&2
    exit 1
  fi
}
check_min runc "$(runc --version | awk 'NR==1{print $3}')" 1.1.0
check_min skopeo "$(skopeo --version | awk '{print $3}')" 1.9.0

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
else
  "$VENV/bin/pip" install -q -e .
fi
echo "setup: titus installed in $VENV ($("$VENV/bin/titus" --version))"
