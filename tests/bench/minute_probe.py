"""The chat handler under a clock the probe moves a minute at a time (`make bench`, tests/bench/idle_marking.py).

For each model named in BENCH_MODELS (comma-separated) and the key BENCH_KEY, against the emulator named by
AWS_ENDPOINT_URL, it answers REQUESTS_PER_MINUTE requests in each of MINUTES minutes, as one function
instance, and prints JSON: every request's DynamoDB calls by operation and table (`UpdateItem replicas`),
split where the replica is contacted (`upstream.send`): before, and after (through the answer and its
on_close). The clock is
`time.time` moved forward, starting a second into a minute that lies ahead of the real one; the monotonic
clock (the replica cache, timeouts) is left alone.
"""

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

MINUTES = 3
REQUESTS_PER_MINUTE = 10


def main() -> None:
    from botocore.client import BaseClient

    from chalicelib.chat import upstream
    from chalicelib.chat.service import handle

    calls: Counter[str] = Counter()
    at_contact: list[Counter[str]] = []
    make_api_call, send, real_time = BaseClient._make_api_call, upstream.send, time.time

    def counted_call(client: BaseClient, operation: str, params: dict) -> dict:
        calls[f"{operation} {str(params.get('TableName', '')).rpartition('-')[2]}".strip()] += 1
        return make_api_call(client, operation, params)

    def noted_send(*args: object, **kwargs: object) -> object:
        at_contact.append(calls.copy())
        return send(*args, **kwargs)

    BaseClient._make_api_call = counted_call
    upstream.send = noted_send
    offset = 0.0
    time.time = lambda: real_time() + offset

    models = {}
    key = os.environ["BENCH_KEY"]
    for model in os.environ["BENCH_MODELS"].split(","):
        body = json.dumps({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "Measure me"}]})
        requests = []
        for _ in range(MINUTES):
            now = real_time() + offset
            offset += (now // 60 + 2) * 60 + 1 - now  # a second into a minute after the next
            for _ in range(REQUESTS_PER_MINUTE):
                before = calls.copy()
                response = handle({"authorization": f"Bearer {key}"}, body.encode())
                try:
                    b"".join(response.body)
                finally:
                    response.close()  # runs on_close: the usage row and the minute of use
                if response.status != 200:
                    raise SystemExit(f"{model}: {response.status}")
                requests.append({"before": dict(at_contact[-1] - before), "after": dict(calls - at_contact[-1])})
        models[model] = requests
    print(json.dumps({"minutes": MINUTES, "requests_per_minute": REQUESTS_PER_MINUTE, "models": models}))


if __name__ == "__main__":
    main()
