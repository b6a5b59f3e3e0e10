#!/usr/bin/env bash
# Makes hashicorp/aws available to Terraform on this machine (idempotent), in this order:
#   1. a filesystem mirror already on the machine (searched for, not assumed: titus/cluster_providers.py
#      looks in Terraform's implicit plugin directories, /opt, /usr/local, /srv and $HOME); the tests and
#      `titus cluster` then hand it to Terraform through a generated CLI configuration;
#   2. only when asked (TITUS_TF_PROVIDER_SOURCE=registry): `terraform providers mirror` fills the cache
#      mirror searched first (/var/cache/titus/terraform-providers) from HashiCorp's registry;
#   3. only when asked (TITUS_TF_PROVIDER_SOURCE=build): a build from source through the Go module proxy
#      (scripts/build-aws-provider.sh) into that cache mirror. That build is long (see terraform/README.md for
#      the figure) and bounded by TITUS_AWS_PROVIDER_BUILD_TIMEOUT seconds (default 2400).
# By default nothing outside the machine is contacted: with no mirror it says so and the Terraform bring-up
# tests fail with the same advice (the suite never reaches beyond the package registries).
# Environment: PYTHON [.venv/bin/python or python3], TITUS_AWS_PROVIDER_BUILD_TIMEOUT, TITUS_TF_MIRROR_SEARCH
# (extra directories to search, colon-separated).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"

if "$PYTHON" -m titus.cluster_providers; then
  echo "install-terraform-providers.sh: using the filesystem mirror above"
  exit 0
fi
mirror="${TITUS_TF_PROVIDER_CACHE:-/var/cache/titus/terraform-providers}"
case "${TITUS_TF_PROVIDER_SOURCE:-none}" in
  registry)
    # Only when asked: the test suite itself never contacts anything but the package registries.
    tf="$(bash scripts/install-terraform.sh --print)"
    "$tf" -chdir=terraform/examples/complete providers mirror -platform=linux_amd64 "$mirror"
    "$PYTHON" -m titus.cluster_providers
    exit 0 ;;
  build) ;;
  *)
    echo "install-terraform-providers.sh: no filesystem mirror of hashicorp/aws found; the Terraform bring-up" \
      "tests will fail until there is one. Fill $mirror with TITUS_TF_PROVIDER_SOURCE=registry (HashiCorp's" \
      "registry) or TITUS_TF_PROVIDER_SOURCE=build (the Go module proxy; long: see terraform/README.md)." >&2
    exit 0 ;;
esac
echo "install-terraform-providers.sh: no mirror and no registry: building hashicorp/aws from the Go module proxy" >&2
if ! TITUS_TF_MIRROR="$mirror" timeout "${TITUS_AWS_PROVIDER_BUILD_TIMEOUT:-2400}" bash scripts/build-aws-provider.sh; then
  echo "install-terraform-providers.sh: the provider build did not finish within ${TITUS_AWS_PROVIDER_BUILD_TIMEOUT:-2400} s;" \
    "rerun it (the Go build cache keeps what was compiled) or copy a mirror to $mirror" >&2
  exit 1
fi
"$PYTHON" -m titus.cluster_providers
