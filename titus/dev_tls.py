"""`titus dev`'s own certificate authority: HTTPS on the embedded cluster with nothing to set up.

On first start it makes a CA (10 years) and a server certificate for 127.0.0.1 and localhost signed by it
(397 days, the longest a browser accepts), with the `cryptography` library, in `<data dir>/tls/`; later
starts reuse them, and renew the server certificate once it has less than 30 days left. The CA's key never
leaves the data dir (0600, in a 0700 directory). The CLI trusts `<data dir>/ca.pem` for the URL `titus dev`
wrote to `<data dir>/url`, and the dev agent gets it as TITUS_CA_FILE; curl takes `--cacert`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 397
RENEW_BEFORE_DAYS = 30
#: What the server certificate names: titus dev listens on 127.0.0.1 only.
SERVER_NAMES = ("localhost",)
SERVER_IPS = ("127.0.0.1",)


@dataclass(frozen=True)
class DevCertificates:
    ca_file: Path  # the CA certificate, for clients (public)
    cert_file: Path  # the server certificate
    key_file: Path  # the server key


def ensure_dev_certificates(data_dir: Path, now: dt.datetime | None = None) -> DevCertificates:
    """The dev cluster's CA and server certificate, made or renewed as needed (see the module doc)."""
    now = now or dt.datetime.now(dt.UTC)
    tls = data_dir / "tls"
    tls.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key_file, ca_file = tls / "ca-key.pem", data_dir / "ca.pem"
    cert_file, key_file = tls / "server.pem", tls / "server-key.pem"
    if ca_key_file.exists() and ca_file.exists() and _valid_for(ca_file, now, RENEW_BEFORE_DAYS):
        ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"titus dev CA ({data_dir.name})")])
        ca_cert = (
            _builder(name, name, ca_key.public_key(), now, CA_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        _write(ca_key_file, _key_pem(ca_key), 0o600)
        _write(ca_file, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
        cert_file.unlink(missing_ok=True)  # signed by the old CA, if any
    if not (cert_file.exists() and key_file.exists() and _valid_for(cert_file, now, RENEW_BEFORE_DAYS)
            and _issued_by(cert_file, ca_cert)):
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{ca_key_file} is not the EC key titus dev writes")
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        alt: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
        alt += [x509.IPAddress(ipaddress.ip_address(i)) for i in SERVER_IPS]
        cert = (
            _builder(subject, ca_cert.subject, key.public_key(), now, SERVER_DAYS)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(key_file, _key_pem(key), 0o600)
        _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return DevCertificates(ca_file, cert_file, key_file)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: dt.datetime, days: int
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # a client clock a little behind still accepts it
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
        encipher_only=False, decipher_only=False,
    )


def _valid_for(path: Path, now: dt.datetime, days: int) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        return False
    return cert.not_valid_after_utc - now > dt.timedelta(days=days)


def _issued_by(path: Path, ca: x509.Certificate) -> bool:
    try:
        x509.load_pem_x509_certificate(path.read_bytes()).verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Written to a temporary file first: a crash mid-write leaves the old file or none, never half."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
