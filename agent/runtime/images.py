"""The host's image cache for the OCI runtime: pulled with skopeo, layers extracted once, shared by all tasks.

Layout under `root` (all 0700, owned by the agent):
- `blobs/sha256/<hex>`: skopeo's shared blob directory; content-addressed, so two images with a common
  layer store and download it once. skopeo verifies every blob's digest as it copies it.
- `refs/<hash of the reference>/`: the OCI layout skopeo writes for one image reference (index.json only;
  its blobs are in `blobs/`).
- `layers/<hex>/fs`: a layer's tar extracted as an overlayfs lower directory: whiteouts become the 0:0
  character devices overlayfs expects, opaque markers the `trusted.overlay.opaque` xattr, and every owner is
  shifted into the tasks' user-namespace range, so container root owns what the image says root owns
  while on the host it is an unprivileged uid. The blob is hashed again while it is extracted (a blob
  changed on disk since skopeo verified it is refused).
- `layers/<hex>/last_used`: its mtime is the LRU clock for garbage collection.

Why skopeo rather than a hand-written registry client: it speaks the distribution API (tokens, redirects,
manifest lists, schema conversions) and verifies digests; we only parse the OCI layout it leaves. Why our
own extractor rather than `umoci unpack`: umoci merges all layers into one tree per image, while overlayfs
wants one directory per layer so images share their common layers on disk too.

One pull per image reference at a time (SingleFlight), one extraction per layer at a time.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agent.runtime.registry_auth import (
    AnonymousCredentials,
    ImageRef,
    RegistryAuthError,
    RegistryCredentials,
    parse_image_ref,
)
from agent.runtime.single_flight import SingleFlight

log = logging.getLogger(__name__)

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",)


class ImageError(Exception):
    """The image cannot be had: bad reference, pull failure, unsupported or corrupt content. User-facing."""


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image's config a task runtime honours."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # "KEY=value", as the image config has them
    working_dir: str = ""
    user: str = ""


@dataclass(frozen=True)
class Image:
    reference: str
    manifest_digest: str  # of the OCI manifest in our cache (skopeo converts Docker manifests)
    source_digest: str  # of the manifest in the registry: what `name@digest` references name
    layers: tuple[str, ...]  # layer digests, bottom first
    layer_dirs: tuple[Path, ...]  # extracted lower directories, bottom first
    config: ImageConfig


@dataclass(frozen=True)
class IdMap:
    """The host uid/gid range container ids 0..size-1 map to (a user namespace)."""

    host_base: int = 100_000
    size: int = 65_536

    def shift(self, container_id: int) -> int:
        if not 0 <= container_id < self.size:
            raise ImageError(f"the image has a file owned by id {container_id}, outside 0..{self.size - 1}")
        return self.host_base + container_id


@dataclass
class _Hashing:
    """A read-only file wrapper that hashes what is read through it."""

    raw: IO[bytes]
    sha: Any = field(default_factory=hashlib.sha256)

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        return data


def _skopeo_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    text = lines[-1] if lines else "skopeo failed without a message"
    if 'msg="' in text:  # skopeo logs as time="..." level=fatal msg="..."
        text = text.split('msg="', 1)[1].rstrip('"')
    return text


class ImageCache:
    """Pull, verify, extract and garbage-collect images. Thread-safe."""

    def __init__(
        self,
        root: Path | str,
        *,
        credentials: RegistryCredentials | None = None,
        insecure_registries: Iterable[str] = (),
        id_map: IdMap | None = None,
        max_bytes: int = 20 * 2**30,
        skopeo: str = "skopeo",
        pull_timeout_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.refs = self.root / "refs"
        self.layers = self.root / "layers"
        for d in (self.root, self.blobs, self.refs, self.layers):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        self.credentials = credentials if credentials is not None else AnonymousCredentials()
        self.insecure = frozenset(insecure_registries)
        self.id_map = id_map or IdMap()
        self.max_bytes = max_bytes
        self.skopeo = skopeo
        self.pull_timeout_s = pull_timeout_s
        self.clock = clock
        self._pulls: SingleFlight[str, Image] = SingleFlight()
        self._extracts: SingleFlight[str, Path] = SingleFlight()
        self._lock = threading.Lock()
        self._known: dict[str, Image] = {}  # reference -> image resolved in this process
        self.pull_count = 0  # skopeo runs; shared and cached pulls do not count

    # --- pulling -------------------------------------------------------------------------------------

    def get(self, reference: str) -> Image:
        """The image, pulled and extracted if this host lacks it. Tags are resolved once per process
        lifetime; a later push to the same tag is seen by the next agent start or after GC."""
        try:
            ref = parse_image_ref(reference)
        except ValueError as e:
            raise ImageError(f"invalid image: {e}") from e
        key = str(ref)
        with self._lock:
            image = self._known.get(key)
        if image is not None and all(d.is_dir() for d in image.layer_dirs):
            self._touch(image)
            return image
        image, _ = self._pulls.do(key, lambda: self._resolve(ref))
        with self._lock:
            self._known[key] = image
        self._touch(image)
        return image

    def _ref_dir(self, ref: ImageRef) -> Path:
        return self.refs / hashlib.sha256(str(ref).encode()).hexdigest()[:32]

    def _resolve(self, ref: ImageRef) -> Image:
        """Pull only what the host lacks (Docker's "missing" pull policy): a tag is resolved on its first
        use on this host and stays so until its layers are collected; a digest never changes anyway."""
        ref_dir = self._ref_dir(ref)
        image = self._load(ref, ref_dir)
        if image is None:
            self._pull(ref, ref_dir)
            image = self._load(ref, ref_dir)
        if image is None:
            raise ImageError(f"image {ref}: the pull left no usable manifest")
        return image

    def _pull(self, ref: ImageRef, ref_dir: Path) -> None:
        src = ["--src-tls-verify=false"] if self._plain_http(ref.registry) else []
        try:
            credential = self.credentials.credentials_for(ref.registry)
        except RegistryAuthError as e:
            raise ImageError(f"image pull of {ref} failed: {e}") from e
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root)}
        auth_path = None
        if credential is not None:
            # Through a 0600 auth file, not argv: argv is readable by every user in /proc.
            auth_path = self.root / f"auth-{threading.get_ident()}.json"
            token = base64.b64encode(f"{credential.username}:{credential.password}".encode()).decode()
            fd = os.open(auth_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"auths": {ref.registry: {"auth": token}}}, f)
            src += ["--src-authfile", str(auth_path)]
        else:
            src.append("--src-no-creds")
        tmp = ref_dir.with_name(ref_dir.name + f".tmp{os.getpid()}-{threading.get_ident()}")
        shutil.rmtree(tmp, ignore_errors=True)
        copy = [self.skopeo, "--insecure-policy", "copy", "--quiet",
                "--dest-shared-blob-dir", str(self.blobs), *src, f"docker://{ref}", f"oci:{tmp}:latest"]
        with self._lock:
            self.pull_count += 1
        log.info("pulling %s", ref)
        inspect: subprocess.Popen[bytes] | None = None
        try:
            # The registry's manifest digest (skopeo converts the manifest, so the copy's digest differs),
            # read in parallel with the copy: users and TITUS_IMAGE_DIGEST name images by that digest.
            if not ref.digest:
                flags = [a.replace("--src-", "--", 1) for a in src]  # inspect's flags lack the prefix
                inspect = subprocess.Popen([self.skopeo, "inspect", "--raw", *flags, f"docker://{ref}"],
                                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
            done = subprocess.run(copy, capture_output=True, text=True, timeout=self.pull_timeout_s, env=env,
                                  check=False)
            raw = inspect.communicate(timeout=self.pull_timeout_s)[0] if inspect is not None else b""
        except subprocess.TimeoutExpired as e:
            raise ImageError(f"image pull of {ref} timed out after {self.pull_timeout_s:.0f}s") from e
        except FileNotFoundError as e:
            raise ImageError(f"image pull of {ref} failed: {self.skopeo} is not installed") from e
        finally:
            if inspect is not None and inspect.poll() is None:
                inspect.kill()
                inspect.wait()
            if auth_path is not None:
                with contextlib.suppress(FileNotFoundError):
                    auth_path.unlink()
        if done.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ImageError(f"image pull of {ref} failed: {_skopeo_error(done.stderr)}")
        source = ref.digest or ("sha256:" + hashlib.sha256(raw).hexdigest() if raw else "")
        (tmp / "source-digest").write_text(source)
        _install(tmp, ref_dir, keep=lambda _: False)  # we pulled because the old one was unusable

    def _plain_http(self, registry: str) -> bool:
        """Registries on loopback speak plain HTTP, as dockerd assumes for 127.0.0.0/8; others need TLS
        unless the operator lists them."""
        host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
        return registry in self.insecure or host in ("localhost", "[::1]") or host.startswith("127.")

    def _blob(self, digest: str) -> Path:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
            raise ImageError(f"unsupported digest {digest!r}")
        return self.blobs / "sha256" / hexd

    def _read_blob_json(self, digest: str) -> dict[str, Any]:
        path = self._blob(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError as e:
            raise ImageError(f"blob {digest} is missing from the cache") from e
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise ImageError(f"blob {digest} does not match its digest")
        value: dict[str, Any] = json.loads(data)
        return value

    def _load(self, ref: ImageRef, ref_dir: Path) -> Image | None:
        try:
            index = json.loads((ref_dir / "index.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        manifests = index.get("manifests") or []
        if not manifests:
            return None
        descriptor = manifests[0]
        if descriptor.get("mediaType") not in _MANIFEST_TYPES:
            raise ImageError(f"image {ref}: unsupported manifest type {descriptor.get('mediaType')}")
        digest = str(descriptor["digest"])
        try:
            manifest = self._read_blob_json(digest)
            config_doc = self._read_blob_json(str(manifest["config"]["digest"]))
        except ImageError:
            return None  # blobs collected meanwhile: pull again
        layers = tuple(str(layer["digest"]) for layer in manifest.get("layers", []))
        if not layers:
            raise ImageError(f"image {ref} has no layers")
        for d in layers:
            if not (self._layer_dir(d) / "fs").is_dir() and not self._blob(d).exists():
                return None  # collected: pull again (the registry still has it, or the pull says why)
        dirs = tuple(self._extracted(d) for d in layers)
        c = config_doc.get("config") or {}
        config = ImageConfig(
            entrypoint=tuple(c.get("Entrypoint") or ()),
            cmd=tuple(c.get("Cmd") or ()),
            env=tuple(c.get("Env") or ()),
            working_dir=str(c.get("WorkingDir") or ""),
            user=str(c.get("User") or ""),
        )
        try:
            source = (ref_dir / "source-digest").read_text().strip()
        except FileNotFoundError:
            source = ref.digest or ""
        return Image(reference=str(ref), manifest_digest=digest, source_digest=source, layers=layers,
                     layer_dirs=dirs, config=config)

    # --- layers --------------------------------------------------------------------------------------

    def _layer_dir(self, digest: str) -> Path:
        return self.layers / digest.partition(":")[2]

    def _extracted(self, digest: str) -> Path:
        target = self._layer_dir(digest) / "fs"
        if target.is_dir():
            return target
        path, _ = self._extracts.do(digest, lambda: self._extract(digest))
        return path

    def _extract(self, digest: str) -> Path:
        layer_dir = self._layer_dir(digest)
        target = layer_dir / "fs"
        if target.is_dir():
            return target
        blob = self._blob(digest)
        tmp = self.layers / f".{digest.partition(':')[2]}.tmp{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "fs").mkdir(parents=True)
        os.chmod(tmp, 0o700)
        os.chown(tmp / "fs", self.id_map.shift(0), self.id_map.shift(0))
        try:
            with open(blob, "rb") as raw:
                hashing = _Hashing(raw)
                with tarfile.open(fileobj=hashing, mode="r|*") as tar:  # type: ignore[call-overload]
                    _extract_layer(tar, tmp / "fs", self.id_map)
                while hashing.read(1 << 20):
                    pass
        except FileNotFoundError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ImageError(f"layer {digest} is missing from the cache") from e
        except (tarfile.TarError, OSError, ImageError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ImageError(f"layer {digest} cannot be extracted: {e}") from e
        if "sha256:" + hashing.sha.hexdigest() != digest:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ImageError(f"layer {digest} does not match its digest (corrupt cache entry)")
        (tmp / "last_used").touch()
        _install(tmp, layer_dir, keep=lambda d: (d / "fs").is_dir())
        return target

    def _touch(self, image: Image) -> None:
        now = self.clock()
        for digest in image.layers:
            with contextlib.suppress(FileNotFoundError):
                os.utime(self._layer_dir(digest) / "last_used", (now, now))

    # --- garbage collection --------------------------------------------------------------------------

    def disk_usage(self) -> int:
        return _tree_size(self.root)

    def gc(self, in_use: Iterable[str] = ()) -> list[str]:
        """Remove least recently used layers (and their blobs) until the cache is within max_bytes.
        Layers in `in_use` (digests of running tasks' images) are never removed. Returns removed digests."""
        keep = set(in_use)
        entries = []
        for d in self.layers.iterdir():
            if d.name.startswith("."):
                continue
            try:
                used = (d / "last_used").stat().st_mtime
            except FileNotFoundError:
                used = 0.0
            entries.append((used, "sha256:" + d.name, d))
        total = self.disk_usage()
        removed: list[str] = []
        for _, digest, d in sorted(entries):
            if total <= self.max_bytes:
                break
            if digest in keep:
                continue
            size = _tree_size(d)
            blob = self._blob(digest)
            with contextlib.suppress(FileNotFoundError):
                size += blob.stat().st_size
                blob.unlink()
            shutil.rmtree(d, ignore_errors=True)
            total -= size
            removed.append(digest)
        if removed:
            with self._lock:
                gone = set(removed)
                self._known = {k: v for k, v in self._known.items() if not gone.intersection(v.layers)}
            log.info("image cache GC removed %d layers; %d bytes in use", len(removed), total)
        return removed


def _install(tmp: Path, target: Path, keep: Callable[[Path], bool]) -> None:
    """Move a finished directory into place. Agents on one host may share the cache: if another process
    installed a usable one first (`keep`), theirs stays (a task may be using it) and ours goes."""
    if keep(target):
        shutil.rmtree(tmp, ignore_errors=True)
        return
    shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(tmp, target)
    except OSError:  # installed by another process between the check and the rename
        shutil.rmtree(tmp, ignore_errors=True)


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _safe_parent(root: Path, name: str, ids: IdMap) -> tuple[Path, str]:
    """The directory a member goes into and its base name. Refuses `..`, absolute escapes and paths that
    go through a symlink: the host's root extracts, so a symlink in a layer must never redirect a write."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ImageError(f"layer member {name!r} escapes the layer")
    parent = root
    for p in parts[:-1]:
        parent = parent / p
        try:
            st = os.lstat(parent)
        except FileNotFoundError:
            parent.mkdir(mode=0o755)  # a parent the tar does not list: owned by container root
            os.chown(parent, ids.shift(0), ids.shift(0))
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ImageError(f"layer member {name!r} goes through a non-directory")
    return parent, parts[-1]


def _on_overlayfs(path: Path) -> bool:
    """Whether `path` is on an overlay mount: the longest mount point in /proc/self/mounts containing it."""
    best, fstype = "", ""
    real = os.path.realpath(path)
    with contextlib.suppress(OSError), open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) < 3:
                continue
            point = fields[1].replace("\\040", " ")
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, fstype = point, fields[2]
    return fstype == "overlay"


def _extract_layer(tar: tarfile.TarFile, root: Path, ids: IdMap) -> None:
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    for member in tar:
        if member.isdir() and not [p for p in member.name.split("/") if p not in ("", ".")]:
            dirs.append((root, member))  # the layer's root directory itself
            continue
        parent, base = _safe_parent(root, member.name, ids)
        if base == _OPAQUE:
            os.setxattr(parent, "trusted.overlay.opaque", b"y")
            continue
        if base.startswith(_WHITEOUT):
            target = parent / base[len(_WHITEOUT):]
            try:
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            except PermissionError as e:
                # overlayfs refuses to create its own whiteout (a 0:0 device) on an overlay mount, which is
                # where the store is when the agent's data directory is inside a container's root filesystem.
                if _on_overlayfs(parent):
                    raise ImageError(
                        f"{parent} is on overlayfs, which refuses whiteout devices; put the agent's data "
                        "directory on a real filesystem (a disk, a volume or tmpfs)") from e
                raise
            continue
        target = parent / base
        if member.isdir():
            if not target.is_dir():
                target.mkdir()
            dirs.append((target, member))  # attributes after its content, or writes would change mtime
            continue
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.unlink(target)
        if member.isreg():
            src = tar.extractfile(member)
            assert src is not None
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        elif member.issym():
            os.symlink(member.linkname, target)
        elif member.islnk():
            link_parent, link_base = _safe_parent(root, member.linkname, ids)
            os.link(link_parent / link_base, target, follow_symlinks=False)
            continue  # a hard link shares the inode's attributes
        elif member.isfifo():
            os.mkfifo(target)
        else:
            continue  # device nodes: a task has no use for them (and no capability to make them)
        _set_attrs(target, member, ids)
    for target, member in reversed(dirs):
        _set_attrs(target, member, ids)


def _set_attrs(target: Path, member: tarfile.TarInfo, ids: IdMap) -> None:
    os.lchown(target, ids.shift(member.uid), ids.shift(member.gid))
    if not member.issym():
        os.chmod(target, member.mode & 0o7777)
    os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
