#!/usr/bin/env python
"""Many websocket viewers of one run, in one asyncio process: what bench/logs/logbench.py (and the reliability tests) use.

    viewers.py --url ws://127.0.0.1:8000/ws/runs/5/ --cookie sessionid=... --count 100 --expect 20000
    viewers.py --poll http://127.0.0.1:8000/runs/5/log/lines/ --interval 2 ...    the reference: polling over HTTP

Each viewer keeps the last line it has and reconnects with ?after=<it> when its socket drops, like the browser. It
checks that lines arrive as 1, 2, 3... (counting duplicates and gaps) and how long each line took from the runner
handing it to the log sink (its "times" entry, in ms since the epoch) to this viewer. Prints "READY" once every viewer
has its first status, then one JSON object with the results when every viewer has seen the final status and line
`--expect`.

The viewers stand in for browsers on other machines, yet here they share the web processes' cores, so they are made
as cheap as a browser's websocket and JSON.parse (both native code): a small websocket client on asyncio's own
transport (RFC 6455 as a client speaks it: masked frames out, pings answered, close codes read) instead of a library's
per-frame machinery, and for a "lines" message only what the counting needs is read while the run is written (its
"first" and its "times" array, found in the text; the lines themselves are not decoded). The latency of each line is
worked out from the stored arrival times and "times" arrays after the last line arrived. Other messages ("status",
"skip", "ping") are parsed whole.

With --poll, each viewer instead asks the run's lines endpoint for the lines after the last one it has every
--interval seconds (over a kept-open HTTP/1.1 connection), the way CI pages that poll their job log work, and the way
the portal's own viewer falls back when it cannot open a websocket. Line times are measured the same way.
"""

import argparse
import asyncio
import base64
import json
import os
import struct
import sys
import time
from urllib.parse import urlsplit

BUCKET_MS = 1  # latency histogram resolution
LINES_PREFIX = b'{"t":"lines"'


