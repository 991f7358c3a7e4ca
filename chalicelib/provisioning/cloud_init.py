"""The `user_data` a replica's VM boots with: its credentials, a TLS front, the model server as a service.

The first comment line is the replica marker (`chalicelib.core.vm_naming`): the port and the model.
The replica port answers TLS only, with the certificate made for this replica, and only requests
carrying its bearer: an nginx front on FRONT_PORT does both, and every connection from outside to
the replica port is redirected to it (iptables), so the run command keeps serving plain HTTP on the
port it was given, reachable from the VM itself only. vLLM checks the bearer too (`VLLM_API_KEY`).
The run command runs as a systemd service (it comes back after a reboot and after a wake from
hibernation, which boots the VM again), with HF_HOME on the root disk so a wake downloads no weights.
The user's `secrets` are exported before the run command starts (after HF_HOME: theirs wins). The
script carries the private key and the secrets: it is never logged, its output goes to the VM's log.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from chalicelib.core.vm_naming import ENV_NAME_PATTERN, replica_marker

FRONT_PORT = 59443  # on the VM only; chosen out of the way of the ports model servers use
CONFIG_DIR = "/etc/llm-replica"
MODEL_CACHE = "/var/lib/llm-replica/huggingface"  # on the root disk; `-v` it into a container
_HEREDOC_END = "LLM_REPLICA_EOF"

FRONT_MAX_BODY = "16m"  # nginx's client_max_body_size: above any chat body the proxy lets through (4 MiB)
LOG = "/var/log/llm-replica.log"

# nginx's configuration for the TLS front. The bearer is compared as a whole string, case and all: a `map`
# would match it ignoring case, and its 61-character key overflows nginx's default map_hash_bucket_size (64),
# which stops nginx from starting at all. `if` holding only a `return` is the use nginx documents as safe.
_FRONT = """server {{
  listen {front_port} ssl;
  ssl_certificate {config_dir}/tls.crt;
  ssl_certificate_key {config_dir}/tls.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  client_max_body_size {max_body};
  location / {{
    if ($http_authorization != "Bearer {api_key}") {{
      return 401 '{{"error": "Unauthorized"}}';
    }}
    proxy_pass http://127.0.0.1:{port};
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_read_timeout 3600s;
  }}
}}
"""
_FRONT_BEARER = re.compile(r'^    if \(\$http_authorization != "Bearer ([^"]+)"\) \{$', re.M)

_SCRIPT = """#!/bin/bash
{marker}
# Written by the Hyperstack LLM inference proxy. Output: {log}
# It stops at the first step that fails and says which, here and in cloud-init's output, and cloud-init's
# status turns to error: a VM whose front did not start must not look like one that is booting.
set -Eeuo pipefail
exec 3>&2 >>{log} 2>&1
step="starting"
trap 'code=$?; echo "llm-replica: FAILED while $step: line $LINENO: $BASH_COMMAND (exit $code)" | tee /dev/fd/3' ERR
say() {{ step="$1"; echo "llm-replica: $step"; }}
say "writing the replica's TLS material"
(umask 077 && mkdir -p {config_dir})
(umask 077 && cat > {config_dir}/tls.crt) <<'{end}'
{certificate}{end}
(umask 077 && cat > {config_dir}/tls.key) <<'{end}'
{private_key}{end}
if ! command -v docker >/dev/null 2>&1; then
  say "installing docker"
  curl -fsSL https://get.docker.com | sh
fi
if command -v nvidia-smi >/dev/null 2>&1 && ! command -v nvidia-ctk >/dev/null 2>&1; then
  # GPU images without the container toolkit cannot give docker containers a GPU.
  say "installing the NVIDIA container toolkit"
  distribution=$(. /etc/os-release; echo "$ID$VERSION_ID")
  curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --dearmor -o /usr/share/keyrings/nvidia.gpg
  curl -fsSL "https://nvidia.github.io/libnvidia-container/$distribution/libnvidia-container.list" \\
    | sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia.gpg] https://#' \\
    > /etc/apt/sources.list.d/nvidia-container-toolkit.list
  apt-get update
  apt-get install -y nvidia-container-toolkit
  nvidia-ctk runtime configure --runtime=docker
  systemctl restart docker
fi
# The TLS front: the replica's certificate, its bearer on every request, answers streamed as they come.
if ! command -v nginx >/dev/null 2>&1; then
  say "installing nginx"
  apt-get update
  apt-get install -y nginx
