#!/usr/bin/env bash
# Installs the Ansible toolchain the ansible/ tests and playbooks need into a virtualenv.
#
#   scripts/install-ansible.sh            # creates /opt/titus-tools/ansible (idempotent)
#
# Ansible Galaxy is not reachable from CI, so collections come from PyPI: the `ansible` package bundles
# amazon.aws (aws_ec2 inventory), community.docker (the docker connection the tests use), ansible.posix
# and community.general. ansible-lint lints the roles offline.
# Environment: TITUS_ANSIBLE_VENV [/opt/titus-tools/ansible], PYTHON [python3]
set -euo pipefail

VENV="${TITUS_ANSIBLE_VENV:-/opt/titus-tools/ansible}"
PYTHON="${PYTHON:-python3}"
# ansible 10.x bundles ansible-core 2.17 (Python 3.10+ controller, Python 3.7+ on managed hosts).
SPECS=("ansible>=10.7,<11" "ansible-lint>=24.12,<26" "requests>=2.31")

if [ -x "$VENV/bin/ansible-playbook" ] && [ -x "$VENV/bin/ansible-lint" ] \
    && "$VENV/bin/python" -m pip show ansible >/dev/null 2>&1; then
  echo "install-ansible.sh: $("$VENV/bin/ansible-playbook" --version | head -n 1) already in $VENV"
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "${SPECS[@]}"
echo "install-ansible.sh: installed $("$VENV/bin/ansible-playbook" --version | head -n 1) and" \
  "$("$VENV/bin/ansible-lint" --version 2>/dev/null | head -n 1) in $VENV"
