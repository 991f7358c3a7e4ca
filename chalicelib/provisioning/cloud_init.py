"""The `user_data` a replica's VM boots with: install what the image lacks, run the model server.

The first comment line is the replica marker (`chalicelib.vm_naming`): the port and the model.
The user's `secrets` are exported before the run command starts; the script is not logged (it
carries them), and its own output goes to the VM's log only.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from chalicelib.schemas import ENV_NAME_PATTERN
from chalicelib.vm_naming import replica_marker

_SCRIPT = """#!/bin/bash
{marker}
# Written by the Hyperstack LLM inference proxy. Output: /var/log/llm-replica.log
set -uo pipefail
exec >>/var/log/llm-replica.log 2>&1
if ! command -v docker >/dev/null 2>&1; then
  curl -fsSL https://get.docker.com | sh
fi
if command -v nvidia-smi >/dev/null 2>&1 && ! command -v nvidia-ctk >/dev/null 2>&1; then
  # GPU images without the container toolkit cannot give docker containers a GPU.
  distribution=$(. /etc/os-release; echo "$ID$VERSION_ID")
  curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --dearmor -o /usr/share/keyrings/nvidia.gpg
  curl -fsSL "https://nvidia.github.io/libnvidia-container/$distribution/libnvidia-container.list" \\
    | sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia.gpg] https://#' \\
    > /etc/apt/sources.list.d/nvidia-container-toolkit.list
  apt-get update && apt-get install -y nvidia-container-toolkit
  nvidia-ctk runtime configure --runtime=docker && systemctl restart docker
fi
{secrets}export PORT={port}
nohup bash -lc {command} &
"""
_ENV_NAME = re.compile(ENV_NAME_PATTERN)


def user_data(model: str, port: int, run_command: str, secrets: Mapping[str, str] | None = None) -> str:
    return _SCRIPT.format(marker=replica_marker(port, model), port=int(port), command=shlex.quote(run_command),
                          secrets=_exports(secrets or {}))


def _exports(secrets: Mapping[str, str]) -> str:
    """The user's secrets as exported variables of the run command: quoted, so no value runs as code."""
    lines = []
    for name, value in sorted(secrets.items()):
        if not _ENV_NAME.match(name):  # validated at the API already; a name is spliced in unquoted
            raise ValueError("not an environment variable name")
        lines.append(f"export {name}={shlex.quote(value)}\n")
    return "".join(lines)
