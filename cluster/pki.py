"""Certificates and keys for the test control plane: one CA, the API server's serving cert, the
service-account signing key, and bearer tokens for each component (a static token file).

ECDSA P-256 throughout: quick to generate, and kube-apiserver accepts it for serving and for
service-account tokens (ES256).
"""

from __future__ import annotations

import datetime
import ipaddress
import pathlib
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["COMPONENT_USERS", "Pki", "write_pki"]

# user -> groups. The RBAC bootstrap policy binds these names (plugin/pkg/auth/authorizer/rbac/
# bootstrappolicy); admin and KWOK (which writes node and pod status) are cluster admins.
COMPONENT_USERS: dict[str, tuple[str, ...]] = {
    "admin": ("system:masters",),
    "system:kube-controller-manager": (),
    "system:kube-scheduler": (),
    "kwok": ("system:masters",),
}
_VALIDITY = datetime.timedelta(days=365)
# What in-cluster clients and the host call the API server by.
_SERVER_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local")
_SERVER_IPS = ("127.0.0.1", "10.96.0.1")


@dataclass(frozen=True)
class Pki:
    directory: pathlib.Path
    tokens: dict[str, str]

    @property
    def ca_cert(self) -> pathlib.Path:
        return self.directory / "ca.crt"

    @property
    def server_cert(self) -> pathlib.Path:
        return self.directory / "apiserver.crt"

    @property
    def server_key(self) -> pathlib.Path:
        return self.directory / "apiserver.key"

    @property
    def service_account_key(self) -> pathlib.Path:
        return self.directory / "sa.key"

    @property
    def service_account_public_key(self) -> pathlib.Path:
        return self.directory / "sa.pub"

    @property
    def token_file(self) -> pathlib.Path:
        return self.directory / "tokens.csv"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: pathlib.Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _write_cert(path: pathlib.Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def write_pki(directory: pathlib.Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)  # clock skew between processes

    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "poolpilot-test-ca")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + _VALIDITY)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))

    server_key = _key()
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in _SERVER_NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in _SERVER_IPS]
    server_cert = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
                   .issuer_name(ca_name).public_key(server_key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + _VALIDITY)
                   .add_extension(x509.SubjectAlternativeName(names), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .sign(ca_key, hashes.SHA256()))

    pki = Pki(directory, tokens={user: secrets.token_hex(24) for user in COMPONENT_USERS})
    _write_cert(pki.ca_cert, ca_cert)
    _write_key(directory / "ca.key", ca_key)
    _write_cert(pki.server_cert, server_cert)
    _write_key(pki.server_key, server_key)
    sa_key = _key()
    _write_key(pki.service_account_key, sa_key)
    pki.service_account_public_key.write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    # kube-apiserver --token-auth-file: token,user,uid,"group1,group2"
    lines = [f'{pki.tokens[user]},{user},{user},"{",".join(groups)}"' for user, groups in COMPONENT_USERS.items()]
    pki.token_file.write_text("\n".join(lines) + "\n")
    pki.token_file.chmod(0o600)
    return pki