class WebSocketClient(asyncio.Protocol):
    """One websocket connection: the HTTP upgrade, then whole messages handed to `on_message(opcode, payload)`."""

    def __init__(self, on_message):
        self.on_message = on_message
        self.transport = None
        self.buffer = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.fragments = None
        self.fragment_opcode = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        if not self.upgraded.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[:end + 4]
            status = head.split("\r\n", 1)[0]
            if " 101 " not in status + " ":
                self.upgraded.set_exception(ConnectionError(f"upgrade refused: {status}"))
                self.transport.close()
                return
            self.upgraded.set_result(True)
        self.read_frames()

    def read_frames(self):
        buffer = self.buffer
        at = 0
        size = len(buffer)
        while size - at >= 2:
            first, second = buffer[at], buffer[at + 1]
            length = second & 0x7F
            header = 2
            if length == 126:
                if size - at < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, at + 2)
                header = 4
            elif length == 127:
                if size - at < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, at + 2)
                header = 10
            if size - at < header + length:
                break
            payload = bytes(buffer[at + header:at + header + length])
            at += header + length
            self.frame(first & 0x80, first & 0x0F, payload)
        if at:
            del buffer[:at]

    def frame(self, fin, opcode, payload):
        if opcode == 0x9:  # ping: answer with the same payload
            self.send_frame(0xA, payload)
        elif opcode == 0x8:  # close: answer it, and tell who waits
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            self.send_frame(0x8, payload[:2])
            self.transport.close()
            if not self.closed.done():
                self.closed.set_result(code)
        elif opcode == 0x0:  # a continuation
            self.fragments.append(payload)
            if fin:
                whole, self.fragments = b"".join(self.fragments), None
                self.on_message(self.fragment_opcode, whole)
        elif opcode in (0x1, 0x2):
            if fin:
                self.on_message(opcode, payload)
            else:
                self.fragments, self.fragment_opcode = [payload], opcode

    def send_frame(self, opcode, payload):
        if self.transport is None or self.transport.is_closing():
            return
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(header + mask + masked)

    def connection_lost(self, exc):
        if not self.upgraded.done():
            self.upgraded.set_exception(exc or ConnectionError("closed during the upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)


async def open_socket(url, headers, on_message, timeout):
    """A connected, upgraded WebSocketClient for ws://host:port/path?query."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    _, client = await asyncio.wait_for(
        loop.create_connection(lambda: WebSocketClient(on_message), parts.hostname, parts.port or 80), timeout)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16)).decode()
    request = [f"GET {target} HTTP/1.1", f"Host: {parts.hostname}:{parts.port or 80}", "Upgrade: websocket",
               "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
               *[f"{name}: {value}" for name, value in headers.items()], "", ""]
    client.transport.write("\r\n".join(request).encode("latin-1"))
    try:
        await asyncio.wait_for(client.upgraded, timeout)
    except BaseException:
        client.transport.close()
        raise
    return client


def times_of(payload):
    """The bytes inside a "lines" message's "times" array (a JSON string's quotes are escaped, so the key is found
    only as a key)."""
    key = payload.rfind(b'"times":')
    start = payload.index(b"[", key) + 1
    return payload[start:payload.index(b"]", start)]


def first_of(payload):
    key = payload.index(b'"first":') + 8
    end = key
    while payload[end] not in b",}":
        end += 1
    return int(payload[key:end])


class Viewer:
    def __init__(self, index, url, cookie, expect, arrivals):
        self.index, self.url, self.cookie, self.expect = index, url, cookie, expect
        self.arrivals = arrivals  # (arrival ms, the "times" array's bytes) of every "lines" message, for afterwards
        self.next_seq = 1
        self.received = 0
        self.duplicates = 0
        self.gaps = 0
        self.skips = 0
        self.reconnects = 0
        self.finished = False
        self.ready = asyncio.Event()
        self.done = None
        self.close_codes = []
        self.failures = {}  # why a connection failed or dropped, counted

    async def run(self, deadline):
        headers = {"Cookie": self.cookie, "Origin": "http://127.0.0.1"}
        while not self.complete() and time.monotonic() < deadline:
            self.done = asyncio.get_running_loop().create_future()
            try:
                client = await open_socket(f"{self.url}?after={self.next_seq - 1}", headers, self.receive, 120)
            except (TimeoutError, OSError, ConnectionError) as exc:
                client = None
                reason = f"{type(exc).__name__}: {str(exc)[:60]}"
                self.failures[reason] = self.failures.get(reason, 0) + 1
            if client is not None:
                await asyncio.wait({client.closed, self.done}, timeout=max(deadline - time.monotonic(), 0),
                                   return_when=asyncio.FIRST_COMPLETED)
                if self.complete():
                    client.send_frame(0x8, struct.pack("!H", 1000))
                    client.transport.close()
                    return
                code = client.closed.result() if client.closed.done() else None
                client.transport.close()
                reason = f"closed with {code}" if client.closed.done() else "no line for too long"
                self.failures[reason] = self.failures.get(reason, 0) + 1
                if code is not None:
                    self.close_codes.append(code)
                    if 4400 <= code < 4500:
                        self.ready.set()
                        return  # refused: retrying will not help
            self.reconnects += 1
            await asyncio.sleep(0.2 + 0.05 * (self.index % 10))

    def complete(self):
        return self.finished and self.next_seq > self.expect

    def receive(self, opcode, payload):
        if payload.startswith(LINES_PREFIX):
            now_ms = time.time() * 1000
            times = times_of(payload)
            first = first_of(payload)
            count = times.count(b",") + 1 if times else 0
            self.arrivals.append((now_ms, times))
            self.counted(first, count)
        else:
            message = json.loads(payload)
            kind = message["t"]
            if kind == "lines":  # written another way than the portal writes it: the slow path
                now_ms = time.time() * 1000
                self.arrivals.append((now_ms, ",".join(map(str, message["times"])).encode()))
                self.counted(message["first"], len(message["lines"]))
            elif kind == "skip":
                self.skips += 1
                self.next_seq = max(self.next_seq, message["to"] + 1)
            elif kind == "status":
                self.ready.set()
                if message["finished"]:
                    self.finished = True
        if self.complete() and self.done is not None and not self.done.done():
            self.done.set_result(True)

    def counted(self, first, count):
        self.received += count
        if first < self.next_seq:
            self.duplicates += min(self.next_seq - first, count)
        elif first > self.next_seq:
            self.gaps += first - self.next_seq
        self.next_seq = max(self.next_seq, first + count)


def histogram_of(arrivals):
    """Line latencies (arrival minus "times" entry), bucketed, worked out after the run."""
    histogram = {}
    for now_ms, times in arrivals:
        if not times:
            continue
        for written_ms in map(int, times.split(b",")):
            bucket = max(int((now_ms - written_ms) / BUCKET_MS), 0)
            histogram[bucket] = histogram.get(bucket, 0) + 1
    return histogram


class Poller(Viewer):
    """A viewer that polls the lines endpoint (`?after=<last>&limit=5000`, the most it gives) every `interval` seconds."""

    def __init__(self, index, url, cookie, expect, arrivals, interval):
        super().__init__(index, url, cookie, expect, arrivals)
        self.interval = interval
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port or 80, parts.path

    async def run(self, deadline):
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
                self.arrivals.append((time.time() * 1000, ",".join(map(str, message["times"])).encode()))
                self.counted(message["first"], len(message["lines"]))
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
    arrivals = []
    if args.poll:
        viewers = [Poller(i, args.poll, args.cookie, args.expect, arrivals, args.interval) for i in range(args.count)]
    else:
        viewers = [Viewer(i, args.url, args.cookie, args.expect, arrivals) for i in range(args.count)]
    tasks = []
    # Connect in small waves, as a crowd opening a link would: --connect-rate a second from each client process. Much
    # faster, on a busy machine, handshakes wait past daphne's websocket connect timeout (5 s), are refused and
    # retried, and the retries pile up; the latency measured here is that of viewers already watching.
    for viewer in viewers:
        tasks.append(asyncio.create_task(viewer.run(deadline)))
        if len(tasks) % 10 == 0:
            await asyncio.sleep(10 / args.connect_rate)
    await asyncio.wait_for(asyncio.gather(*(v.ready.wait() for v in viewers)), timeout=600)
    print("READY", flush=True)
    cpu_at_ready = time.process_time()
    await asyncio.gather(*tasks)
    cpu_seconds = time.process_time() - cpu_at_ready  # from READY to the last line: what watching cost this process
    histogram = histogram_of(arrivals)
    result = {
        "viewers": len(viewers),
        "complete": sum(1 for v in viewers if v.finished and v.next_seq == args.expect + 1 and not v.gaps),
        "received": sum(v.received for v in viewers),
        "lost": sum(v.gaps + max(args.expect + 1 - v.next_seq, 0) for v in viewers),
        "duplicated": sum(v.duplicates for v in viewers),
        "skips": sum(v.skips for v in viewers),
        "reconnects": sum(v.reconnects for v in viewers),
        "close_codes": sorted({c for v in viewers for c in v.close_codes}),
        "failures": {reason: sum(v.failures.get(reason, 0) for v in viewers)
                     for reason in sorted({r for v in viewers for r in v.failures})},
        "samples": sum(histogram.values()),
        "p50_ms": percentile(histogram, 0.50),
        "p95_ms": percentile(histogram, 0.95),
        "p99_ms": percentile(histogram, 0.99),
        "max_ms": (max(histogram) + 1) * BUCKET_MS if histogram else None,
        "cpu_seconds": round(cpu_seconds, 2),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
