"""Certificate pinning for provisioned replicas: the proxy talks to its own VM and no one else's.

A provisioned replica serves TLS with a self-signed certificate made for it by the workflow
(`chalicelib.provisioning.replica_tls`); its row keeps the certificate's SHA-256 fingerprint. A
connection to it trusts that one certificate and nothing else: no CA, and no host name either (the
floating IP is not known when the certificate is made). Replicas given by URL have no pin and are
checked against the system's CAs as usual.
"""

from __future__ import annotations

from typing import Any


def pool_options(fingerprint: str | None) -> dict[str, Any]:
    """urllib3 connection-pool options that accept exactly the certificate of `fingerprint`."""
    if not fingerprint:
        return {}
    # CERT_NONE only lifts the CA chain check; urllib3 then compares the peer's DER certificate with
    # the fingerprint after the handshake and refuses any other (a mismatch is an SSLError).
    return {"cert_reqs": "CERT_NONE", "assert_fingerprint": fingerprint}
