"""TLS cost on the master: job submissions per second over HTTPS against plain HTTP in the same run.

    python -m bench.tls --json [--duration 15] [--concurrency 8]

Two `titus master` processes one after the other on fresh data directories (SQLite, synchronous=FULL, so
every 202 is durable), the second with a certificate from a throwaway CA (`cryptography`, ECDSA P-256).
`concurrency` client threads post one-task batch jobs over keep-alive connections for `duration` seconds;
the jobs stay pending (no agents), so the phase measures the edge, the API and the store. Then agent
enrolment over HTTPS (bench.enrolment's procedure). Goals (issue 17): HTTPS submissions/s >= 0.8 x the plain
figure; enrolment p99 <= 50 ms. Figures are printed and written to bench/results/tls.json.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench.enrolment import run as run_enrolment
from bench.facts import load_now, run_facts

RESULTS = Path(__file__).parent / "results"
API_TOKEN = "bench-tls-api-token"
JOB = {
    "owner": {"teamEmail": "bench@example.com"}, "applicationName": "bench",
    "container": {"resources": {"cpu": 64, "memoryMB": 32, "diskMB": 10, "networkMbps": 1},
                  "image": {"name": "busybox", "tag": "latest"}, "command": ["/bin/true"]},
    "batch": {"size": 1, "retryPolicy": {"immediate": {"retries": 0}}},
}


def make_pki(d: Path) -> tuple[Path, Path, Path]:
    """(CA file, server certificate, server key) for 127.0.0.1, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "m")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "server.pem").write_bytes(leaf.public_bytes(pem))
    (d / "server.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    return d / "ca.pem", d / "server.pem", d / "server.key"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def submissions_per_s(work: Path, duration: float, concurrency: int,
                      tls: tuple[Path, Path, Path] | None) -> dict[str, Any]:
    port = _free_port()
    env = {**os.environ, "TITUS_INIT_CLUSTER": "true",
           "TITUS_PORT": str(port), "TITUS_DATA_DIR": str(work / "state"),
           "TITUS_API_TOKEN": API_TOKEN, "TITUS_SQLITE_SYNCHRONOUS": "FULL", "TITUS_LOG_LEVEL": "WARNING"}
    verify: str | bool = True
    scheme = "http"
    if tls is not None:
        env.update({"TITUS_TLS_CERT": str(tls[1]), "TITUS_TLS_KEY": str(tls[2])})
        verify, scheme = str(tls[0]), "https"
    url = f"{scheme}://127.0.0.1:{port}"
    with (work / "master.log").open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "titus.cli", "master"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url + "/healthz", timeout=2, verify=verify).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"master did not come up: {(work / 'master.log').read_text()[-2000:]}")
            time.sleep(0.1)
        counts = [0] * concurrency
        errors = [0] * concurrency
        body = json.dumps(JOB)
        stop_at = time.monotonic() + duration

        def worker(i: int) -> None:
            with requests.Session() as http:
                http.headers.update({"Authorization": f"Bearer {API_TOKEN}",
                                     "Content-Type": "application/json"})
                while time.monotonic() < stop_at:
                    r = http.post(url + "/api/v3/jobs", data=body, timeout=30, verify=verify)
                    if r.status_code == 202:
                        counts[i] += 1
                    else:
                        errors[i] += 1

        started = time.monotonic()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"submissions_per_s": round(sum(counts) / elapsed, 1), "accepted": sum(counts),
            "errors": sum(errors), "seconds": round(elapsed, 1)}


def run(duration: float, concurrency: int, agents: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="titus-bench-tls-"))
    try:
        pki = make_pki(work)
        (work / "plain").mkdir()
        (work / "tls").mkdir()
        plain = submissions_per_s(work / "plain", duration, concurrency, None)
        tls = submissions_per_s(work / "tls", duration, concurrency, pki)
        enrolment = run_enrolment(agents, tls=pki)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = tls["submissions_per_s"] / plain["submissions_per_s"] if plain["submissions_per_s"] else 0.0
    p99 = enrolment["enrolment_ms_p99"]
    return {
        **run_facts(sqlite_synchronous="FULL", concurrency=concurrency, duration_s=duration,
                    tls="TLS 1.2+/1.3, ECDSA P-256 server certificate, stdlib ssl"),
        "plain": plain,
        "tls": tls,
        "tls_over_plain": round(ratio, 3),
        "enrolment_tls_ms_p50": enrolment["enrolment_ms_p50"],
        "enrolment_tls_ms_p99": p99,
        "goals": {
            "tls_submissions_ge_0.8x_plain": {"target": 0.8, "value": round(ratio, 3), "met": ratio >= 0.8},
            "enrolment_p99_le_50ms": {"target_ms": 50.0, "value_ms": p99, "met": p99 <= 50.0},
        },
        "load_average_at_end": load_now(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per phase (default 15)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--agents", type=int, default=100, help="enrolments over HTTPS (default 100)")
    parser.add_argument("--json", action="store_true", help="write bench/results/tls.json")
    args = parser.parse_args()
    result = run(args.duration, args.concurrency, args.agents)
    print(json.dumps(result, indent=2))
    if args.json:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "tls.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
