"""The chat handler measured in a process of its own, as the chat Lambda runs it (`make bench`).

For the model and key named by BENCH_MODEL and BENCH_KEY, against the emulator named by
AWS_ENDPOINT_URL, prints JSON: the median time of the one DynamoDB round trip made before a
replica is contacted (the key's conditional update), and the peak resident set (VmHWM, in KiB;
not ru_maxrss, which Linux carries over from the parent across exec) after a streamed request.
"""

import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def peak_rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def main() -> None:
    from chalicelib.chat.access import admit
    from chalicelib.chat.service import handle

    model, key = os.environ["BENCH_MODEL"], os.environ["BENCH_KEY"]
    body = {"model": model, "stream": True, "max_tokens": 500, "min_tokens": 500,
            "messages": [{"role": "user", "content": "a long answer please"}]}
    response = handle({"authorization": f"Bearer {key}"}, json.dumps(body).encode())
    try:
        size = sum(len(chunk) for chunk in response.body)
    finally:
        response.close()
    if response.status != 200 or not size:
        raise SystemExit(f"streamed request failed: {response.status}")
    peak = peak_rss_kib()
    round_trips = []
    for _ in range(100):
        started = time.perf_counter()
        admit(key, model, time.time())
        round_trips.append(time.perf_counter() - started)
    print(json.dumps({"peak_kib": peak, "admit_seconds": statistics.median(round_trips)}))


if __name__ == "__main__":
    main()
