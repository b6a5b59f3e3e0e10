"""Agent enrolment latency: bootstrap token in, durable credential out, over real HTTP.

    python -m bench.enrolment --json [--agents 200]

A `titus master` runs in-process (SQLite, synchronous=FULL: the credential's row is fsynced before the
answer). An operator creates one bootstrap token good for `agents` uses; then `agents` agents enrol one
after another through `agent.enrol.enrol`, the agent's own code: the HTTP round trip, the master's checks
and its durable write, and the agent writing its credential file (fsync). Plain HTTP here; bench.tls runs the
same over HTTPS.
Goal (issue 17): enrolment <= 50 ms, judged on the 99th percentile. Figures are printed and written to
bench/results/enrolment.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from agent.enrol import enrol
from bench.facts import load_now, run_facts
from bench.stats import pct
from master.server import MasterConfig, MasterServer

RESULTS = Path(__file__).parent / "results"
API_TOKEN = "bench-enrolment-api-token"
GOAL_MS = 50.0


def run(agents: int, tls: tuple[Path, Path, Path] | None = None) -> dict[str, Any]:
    """`tls`: (CA file, certificate, key): the master serves HTTPS and the agents verify it."""
    work = Path(tempfile.mkdtemp(prefix="titus-bench-enrol-"))
    cert, key = (str(tls[1]), str(tls[2])) if tls else ("", "")
    verify: str | bool = str(tls[0]) if tls else True
    server = MasterServer(MasterConfig(
        init_cluster=True, port=0, data_dir=work / "master", api_token=API_TOKEN,
                                       sqlite_synchronous="FULL", tls_cert_file=cert, tls_key_file=key))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{server.port}"
    try:
        deadline = time.monotonic() + 30
        while requests.get(url + "/healthz", timeout=5, verify=verify).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the master did not come up")
            time.sleep(0.05)
        made = requests.post(url + "/api/v3/agent/bootstrapTokens", timeout=30, verify=verify,
                             json={"uses": agents, "ttlSeconds": 3600},
                             headers={"Authorization": f"Bearer {API_TOKEN}"})
        made.raise_for_status()
        token = made.json()["token"]
        latencies_ms = []
        for i in range(agents):
            started = time.perf_counter()
            enrol(work / f"agent-{i}", [url], f"bench-agent-{i}", token, ca_file=str(tls[0]) if tls else "")
            latencies_ms.append((time.perf_counter() - started) * 1000)
        enrolled = requests.get(url + "/api/v3/agent/credentials", timeout=30, verify=verify,
                                headers={"Authorization": f"Bearer {API_TOKEN}"}).json()["items"]
        if len(enrolled) != agents:
            raise RuntimeError(f"{len(enrolled)} credentials listed for {agents} enrolments")
    finally:
        server.shutdown()
        thread.join(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    p99 = pct(latencies_ms, 0.99)
    return {
        **run_facts(sqlite_synchronous="FULL", transport="HTTPS" if tls else "plain HTTP", agents=agents),
        "enrolment_ms_p50": round(pct(latencies_ms, 0.50), 2),
        "enrolment_ms_p99": round(p99, 2),
        "enrolment_ms_max": round(max(latencies_ms), 2),
        "goals": {"enrolment_p99_le_50ms": {"target_ms": GOAL_MS, "value_ms": round(p99, 2),
                                            "met": p99 <= GOAL_MS}},
        "load_average_at_end": load_now(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=200, help="enrolments to time (default 200)")
    parser.add_argument("--json", action="store_true", help="write bench/results/enrolment.json")
    args = parser.parse_args()
    result = run(args.agents)
    print(json.dumps(result, indent=2))
    if args.json:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "enrolment.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
