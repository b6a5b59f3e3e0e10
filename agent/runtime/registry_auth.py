"""Image references and the registry credentials an agent presents when it pulls.

Credentials are looked up per registry host at pull time, not baked into the agent's config once, because
the AWS flavour (ECR) hands out tokens that expire after 12 hours: a long-running agent must fetch a new one
without a restart. Static user/password pairs cover self-hosted registries and the tests.
"""

from __future__ import annotations

import fnmatch
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

DEFAULT_REGISTRY = "docker.io"


@dataclass(frozen=True)
class ImageRef:
    """An image reference split the way dockerd splits it, so credentials are matched to the right host."""

    registry: str
    repository: str  # including the registry host when one was named, as pulls and tags expect it
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        """What to hand the engine's pull as its tag parameter: the digest wins over the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or 'latest'}"


def parse_image_ref(image: str) -> ImageRef:
    """Split "host:port/repo:tag" or "repo@sha256:..." by Docker's rules.

    The first path component is a registry host only if it has a "." or ":" or is "localhost"; otherwise
    the image lives on Docker Hub ("busybox", "library/busybox").
    """
    if not image or image != image.strip() or " " in image:
        raise ValueError(f"image reference {image!r} is empty or contains whitespace")
    name, digest = image, None
    if "@" in image:
        name, digest = image.split("@", 1)
        if not digest.startswith("sha256:") or len(digest) != len("sha256:") + 64:
            raise ValueError(f"image reference {image!r}: digest must be sha256:<64 hex digits>")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        if not tag:
            raise ValueError(f"image reference {image!r} has an empty tag")
    first, _, rest = name.partition("/")
    registry = first if rest and ("." in first or ":" in first or first == "localhost") else DEFAULT_REGISTRY
    if not name or name.endswith("/"):
        raise ValueError(f"image reference {image!r} has no repository name")
    return ImageRef(registry=registry, repository=name, tag=tag, digest=digest)


@dataclass(frozen=True)
class RegistryCredential:
    username: str
    password: str
    expires_at: float | None = None  # wall-clock seconds; None for credentials that do not expire

    def as_auth_config(self) -> dict[str, str]:
        """The shape the Docker engine API takes in its X-Registry-Auth header."""
        return {"username": self.username, "password": self.password}


class RegistryCredentials(Protocol):
    def credentials_for(self, registry: str) -> RegistryCredential | None:
        """Credentials to present to `registry` (a host[:port]), or None to pull anonymously."""


class AnonymousCredentials:
    """Pull everything anonymously: public and loopback registries."""

    def credentials_for(self, registry: str) -> RegistryCredential | None:
        return None


class StaticRegistryCredentials:
    """A fixed user/password per registry host, for self-hosted registries with basic auth."""

    def __init__(self, by_registry: Mapping[str, tuple[str, str]]) -> None:
        self._by_registry = {host: RegistryCredential(user, pw) for host, (user, pw) in by_registry.items()}

    def credentials_for(self, registry: str) -> RegistryCredential | None:
        return self._by_registry.get(registry)


TokenFetcher = Callable[[str], RegistryCredential]


class TokenHelperCredentials:
    """Short-lived tokens from a helper (ECR's `aws ecr get-login-password`), cached until near expiry.

    Only registries matching one of `registry_patterns` (fnmatch, e.g. "*.dkr.ecr.*.amazonaws.com") are
    asked for; a token is refetched `refresh_margin_s` before it expires so a pull never presents a token that
    dies mid-download. One fetch at a time: concurrent pulls share the helper's answer.
    """

    def __init__(
        self,
        registry_patterns: Sequence[str],
        fetch: TokenFetcher,
        *,
        refresh_margin_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._patterns = tuple(registry_patterns)
        self._fetch = fetch
        self._margin = refresh_margin_s
        self._clock = clock
        self._cache: dict[str, RegistryCredential] = {}
        self._lock = threading.Lock()

    def credentials_for(self, registry: str) -> RegistryCredential | None:
        if not any(fnmatch.fnmatchcase(registry, p) for p in self._patterns):
            return None
        with self._lock:
            cached = self._cache.get(registry)
            if cached is not None and (
                cached.expires_at is None or cached.expires_at - self._margin > self._clock()
            ):
                return cached
            fresh = self._fetch(registry)
            self._cache[registry] = fresh
            return fresh


def command_token_fetcher(
    argv: Sequence[str],
    *,
    username: str = "AWS",
    ttl_s: float = 12 * 3600,
    timeout_s: float = 60.0,
    clock: Callable[[], float] = time.time,
) -> TokenFetcher:
    """A fetcher that runs a command and takes its stdout as the password (ECR: user "AWS", 12 h tokens).

    The registry host is passed in the environment as TITUS_REGISTRY so one helper can serve several.
    """

    def fetch(registry: str) -> RegistryCredential:
        import os

        try:
            done = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                env={**os.environ, "TITUS_REGISTRY": registry},
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RegistryAuthError(f"credential helper {argv[0]!r} for {registry} failed: {e}") from e
        token = done.stdout.strip()
        if done.returncode != 0 or not token:
            detail = done.stderr.strip() or f"exit code {done.returncode}, empty output"
            raise RegistryAuthError(f"credential helper {argv[0]!r} for {registry} failed: {detail}")
        return RegistryCredential(username=username, password=token, expires_at=clock() + ttl_s)

    return fetch


def ecr_token_fetcher(region: str, *, aws_cli: str = "aws") -> TokenFetcher:
    """ECR: `aws ecr get-login-password --region R` prints a 12-hour password for user AWS."""
    return command_token_fetcher([aws_cli, "ecr", "get-login-password", "--region", region])


class RegistryAuthError(Exception):
    """Credentials could not be obtained; the message says which registry and why."""
