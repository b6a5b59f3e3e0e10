#!/usr/bin/env bash
# Builds hashicorp/terraform-provider-aws from source through the Go module proxy into a Terraform
# filesystem mirror, for machines with neither a mirror nor access to registry.terraform.io
# (scripts/install-terraform-providers.sh calls it only then, under a time limit). Measured in
# terraform/README.md: far too slow for a CI run, so CI machines carry a mirror instead.
# The module and build caches persist (TITUS_TF_BUILD_DIR) so an interrupted build resumes.
set -euo pipefail
# "latest" resolves through the proxy to a pseudo-version of the newest commit it has seen on the default branch.
REF="${1:-latest}"
VERSION="${AWS_PROVIDER_MIRROR_VERSION:-6.99.0}"
MIRROR="${TITUS_TF_MIRROR:-/var/cache/titus/terraform-providers}"
WORK="${TITUS_TF_BUILD_DIR:-/var/cache/titus/aws-provider-build}"
export GOMODCACHE="$WORK/gomodcache" GOCACHE="$WORK/gocache" GOFLAGS="-buildvcs=false -mod=mod"
mkdir -p "$WORK"
cd "$WORK"
# The module path has no /vN suffix, so releases after v1 are only reachable as commit pseudo-versions.
dir="$(go mod download -json "github.com/hashicorp/terraform-provider-aws@${REF}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
rm -rf src && cp -r "$dir" src && chmod -R u+w src
cd src
dest="$MIRROR/registry.terraform.io/hashicorp/aws/$VERSION/linux_amd64"
mkdir -p "$dest"
nice -n 19 go build ${GO_BUILD_FLAGS:-} -p "${GO_BUILD_P:-2}" -o "$dest/terraform-provider-aws_v$VERSION" .
echo "built $dest/terraform-provider-aws_v$VERSION"
