"""TLS for the HTTPS listener: the operator's certificate and key, or `--tls self-signed`, a CA
of this data dir's own and a server certificate it signs.

packet-python speaks HTTPS only and checks the certificate (through requests); equinix-metal
takes a CA file (`ssl_ca_cert`). The self-signed CA is written once (`DATA_DIR/tls/ca.pem`) and
kept, so clients given it keep trusting the server; the server certificate is issued again from
that CA when its names no longer cover the listeners' hosts or it nears its end. Keys are
written mode 0600, through a temporary file renamed into place, so a reader never sees half a
key. Looked at `trustme` (test CAs only, in memory) and mkcert (a Go binary that installs its
CA system-wide): neither writes a CA a server keeps in its data dir; `cryptography` builds the
certificates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from metalflow.errors import MetalflowError

TLS_DIR = "tls"
CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
SERVER_FILE = "server.pem"
SERVER_KEY_FILE = "server-key.pem"
CA_LIFETIME = dt.timedelta(days=3650)
SERVER_LIFETIME = dt.timedelta(days=397)
"""The longest a browser takes; clients here do not care, but operators copy such files."""
RENEW_BEFORE = dt.timedelta(days=30)
ALWAYS_NAMED = ("localhost", "127.0.0.1", "::1")
ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})


class TlsSetupError(MetalflowError):
    """A certificate or key that cannot serve: the message names the option and the fix."""

    status = 422


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None
    """The CA bundle clients need to trust `cert` (self-signed only; None: the operator's own
    certificate, whose CA the clients know)."""


def names_for(hosts: Iterable[str]) -> list[str]:
    """What the server certificate must name: loopback always, each listener's host, and this
    machine's host name for a listener on every address."""
    names = list(ALWAYS_NAMED)
    for host in hosts:
        name = host.strip("[]")
        if name in ANY_ADDRESS:
            name = socket.gethostname()
        if name and name not in names:
            names.append(name)
    return names


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _new_ca(
    directory: Path, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "metalflow"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"metalflow CA {socket.gethostname()}"),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(directory / CA_KEY_FILE, _key_bytes(key), 0o600)
    _write(directory / CA_FILE, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    cert_path, key_path = directory / CA_FILE, directory / CA_KEY_FILE
    if not cert_path.exists() or not key_path.exists():
        return None
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsSetupError(f"{key_path} is not the key this CA was made with: remove {directory}")
    return cert, key


def _covers(path: Path, names: list[str], now: dt.datetime, ca: x509.Certificate) -> bool:
    """Whether the server certificate at `path` is the CA's, names every name and lasts."""
    if not path.exists():
        return False
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    if cert.issuer != ca.subject or cert.not_valid_after_utc - RENEW_BEFORE < now:
        return False
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return all(_general_name(name) in sans for name in names)


def self_signed(data_dir: Path, hosts: Iterable[str], now: dt.datetime | None = None) -> TlsFiles:
    """The data dir's CA (made on first use) and a server certificate it signed for `hosts`."""
    moment = now or dt.datetime.now(dt.UTC)
    directory = data_dir / TLS_DIR
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca, ca_key = _load_ca(directory) or _new_ca(directory, moment)
    names = names_for(hosts)
    files = TlsFiles(directory / SERVER_FILE, directory / SERVER_KEY_FILE, directory / CA_FILE)
    if _covers(files.cert, names, moment, ca) and files.key.exists():
        return files
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[-1])]))
        .issuer_name(ca.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - dt.timedelta(minutes=5))
        .not_valid_after(min(moment + SERVER_LIFETIME, ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(files.key, _key_bytes(key), 0o600)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return files


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """The listener's context; a certificate and key that do not load or do not match are a
    TlsSetupError naming the options."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(files.cert, files.key)
    except FileNotFoundError as exc:
        raise TlsSetupError(
            f"--tls-cert/--tls-key: {exc.filename or files.cert} does not exist", field="tls_cert"
        ) from None
    except (ssl.SSLError, OSError) as exc:
        raise TlsSetupError(
            f"--tls-cert {files.cert} and --tls-key {files.key} do not make a certificate and"
            f" its key in PEM ({exc}): give the server's certificate chain and its private key",
            field="tls_cert",
        ) from None
    return context
