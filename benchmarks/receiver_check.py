"""The receiver's own ceiling: how fast it answers when the clients cost next to nothing.

Several client processes (``python -m benchmarks.receiver_check URL CONNECTIONS
SECONDS``), each a bare asyncio protocol that writes a prepared request and counts
responses, load the receiver for a few seconds; ``wrk`` is used too where it is
installed. Besides the rate we read the receiver's CPU time, so the check also says
how busy its core was: a receiver whose core is not saturated is not the limit.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from .harness import BODY, log
from .receiver import Receiver


@dataclass
class Ceiling:
    rate: float  # requests answered per second by the client processes
    busy: float  # fraction of its core the receiver used meanwhile
    per_cpu_second: float  # requests per CPU-second of the receiver: its one-core ceiling
    clients: int
    wrk_rate: float | None = None


def request_bytes(url: str) -> bytes:
    path = urlsplit(url).path or "/"
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


class Client(asyncio.Protocol):
    """One keep-alive connection: send, wait for the answer, send again."""

    def __init__(self, request: bytes, counter: list[int], stop_at: float) -> None:
        self.request = request
        self.counter = counter
        self.stop_at = stop_at
        self.transport: asyncio.Transport | None = None
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        # Responses are tiny and fixed: each one starts with the status line.
        self.counter[0] += data.count(b"HTTP/1.1 ")
        assert self.transport is not None
        if time.monotonic() < self.stop_at:
            self.transport.write(self.request)
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def load(url: str, connections: int, seconds: float) -> int:
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    counter = [0]
    stop_at = time.monotonic() + seconds
    request = request_bytes(url)
    clients = []
    for _ in range(connections):
        _, protocol = await loop.create_connection(
            lambda: Client(request, counter, stop_at), parts.hostname, parts.port
        )
        clients.append(protocol)
    print("started", flush=True)
    await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), seconds + 10)
    return counter[0]


def with_wrk(receiver: Receiver, seconds: float) -> float | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    result = subprocess.run(
        [wrk, "-t2", "-c64", f"-d{max(1, round(seconds))}s", receiver.url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    )
    found = re.search(r"Requests/sec:\s*([\d.]+)", result.stdout)
    return float(found.group(1)) if found else None


def measure(
    receiver: Receiver, *, clients: int = 3, connections: int = 32, seconds: float = 3
) -> Ceiling:
    """Load ``receiver`` from ``clients`` processes at once; return its :class:`Ceiling`."""
    processes = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "benchmarks.receiver_check", receiver.url),
                *(str(connections), str(seconds)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            process.stdout.readline()  # "started": connected and sending
        # Sample the middle of the load, when every client is sending.
        time.sleep(0.3)
        before, began_cpu, began = receiver.count(), receiver.cpu(), time.perf_counter()
        time.sleep(max(0.5, seconds - 0.8))
        answered = receiver.count() - before
        cpu, elapsed = receiver.cpu() - began_cpu, time.perf_counter() - began
        for process in processes:
            process.wait(timeout=seconds + 30)
    finally:
        for process in processes:
            process.kill()
            process.wait()
    ceiling = Ceiling(
        rate=answered / elapsed,
        busy=cpu / elapsed,
        per_cpu_second=answered / cpu if cpu else float("inf"),
        clients=clients,
        wrk_rate=with_wrk(receiver, seconds),
    )
    log(
        f"  receiver ceiling: {ceiling.rate:,.0f} req/s from {clients} client processes,"
        f" its core {ceiling.busy:.0%} busy, {ceiling.per_cpu_second:,.0f} req per CPU-second"
        + (f"; wrk: {ceiling.wrk_rate:,.0f} req/s" if ceiling.wrk_rate else "")
    )
    return ceiling


def main() -> None:
    url, connections, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    print(asyncio.run(load(url, connections, seconds)), flush=True)


if __name__ == "__main__":
    main()
