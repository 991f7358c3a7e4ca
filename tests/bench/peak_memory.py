"""Peak resident memory of the chat handler serving one streamed request (run by `make bench`).

Runs the handler in this process, as the chat Lambda would, for the model and key named by
BENCH_MODEL and BENCH_KEY, against the emulator named by AWS_ENDPOINT_URL; prints the peak
resident set (VmHWM) in KiB. (Not ru_maxrss: Linux carries that over from the parent across exec.)
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def peak_rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def main() -> None:
    from chalicelib.chat.service import handle

    body = {"model": os.environ["BENCH_MODEL"], "stream": True, "max_tokens": 500,
            "messages": [{"role": "user", "content": "a long answer please"}]}
    response = handle({"authorization": f"Bearer {os.environ['BENCH_KEY']}"}, json.dumps(body).encode())
    try:
        size = sum(len(chunk) for chunk in response.body)
    finally:
        response.close()
    if response.status != 200 or not size:
        raise SystemExit(f"streamed request failed: {response.status}")
    print(peak_rss_kib())


if __name__ == "__main__":
    main()
