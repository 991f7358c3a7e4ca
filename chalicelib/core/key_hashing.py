"""How an API key is stored: its SHA-256, so that the secret itself is never kept and a lookup is one read."""

from __future__ import annotations

import hashlib


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()
