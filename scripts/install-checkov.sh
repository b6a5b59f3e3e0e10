#!/usr/bin/env bash
# Installs checkov into its own virtualenv: it pins many libraries (boto3, networkx, pydantic ...) that
# must not change the versions the project itself runs with. tests/terraform/test_checkov.py looks here.
set -euo pipefail
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
VENV="${TITUS_CHECKOV_VENV:-/opt/titus-tools/checkov}"
if [ -x "$VENV/bin/checkov" ] && "$VENV/bin/checkov" --version 2>/dev/null | grep -qx "$CHECKOV_VERSION"; then
  echo "checkov $CHECKOV_VERSION already in $VENV"
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "checkov==$CHECKOV_VERSION"
"$VENV/bin/checkov" --version
