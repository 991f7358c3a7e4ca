"""How a replica's VM is named and marked: the one place the workflow, the client and the fake agree on.

The name is deterministic, so a retried create finds the VM it may already have made, and a
teardown finds every VM of a replica. The marker is the first comment line of the VM's
`user_data`: the fake Hyperstack of the local stack reads the port and model from it, and a person
reading the VM's metadata sees what it is for.
"""

from __future__ import annotations

import re

VM_NAME_PREFIX = "llm-proxy-replica-"
VM_NAME_MAX_LENGTH = 50  # Hyperstack's CreateInstancesPayload.name limit
_MARKER = re.compile(r"^#\s*llm-proxy-replica\s+port=(\d+)\s+model=(\S+)\s*$", re.MULTILINE)


def replica_vm_name(replica_id: int | str) -> str:
    """The VM name (and label) owned by one replica."""
    name = f"{VM_NAME_PREFIX}{replica_id}"
    if len(name) > VM_NAME_MAX_LENGTH:
        raise ValueError(f"VM name {name!r} is longer than Hyperstack's {VM_NAME_MAX_LENGTH} characters")
    return name


def replica_marker(port: int, model: str) -> str:
    """The user_data line naming the replica's port and model: `# llm-proxy-replica port=<int> model=<name>`."""
    if not model or any(character.isspace() for character in model):
        raise ValueError(f"model name {model!r} must be non-empty and without whitespace")
    return f"# llm-proxy-replica port={int(port)} model={model}"


def parse_replica_marker(user_data: str | None) -> tuple[int, str] | None:
    """(port, model) from the first marker line in `user_data`, or None."""
    match = _MARKER.search(user_data or "")
    return (int(match.group(1)), match.group(2)) if match else None
