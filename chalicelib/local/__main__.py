"""`make run`: the whole stack on this machine, on one port.

    python -m chalicelib.local        # PORT (8000), ADMIN_API_KEY, AWS_ENDPOINT_URL honoured

Without AWS_ENDPOINT_URL (or LOCALSTACK_HOST) an AWS emulator is embedded in this process.
Ctrl-C or SIGTERM stops everything it started.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

DEV_ADMIN_KEY = "dev-admin-key"


def _prepare_environment() -> str:
    """Point the AWS SDK at an emulator before any table module reads the settings."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    if not os.environ.get("AWS_ENDPOINT_URL") and os.environ.get("LOCALSTACK_HOST"):
        host = os.environ["LOCALSTACK_HOST"]
        os.environ["AWS_ENDPOINT_URL"] = f"http://{host}" if ":" in host else f"http://{host}:4566"
    if os.environ.get("AWS_ENDPOINT_URL"):
        return f"AWS emulator: {os.environ['AWS_ENDPOINT_URL']} (external)"
    from chalicelib.local.emulator import start_emulator

    url, _ = start_emulator(port=int(os.environ.get("MOTO_PORT") or 0))
    os.environ["AWS_ENDPOINT_URL"] = url
    return f"AWS emulator: {url} (embedded moto)"


def main() -> None:
    emulator_line = _prepare_environment()
    if not os.environ.get("ADMIN_API_KEY"):
        os.environ["ADMIN_API_KEY"] = DEV_ADMIN_KEY
        print(f"ADMIN_API_KEY not set: using the development key {DEV_ADMIN_KEY!r}", flush=True)

    from chalicelib.local.gateway import LocalApiServer
    from chalicelib.store.bootstrap import ensure_tables

    ensure_tables()
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT") or 8000)
    server = LocalApiServer(host, port, verbose=os.environ.get("QUIET") != "1")
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(emulator_line, flush=True)
    print(f"API: http://{host}:{server.server_port}/v1 (also under /api/v1)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        print("stopped", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
