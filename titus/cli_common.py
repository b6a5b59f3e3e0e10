"""What every API command of the `titus` CLI shares: client, output (human or --json), errors, exit codes.

Kept free of heavy imports: titus.client (http.client) is imported only when a command really talks
to a master, so `titus --help`, completion and the component commands start fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from titus.client import ApiError, TitusClient

DEFAULT_URL = "http://127.0.0.1:7001"

# Exit codes, documented in docs/cli.md. Scripts branch on them, so they never change meaning.
EXIT_OK = 0
EXIT_ERROR = 1  # the master failed (5xx), could not be reached, or anything unexpected
EXIT_BAD_INPUT = 2  # usage error, unreadable input, or the master refused the request (400, 409, 422 ...)
EXIT_NOT_FOUND = 3  # the job, task, agent or group does not exist (404)
EXIT_AUTH = 4  # the token was missing or refused (401, 403)
EXIT_TIMEOUT = 5  # --wait gave up before the goal was reached
EXIT_UNSUCCESSFUL = 6  # --wait reached the end, but not a good one (a batch task failed, was lost, OOM...)

T = TypeVar("T")


class CliError(Exception):
    """An error the CLI reports and exits on: a message, an exit code and, from the master, more detail."""

    def __init__(
        self,
        message: str,
        code: int = EXIT_ERROR,
        status: int | None = None,
        fields: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.fields = fields or []

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "exitCode": self.code}
        if self.status is not None:
            error["httpStatus"] = self.status
        if self.fields:
            error["fields"] = self.fields
        return {"error": error}


def json_wanted(args: list[str] | None = None) -> bool:
    """Whether the command line asked for --json; decides how errors are printed, even usage errors that
    happen before any command runs."""
    argv = sys.argv[1:] if args is None else args
    return "--json" in argv


def report_error(error: CliError, as_json: bool) -> NoReturn:
    """--json: the error object on stdout (so `titus ... --json | jq` always gets one JSON document) and the
    exit code; otherwise `error: message` on stderr."""
    if as_json:
        click.echo(json.dumps(error.to_json()))
    else:
        click.echo(f"error: {error.message}", err=True)
        for f in error.fields:
            click.echo(f"  {f.get('path')}: {f.get('reason')}", err=True)
    sys.exit(error.code)


def code_for_status(status: int) -> int:
    if status in (401, 403):
        return EXIT_AUTH
    if status == 404:
        return EXIT_NOT_FOUND
    if 400 <= status < 500:
        return EXIT_BAD_INPUT
    return EXIT_ERROR


def api_call(action: Callable[[], T]) -> T:
    """Run one client call; an ApiError becomes a CliError with the exit code for its HTTP status."""
    from titus.client import ApiError

    try:
        return action()
    except ApiError as exc:
        raise cli_error(exc) from exc


def cli_error(exc: ApiError) -> CliError:
    """The CliError for an ApiError: its message, the master's field errors, the exit code for its status."""
    return CliError(
        exc.body.get("error") or str(exc),
        code_for_status(exc.status) if exc.status else EXIT_ERROR,
        exc.status or None,
        exc.body.get("fields") or None,
    )


def make_client(url: str | None, token: str | None) -> TitusClient:
    from titus.client import TitusClient

    data_dir = Path(os.environ.get("TITUS_DATA_DIR", ".titus"))
    dev_url = _read(data_dir / "url")  # what `titus dev` serves on, HTTPS with its own CA
    url = url or os.environ.get("TITUS_URL") or dev_url or DEFAULT_URL
    token = token or os.environ.get("TITUS_API_TOKEN")
    if not token:
        token = _read(data_dir / "api-token")
    if not token:
        raise CliError(
            "no API token: set TITUS_API_TOKEN or pass --token (titus dev writes one to .titus/api-token)",
            EXIT_AUTH,
        )
    # A master serving HTTPS with a private CA (titus master TLS): TITUS_CA_FILE names the CA's file. The
    # dev cluster's CA is trusted for the dev cluster's URL only, never for another master.
    ca_file = os.environ.get("TITUS_CA_FILE", "")
    if not ca_file and dev_url and url.rstrip("/") == dev_url.rstrip("/") and (data_dir / "ca.pem").exists():
        ca_file = str(data_dir / "ca.pem")
    return TitusClient(url, token, ca_file=ca_file)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def api_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--url, --token, --json on a command, and its CliErrors reported the way --json says."""
    import functools

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except CliError as exc:
            report_error(exc, bool(kwargs.get("as_json")))

    wrapped: Callable[..., Any] = click.option(
        "--json", "as_json", is_flag=True, help="Print JSON for scripts."
    )(wrapper)
    wrapped = click.option("--token", help="API token (default: $TITUS_API_TOKEN or .titus/api-token).")(
        wrapped
    )
    wrapped = click.option(
        "--url", help=f"Master URL (default: $TITUS_URL, the URL titus dev wrote, or {DEFAULT_URL})."
    )(wrapped)
    return wrapped


def emit(data: Any, as_json: bool, human: str) -> None:
    click.echo(json.dumps(data, indent=2) if as_json else human)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


class Progress:
    """The one progress line of a --wait, on stderr: rewritten in place on a terminal, a new line per change
    otherwise (so logs of CI jobs stay readable). Never on stdout, which carries the result."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = ""

    def show(self, line: str) -> None:
        if line == self.last:
            return
        if self.tty:
            click.echo("\r\x1b[2K" + line, err=True, nl=False)
        else:
            click.echo(line, err=True)
        self.last = line

    def done(self) -> None:
        if self.tty and self.last:
            click.echo("", err=True)


def complete_ids(kind: str) -> Callable[[click.Context, click.Parameter, str], list[str]]:
    """Shell completion of ids from the master (job, task, agent, instance-group, capacity-group): asks it
    with the same URL and token the command would use (environment or token file), with a short timeout,
    and offers nothing when it cannot (completion must never print errors into the shell)."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
        try:
            client = make_client(ctx.params.get("url"), ctx.params.get("token"))
            client.timeout = 2.0
            if kind == "job":
                ids = [j["id"] for j in client.jobs()]
            elif kind == "task":
                ids = [t["id"] for t in client.tasks()]
            elif kind == "agent":
                ids = [a["id"] for a in client.agents()]
            elif kind == "instance-group":
                ids = [g["id"] for g in client.instance_groups()]
            else:
                ids = [g["appName"] for g in client.capacity_groups()]
        except Exception:
            return []
        return sorted(str(i) for i in ids if str(i).startswith(incomplete))

    return complete
