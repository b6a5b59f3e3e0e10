#!/usr/bin/env bash
# Builds the Debian 12 image the Ansible roles are applied to in tests, with debootstrap, and imports it
# into the local dockerd as titus-ansible-host:bookworm. The containers started from it boot systemd as
# PID 1 (run them with --stop-signal SIGRTMIN+3), so the roles manage services exactly as on a VM.
#
#   scripts/ansible-test-image.sh build    # no-op when the image exists (delete it to rebuild)
#   scripts/ansible-test-image.sh remove
#
# Only the base system, systemd and Python (which Ansible needs on a managed host) are baked in; everything
# the roles install they install for real on every run. The image can always be rebuilt from the Debian
# mirror in apt's sources, so CI may cache it.
# Environment: TITUS_ANSIBLE_IMAGE [titus-ansible-host:bookworm]  DEBIAN_MIRROR [http://deb.debian.org/debian]
set -euo pipefail

IMAGE="${TITUS_ANSIBLE_IMAGE:-titus-ansible-host:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,iproute2,procps,gnupg

die() { echo "ansible-test-image.sh: $*" >&2; exit 1; }

build() {
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "ansible-test-image.sh: $IMAGE already present"
    return
  fi
  command -v debootstrap >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q debootstrap || { apt-get update -q && apt-get install -y -q debootstrap; }
  }
  ROOTFS="$(mktemp -d /var/tmp/titus-rootfs.XXXXXX)"
  trap 'rm -rf "$ROOTFS"' EXIT
  local root="$ROOTFS"
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" >/dev/null \
    || die "debootstrap failed (see $root/debootstrap/debootstrap.log)"
  # A container has no consoles, udev or time sync to manage; those units would only fail at boot.
  chroot "$root" systemctl mask getty.target systemd-udevd.service systemd-timesyncd.service \
    systemd-logind.service console-getty.service >/dev/null 2>&1 || true
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
  : >"$root/etc/machine-id"
  # mktemp -d made the root 0700, and the tarball records it: under Docker's vfs storage (a nested dockerd's)
  # the container then really has a 0700 /, non-root dbus hangs and systemd never finishes booting.
  chmod 0755 "$root"
  tar -C "$root" -c . | docker import \
    -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
    - "$IMAGE" >/dev/null
  echo "ansible-test-image.sh: built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
}

case "${1:-}" in
  build) build ;;
  remove) docker image rm "$IMAGE" ;;
  *) echo "usage: $0 build | remove" >&2; exit 2 ;;
esac
