#!/usr/bin/env bash
# Runs README's test command (`bash scripts/test.sh`) on a bare Debian 12 machine, to prove that the
# project's own scripts install everything its tests use: what a new user or a new CI machine gets.
#
#   scripts/fresh-check.sh [pytest args...]     # e.g. scripts/fresh-check.sh tests/capacity
#
# The "machine" is a privileged container of a Debian 12 minbase image built here with debootstrap (no
# image registry), holding nothing but git. The repository goes in as a fresh `git clone` of the committed
# HEAD of the repository this script sits in (uncommitted changes are not tested). The script prints the
# closing line of pytest and exits with pytest's status (the test command's status).
#
# Host needs: dockerd and debootstrap, nothing else (debootstrap is apt-get installed when missing).
# The image is built once and cached as $TITUS_FRESH_IMAGE (keyed by the recipe below); the container
# and its volumes are removed at the end, so every run starts from the same bare image.
#
# What the container gets, and why:
#   every capability        the suite runs a nested dockerd, creates cgroups, network namespaces, veths and
#    but CAP_SYS_RESOURCE   iptables rules, and mounts overlays. Not --privileged: Docker 20.10 then asks for every
#                           capability it knows, and this host's bounding set lacks CAP_SYS_RESOURCE, so runc
#                           fails ("unable to apply caps"). Instead: --cap-add ALL --cap-drop SYS_RESOURCE, no
#                           seccomp/AppArmor filter, unmasked /proc and /sys paths, every device allowed by the
#                           device cgroup; /sys and the cgroup hierarchies, which Docker mounts read-only for an
#                           unprivileged container, are made writable inside it before the run (as on a machine).
#   --cgroupns private      its /sys/fs/cgroup/<controller> (cgroup v1 here) is its own subtree, so the
#                           cgroups its tests make cannot meet the host's.
#   --init                  a real PID 1 that reaps orphans: the process runtime's supervisors outlive the
#                           agents the tests kill, and an unreaped zombie looks alive.
#   -v /var/lib/docker      a volume, so the nested dockerd stores images on the host's filesystem (overlay2)
#                           instead of overlay-on-overlay, which the kernel refuses (it would fall back to vfs).
#   -v /tmp                 a volume too: a machine's /tmp is a disk or tmpfs, never overlayfs (which refuses
#                           the whiteout devices image layers carry, so the agents' image stores under the
#                           tests' tmp_path would fail where no real agent does)
#   -v /lib/modules:ro      the host kernel's modules, in case iptables or the bridge driver loads one.
#   network                 a bridge network created per run, for the installs (apt, PyPI, Maven Central, the Go
#                           module proxy). Every server the suite starts listens on 127.0.0.1 or inside its own
#                           namespaces; in addition the container drops every inbound packet on its external
#                           interface that is not a reply (see below), so nothing in it is reachable from outside.
#   a provider mirror       the host's filesystem mirror of hashicorp/aws, read-only, when it has one: the
#                           stand-in for HashiCorp's registry, unreachable here (see the comment below).
#   download caches         named volumes titus-fresh-cache-* keep what the run downloaded (pip wheels,
#                           Maven's repository, Go modules and build cache) for the next run: every
#                           install step still runs, only its downloads are quicker. TITUS_FRESH_CACHE=0 (or
#                           `docker volume rm` them) for a run that fetches everything again.
# Environment: TITUS_FRESH_IMAGE [titus-fresh-debian:bookworm-<recipe hash>]  DEBIAN_MIRROR
#   [http://deb.debian.org/debian]  TITUS_FRESH_KEEP=1 keeps the container for a look after the run.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(git -C "$HERE" rev-parse --show-toplevel)"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
# The bare machine: Debian's minimal base plus git (to get the project). Everything else is the project's job.
INCLUDE=git,ca-certificates
# The network's own certificate authorities (a TLS-inspecting egress proxy signs with one): a machine on this
# network trusts them, so the bare machine does too. They are the host's, not the project's.
LOCAL_CAS=(/usr/local/share/ca-certificates/*.crt)
[ -e "${LOCAL_CAS[0]}" ] || LOCAL_CAS=()
recipe_hash="$( { printf '%s\n' "$SUITE" "$MIRROR" "$INCLUDE" "minbase" "chmod755"
  [ "${#LOCAL_CAS[@]}" -eq 0 ] || cat "${LOCAL_CAS[@]}"; } | sha256sum | cut -c1-12)"
# ...and the variables that point its clients at that trust store (pip ignores the system one otherwise),
# as every machine of this workplace, CI's among them, has them. Passed on when the host has them.
PASS_ENV=(PIP_CERT REQUESTS_CA_BUNDLE SSL_CERT_FILE SSL_CERT_DIR CURL_CA_BUNDLE GIT_SSL_CAINFO AWS_CA_BUNDLE
  NODE_EXTRA_CA_CERTS PIP_DEFAULT_TIMEOUT HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy)
IMAGE="${TITUS_FRESH_IMAGE:-titus-fresh-debian:${SUITE}-${recipe_hash}}"
log() { echo "fresh-check.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

docker info >/dev/null 2>&1 || die "dockerd does not answer (scripts/services/dockerd.sh start)"
commit="$(git -C "$REPO" rev-parse HEAD)"
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]; then
  log "note: uncommitted changes are not tested; testing HEAD $commit"
fi

build_image() {
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image $IMAGE cached"
    return
  fi
  command -v debootstrap >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q debootstrap || { apt-get update -q && apt-get install -y -q debootstrap; }
  }
  local root
  root="$(mktemp -d /var/tmp/titus-fresh-rootfs.XXXXXX)"
  # shellcheck disable=SC2064
  trap "rm -rf '$root'" RETURN
  log "debootstrap $SUITE (minbase + $INCLUDE) from $MIRROR"
  debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$root" "$MIRROR" >/dev/null \
    || die "debootstrap failed (see $root/debootstrap/debootstrap.log)"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
  if [ "${#LOCAL_CAS[@]}" -gt 0 ]; then
    cp "${LOCAL_CAS[@]}" "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
  fi
  : >"$root/etc/machine-id"
  # mktemp -d made the root 0700; the image's / must be 0755 like any machine's, or non-root daemons fail.
  chmod 0755 "$root"
  tar -C "$root" --numeric-owner -c . | docker import -c 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
  log "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
}

build_image

name="titus-fresh-$(date +%s)-$$"
network="$name-net"
cleanup() {
  if [ "${TITUS_FRESH_KEEP:-0}" = 1 ]; then
    log "kept container $name (docker rm -fv $name; docker network rm $network)"
    return
  fi
  docker rm -fv "$name" >/dev/null 2>&1 || true
  docker network rm "$network" >/dev/null 2>&1 || true
}
trap cleanup EXIT

cache_args=()
if [ "${TITUS_FRESH_CACHE:-1}" = 1 ]; then
  # No apt archive cache: apt locks that directory, so two runs at once (other branches' fresh-checks) would
  # fail on each other's lock. pip, Maven and Go caches are safe to share between concurrent runs.
  cache_args=(-v titus-fresh-cache-pip:/root/.cache/pip
    -v titus-fresh-cache-m2:/root/.m2 -v titus-fresh-cache-go:/var/cache/titus-go -e TITUS_GO_CACHE_DIR=/var/cache/titus-go)
fi
# The one stand-in for the outside world: HashiCorp's registry, which a real fresh machine reaches at
# `terraform init` and this network does not. A filesystem mirror of hashicorp/aws on the host (these
# machines carry one) is lent read-only, where titus/cluster_providers.py finds it as it would any mirror;
# without one the Terraform bring-up tests fail inside, saying how to get the provider. Nothing else of the
# host's goes in. TITUS_FRESH_PROVIDER_MIRROR=none lends nothing.
provider_args=()
host_mirror="${TITUS_FRESH_PROVIDER_MIRROR:-}"
if [ -z "$host_mirror" ]; then
  # find exits 1 for a search root that does not exist (/root/.terraform.d on most machines): not an error here.
  found="$(find /opt /usr/local /srv /root/.terraform.d -maxdepth 6 -type d -path '*/registry.terraform.io/hashicorp/aws' 2>/dev/null | head -n 1 || true)"
  [ -n "$found" ] && host_mirror="${found%/registry.terraform.io/hashicorp/aws}"
fi
if [ -n "$host_mirror" ] && [ "$host_mirror" != none ]; then
  provider_args=(-v "$host_mirror:/opt/host-provider-mirror:ro")
  log "lending the host's Terraform provider mirror $host_mirror (read-only) as the registry stand-in"
fi
docker network create "$network" >/dev/null
docker run -d --name "$name" --hostname titus-fresh --cgroupns private --init \
  --cap-add ALL --cap-drop SYS_RESOURCE --device-cgroup-rule 'a *:* rwm' \
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt systempaths=unconfined \
  --network "$network" \
  -v /var/lib/docker -v /tmp -v /lib/modules:/lib/modules:ro "${cache_args[@]}" "${provider_args[@]}" \
  -v "$REPO/.git:/src.git:ro" \
  "$IMAGE" sleep infinity >/dev/null
log "container $name started from $IMAGE; testing $commit"

# Nothing in the container is reachable from outside it: in its network namespace, every packet that comes
# in on its one external interface (eth0) and is not part of a connection the container opened itself (its
# downloads) is dropped, before routing, so this covers the container's own listeners and the nested
# dockerd's containers alike. Set from the host (iptables and nsenter come with docker.io and util-linux),
# so the bare image gets no iptables that the project's setup should have installed itself.
pid="$(docker inspect -f '{{.State.Pid}}' "$name")"
for tables in iptables ip6tables; do
  nsenter -t "$pid" -n "$tables" -w -t mangle -A PREROUTING -i eth0 \
    -m conntrack ! --ctstate ESTABLISHED,RELATED -j DROP \
    || { [ "$tables" = ip6tables ] || die "could not set the inbound filter in $name"; }
done

# Writable /sys and cgroup hierarchies, as a machine has them: fresh mounts of each cgroup v1 hierarchy (or of
# the v2 one) over Docker's read-only ones; in the container's cgroup namespace each shows its own subtree.
docker exec "$name" bash -euo pipefail -c '
  mount -o remount,rw /sys
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    umount /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup
  else
    for dir in /sys/fs/cgroup/*/; do
      [ -L "${dir%/}" ] && continue  # cpu -> cpu,cpuacct and the like: the real directory is mounted
      hierarchy="$(basename "$dir")"
      options="$hierarchy"
      [ "$hierarchy" = systemd ] && options=none,name=systemd
      [ "$hierarchy" = unified ] && { umount "$dir"; mount -t cgroup2 cgroup2 "$dir"; continue; }
      umount "$dir" && mount -t cgroup -o "$options" cgroup "$dir"
    done
  fi' || die "could not make /sys and the cgroup hierarchies writable in $name"

pytest_args="$(printf ' %q' "$@")"
env_args=()
for variable in "${PASS_ENV[@]}"; do
  [ -n "${!variable:-}" ] && env_args+=(-e "$variable=${!variable}")
done

set +e
docker exec "${env_args[@]}" "$name" bash -euo pipefail -c "
  git config --global --add safe.directory /src.git
  git clone -q --no-local /src.git /root/titus
  cd /root/titus
  git checkout -q --detach $commit
  echo \"fresh-check: testing \$(git log -1 --format='%h %s')\"
  bash scripts/test.sh${pytest_args}
" </dev/null 2>&1 | tee "/var/tmp/$name.log"
status=${PIPESTATUS[0]}
set -e
closing="$(grep -E '^(=+ )?[0-9]+ (passed|failed|error)|^=+ .*(passed|failed|error|no tests ran).* =+$' \
  "/var/tmp/$name.log" | tail -n 1)"
log "log: /var/tmp/$name.log"
log "closing line: ${closing:-<none: the run ended before pytest did>}"
log "exit status: $status"
exit "$status"
