"""An HTTP server that plays API Gateway in front of the Chalice app, for the local stack.

Routes answer under `/v1/...` and, like the deployed stage, under `/api/v1/...`. Each request is
handled by an app instance of its own (one from a pool), as each Lambda instance handles one
request at a time: Chalice keeps the current request on the app object.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import queue
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from chalice.config import Config
from chalice.local import LocalGateway, LocalGatewayException

from chalicelib.chat import operations
from chalicelib.chat.openai_errors import internal_error_response
from chalicelib.chat.service import handle as handle_chat
from chalicelib.core import chunked
from chalicelib.core.observability import logger
from infra.local.servers import PromptHandler

APP_FILE = Path(__file__).resolve().parents[2] / "app.py"
STAGE_PREFIX = "/api"
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit


class _StagedGateway(LocalGateway):
    """Chalice's local gateway, plus the stage in the request context when the path named it, as in AWS."""

    stage: str | None = None

    def _generate_lambda_event(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> dict:
        event = super()._generate_lambda_event(method, path, headers, body)
        if self.stage:
            event["requestContext"]["stage"] = self.stage
        return event


class _GatewayPool:
    def __init__(self) -> None:
        self._idle: queue.SimpleQueue[_StagedGateway] = queue.SimpleQueue()
        self._names = itertools.count(1)

    def take(self) -> _StagedGateway:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return _StagedGateway(_load_app(f"app_instance_{next(self._names)}"), Config())

    def give_back(self, gateway: _StagedGateway) -> None:
        self._idle.put(gateway)


def _load_app(module_name: str) -> Any:
    spec = importlib.util.spec_from_file_location(module_name, APP_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


class _Handler(PromptHandler):
    server: LocalApiServer

    def _handle(self) -> None:
        staged = self.path.startswith(STAGE_PREFIX + "/")
        path = self.path[len(STAGE_PREFIX) :] if staged else self.path
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            too_large = json.dumps({"error": "Request body is too large."})
            return self._send(413, {"content-type": "application/json"}, too_large)
        body = self.rfile.read(length) if length else None
        headers = {name.lower(): value for name, value in self.headers.items()}
        operation = operations.OPERATIONS_BY_PATH.get(path.split("?")[0].rstrip("/"))
        if self.command == "POST" and operation is not None:
            return self._stream_chat(headers, body or b"", operation)
        gateway = self.server.pool.take()
        gateway.stage = STAGE_PREFIX.strip("/") if staged else None
        try:
            response = gateway.handle_request(self.command, path, headers, body)
            self._send(response["statusCode"], response.get("headers") or {}, response.get("body") or "")
        except LocalGatewayException as error:
            self._send(error.CODE, error.headers, error.body or b"")
        finally:
            self.server.pool.give_back(gateway)

    do_GET = _handle

    def __getattr__(self, name: str) -> Any:
        # http.server looks up `do_<METHOD>`: every method (TRACE, QUERY, ...) reaches the app, so that
        # one it does not serve is its 405, as in API Gateway, rather than http.server's 501.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)


    def _stream_chat(self, headers: dict[str, str], body: bytes, operation: operations.Operation) -> None:
        """The data plane's routes bypass Chalice, as in AWS: each chunk is written as it is produced."""
        try:
            response = handle_chat(headers, body, operation=operation)
        except Exception:  # noqa: BLE001 - as the Lambda runtime loop answers: a 500 the client can parse
            logger.exception("chat handler failed before the first byte")
            response = internal_error_response()
        try:
            if not response.streamed:
                return self._send(response.status, response.headers, b"".join(response.body))
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for chunk in response.body:
                if chunk:
                    self.wfile.write(chunked.chunk(chunk))
                    self.wfile.flush()
            self.wfile.write(chunked.last_chunk())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away; close() below meters it
        finally:
            response.close()

    def _send(self, status: int, headers: dict[str, str], body: str | bytes) -> None:
        payload = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        if self.server.verbose:
            super().log_message(format, *args)


class LocalApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, verbose: bool = True) -> None:
        super().__init__((host, port), _Handler)
        self.pool = _GatewayPool()
        self.verbose = verbose
