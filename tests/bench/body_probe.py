"""Peak memory of the chat handler for one request, in a process of its own (`make bench`).

    AWS_ENDPOINT_URL=... python tests/bench/body_probe.py <event file>

The event file holds a function URL event, as the Runtime API hands it to the chat function (built
by the parent with `event_bytes`, so that building a body is not measured). The probe decodes it
and answers it the way `chalicelib.chat.lambda_runtime` does, then prints JSON: the answer's status
and the process's peak resident set (VmHWM, KiB), measured from the same start for every body.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

FOUR_MIB = 4 * 1024 * 1024


def _messages_body(model: str, messages: list) -> dict:
    return {"model": model, "max_tokens": 4, "messages": messages}


def bodies(model: str) -> dict[str, bytes]:
    """The worst bodies within MAX_CHAT_BODY_BYTES (4 MiB) we could think of, and an ordinary one."""
    head = json.dumps(_messages_body(model, [{"role": "user", "content": "x"}]))[:-1]
    ordinary = json.dumps(_messages_body(model, [{"role": "user", "content": "Hello there"}]))
    return {
        "ordinary": ordinary.encode(),
        "4 MiB of empty objects": (head + ', "x": [' + "{}," * ((FOUR_MIB - len(head) - 10) // 3) + "{}]}").encode(),
        "4 MiB of empty arrays": (head + ', "x": [' + "[]," * ((FOUR_MIB - len(head) - 10) // 3) + "[]]}").encode(),
        "values just under the limit": json.dumps(
            _messages_body(model, [{"role": "user", "content": "x"}] * 39_000)).encode(),
        "nesting 100k deep": (head + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}").encode(),
        "one string of 1M 4-byte characters": json.dumps(
            _messages_body(model, [{"role": "user", "content": "\U0001F600" * (FOUR_MIB // 4 - 100)}]),
            ensure_ascii=False).encode(),
        "a 4 MiB base64 image": json.dumps(_messages_body(model, [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * (FOUR_MIB - 300)}}]}]
        )).encode(),
    }


def event_bytes(body: bytes, api_key: str) -> bytes:
    """A function URL (payload 2.0) event for POST /v1/chat/completions carrying `body`."""
    return json.dumps({
        "version": "2.0", "rawPath": "/v1/chat/completions", "isBase64Encoded": False, "body": body.decode(),
        "headers": {"authorization": f"Bearer {api_key}", "content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/v1/chat/completions"}},
    }).encode()


def peak_rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def main() -> None:
    from chalicelib.chat.events import request_from_event
    from chalicelib.chat.service import handle

    event = Path(sys.argv[1]).read_bytes()
    _, _, headers, body = request_from_event(json.loads(event))
    del event
    response = handle(headers, body)
    try:
        for _ in response.body:
            pass
    finally:
        response.close()
    print(json.dumps({"status": response.status, "peak_kib": peak_rss_kib()}))


if __name__ == "__main__":
    main()
