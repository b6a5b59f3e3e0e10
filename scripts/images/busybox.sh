#!/usr/bin/env bash
# Build a busybox image offline from Debian's busybox-static and push it to the local registry.
#
#   scripts/images/busybox.sh            # build (if the rootfs changed) and push (if the registry lacks it)
#
# With dockerd (the test suite): `docker import` + `docker push`, so the Docker runtime's tests find it
# locally too. Without dockerd (`titus dev` on a host that runs tasks under runc only): umoci packs the same
# rootfs into an OCI layout and skopeo copies it to the registry, unless the registry already has the tag.
#
# No Docker Hub access is needed: the rootfs is /bin/busybox plus one symlink per applet, a minimal
# /etc/passwd and /etc/group, and the image is made with `docker import`. The rootfs tarball is built
# reproducibly (sorted, fixed mtime and owners), its sha256 is stored as a label, and a rerun with the same
# busybox finds that label and the registry's manifest and does nothing.
# Environment:
#   TITUS_BUSYBOX_IMAGE   target reference (default 127.0.0.1:5000/titus/busybox:latest)
#   TITUS_DOCKER          docker client to use (default: docker on PATH, else /usr/bin/docker)
set -euo pipefail

IMAGE="${TITUS_BUSYBOX_IMAGE:-127.0.0.1:5000/titus/busybox:latest}"
DOCKER="${TITUS_DOCKER:-$(command -v docker || echo /usr/bin/docker)}"
BUSYBOX=/bin/busybox

die() { echo "busybox.sh: $*" >&2; exit 1; }

if ! dpkg -s busybox-static >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  # busybox-static replaces (conflicts with) the dynamic busybox package; nothing else here depends on it.
  apt-get install -y --no-install-recommends busybox-static \
    || { apt-get update && apt-get install -y --no-install-recommends busybox-static; }
fi
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing after installing busybox-static"
file_type="$(head -c 4 "$BUSYBOX" | od -An -c | tr -d ' ')"
[ "$file_type" = '177ELF' ] || die "$BUSYBOX is not an ELF binary"
have_docker=1
"$DOCKER" info >/dev/null 2>&1 || have_docker=0

registry="${IMAGE%%/*}"
rest="${IMAGE#*/}"
repo="${rest%:*}"
tag="${rest##*:}"
remote_manifest_digest() {
  curl -sfI -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$registry/v2/$repo/manifests/$tag" | tr -d '\r' \
    | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}' || true
}
if [ "$have_docker" = 0 ] && [ -n "$(remote_manifest_digest)" ]; then
  echo "busybox.sh: $IMAGE already in the registry"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,proc,sys,dev,home,var/tmp}
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/root"
install -m 0755 "$BUSYBOX" "$root/bin/busybox"
# --list-full prints each applet with its conventional directory (bin/sh, usr/bin/awk, sbin/init, ...).
while read -r applet; do
  [ "$applet" = bin/busybox ] && continue
  mkdir -p "$root/$(dirname "$applet")"
  ln -sf /bin/busybox "$root/$applet"
done < <("$BUSYBOX" --list-full)
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
if [ "$have_docker" = 0 ]; then
  command -v umoci >/dev/null || die "umoci missing (scripts/setup.sh installs it)"
  command -v skopeo >/dev/null || die "skopeo missing (scripts/setup.sh installs it)"
  layout="$work/oci"
  umoci init --layout "$layout"
  umoci new --image "$layout:$tag"
  umoci unpack --image "$layout:$tag" "$work/bundle" >/dev/null
  cp -a "$root/." "$work/bundle/rootfs/"
  umoci repack --image "$layout:$tag" "$work/bundle"
  umoci config --image "$layout:$tag" --config.env 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --config.workingdir / --config.cmd sh --config.label org.opencontainers.image.title=busybox
  skopeo copy -q --dest-tls-verify=false "oci:$layout:$tag" "docker://$IMAGE" || die "push of $IMAGE failed"
  echo "busybox.sh: pushed $IMAGE (built with umoci, no dockerd)"
  exit 0
fi

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$work/rootfs.tar" .
digest="$(sha256sum "$work/rootfs.tar" | cut -d' ' -f1)"

local_digest="$("$DOCKER" image inspect --format '{{index .Config.Labels "titus.rootfs_sha256"}}' "$IMAGE" \
  2>/dev/null || true)"
if [ "$local_digest" != "$digest" ]; then
  "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'WORKDIR /' \
    --change 'CMD ["sh"]' \
    --change "LABEL titus.rootfs_sha256=$digest org.opencontainers.image.title=busybox" \
    --message "busybox-static $(dpkg-query -W -f '${Version}' busybox-static), built offline" \
    "$work/rootfs.tar" "$IMAGE" >/dev/null
  echo "busybox.sh: imported $IMAGE (rootfs sha256 $digest)"
else
  echo "busybox.sh: $IMAGE is up to date locally"
fi

# Push unless the registry already serves the exact manifest docker would push.
local_repo_digest="$("$DOCKER" image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$IMAGE" \
  | grep -F "$registry/$repo@" | head -n1 | cut -d@ -f2 || true)"
remote_digest="$(remote_manifest_digest)"
if [ -n "$remote_digest" ] && [ "$remote_digest" = "$local_repo_digest" ]; then
  echo "busybox.sh: $IMAGE already in the registry ($remote_digest)"
else
  "$DOCKER" push "$IMAGE" >/dev/null || die "push of $IMAGE failed"
  echo "busybox.sh: pushed $IMAGE"
fi
