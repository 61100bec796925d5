#!/usr/bin/env python3
"""paced_post: an open-loop load generator for `make bench` (wrk is closed-loop).

POSTs one JSON body to a URL at a fixed rate for a bounded time, each request with its own
Idempotency-Key, over a fixed pool of keep-alive HTTP/1.1 connections to 127.0.0.1. Request i
is due at start + i / rate; it leaves on the first idle connection once it is due. Nothing
waits for an answer before sending the next request, so a slow server makes the backlog grow
instead of lowering the rate (no coordinated omission): each latency is counted from the
request's due time.

Prints one JSON object: requests due and sent, answers by status, the rate really held (sent
requests over the time from the first due one to the last send), the send lag (how late the
requests left: all --conns connections busy, or the generator itself late) and the latency
p50/p99/max. Standard library only.

    paced_post.py URL KEY BODY --rate 1000 --seconds 10 [--id-prefix run1]
"""
import argparse
import asyncio
import json
import time
import urllib.parse


def pct(values, q):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class Load:
    def __init__(self, opts):
        self.opts = opts
        url = urllib.parse.urlsplit(opts.url)
        self.host, self.port, self.path = url.hostname, url.port or 80, url.path or "/"
        self.idle: asyncio.Queue = asyncio.Queue()
        self.conns = 0
        self.sent = 0
        self.status: dict[str, int] = {}
        self.lag: list[float] = []
        self.latency: list[float] = []
        self.last_send = 0.0
        self.pending: set = set()

    def request(self, i):
        body = self.opts.body.encode()
        head = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Authorization: Bearer {self.opts.key}\r\nContent-Type: application/json\r\n"
                f"Idempotency-Key: {self.opts.id_prefix}-{i}\r\nContent-Length: {len(body)}\r\n\r\n")
        return head.encode() + body

    async def one(self, i, due):
        reader, writer = await self.idle.get()
        now = time.monotonic()
        self.lag.append(now - due)
        self.sent += 1
        self.last_send = now
        try:
            writer.write(self.request(i))
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            code = status_line.split()[1].decode() if status_line else "closed"
            self.latency.append(time.monotonic() - due)
            self.status[code] = self.status.get(code, 0) + 1
            self.idle.put_nowait((reader, writer))
        except (OSError, asyncio.IncompleteReadError, IndexError):
            self.status["io_error"] = self.status.get("io_error", 0) + 1
            writer.close()
            try:  # the pool keeps its size: a connection the server closed is replaced
                self.idle.put_nowait(await asyncio.open_connection(self.host, self.port))
            except OSError:
                self.conns -= 1

    async def run(self):
        rate, total = self.opts.rate, int(self.opts.rate * self.opts.seconds)
        # Open the connections first: their handshakes are not the service's latency.
        for _ in range(self.opts.conns):
            self.idle.put_nowait(await asyncio.open_connection(self.host, self.port))
            self.conns += 1
        start = time.monotonic()
        i = 0
        while i < total:
            now = time.monotonic()
            # Every request due by now is started now; it waits for a connection if all are busy.
            while i < total and start + i / rate <= now:
                task = asyncio.create_task(self.one(i, start + i / rate))
                self.pending.add(task)
                task.add_done_callback(self.pending.discard)
                i += 1
            await asyncio.sleep(max(0.0, min(0.001, start + i / rate - time.monotonic())))
        if self.pending:
            await asyncio.wait(self.pending, timeout=self.opts.drain_timeout)
        held = self.sent / max(self.last_send - start, 1e-9) if self.sent > 1 else 0.0
        ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
        return {"due": total, "sent": self.sent, "status": self.status,
                "rate_target": rate, "rate_held": round(held, 1),
                "send_lag_p99_ms": ms(pct(self.lag, 0.99)), "send_lag_max_ms": ms(max(self.lag, default=None)),
                "latency_p50_ms": ms(pct(self.latency, 0.50)), "latency_p99_ms": ms(pct(self.latency, 0.99)),
                "latency_max_ms": ms(max(self.latency, default=None)), "connections": self.conns}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("key")
    p.add_argument("body")
    p.add_argument("--rate", type=float, default=1000.0, help="requests a second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--conns", type=int, default=64, help="connections, opened before the start")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="wait for the last answers")
    p.add_argument("--id-prefix", default=f"paced-{int(time.time())}")
    print(json.dumps(asyncio.run(Load(p.parse_args()).run())))


if __name__ == "__main__":
    main()
