"""A provisioned replica's credentials: the bearer its VM demands and the certificate it serves TLS with.

Made once per replica, before its VM is asked for, and kept (`chalicelib.store.replica_credentials`)
until the VM is recorded: a create call retried after a lost answer adopts the VM already made, and
that VM must be the one whose certificate the replica pins. The key pair is ECDSA P-256 (quick to
make, accepted by every TLS stack); the certificate is self-signed, as its only reader pins it by
fingerprint (`chalicelib.core.pinned_tls`). Made with `cryptography`, imported here only: the provision
function alone pays for it.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from dataclasses import dataclass, field

from chalicelib.store import replica_credentials as store

CERTIFICATE_YEARS = 10  # the pin, not the dates, is what the proxy checks; the VM never outlives this


@dataclass(frozen=True)
class ReplicaCredentials:
    api_key: str = field(repr=False)
    certificate_pem: str
    private_key_pem: str = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.certificate_pem)


def credentials_for(replica_id: int, common_name: str) -> ReplicaCredentials:
    """The replica's credentials: those kept from an earlier attempt, else new ones kept first."""
    kept = store.read(replica_id)
    if kept is None:
        made = new_credentials(common_name)
        store.keep_first(replica_id, made.api_key, made.certificate_pem, made.private_key_pem)
        kept = store.read(replica_id)  # the first attempt's, if another one raced this one
    if kept is None:
        raise RuntimeError(f"the credentials of replica {replica_id} were written but cannot be read back")
    return ReplicaCredentials(*kept)


def forget(replica_id: int) -> None:
    """Drop the kept private key and bearer: the VM has them, or there is no VM any more."""
    store.forget(replica_id)


def new_credentials(common_name: str) -> ReplicaCredentials:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)  # VM clocks drift
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365 * CERTIFICATE_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return ReplicaCredentials(
        api_key="sk-replica-" + secrets.token_urlsafe(32),
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        private_key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode(),
    )


def fingerprint_of(certificate_pem: str) -> str:
    """SHA-256 of the certificate's DER form, lowercase hex: what urllib3's `assert_fingerprint` takes."""
    import ssl

    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(certificate_pem)).hexdigest()
