#!/usr/bin/env bash
# Experiment: build hashicorp/terraform-provider-aws from source through the Go module proxy into a
# Terraform filesystem mirror, so `terraform init/validate` could run without registry.terraform.io.
# Measured here (see terraform/README.md): too slow for CI, so CI does not call this script.
set -euo pipefail
REF="${1:-main}"
VERSION="${AWS_PROVIDER_MIRROR_VERSION:-6.99.0}"
MIRROR="${TITUS_TF_MIRROR:-/opt/titus-tools/terraform-mirror}"
WORK="${TITUS_TF_BUILD_DIR:-/tmp/titus-aws-provider-build}"
export GOMODCACHE="$WORK/gomodcache" GOCACHE="$WORK/gocache" GOFLAGS="-buildvcs=false -mod=mod"
mkdir -p "$WORK"
cd "$WORK"
# The module path has no /vN suffix, so releases after v1 are only reachable as commit pseudo-versions.
dir="$(go mod download -json "github.com/hashicorp/terraform-provider-aws@${REF}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
rm -rf src && cp -r "$dir" src && chmod -R u+w src
cd src
dest="$MIRROR/registry.terraform.io/hashicorp/aws/$VERSION/linux_amd64"
mkdir -p "$dest"
nice -n 19 go build -p "${GO_BUILD_P:-1}" -o "$dest/terraform-provider-aws_v$VERSION" .
echo "built $dest/terraform-provider-aws_v$VERSION"
