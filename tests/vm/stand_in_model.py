#!/usr/bin/env python3
"""A stand-in for vLLM inside the boot test's VM (no GPU, no docker there): the replica's run_command runs it.

Standard library only, as it runs on the VM's python3. It answers as `vllm serve` does where the proxy looks:
`/health` open, `/v1/*` only with `Authorization: Bearer $VLLM_API_KEY`, on 0.0.0.0:$PORT (vLLM's default host,
so only the VM's redirect keeps outsiders off it). Every request it receives is appended to REQUEST_LOG, so a
test can tell what reached it. A streamed chat whose last message says HOLD sends its first event, then waits
for `POST /release` (from the VM itself) before the rest: a test sees whether the first event crossed the front
before the last one was made, which no buffering front would allow.
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REQUEST_LOG = "/var/log/stand-in-requests.log"
HOLD = "HOLD"
MODEL = sys.argv[sys.argv.index("--model") + 1] if "--model" in sys.argv else "stand-in"
released = threading.Event()


class StandIn(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self._log()
        if self.path.split("?")[0] == "/health":
            return self._json(200, {})
        if not self._authorized():
            return
        if self.path.split("?")[0] == "/v1/models":
            return self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        self._json(404, {"error": "not found"})

    def do_POST(self):
        self._log()
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path == "/release" and self.client_address[0] == "127.0.0.1":
            released.set()
            return self._json(200, {})
        if not self._authorized():
            return
        if self.path != "/v1/chat/completions":
            return self._json(404, {"error": "not found"})
        words = ["Hello", " from", " the", " VM"]
        if body.get("stream"):
            return self._stream(words, hold=body["messages"][-1].get("content") == HOLD)
        self._json(200, {"id": "chatcmpl-vm", "object": "chat.completion", "created": int(time.time()),
                         "model": MODEL, "choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": "".join(words)}}],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}})

    def _stream(self, words, hold):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, word in enumerate(words):
            self._chunk({"id": "chatcmpl-vm", "object": "chat.completion.chunk", "created": int(time.time()),
                         "model": MODEL, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]})
            if index == 0 and hold:
                released.wait(60)
                released.clear()
        self._chunk({"id": "chatcmpl-vm", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": MODEL, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}})
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")

    def _chunk(self, event):
        self._write_chunk(b"data: " + json.dumps(event).encode() + b"\n\n")

    def _write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _authorized(self):
        if self.headers.get("Authorization") == f"Bearer {os.environ['VLLM_API_KEY']}":
            return True
        self._json(401, {"error": "Unauthorized"})
        return False

    def _json(self, status, document):
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _log(self):
        with open(REQUEST_LOG, "a") as log:
            log.write(json.dumps({"method": self.command, "path": self.path, "peer": self.client_address[0]}) + "\n")

    def log_message(self, *_):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), StandIn).serve_forever()
