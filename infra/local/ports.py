"""Where the local stack listens: the API on PORT, every side listener beside it.

The demo replica, the real model, the AWS emulator and the fake Hyperstack take PORT+1 .. PORT+4 (8001 ..
8004 by default) when those are free, else a port the OS picks: a second `make run` on another PORT (or the
tests' stacks beside a developer's) starts instead of dying with "Address already in use". A port the
developer sets (MOCK_REPLICA_PORT=8101; 0 = any free one) is used as given, and fails loudly if taken.
"""

from __future__ import annotations

import os
import socket

DEFAULT_API_PORT = 8000
SIDE_PORT_OFFSETS = {"MOCK_REPLICA_PORT": 1, "LOCAL_REPLICA_PORT": 2, "MOTO_PORT": 3, "FAKE_HYPERSTACK_PORT": 4}
_LOWEST_UNPRIVILEGED = 1024


def api_port() -> int:
    return int(os.environ.get("PORT") or DEFAULT_API_PORT)


def side_port(variable: str) -> int:
    """The port for the listener `variable` names: the developer's, else PORT+offset if free, else 0 (any)."""
    explicit = os.environ.get(variable, "").strip()
    if explicit:
        return int(explicit)
    api = api_port()
    preferred = api + SIDE_PORT_OFFSETS[variable]
    # Probed just before the listener binds it: a process that takes it in between makes that start fail,
    # as any fixed port would; the OS's pick (0) is only for when it is already taken.
    return preferred if api and is_free(preferred) else 0


def is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port` now (and it is a port we may bind)."""
    if not _LOWEST_UNPRIVILEGED <= port <= 65535:
        return False
    with socket.socket() as probe:
        # As every local server binds (SO_REUSEADDR): a port whose last connections linger in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
