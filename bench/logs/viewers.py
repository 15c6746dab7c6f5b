#!/usr/bin/env python
"""Many websocket viewers of one run, in one asyncio process: what bench/logs/logbench.py (and the reliability tests) use.

    viewers.py --url ws://127.0.0.1:8000/ws/runs/5/ --cookie sessionid=... --count 100 --expect 20000
    viewers.py --poll http://127.0.0.1:8000/runs/5/log/lines/ --interval 2 ...    the reference: polling over HTTP

Each viewer keeps the last line it has and reconnects with ?after=<it> when its socket drops, like the browser. It
checks that lines arrive as 1, 2, 3... (counting duplicates and gaps) and how long each line took from the runner
handing it to the log sink (its "times" entry, in ms since the epoch) to this viewer. Prints "READY" once every viewer
has its first status, then one JSON object with the results when every viewer has seen the final status and line
`--expect`.

With --poll, each viewer instead asks the run's lines endpoint for the lines after the last one it has every
--interval seconds (over a kept-open HTTP/1.1 connection), the way CI pages that poll their job log work, and the way
the portal's own viewer falls back when it cannot open a websocket. Line times are measured the same way.
"""

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

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
                async with websockets.connect(f"{self.url}?after={self.next_seq - 1}", open_timeout=120,
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


class Poller(Viewer):
    """A viewer that polls the lines endpoint (`?after=<last>&limit=5000`, the most it gives) every `interval` seconds."""

    def __init__(self, index, url, cookie, expect, interval):
        super().__init__(index, url, cookie, expect)
        self.interval = interval
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port or 80, parts.path

    async def run(self, histogram, deadline):
        # Spread the polls over the interval, as viewers that opened the page at different moments would.
        await asyncio.sleep(self.interval * (self.index % 97) / 97)
        reader = writer = None
        while not (self.finished and self.next_seq > self.expect) and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                message = await self.get(reader, writer, f"{self.path}?after={self.next_seq - 1}&limit=5000")
            except (OSError, asyncio.IncompleteReadError, ValueError):
                if writer is not None:
                    writer.close()
                reader = writer = None
                self.reconnects += 1
                await asyncio.sleep(self.interval)
                continue
            if message["lines"]:
                self.receive(message, histogram)
            self.ready.set()
            if message.get("finished") or (message["last"] >= self.expect and self.next_seq > self.expect):
                self.finished = True
                if self.next_seq > self.expect:
                    break
            await asyncio.sleep(max(self.interval - (time.monotonic() - started), 0))
        if writer is not None:
            writer.close()

    async def get(self, reader, writer, target):
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept: application/json\r\n"
                     f"Cookie: {self.cookie}\r\n\r\n".encode())
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise ValueError(f"HTTP {status!r}")
        length, chunked = None, False
        while (header := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = header.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if length is not None:
            body = await reader.readexactly(length)
        elif chunked:
            body = b""
            while size := int((await reader.readline()).split(b";")[0], 16):
                body += await reader.readexactly(size)
                await reader.readline()
            await reader.readline()
        else:
            raise ValueError("a response without a length")
        return json.loads(body)


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
    parser.add_argument("--url", help="the run's websocket URL")
    parser.add_argument("--poll", help="instead, poll this lines URL (/runs/N/log/lines/) over HTTP")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls, with --poll")
    parser.add_argument("--cookie", required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--expect", type=int, required=True, help="the number of lines the run will end with")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--connect-rate", type=float, default=20, help="new sockets a second")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    histogram = {}
    if args.poll:
        viewers = [Poller(i, args.poll, args.cookie, args.expect, args.interval) for i in range(args.count)]
    else:
        viewers = [Viewer(i, args.url, args.cookie, args.expect) for i in range(args.count)]
    tasks = []
    # Connect in small waves, as a crowd opening a link would: --connect-rate a second from each client process. Much
    # faster, on a busy machine, handshakes wait past daphne's websocket connect timeout (5 s), are refused and
    # retried, and the retries pile up; the latency measured here is that of viewers already watching.
    for viewer in viewers:
        tasks.append(asyncio.create_task(viewer.run(histogram, deadline)))
        if len(tasks) % 10 == 0:
            await asyncio.sleep(10 / args.connect_rate)
    await asyncio.wait_for(asyncio.gather(*(v.ready.wait() for v in viewers)), timeout=600)
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
