"""`titus dev`: the embedded all-in-one cluster, a master in this process and an agent as a child.

The agent is a separate process, as on a real host, so a crash of one is not a crash of the other: a
crashed agent is restarted (with backoff) while the master keeps serving, and adopts the running tasks. It is
started with PR_SET_PDEATHSIG so it cannot outlive `titus dev`, and in dev mode it kills its tasks when it
stops: Ctrl-C (or a kill of this process) leaves no orphans.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

from master.server import MasterConfig, MasterServer
from titus.dev_tls import ensure_dev_certificates

_PR_SET_PDEATHSIG = 1


def _token(data_dir: Path, name: str, env_var: str) -> tuple[str, bool]:
    """A token from the environment, else the one a previous run saved, else a new one saved 0600."""
    from_env = os.environ.get(env_var)
    if from_env:
        return from_env, False
    path = data_dir / name
    if path.exists():
        return path.read_text().strip(), False
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def dev_runtime() -> str:
    """The OCI runtime unless TITUS_RUNTIME asks for another (process: trusted single-user use only)."""
    return os.environ.get("TITUS_RUNTIME", "oci")


def dev_agent_id(data_dir: Path) -> str:
    """One agent id per data directory: agents find (and kill) unknown tasks in their id's cgroups, so
    two dev clusters on one host must not share an id."""
    return "local-" + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:10]


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class DevRefused(Exception):
    """The master would not start on this data dir (master/cluster_identity.py); `code` is its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class AgentBackoff:
    """Delay before restarting a crashed dev agent: 1 s, doubling to 30 s while it keeps crashing soon after
    starting; an agent that ran for a minute or more starts the count again. Durations in, delay out."""

    def __init__(self, first_s: float = 1.0, cap_s: float = 30.0, healthy_after_s: float = 60.0) -> None:
        self.first_s, self.cap_s, self.healthy_after_s = first_s, cap_s, healthy_after_s
        self.crashes = 0

    def next_delay(self, ran_for_s: float) -> float:
        if ran_for_s >= self.healthy_after_s:
            self.crashes = 0
        delay = min(self.first_s * 2.0**self.crashes, self.cap_s)
        self.crashes += 1
        return delay


