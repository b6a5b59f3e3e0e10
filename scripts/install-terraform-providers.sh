#!/usr/bin/env bash
# Makes hashicorp/aws available to Terraform on this machine (idempotent), in this order:
#   1. a filesystem mirror already on the machine (searched for, not assumed: titus/cluster_providers.py
#      looks in Terraform's implicit plugin directories, /opt, /usr/local, /srv and $HOME); the tests and
#      `titus cluster` then hand it to Terraform through a generated CLI configuration;
#   2. HashiCorp's registry, when it is reachable (Terraform downloads the provider itself at init);
#   3. otherwise a build from source through the Go module proxy (scripts/build-aws-provider.sh) into
#      the cache mirror searched first (/var/cache/titus/terraform-providers). That build is long (see
#      terraform/README.md for the figure) and bounded by TITUS_AWS_PROVIDER_BUILD_TIMEOUT seconds
#      (default 2400) so that setup fails with a message instead of hanging CI.
# Environment: PYTHON [.venv/bin/python or python3], TITUS_AWS_PROVIDER_BUILD_TIMEOUT, TITUS_TF_MIRROR_SEARCH
# (extra directories to search, colon-separated).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"

if "$PYTHON" -m titus.cluster_providers; then
  echo "install-terraform-providers.sh: using the filesystem mirror above"
  exit 0
fi
if curl -sf -m 10 -o /dev/null https://registry.terraform.io/.well-known/terraform.json; then
  echo "install-terraform-providers.sh: no mirror, but registry.terraform.io is reachable: terraform init downloads hashicorp/aws"
  exit 0
fi
echo "install-terraform-providers.sh: no mirror and no registry: building hashicorp/aws from the Go module proxy" >&2
mirror="${TITUS_TF_PROVIDER_CACHE:-/var/cache/titus/terraform-providers}"
if ! TITUS_TF_MIRROR="$mirror" timeout "${TITUS_AWS_PROVIDER_BUILD_TIMEOUT:-2400}" bash scripts/build-aws-provider.sh; then
  echo "install-terraform-providers.sh: the provider build did not finish within ${TITUS_AWS_PROVIDER_BUILD_TIMEOUT:-2400} s;" \
    "rerun it (the Go build cache keeps what was compiled) or copy a mirror to $mirror" >&2
  exit 1
fi
"$PYTHON" -m titus.cluster_providers
