"""The master over HTTPS (TITUS_TLS_CERT/KEY), and mutual TLS (TITUS_TLS_CLIENT_CA), over real sockets.

A private CA, a server certificate for 127.0.0.1 and a client certificate are made with `cryptography`.
Clients that trust the CA get answers (the CLI and a real agent through TITUS_CA_FILE); clients that do not,
plain HTTP on the TLS port and connections that never finish a handshake are refused or closed while the
master keeps serving; the edge's limits hold over TLS too.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import batch_job, free_port, wait_for
from tests.security.test_api_edge import API_TOKEN, IDLE_TIMEOUT_S, Master, _closed_by_peer, stop_master


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, encipher_only=False,
                                         decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, name: str,
          usage: x509.ObjectIdentifier) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                         x509.DNSName("localhost")]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = _ca("titus test CA")
    other, _ = _ca("someone else's CA")
    server, server_key = _leaf(ca, ca_key, "titus master", ExtendedKeyUsageOID.SERVER_AUTH)
    client, client_key = _leaf(ca, ca_key, "agent-1", ExtendedKeyUsageOID.CLIENT_AUTH)
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "other-ca.pem").write_bytes(other.public_bytes(pem))
    (d / "server.pem").write_bytes(server.public_bytes(pem))
    (d / "client.pem").write_bytes(client.public_bytes(pem))
    _write_key(server_key, d / "server.key")
    _write_key(client_key, d / "client.key")
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key",
               d / "other-ca.pem")


def _spawn(data: Path, pki: Pki, **extra: str) -> Master:
    port = free_port()
    env = {**os.environ, "TITUS_INIT_CLUSTER": "true",
           "TITUS_PORT": str(port), "TITUS_DATA_DIR": str(data / "state"),
           "TITUS_API_TOKEN": API_TOKEN, "TITUS_SQLITE_SYNCHRONOUS": "NORMAL", "TITUS_LOG_LEVEL": "WARNING",
           "TITUS_TLS_CERT": str(pki.server_cert), "TITUS_TLS_KEY": str(pki.server_key),
           "TITUS_IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S), "TITUS_HEADER_TIMEOUT_S": "2", **extra}
    log = data / "master.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "titus.cli", "master"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    m = Master(f"https://127.0.0.1:{port}", port, proc, log)
    cert = (str(pki.client_cert), str(pki.client_key)) if "TITUS_TLS_CLIENT_CA" in extra else None

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            r = requests.get(m.url + "/healthz", timeout=2, verify=str(pki.ca), cert=cert)
            return r.status_code == 200
        except requests.RequestException:
            return False

    wait_for(healthy, timeout=60, what="the HTTPS master")
    return m


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Master]:
    m = _spawn(tmp_path_factory.mktemp("tls-master"), pki)
    yield m
    stop_master(m)


def _api(m: Master, pki: Pki, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {API_TOKEN}", **kwargs.pop("headers", {})}
    return requests.request(method, m.url + path, headers=headers, verify=str(pki.ca), timeout=30, **kwargs)


def _assert_serving(m: Master, pki: Pki) -> None:
    assert m.proc.poll() is None, m.log.read_text()[-3000:]
    assert _api(m, pki, "GET", "/api/v3/jobs").status_code == 200


def test_a_client_that_trusts_the_ca_is_served(master: Master, pki: Pki) -> None:
    r = _api(master, pki, "POST", "/api/v3/jobs", json=batch_job())
    assert r.status_code == 202, r.text
    assert _api(master, pki, "GET", f"/api/v3/jobs/{r.json()['id']}").status_code == 200


def test_clients_refuse_a_master_whose_certificate_they_cannot_verify(master: Master, pki: Pki) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(master.url + "/healthz", timeout=10, verify=str(pki.other_ca))
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(master.url + "/healthz", timeout=10)  # the system's CAs do not know ours
    _assert_serving(master, pki)


def test_plain_http_and_silent_connections_get_nothing_and_are_closed(master: Master, pki: Pki) -> None:
    with socket.create_connection(("127.0.0.1", master.port), timeout=10) as plain:
        plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = plain.recv(65536)
        except (ConnectionResetError, TimeoutError):
            answer = b""
        assert not answer.startswith(b"HTTP/"), answer
    silent = socket.create_connection(("127.0.0.1", master.port), timeout=10)  # never starts a handshake
    assert _closed_by_peer(silent, within_s=IDLE_TIMEOUT_S + 15)
    silent.close()
    _assert_serving(master, pki)


def test_many_concurrent_keepalive_clients_and_large_answers(master: Master, pki: Pki) -> None:
    """Exercises partial TLS writes and records left pending in the SSL object: every answer whole."""
    expected = _api(master, pki, "GET", "/api/v3/openapi.json").json()

    def client(_: int) -> int:
        ok = 0
        with requests.Session() as http:
            http.headers["Authorization"] = f"Bearer {API_TOKEN}"
            for _ in range(20):
                r = http.get(master.url + "/api/v3/openapi.json", timeout=30, verify=str(pki.ca))
                ok += r.status_code == 200 and r.json() == expected
        return ok

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(client, range(16))) == 16 * 20
    _assert_serving(master, pki)


def test_the_edge_limits_hold_over_tls(master: Master, pki: Pki) -> None:
    import http.client

    # A declared length over the cap is refused from the headers, before any body byte is sent.
    conn = http.client.HTTPSConnection("127.0.0.1", master.port, timeout=30,
                                       context=ssl.create_default_context(cafile=str(pki.ca)))
    conn.putrequest("POST", "/api/v3/jobs")
    for name, value in (("Authorization", f"Bearer {API_TOKEN}"), ("Content-Type", "application/json"),
                        ("Content-Length", str(100 << 20))):
        conn.putheader(name, value)
    conn.endheaders()
    answer = conn.getresponse()
    assert answer.status == 413 and json.loads(answer.read())["error"]
    conn.close()
    r = _api(master, pki, "POST", "/api/v3/jobs", data=b"[" * 1000,
             headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    _assert_serving(master, pki)


def test_the_cli_and_a_real_agent_trust_the_ca_through_titus_ca_file(master: Master, pki: Pki,
                                                                       tmp_path: Path) -> None:
    env = {**os.environ, "TITUS_CA_FILE": str(pki.ca), "TITUS_URL": master.url, "TITUS_API_TOKEN": API_TOKEN}
    made = subprocess.run([sys.executable, "-m", "titus.cli", "agent-tokens", "create", "--json"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    agent_env = {k: v for k, v in os.environ.items() if not k.startswith("TITUS_")}
    agent_env.update({"TITUS_MASTER_URL": master.url, "TITUS_CA_FILE": str(pki.ca),
                      "TITUS_BOOTSTRAP_TOKEN": token, "TITUS_AGENT_ID": "tls-agent",
                      "TITUS_DATA_DIR": str(tmp_path / "agent"), "TITUS_RUNTIME": "process",
                      "TITUS_AGENT_CPU": "1", "TITUS_AGENT_MEMORY_MB": "1024", "TITUS_SELF_FENCE": "false"})
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "titus.cli", "agent"], env=agent_env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        def registered() -> bool:
            assert proc.poll() is None, log.read_text()
            items = _api(master, pki, "GET", "/api/v3/agent/instances").json()["items"]
            return any(a["id"] == "tls-agent" for a in items)

        wait_for(registered, timeout=60, what=f"the agent over HTTPS (log: {log})")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_mutual_tls_refuses_clients_without_a_certificate(tmp_path: Path, pki: Pki) -> None:
    m = _spawn(tmp_path, pki, TITUS_TLS_CLIENT_CA=str(pki.ca))
    try:
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(m.url + "/healthz", timeout=10, verify=str(pki.ca))
        r = requests.get(m.url + "/api/v3/jobs", timeout=10, verify=str(pki.ca),
                         cert=(str(pki.client_cert), str(pki.client_key)),
                         headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert r.status_code == 200
        # The agent's side: enrolment and its channel with its client certificate (TITUS_TLS_CLIENT_CERT).
        from agent.enrol import enrol
        from agent.master_client import MasterClient, MasterUnavailable

        cert = (str(pki.client_cert), str(pki.client_key))
        made = requests.post(m.url + "/api/v3/agent/bootstrapTokens", json={}, timeout=10, verify=str(pki.ca),
                             cert=cert, headers={"Authorization": f"Bearer {API_TOKEN}"})
        credential = enrol(tmp_path / "mtls-agent", [m.url], "mtls-agent", made.json()["token"],
                           ca_file=str(pki.ca), client_cert=cert)
        resources = {"cpu": 1, "memoryMB": 512, "diskMB": 1000, "networkMbps": 10}
        body = {"id": "mtls-agent", "resources": resources}
        assert MasterClient(m.url, credential, str(pki.ca), cert)._call("POST", "/register", 10, json=body)
        with pytest.raises(MasterUnavailable):  # the same agent without its certificate
            MasterClient(m.url, credential, str(pki.ca))._call("POST", "/register", 10, json=body)
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        with socket.create_connection(("127.0.0.1", m.port), timeout=10) as raw, pytest.raises(
                (ssl.SSLError, ConnectionResetError, BrokenPipeError)), \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            if not tls.recv(1024):
                raise ConnectionResetError("closed without an answer")
    finally:
        stop_master(m)