def run_dev(
    port: int, data_dir: Path, agent_memory_mb: int | None, agent_cpu: float | None, tls: bool = True
) -> None:
    data_dir = data_dir.resolve()
    # A new cluster only for a data dir that is new (absent or empty): an existing one whose store went
    # missing is an error to report, not a reason to start over (DESIGN.md #10).
    new = not data_dir.exists() or not any(data_dir.iterdir())
    data_dir.mkdir(parents=True, exist_ok=True)
    api_token, new_api = _token(data_dir, "api-token", "TITUS_API_TOKEN")
    agent_token, _ = _token(data_dir, "agent-token", "TITUS_AGENT_TOKEN")
    certs = ensure_dev_certificates(data_dir) if tls else None
    server = MasterServer(
        MasterConfig(
            host="127.0.0.1",
            port=port,
            data_dir=data_dir / "master",
            api_token=api_token,
            agent_token=agent_token,
            sqlite_synchronous=os.environ.get("TITUS_SQLITE_SYNCHRONOUS", "FULL"),
            init_cluster=new,
            tls_cert_file=str(certs.cert_file) if certs else "",
            tls_key_file=str(certs.key_file) if certs else "",
        )
    )
    url = f"{'https' if certs else 'http'}://127.0.0.1:{server.port}"
    # Where the CLI finds this cluster without TITUS_URL (titus/cli_common.py make_client), and trusts
    # its CA for that URL only.
    (data_dir / "url").write_text(url + "\n")
    if certs is None:
        (data_dir / "ca.pem").unlink(missing_ok=True)
    agent_env = {
        **os.environ,
        "TITUS_MASTER_URL": url,
        "TITUS_AGENT_TOKEN": agent_token,
        "TITUS_AGENT_ID": dev_agent_id(data_dir),
        "TITUS_DATA_DIR": str(data_dir / "agent"),
        "TITUS_RUNTIME": dev_runtime(),
        "TITUS_KILL_TASKS_ON_EXIT": "true",
        "TITUS_UNKNOWN_TASK_GRACE_S": os.environ.get("TITUS_UNKNOWN_TASK_GRACE_S", "2"),
        **({"TITUS_CA_FILE": str(certs.ca_file)} if certs else {}),
    }
    agent_env.pop("TITUS_API_TOKEN", None)
    if agent_memory_mb is not None:
        agent_env["TITUS_AGENT_MEMORY_MB"] = str(agent_memory_mb)
    if agent_cpu is not None:
        agent_env["TITUS_AGENT_CPU"] = str(agent_cpu)

    from master import gc_policy

    gc_policy.tune()  # this process holds the master's state (master/gc_policy.py)
    serving = threading.Thread(target=server.serve_forever, name="master", daemon=True)
    serving.start()
    # The agent starts only under a master that accepted its store: one that refused must not be the
    # reason an agent (which kills its tasks when it stops, in dev mode) ever runs.
    deadline = time.monotonic() + 60
    while server.role() != "leader" and not server.refusal and time.monotonic() < deadline:
        time.sleep(0.02)
    if server.refusal:
        serving.join(timeout=10)
        raise DevRefused(f"{server.refusal}. (titus dev creates a cluster only in a new, empty --data-dir.)",
                         server.exit_code)
    def start_agent() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "titus.cli", "agent"], env=agent_env, preexec_fn=_die_with_parent
        )

    agent = start_agent()
    agent_started = time.monotonic()
    backoff = AgentBackoff()
    click.echo(f"titus dev: master on {url}, agent pid {agent.pid}, data in {data_dir}")
    click.echo(f"  API token {'written to' if new_api else 'in'} {data_dir / 'api-token'}; use it as")
    click.echo(f"    export TITUS_API_TOKEN=$(cat {data_dir / 'api-token'})")
    cacert = f" --cacert {certs.ca_file}" if certs else ""
    click.echo(f'    curl{cacert} -H "Authorization: Bearer $TITUS_API_TOKEN" {url}/api/v3/jobs')
    if certs:
        click.echo(f"  HTTPS with this cluster's own CA ({certs.ca_file}); the titus CLI trusts it here.")
    click.echo("  Ctrl-C stops the master, the agent and every task.", err=False)

    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop.is_set():
        if agent.poll() is not None:
            # A crashed agent is a host problem, not the cluster's: its tasks run on under their
            # supervisors, and a new agent adopts them. Restart it, backing off while it keeps crashing.
            delay = backoff.next_delay(time.monotonic() - agent_started)
            click.echo(f"titus dev: the agent exited with {agent.returncode}; restarting it in {delay:.0f} s",
                       err=True)
            if stop.wait(delay):
                break
            agent = start_agent()
            agent_started = time.monotonic()
            continue
        if not serving.is_alive():
            click.echo("titus dev: the master stopped; stopping", err=True)
            break
        stop.wait(0.5)
    if agent.poll() is None:
        agent.terminate()
        try:
            agent.wait(timeout=15)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
    _sweep_tasks(data_dir / "agent", dev_agent_id(data_dir))
    server.shutdown()
    serving.join(timeout=5)
    if server.refusal:
        raise DevRefused(f"{server.refusal}. (titus dev creates a cluster only in a new, empty --data-dir.)",
                         server.exit_code)
    click.echo("titus dev: stopped")


def _sweep_tasks(agent_dir: Path, agent_id: str) -> None:
    """Safety net for a dev agent that died abruptly: kill whatever is left in its cgroups."""
    from agent.runtime.oci import OciRuntime
    from agent.runtime.process import ProcessRuntime

    try:
        runtime: ProcessRuntime = (OciRuntime(agent_dir, agent_id) if dev_runtime() == "oci"
                                   else ProcessRuntime(agent_dir, agent_id))
    except Exception as exc:
        click.echo(f"titus dev: could not check for leftover tasks: {exc}", err=True)
        return
    leftovers = runtime.list_running()
    for task_id in leftovers:
        runtime.kill(task_id, 1.0)
    deadline = time.monotonic() + 5
    while leftovers and time.monotonic() < deadline:
        leftovers = [t for t in leftovers if runtime.poll(t) is None]
        time.sleep(0.05)
    for task_id in runtime.list_running() + leftovers:
        runtime.cleanup(task_id)
    runtime.close()
    if leftovers:
        click.echo(f"titus dev: {len(leftovers)} task(s) would not stop: {', '.join(leftovers)}", err=True)
