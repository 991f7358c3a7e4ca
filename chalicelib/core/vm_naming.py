"""How a replica's VM is named and marked: the one place the workflow, the client and the fake agree on.

The name is deterministic, so a retried create finds the VM it may already have made, and a
teardown finds every VM of a replica. It carries the deployment id (the stage and a random suffix,
chalicelib/store/deployment.py), because replica ids start at 1 in every deployment: two stacks
sharing one Hyperstack account must never adopt, delete or count each other's VMs. The marker is the
first comment line of the VM's `user_data`: the fake Hyperstack of the local stack reads the port and
model from it, and a person reading the VM's metadata sees what it is for.
"""

from __future__ import annotations

import re

VM_NAME_PREFIX = "llm-proxy-"
VM_NAME_MAX_LENGTH = 50  # Hyperstack's CreateInstancesPayload.name limit
DEPLOYMENT_LABEL_PREFIX = "llm-proxy-deployment-"
# A stage of letters, digits and hyphens, then 8 hex characters: "prod-1a2b3c4d".
_DEPLOYMENT = re.compile(r"^[a-z0-9][a-z0-9-]{0,20}-[0-9a-f]{8}$")
_MARKER = re.compile(r"^#\s*llm-proxy-replica\s+port=(\d+)\s+model=(\S+)\s*$", re.MULTILINE)
# The name a VM secret may have: the user_data exports it, so a shell variable's name (the admin schema
# publishes it, provisioning's cloud-init checks it again).
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


def deployment_prefix(deployment: str) -> str:
    """What every VM name of `deployment` starts with, and nothing of another deployment does."""
    if not _DEPLOYMENT.match(deployment):
        raise ValueError(f"deployment id {deployment!r} is not <stage>-<8 hex characters>")
    # The "-r" after the id keeps "dev-1a2b3c4d" from being a prefix of a longer deployment's names.
    return f"{VM_NAME_PREFIX}{deployment}-r"


def replica_vm_name(deployment: str, replica_id: int | str) -> str:
    """The VM name owned by one replica of one deployment: `llm-proxy-<deployment>-r<replica id>`."""
    name = f"{deployment_prefix(deployment)}{replica_id}"
    if len(name) > VM_NAME_MAX_LENGTH:
        raise ValueError(f"VM name {name!r} is longer than Hyperstack's {VM_NAME_MAX_LENGTH} characters")
    return name


def deployment_label(deployment: str) -> str:
    """The label every VM of `deployment` carries, beside its name."""
    return f"{DEPLOYMENT_LABEL_PREFIX}{deployment}"


def replica_id_of(name: str, deployment: str) -> int | None:
    """The replica id a VM name of this deployment belongs to; None for any other name."""
    prefix = deployment_prefix(deployment)
    rest = name[len(prefix):] if name.startswith(prefix) else ""
    return int(rest) if rest.isdigit() and rest.isascii() and not rest.startswith("0") else None


def replica_marker(port: int, model: str) -> str:
    """The user_data line naming the replica's port and model: `# llm-proxy-replica port=<int> model=<name>`."""
    if not model or any(character.isspace() for character in model):
        raise ValueError(f"model name {model!r} must be non-empty and without whitespace")
    return f"# llm-proxy-replica port={int(port)} model={model}"


def parse_replica_marker(user_data: str | None) -> tuple[int, str] | None:
    """(port, model) from the first marker line in `user_data`, or None."""
    match = _MARKER.search(user_data or "")
    return (int(match.group(1)), match.group(2)) if match else None
