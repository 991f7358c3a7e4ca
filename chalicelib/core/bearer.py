"""The credential in an `Authorization: Bearer <token>` header (RFC 6750), for admin and user keys alike."""

from __future__ import annotations


def bearer_token(authorization: str | None) -> str | None:
    """The token, or None when the header is missing, empty or of another scheme."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
