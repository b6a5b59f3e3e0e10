"""Provider discovery (titus/cluster_providers.py): mirrors are found by searching, not by a fixed path."""

from __future__ import annotations

from pathlib import Path

from tests.terraform.tfrun import run
from titus.cluster_providers import cli_config, find_mirrors, platform_dir


def fake_provider(root: Path, version: str, plat: str, executable: bool = True) -> Path:
    binary = (
        root
        / "registry.terraform.io"
        / "hashicorp"
        / "aws"
        / version
        / plat
        / f"terraform-provider-aws_v{version}_x5"
    )
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755 if executable else 0o644)
    return binary


def test_a_mirror_nested_under_a_search_root_is_found_with_its_versions(tmp_path: Path) -> None:
    plat = platform_dir()
    fake_provider(tmp_path / "images" / "tools" / "tf-plugins", "5.100.0", plat)
    fake_provider(tmp_path / "images" / "tools" / "tf-plugins", "5.90.0", plat)
    fake_provider(tmp_path / "other", "5.1.0", "windows_386")  # another platform: not usable here
    fake_provider(tmp_path / "broken", "5.2.0", plat, executable=False)  # not executable: not usable
    mirrors = find_mirrors(roots=[tmp_path])
    assert [(m.path, m.versions) for m in mirrors] == [
        ((tmp_path / "images" / "tools" / "tf-plugins").resolve(), ("5.100.0", "5.90.0"))
    ]


def test_depth_is_bounded_and_nothing_found_is_an_empty_list(tmp_path: Path) -> None:
    fake_provider(tmp_path / "a" / "b" / "c" / "d" / "e", "5.100.0", platform_dir())
    assert find_mirrors(roots=[tmp_path], max_depth=3) == []
    assert len(find_mirrors(roots=[tmp_path], max_depth=5)) == 1
    assert find_mirrors(roots=[tmp_path / "missing"]) == []


def test_generated_cli_config_is_accepted_by_terraform(tmp_path: Path) -> None:
    fake_provider(tmp_path / "mirror", "5.100.0", platform_dir())
    mirrors = find_mirrors(roots=[tmp_path])
    offline = cli_config(mirrors, allow_registry=False)
    assert f'path    = "{(tmp_path / "mirror").resolve()}"' in offline
    assert "direct" not in offline
    online = cli_config(mirrors, allow_registry=True)
    assert 'exclude = ["registry.terraform.io/hashicorp/aws"]' in online
    config = tmp_path / "cli.tfrc"
    config.write_text(online)
    root = tmp_path / "root"
    root.mkdir()
    (root / "main.tf").write_text('output "x" {\n  value = 1\n}\n')
    env = {
        "TF_CLI_CONFIG_FILE": str(config),
        "CHECKPOINT_DISABLE": "1",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }
    result = run(["init", "-input=false", "-no-color"], root, env)
    assert result.returncode == 0, result.stderr
    assert "problems with the CLI configuration" not in result.stderr + result.stdout
