"""`make run`: the whole stack on this machine, its API on one port.

    python -m infra.local        # PORT (8000), ADMIN_API_KEY, AWS_ENDPOINT_URL honoured

Without AWS_ENDPOINT_URL (or LOCALSTACK_HOST) an AWS emulator is embedded in this process (MOTO_PORT).
A mock vLLM replica (MOCK_REPLICA_PORT) serves the demo model `mock/llm` unless MOCK_REPLICA=0.
LOCAL_REPLICA=smollm2 adds a real model, HuggingFaceTB/SmolLM2-135M-Instruct, served by llama.cpp in this
process (LOCAL_REPLICA_PORT); the fake Hyperstack's VMs (FAKE_HYPERSTACK_PORT) then answer with it too.
Side ports follow PORT (PORT+1 ..) unless set; see infra/local/ports.py. It prints where each listens.
Ctrl-C or SIGTERM stops everything it started.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from infra.local.ports import api_port, is_free, side_port

DEV_ADMIN_KEY = "dev-admin-key"


def _prepare_environment() -> tuple[str, bool]:
    """Point the AWS SDK at an emulator before any table module reads the settings."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    if not os.environ.get("AWS_ENDPOINT_URL") and os.environ.get("LOCALSTACK_HOST"):
        host = os.environ["LOCALSTACK_HOST"]
        os.environ["AWS_ENDPOINT_URL"] = f"http://{host}" if ":" in host else f"http://{host}:4566"
    if os.environ.get("AWS_ENDPOINT_URL"):
        return f"AWS emulator: {os.environ['AWS_ENDPOINT_URL']} (external)", False
    from infra.local.emulator import start_emulator

    url, _ = start_emulator(port=side_port("MOTO_PORT"))
    os.environ["AWS_ENDPOINT_URL"] = url
    return f"AWS emulator: {url} (embedded moto)", True


def _start_provisioning(embedded: bool, real_replica: tuple[str, int] | None) -> list[str]:
    """VM-backed replicas need the embedded emulator: its Step Functions runs our task code."""
    if not embedded:
        return ["Provisioning: unavailable with an external AWS emulator (create_vm answers 503)"]
    from infra.local.provisioning import start_local_provisioning

    return start_local_provisioning(os.environ["AWS_ENDPOINT_URL"], real_replica)


def _start_local_replica() -> Any:
    """The real model asked for by LOCAL_REPLICA, registered as a SUCCESS replica; None when not asked for."""
    name = os.environ.get("LOCAL_REPLICA", "").strip().lower()
    if not name:
        return None
    # Imported only when asked for: the default stack never loads llama.cpp.
    from infra.local import llama_replica
    from infra.local.demo import register_replica

    if name != llama_replica.SMOLLM2:
        sys.exit(f"LOCAL_REPLICA={name!r} is unknown: the one local replica is {llama_replica.SMOLLM2!r}")
    try:
        replica = llama_replica.LlamaReplica(port=side_port("LOCAL_REPLICA_PORT")).start()
    except llama_replica.ReplicaUnavailable as error:
        sys.exit(f"LOCAL_REPLICA={name}: {error}")
    register_replica(replica.alias, replica.base_url)
    return replica


def _local_replica_lines(replica: Any, api_url: str, admin_key: str) -> list[str]:
    model = replica.alias
    return [
        f"Real model: {replica.base_url} ({model!r} on llama.cpp; metrics at {replica.address}/metrics)",
        "  Chat with it:",
        f"    KEY=$(curl -s -X POST {api_url}/generate_api_key -H 'Authorization: Bearer {admin_key}' "
        """-d '{"user_id": "me"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')""",
        f'    curl -N {api_url}/chat/completions -H "Authorization: Bearer $KEY" -d \'{{"model": "{model}", '
        """"stream": true, "max_tokens": 64, "messages": [{"role": "user", "content": "Hello!"}]}'""",
    ]


def _start_demo_replica() -> str | None:
    """A mock vLLM replica behind the model `mock/llm`, unless MOCK_REPLICA=0."""
    if os.environ.get("MOCK_REPLICA", "1") == "0":
        return None
    from infra.local.demo import start_demo_replica

    model = os.environ.get("MOCK_REPLICA_MODEL", "mock/llm")
    port = side_port("MOCK_REPLICA_PORT")
    replica = start_demo_replica(model, port, float(os.environ.get("MOCK_REPLICA_PACE") or 0.02))
    return f"Demo replica: {replica.base_url} (mock vLLM serving the model {model!r})"


def main() -> None:
    port = api_port()
    if port and not is_free(port):  # before anything starts, so that the answer is one line, not a traceback
        sys.exit(f"make run: port {port} is taken (another make run?). Start this one on another: "
                 f"PORT={port + 100} make run")
    emulator_line, embedded = _prepare_environment()
    if not os.environ.get("ADMIN_API_KEY"):
        os.environ["ADMIN_API_KEY"] = DEV_ADMIN_KEY
        print(f"ADMIN_API_KEY not set: using the development key {DEV_ADMIN_KEY!r}", flush=True)

    from chalicelib.store.bootstrap import ensure_tables
    from infra.local.gateway import LocalApiServer

    ensure_tables()
    local_replica = _start_local_replica()
    real_address = ("127.0.0.1", local_replica.port) if local_replica else None
    provisioning_lines = _start_provisioning(embedded, real_address)
    demo_line = _start_demo_replica()
    host = os.environ.get("HOST", "127.0.0.1")
    server = LocalApiServer(host, api_port(), verbose=os.environ.get("QUIET") != "1")
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(emulator_line, flush=True)
    print(f"API: http://{host}:{server.server_port}/v1 (also under /api/v1)", flush=True)
    if demo_line:
        print(demo_line, flush=True)
    if local_replica:
        api_url = f"http://{host}:{server.server_port}/v1"
        # An admin key of the developer's own is not printed: only the development default is.
        shown_key = DEV_ADMIN_KEY if os.environ["ADMIN_API_KEY"] == DEV_ADMIN_KEY else "$ADMIN_API_KEY"
        print("\n".join(_local_replica_lines(local_replica, api_url, shown_key)), flush=True)
    for line in provisioning_lines:
        print(line, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if local_replica:
            local_replica.stop()
        print("stopped", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