fi
say "starting the TLS front (nginx on port {front_port})"
(umask 077 && cat > /etc/nginx/conf.d/llm-replica.conf) <<'{end}'
{front}{end}
rm -f /etc/nginx/sites-enabled/default
nginx -t
systemctl enable nginx
systemctl restart nginx
# The model server runs as a service, so it starts again on every boot: a wake from hibernation boots
# the VM again, and user_data runs on the first boot only. Its environment holds the secrets: root only.
say "installing the model server's service"
(umask 077 && cat > {config_dir}/run.sh) <<'{end}'
#!/bin/bash
# The model cache on the root disk, which hibernation keeps (the ephemeral disk is lost): no new download.
export HF_HOME={model_cache}
{secrets}export VLLM_API_KEY={quoted_api_key}
export PORT={port}
exec bash -lc {command}
{end}
cat > {config_dir}/redirect.sh <<'{end}'
#!/bin/sh
# From outside, the replica port is the front; the model server behind it is reachable from this VM only.
# iptables rules do not survive a reboot: the service sets this one again before every start, once.
rule="PREROUTING -p tcp --dport {port} -j REDIRECT --to-ports {front_port}"
iptables -t nat -C $rule 2>/dev/null || iptables -t nat -I $rule
{end}
chmod 700 {config_dir}/run.sh {config_dir}/redirect.sh
mkdir -p {model_cache}
cat > /etc/systemd/system/llm-replica.service <<'{end}'
[Unit]
Description=LLM replica of the Hyperstack LLM inference proxy (run_command behind the TLS front)
Wants=network-online.target
After=network-online.target docker.service nginx.service

[Service]
ExecStartPre={config_dir}/redirect.sh
ExecStart={config_dir}/run.sh
Restart=always
RestartSec=5
StandardOutput=append:{log}
StandardError=append:{log}

[Install]
WantedBy=multi-user.target
{end}
systemctl daemon-reload
say "starting the model server (llm-replica.service) behind the redirect of port {port}"
systemctl enable --now llm-replica.service
say "done: the model server's own log follows"
"""
_ENV_NAME = re.compile(ENV_NAME_PATTERN)
# The bearer is spliced into nginx's configuration and the script: only characters inert in both.
_SAFE_API_KEY = re.compile(r"[A-Za-z0-9_.~+/=-]{16,512}")
_PEM = re.compile(r"-----BEGIN [A-Z ]+-----\n[A-Za-z0-9+/=\n]+-----END [A-Z ]+-----\n")


def user_data(model: str, port: int, run_command: str, *, api_key: str, certificate_pem: str,
              private_key_pem: str, secrets: Mapping[str, str] | None = None) -> str:
    if not _SAFE_API_KEY.fullmatch(api_key):
        raise ValueError("a replica's api_key must be 16 to 512 URL-safe characters")
    for pem in (certificate_pem, private_key_pem):
        if not _PEM.fullmatch(pem):  # a line equal to the heredoc's end would cut it short
            raise ValueError("not a single PEM block")
    front = _FRONT.format(front_port=FRONT_PORT, config_dir=CONFIG_DIR, max_body=FRONT_MAX_BODY, api_key=api_key,
                          port=int(port))
    return _SCRIPT.format(marker=replica_marker(port, model), port=int(port), front_port=FRONT_PORT, log=LOG,
                          config_dir=CONFIG_DIR, model_cache=MODEL_CACHE, end=_HEREDOC_END, certificate=certificate_pem,
                          private_key=private_key_pem, front=front, quoted_api_key=shlex.quote(api_key),
                          command=shlex.quote(run_command), secrets=_exports(secrets or {}))


def front_bearer(user_data: str | None) -> str | None:
    """The bearer the TLS front in `user_data` lets through (None: it sets up no front), read from the nginx
    configuration itself, so a front that imitates it checks what nginx will check."""
    found = _FRONT_BEARER.search(user_data or "")
    return found.group(1) if found else None


def _exports(secrets: Mapping[str, str]) -> str:
    """The user's secrets as exported variables of the run command: quoted, so no value runs as code."""
    lines = []
    for name, value in sorted(secrets.items()):
        if not _ENV_NAME.match(name):  # validated at the API already; a name is spliced in unquoted
            raise ValueError("not an environment variable name")
        lines.append(f"export {name}={shlex.quote(value)}\n")
    return "".join(lines)
