#!/usr/bin/env python
"""Many websocket viewers of one run, in one asyncio process: what bench/logs/logbench.py (and the reliability tests) use.

    viewers.py --url ws://127.0.0.1:8000/ws/runs/5/ --cookie sessionid=... --count 100 --expect 20000

Each viewer keeps the last line it has and reconnects with ?after=<it> when its socket drops, like the browser. It
checks that lines arrive as 1, 2, 3... (counting duplicates and gaps) and how long each line took from the runner
handing it to the log sink (its "times" entry, in ms since the epoch) to this viewer. Prints "READY" once every viewer
has its first status, then one JSON object with the results when every viewer has seen the final status and line
`--expect`.
"""

import argparse
import asyncio
import json
import sys
import time

import websockets

BUCKET_MS = 1  # latency histogram resolution


class Viewer:
    def __init__(self, index, url, cookie, expect):
        self.index, self.url, self.cookie, self.expect = index, url, cookie, expect
        self.next_seq = 1
        self.received = 0
        self.duplicates = 0
        self.gaps = 0
        self.skips = 0
        self.reconnects = 0
        self.finished = False
        self.ready = asyncio.Event()
        self.close_codes = []

    async def run(self, histogram, deadline):
        while not (self.finished and self.next_seq > self.expect) and time.monotonic() < deadline:
            try:
                async with websockets.connect(f"{self.url}?after={self.next_seq - 1}", open_timeout=20,
                                              additional_headers={"Cookie": self.cookie, "Origin": "http://127.0.0.1"},
                                              max_size=None, ping_interval=None) as socket:
                    async for raw in socket:
                        self.receive(json.loads(raw), histogram)
                        if self.finished and self.next_seq > self.expect:
                            return
            except (TimeoutError, OSError, websockets.exceptions.WebSocketException) as exc:
                code = getattr(getattr(exc, "rcvd", None), "code", None)
                if code is not None:
                    self.close_codes.append(code)
                    if 4400 <= code < 4500:
                        self.ready.set()
                        return  # refused: retrying will not help
            self.reconnects += 1
            await asyncio.sleep(0.2 + 0.05 * (self.index % 10))

    def receive(self, message, histogram):
        kind = message["t"]
        if kind == "lines":
            now_ms = time.time() * 1000
            first, count = message["first"], len(message["lines"])
            self.received += count
            if first < self.next_seq:
                self.duplicates += min(self.next_seq - first, count)
            elif first > self.next_seq:
                self.gaps += first - self.next_seq
            self.next_seq = max(self.next_seq, first + count)
            for written_ms in message["times"]:
                bucket = max(int((now_ms - written_ms) / BUCKET_MS), 0)
                histogram[bucket] = histogram.get(bucket, 0) + 1
        elif kind == "skip":
            self.skips += 1
            self.next_seq = max(self.next_seq, message["to"] + 1)
        elif kind == "status":
            self.ready.set()
            if message["finished"]:
                self.finished = True


def percentile(histogram, fraction):
    total = sum(histogram.values())
    if not total:
        return None
    target = fraction * total
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= target:
            return (bucket + 1) * BUCKET_MS
    return None


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--cookie", required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--expect", type=int, required=True, help="the number of lines the run will end with")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    histogram = {}
    viewers = [Viewer(i, args.url, args.cookie, args.expect) for i in range(args.count)]
    tasks = []
    for viewer in viewers:  # connect in small waves, as a crowd opening a link would
        tasks.append(asyncio.create_task(viewer.run(histogram, deadline)))
        if len(tasks) % 50 == 0:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*(v.ready.wait() for v in viewers)), timeout=120)
    print("READY", flush=True)
    await asyncio.gather(*tasks)
    result = {
        "viewers": len(viewers),
        "complete": sum(1 for v in viewers if v.finished and v.next_seq == args.expect + 1 and not v.gaps),
        "received": sum(v.received for v in viewers),
        "lost": sum(v.gaps + max(args.expect + 1 - v.next_seq, 0) for v in viewers),
        "duplicated": sum(v.duplicates for v in viewers),
        "skips": sum(v.skips for v in viewers),
        "reconnects": sum(v.reconnects for v in viewers),
        "close_codes": sorted({c for v in viewers for c in v.close_codes}),
        "samples": sum(histogram.values()),
        "p50_ms": percentile(histogram, 0.50),
        "p95_ms": percentile(histogram, 0.95),
        "p99_ms": percentile(histogram, 0.99),
        "max_ms": (max(histogram) + 1) * BUCKET_MS if histogram else None,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
