"""`titus capacity-controller --config FILE`: the controller loop (registered by titus.cli)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from types import FrameType

import click

from capacity.cluster import HttpClusterView
from capacity.config import ConfigError, ControllerConfig, load_config
from capacity.controller import Controller
from capacity.leader import AlwaysLeader, LeaderElection
from capacity.logs import configure
from capacity.status import StatusServer, create_status_app

log = logging.getLogger("capacity.cli")


def build_controller(cfg: ControllerConfig, token: str) -> Controller:
    from capacity.aws import AsgDiscovery, make_clients  # boto3 only when the controller really runs

    asg, ec2 = make_clients(cfg.region, cfg.endpoint_url)
    provider = AsgDiscovery(
        asg, ec2, cfg.cluster, dry_run=cfg.dry_run, resources_override=cfg.instance_resources
    )
    leader: LeaderElection = AlwaysLeader()
    if cfg.zookeeper:
        from capacity.zk_leader import ZooKeeperLeaderElection

        path = cfg.zookeeper_path or f"/titus/{cfg.cluster}/capacity-controller/leader"
        leader = ZooKeeperLeaderElection(cfg.zookeeper, path, f"{socket.gethostname()}:{os.getpid()}")
    return Controller(
        HttpClusterView(cfg.master_url, token), provider, cfg.tiers, leader=leader, dry_run=cfg.dry_run
    )


def next_sleep(cfg: ControllerConfig, now: float, next_decision_at: float | None) -> float:
    """Wake at the plan's next decision point when that is sooner than the timer, but not in a busy loop."""
    wake = now + cfg.interval_s
    if next_decision_at is not None:
        wake = min(wake, next_decision_at)
    return max(cfg.min_interval_s, wake - now)


@click.command("capacity-controller")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--once", is_flag=True, help="Run one iteration, print the plan as JSON, and exit.")
def capacity_controller(config_path: str, once: bool) -> None:
    """Size the critical and flex tiers' autoscaling groups from the master's view of the cluster."""
    configure()
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from exc
    token = os.environ.get(cfg.token_env, "")
    if not token:
        raise click.UsageError(f"set {cfg.token_env} to the master's API token (config key token_env)")
    controller = build_controller(cfg, token)
    if once:
        import json

        controller.leader.start()
        try:
            deadline = time.monotonic() + 15
            while not controller.leader.is_leader() and time.monotonic() < deadline:
                time.sleep(0.2)
            decision = controller.run_once(time.time())
        finally:
            controller.leader.stop()
        click.echo(json.dumps(decision.to_json() if decision else None))
        return

    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server = StatusServer(create_status_app(controller, token), cfg.status_port)
    server.start()
    controller.leader.start()
    log.info(
        "capacity controller started",
        extra={"event": "start", "statusPort": server.port, "dryRun": cfg.dry_run, "cluster": cfg.cluster},
    )
    try:
        while not stop.is_set():
            now = time.time()
            next_at: float | None = None
            try:
                decision = controller.run_once(now)
                next_at = decision.next_decision_at if decision else None
            except Exception:  # the loop must outlive any one bad iteration
                log.exception("capacity iteration failed", extra={"event": "iteration_failed"})
            stop.wait(next_sleep(cfg, now, next_at))
    finally:
        controller.leader.stop()
        server.stop()
