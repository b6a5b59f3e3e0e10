"""Where Terraform gets its providers: a filesystem mirror found on this machine, or the registry.

HashiCorp's registry is the only public source of `hashicorp/aws`, and some machines (our CI among them)
cannot reach it but carry a provider mirror somewhere on disk (a directory laid out as
`registry.terraform.io/hashicorp/aws/<version>/<os>_<arch>/terraform-provider-aws_*`). Terraform only looks
in a few implicit directories by itself, so a mirror elsewhere is found here by searching likely roots
and handed to Terraform through a generated CLI configuration (`provider_installation { filesystem_mirror
{...} }`). With no mirror, Terraform falls back to the registry as usual; `scripts/build-aws-provider.sh`
can build one from the Go module proxy into the cache directory searched first.

Used by `titus cluster` (it exports `TF_CLI_CONFIG_FILE` for Terraform when a mirror is found), by
`scripts/install-terraform-providers.sh`, and by the tests that run Terraform against moto_server.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import click

REGISTRY = "registry.terraform.io"

#: Built providers land here (scripts/build-aws-provider.sh); searched first.
CACHE_MIRROR = Path(os.environ.get("TITUS_TF_PROVIDER_CACHE", "/var/cache/titus/terraform-providers"))

#: How deep below a search root a mirror's `registry.terraform.io` directory may sit.
MAX_DEPTH = 4

#: Directories never worth descending into (virtual filesystems, package trees, per-run scratch).
SKIP_DIRS = frozenset(
    {"proc", "sys", "dev", "run", "tmp", "node_modules", "__pycache__", ".git", "site-packages"}
)


def platform_dir() -> str:
    """Terraform's `<os>_<arch>` name of this machine, e.g. linux_amd64."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return f"{platform.system().lower()}_{arch}"


def default_search_roots() -> list[Path]:
    """The cache, Terraform's implicit mirror directories, then where images usually put tools."""
    home = Path.home()
    xdg = Path(os.environ.get("XDG_DATA_HOME", home / ".local" / "share"))
    extra = [Path(p) for p in os.environ.get("TITUS_TF_MIRROR_SEARCH", "").split(os.pathsep) if p]
    return [
        *extra,
        CACHE_MIRROR,
        home / ".terraform.d" / "plugins",
        xdg / "terraform" / "plugins",
        Path("/usr/local/share/terraform/plugins"),
        Path("/usr/share/terraform/plugins"),
        Path("/opt"),
        Path("/usr/local"),
        Path("/srv"),
        home,
    ]


@dataclass(frozen=True)
class Mirror:
    """A filesystem mirror directory and the versions of one provider it holds for this platform."""

    path: Path
    provider: str
    versions: tuple[str, ...]


def _provider_versions(root: Path, provider: str, plat: str) -> tuple[str, ...]:
    base = root / REGISTRY / provider
    if not base.is_dir():
        return ()
    found = []
    for version_dir in sorted(base.iterdir()):
        binaries = version_dir / plat
        name = provider.rsplit("/", 1)[-1]
        if binaries.is_dir() and any(
            b.name.startswith(f"terraform-provider-{name}_") and os.access(b, os.X_OK)
            for b in binaries.iterdir()
        ):
            found.append(version_dir.name)
    return tuple(found)


def _candidate_roots(root: Path, depth: int) -> Iterable[Path]:
    """`root` and its subdirectories down to `depth` that contain a registry.terraform.io directory."""
    try:
        if (root / REGISTRY).is_dir():
            yield root
        if depth == 0:
            return
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return
    for child in children:
        if child.name in SKIP_DIRS or child.name == REGISTRY:
            continue
        yield from _candidate_roots(child, depth - 1)


def find_mirrors(
    provider: str = "hashicorp/aws",
    roots: Sequence[Path] | None = None,
    plat: str | None = None,
    max_depth: int = MAX_DEPTH,
) -> list[Mirror]:
    """Every mirror under `roots` holding `provider` for this platform, in search order, no duplicates."""
    plat = plat or platform_dir()
    seen: set[Path] = set()
    mirrors = []
    for root in roots if roots is not None else default_search_roots():
        for candidate in _candidate_roots(root, max_depth):
            real = candidate.resolve()
            if real in seen:
                continue
            seen.add(real)
            versions = _provider_versions(real, provider, plat)
            if versions:
                mirrors.append(Mirror(real, provider, versions))
    return mirrors


def cli_config(mirrors: Sequence[Mirror], allow_registry: bool) -> str:
    """A Terraform CLI configuration installing the mirrored providers from disk.

    `allow_registry` keeps the registry (`direct`) for every other provider; without it Terraform never
    touches the network, which is what the tests want.
    """
    providers = sorted({f"{REGISTRY}/{m.provider}" for m in mirrors})
    include = ", ".join(f'"{p}"' for p in providers)
    lines = ["provider_installation {"]
    for m in mirrors:
        lines += ["  filesystem_mirror {", f'    path    = "{m.path}"', f"    include = [{include}]", "  }"]
    if allow_registry:
        lines += ["  direct {", f"    exclude = [{include}]" if providers else "", "  }"]
    lines.append("}")
    return "\n".join(line for line in lines if line) + "\n"


def write_cli_config(path: Path, mirrors: Sequence[Mirror], allow_registry: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cli_config(mirrors, allow_registry))
    return path


def terraform_env(config_dir: Path, allow_registry: bool = True) -> dict[str, str]:
    """Environment additions for running Terraform with the mirrors of this machine (empty if none).

    An explicit TF_CLI_CONFIG_FILE of the user wins: it is left alone.
    """
    existing = os.environ.get("TF_CLI_CONFIG_FILE")
    if existing and Path(existing).is_file():
        return {}
    mirrors = find_mirrors()
    if not mirrors:
        return {}
    path = write_cli_config(config_dir / "terraform-providers.tfrc", mirrors, allow_registry)
    return {"TF_CLI_CONFIG_FILE": str(path)}


@click.command()
@click.option("--provider", default="hashicorp/aws", show_default=True, help="Provider to look for.")
@click.option(
    "--write",
    "write_to",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a Terraform CLI configuration using the mirrors found to this file.",
)
@click.option("--offline", is_flag=True, help="The written configuration never falls back to the registry.")
def main(provider: str, write_to: Path | None, offline: bool) -> None:
    """Find filesystem mirrors of a Terraform provider on this machine (exit 1 when none)."""
    mirrors = find_mirrors(provider)
    if not mirrors:
        raise click.ClickException(
            f"no filesystem mirror of {provider} for {platform_dir()} found under "
            + ", ".join(str(r) for r in default_search_roots())
        )
    for m in mirrors:
        click.echo(f"{m.path} {m.provider} {','.join(m.versions)}")
    if write_to is not None:
        write_cli_config(write_to, mirrors, allow_registry=not offline)
        click.echo(f"wrote {write_to}")


if __name__ == "__main__":
    main()
