"""titus dev's certificates (titus/dev_tls.py): made once, reused, renewed before they expire, and a real
TLS handshake against them succeeds for 127.0.0.1 with the CA and fails without it."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from titus.dev_tls import RENEW_BEFORE_DAYS, SERVER_DAYS, ensure_dev_certificates

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _not_after(path: Path) -> dt.datetime:
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc


def test_made_once_then_reused(tmp_path: Path) -> None:
    first = ensure_dev_certificates(tmp_path, NOW)
    blobs = [p.read_bytes() for p in (first.ca_file, first.cert_file, first.key_file)]
    again = ensure_dev_certificates(tmp_path, NOW + dt.timedelta(days=1))
    assert [p.read_bytes() for p in (again.ca_file, again.cert_file, again.key_file)] == blobs
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "tls" / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    assert first.key_file.stat().st_mode & 0o777 == 0o600


def test_the_server_certificate_is_renewed_before_it_expires_and_the_ca_kept(tmp_path: Path) -> None:
    first = ensure_dev_certificates(tmp_path, NOW)
    ca, expires = first.ca_file.read_bytes(), _not_after(first.cert_file)
    later = NOW + dt.timedelta(days=SERVER_DAYS - RENEW_BEFORE_DAYS + 1)
    renewed = ensure_dev_certificates(tmp_path, later)
    assert renewed.ca_file.read_bytes() == ca
    assert _not_after(renewed.cert_file) > expires + dt.timedelta(days=300)


def test_a_server_certificate_of_another_ca_is_replaced(tmp_path: Path) -> None:
    ensure_dev_certificates(tmp_path, NOW)
    (tmp_path / "tls" / "ca-key.pem").unlink()  # a new CA: the old server certificate is not its own
    certs = ensure_dev_certificates(tmp_path, NOW)
    ca = x509.load_pem_x509_certificate(certs.ca_file.read_bytes())
    x509.load_pem_x509_certificate(certs.cert_file.read_bytes()).verify_directly_issued_by(ca)


def test_a_tls_handshake_to_127_0_0_1_verifies_with_the_ca_and_only_with_it(tmp_path: Path) -> None:
    certs = ensure_dev_certificates(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certs.cert_file, certs.key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass  # the client without the CA hangs up during the handshake

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    trusting = ssl.create_default_context(cafile=str(certs.ca_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        trusting.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.recv(2) == b"ok"
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
    thread.join(timeout=10)
    listener.close()
