"""Writes the inputs/outputs tables of every Terraform module README from the HCL (between markers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.terraform.hcl import EXAMPLE, TERRAFORM, load_dir, root_dirs, variables

BEGIN, END = "<!-- BEGIN_TF_DOCS -->", "<!-- END_TF_DOCS -->"


def cell(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = text.replace("${", "").replace("}", "") if text.startswith("${") else text
    return text.replace("|", "\\|").replace("\n", " ")


def tables(directory: Path) -> str:
    lines = [
        f"## Inputs of `{directory.relative_to(TERRAFORM)}`",
        "",
        "| Name | Description | Type | Default |",
        "| --- | --- | --- | --- |",
    ]
    for name, body in variables(directory).items():
        default = cell(body["default"]) if "default" in body else "required"
        lines.append(f"| `{name}` | {cell(body['description'])} | `{cell(body['type'])}` | `{default}` |")
    lines += [
        "",
        f"## Outputs of `{directory.relative_to(TERRAFORM)}`",
        "",
        "| Name | Description |",
        "| --- | --- |",
    ]
    for block in load_dir(directory).get("output", []):
        for name, body in block.items():
            lines.append(f"| `{name}` | {cell(body['description'])} |")
    return "\n".join(lines)


def main() -> None:
    for directory, readme in [(d, d / "README.md") for d in root_dirs()] + [
        (EXAMPLE, TERRAFORM / "README.md")
    ]:
        text = readme.read_text() if readme.exists() else f"# {directory.name}\n\n{BEGIN}\n{END}\n"
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        readme.write_text(f"{head}{BEGIN}\n{tables(directory)}\n{END}{tail}")


if __name__ == "__main__":
    main()
