#!/usr/bin/env bash
# Installs what Titus needs on a fresh Debian 12 machine (run as root). Idempotent.
#
#   scripts/setup.sh          # the platform: Python venv in .venv with titus installed
#   scripts/setup.sh --test   # also everything the test suite uses: Debian packages, test extras (pinned tool
#                             # versions in scripts/test-constraints.txt), pymesos, checkov, Ansible, Terraform
#
# The servers the tests talk to (dockerd, registry, ZooKeeper, Cassandra) are installed and started by their
# scripts under scripts/services/, which scripts/test.sh calls. `bash scripts/fresh-check.sh` proves on a bare
# Debian 12 container that together they leave nothing out.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="${TITUS_VENV:-$ROOT/.venv}"
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1

# Debian packages, by the command or file that shows they are there (the package name alone would miss a
# tool that a developer installed some other way). One "cmd:COMMAND:PACKAGE", "file:PATH:PACKAGE" or
# "py:MODULE:PACKAGE" per line: add yours to APT_TEST (the test suite's) or APT_BASE (the platform's).
APT_BASE=(
  cmd:python3:python3
  py:venv:python3-venv              # python3 -m venv (Debian splits ensurepip out)
  cmd:curl:curl                     # README's tour shows the raw HTTP API with it
  cmd:runc:runc                     # the OCI runtime (the agent's default) runs containers with it
  cmd:skopeo:skopeo                 # ... and pulls images with it (checked for minimum versions below)
  cmd:umoci:umoci                   # scripts/images/busybox.sh packs the examples' image without dockerd
)
APT_TEST=(
  cmd:git:git                       # how the project is fetched (README), and what fresh-check clones with
  cmd:ip:iproute2                   # network namespaces and veths (tests/e2e fault tests)
  cmd:iptables:iptables             # partitions inside a namespace (tests/e2e)
  cmd:nsenter:util-linux            # run an agent in a namespace's network
  cmd:pgrep:procps
  cmd:vagrant:vagrant               # tests/ansible/test_vagrant.py validates the Vagrantfile
  cmd:debootstrap:debootstrap       # scripts/ansible-test-image.sh builds the Ansible test hosts' image
  file:/etc/ssl/certs/ca-certificates.crt:ca-certificates   # HTTPS to the package registries
  cmd:gcc:gcc                       # the attack suite builds its static binary (tests/security/attack.c)
  file:/usr/include/stdio.h:libc6-dev
)

missing_packages() {
  local entry kind probe package
  for entry in "$@"; do
    kind="${entry%%:*}"; probe="${entry#*:}"; package="${probe##*:}"; probe="${probe%:*}"
    case "$kind" in
      cmd) command -v "$probe" >/dev/null 2>&1 || echo "$package" ;;
      py) python3 -c "import $probe, ensurepip" >/dev/null 2>&1 || echo "$package" ;;
      file) [ -e "$probe" ] || echo "$package" ;;
    esac
  done
}

apt_install() {
  [ "$#" -gt 0 ] || return 0
  # The lock timeout: on a shared machine another apt-get may be running; wait for it instead of failing.
  local opts=(-o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
  echo "setup: apt-get install $*"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get "${opts[@]}" install "$@" >/dev/null
}

wanted=("${APT_BASE[@]}")
[ "${1:-}" = "--test" ] && wanted+=("${APT_TEST[@]}")
mapfile -t need_apt < <(missing_packages "${wanted[@]}")
apt_install "${need_apt[@]}"

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
bash scripts/install-htmx.sh       # the web console's htmx (npm registry tarball, pinned, not committed)
if [ "${1:-}" = "--test" ]; then
  "$VENV/bin/pip" install -q -c scripts/test-constraints.txt -e ".[test,docker,aws,zookeeper,cassandra,cluster]"
  bash scripts/install-ui-test-deps.sh   # chromium, Node, Playwright (tests/ui)
  PYTHON="$VENV/bin/python" bash scripts/install-pymesos.sh
  bash scripts/install-fault-test-deps.sh
  bash scripts/install-checkov.sh
  bash scripts/install-ansible.sh
  bash scripts/install-terraform.sh
  PYTHON="$VENV/bin/python" bash scripts/install-terraform-providers.sh
else
  "$VENV/bin/pip" install -q -e .
fi
echo "setup: titus installed in $VENV ($("$VENV/bin/titus" --version))"
