"""A fast HTTP/1.1 receiver for benchmarks: answers every request with 200, at once.

Runs in its own process (``python -m benchmarks.receiver PORT [DELAY]``) so it never
competes with the sender for the GIL. It parses just enough HTTP/1.1 (request line,
headers, Content-Length body) to keep connections alive, and counts the answers it
wrote. An optional DELAY (seconds) answers each request that much later, like a real
endpoint would. ``GET /count`` answers at once with that count, uncounted: the
benchmark reads it to check that every delivery arrived and to time Celery's.

:class:`Receiver` starts one on the receiver core and talks to it.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .harness import RECEIVER_CORE, Run, pin, process_cpu

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
COUNT_REQUEST = b"GET /count"

answered = 0


class ReceiverProtocol(asyncio.Protocol):
    """One keep-alive connection: splits requests by Content-Length, answers 200."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            length = 0
            for line in self.buffer[:head_end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            is_count = self.buffer.startswith(COUNT_REQUEST)
            self.buffer = self.buffer[end:]
            if is_count:
                self.answer_count()
            else:
                self.answer()

    def answer(self) -> None:
        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, self._write)
        else:
            self._write()

    def _write(self) -> None:
        global answered
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(RESPONSE)
            answered += 1

    def answer_count(self) -> None:
        assert self.transport is not None
        body = str(answered).encode()
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


async def serve(port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: ReceiverProtocol(delay), "127.0.0.1", port, backlog=4096
    )
    print("ready", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


class Receiver:
    """A receiver process on the receiver core; ``with Receiver(delay) as receiver:``."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = 0
        self.busiest = 0.0  # the largest share of its core it used in a checked run

    def __enter__(self) -> Receiver:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.receiver", "0", str(self.delay)],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if not line or line[0] != "ready":
            self.__exit__()
            raise RuntimeError("the benchmark receiver did not start")
        pin(self.process.pid, RECEIVER_CORE)
        self.port = int(line[1])
        self.url = f"http://127.0.0.1:{self.port}/hook"
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def count(self) -> int:
        """How many requests it has answered so far (one short round trip)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(COUNT_REQUEST + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while True:
                head, _, body = data.partition(b"\r\n\r\n")
                length = head.lower().partition(b"content-length:")[2].split(b"\r\n")[0]
                if length and len(body) >= int(length):
                    return int(body)
                chunk = sock.recv(256)
                if not chunk:
                    raise RuntimeError("the receiver closed the count request")
                data += chunk

    def checked(self, expected: int, measure: Callable[[], Run]) -> Callable[[], Run]:
        """``measure``, checking that every one of its ``expected`` requests arrived."""

        def run() -> Run:
            before, cpu = self.count(), self.cpu()
            result = measure()
            arrived, cpu = self.count() - before, self.cpu() - cpu
            if arrived < expected and not result.cut:
                raise RuntimeError(f"{arrived} of {expected} requests reached the receiver")
            # Its CPU per request times the measured rate: how busy its core was.
            self.busiest = max(self.busiest, cpu / max(arrived, 1) * result.value)
            return result

        return run

    def cpu(self) -> float:
        """CPU seconds the receiver has used so far."""
        assert self.process is not None
        return process_cpu(self.process.pid)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    asyncio.run(serve(port, delay))


if __name__ == "__main__":
    main()
