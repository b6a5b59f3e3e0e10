#!/usr/bin/env bash
# Builds the pinned Terraform CLI from source through the Go module proxy and installs it under /opt.
#
#   scripts/install-terraform.sh          # idempotent: a no-op when the pinned binary is already there
#   scripts/install-terraform.sh --print  # prints the path of the pinned binary (what the tests run)
#
# No Terraform release binary can be downloaded here and Debian 12 packages none, but Terraform is a Go
# module (github.com/hashicorp/terraform, tags v1.x) and the Go module proxy serves it. Debian 12's Go is
# 1.19, too old for Terraform 1.11 (go.mod says 1.23.3) and too old to switch toolchains by itself
# (GOTOOLCHAIN came with Go 1.21). So: any `go` (Debian's golang-go when none is on PATH) downloads the Go
# distribution that Terraform's .go-version names, which the proxy serves as the module
# golang.org/toolchain (exactly what GOTOOLCHAIN does in newer Go), and that toolchain builds Terraform
# the way its BUILDING.md says (CGO off, version.dev=no so it reports 1.11.4, not 1.11.4-dev).
# It is a long build (see README "Tests and benchmarks" for the time measured on the 2-core machine); the
# result is cached under /opt, so only a fresh machine pays it.
#
# Why Terraform and not OpenTofu: the project documents and `titus cluster` drives `terraform`; OpenTofu
# (github.com/opentofu/opentofu) would be built from the proxy the same way (it needs Go 1.24); a codebase
# of the same size, its build time was not measured.
# `go install terraform@v1.11.4` is refused (its go.mod has replace directives), hence the build below.
# Environment: TITUS_TERRAFORM_DIR [/opt/titus-tools/terraform-<version>]
#   TITUS_GO_CACHE_DIR: keep the Go module and build caches there for the next build (default: a temporary
#   directory, removed afterwards; scripts/fresh-check.sh sets it to a volume so that its reruns are quicker)
set -euo pipefail

TERRAFORM_VERSION=1.11.4
GO_TOOLCHAIN_VERSION=1.23.3   # Terraform 1.11.4's .go-version
# The commit tagged v1.11.4 (tag time 2025-04-09T13:10:05Z) as a pseudo-version, for its in-repo modules.
TERRAFORM_COMMIT_PSEUDO=v0.0.0-20250409131005-35645b8fca68
DEST="${TITUS_TERRAFORM_DIR:-/opt/titus-tools/terraform-${TERRAFORM_VERSION}}"
BIN="$DEST/bin/terraform"
log() { echo "install-terraform.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ "${1:-}" = "--print" ]; then
  echo "$BIN"
  exit 0
fi
if [ -x "$BIN" ] && "$BIN" version 2>/dev/null | head -n 1 | grep -qx "Terraform v${TERRAFORM_VERSION}"; then
  log "Terraform ${TERRAFORM_VERSION} already in $DEST"
  exit 0
fi

case "$(uname -m)" in
  x86_64) goarch=amd64 ;;
  aarch64) goarch=arm64 ;;
  *) die "unsupported machine $(uname -m)" ;;
esac

if ! command -v go >/dev/null 2>&1; then
  log "installing Debian's golang-go to bootstrap the download"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends golang-go ca-certificates \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends golang-go ca-certificates; }
fi

work="$(mktemp -d /var/tmp/titus-terraform-build.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cache="${TITUS_GO_CACHE_DIR:-$work}"
export GOMODCACHE="$cache/mod" GOCACHE="$cache/build" GOPATH="$work/gopath" GOFLAGS=-modcacherw GOTOOLCHAIN=local
export GOPROXY="${GOPROXY:-https://proxy.golang.org}" GONOSUMDB="" GOSUMDB="${GOSUMDB:-sum.golang.org}"
cd "$work"

toolchain_mod="golang.org/toolchain@v0.0.1-go${GO_TOOLCHAIN_VERSION}.linux-${goarch}"
log "downloading Go ${GO_TOOLCHAIN_VERSION} ($toolchain_mod) with $(go version)"
go mod download -json "$toolchain_mod" >toolchain.json || die "go mod download $toolchain_mod failed"
toolchain_dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' toolchain.json)"
[ -d "$toolchain_dir" ] || die "no Dir in the download of $toolchain_mod"
# A module zip records no file modes: make the toolchain's programs executable, as the go command does
# when it switches toolchains itself.
goroot="$work/goroot"
cp -r "$toolchain_dir" "$goroot"
chmod -R u+w "$goroot"
find "$goroot/bin" "$goroot/pkg/tool" -type f -exec chmod 0755 {} +
gobin="$goroot/bin/go"
"$gobin" version | grep -q "go${GO_TOOLCHAIN_VERSION} " || die "downloaded toolchain is not go${GO_TOOLCHAIN_VERSION}"

# `go install terraform@version` refuses a module whose go.mod has replace directives, so build it as the main
# module from its source zip. Its go.mod points nine in-repo modules (remote-state backends, internal/legacy)
# at ./internal/..., directories a module zip leaves out because each has its own go.mod; the proxy serves
# them as modules at the release commit, so those replaces point there instead. Nothing else changes.
log "fetching github.com/hashicorp/terraform@v${TERRAFORM_VERSION} source"
"$gobin" mod download -json "github.com/hashicorp/terraform@v${TERRAFORM_VERSION}" >terraform.json \
  || die "go mod download of Terraform failed"
src_dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' terraform.json)"
cp -r "$src_dir" "$work/src"
chmod -R u+w "$work/src"
cd "$work/src"
local_replaces="$(sed -n 's:^replace \(github.com/hashicorp/terraform/[^ ]*\) => \./.*:\1:p' go.mod)"
[ "$(echo "$local_replaces" | wc -l)" -eq 9 ] || die "expected 9 local replace directives in Terraform's go.mod"
for module in $local_replaces; do
  GOROOT="$goroot" "$gobin" mod edit -replace "${module}=${module}@${TERRAFORM_COMMIT_PSEUDO}"
done
log "building Terraform ${TERRAFORM_VERSION} with $("$gobin" version)"
mkdir -p "$DEST.partial/bin"
GOROOT="$goroot" CGO_ENABLED=0 GOFLAGS="-modcacherw -mod=mod" nice -n 10 "$gobin" build -trimpath \
  -ldflags "-w -s -X github.com/hashicorp/terraform/version.dev=no" -o "$DEST.partial/bin/terraform" . \
  || die "go build of Terraform failed"
"$DEST.partial/bin/terraform" version | head -n 1 | grep -qx "Terraform v${TERRAFORM_VERSION}" \
  || die "built binary does not report Terraform v${TERRAFORM_VERSION}"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
log "installed $("$BIN" version | head -n 1) at $BIN"
