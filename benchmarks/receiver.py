"""A fast HTTP/1.1 receiver for benchmarks: answers every request with 200, at once.

Runs in its own process (``python -m benchmarks.receiver PORT [DELAY]``) so it never
competes with the sender for the GIL. It parses just enough HTTP/1.1 (request line,
headers, Content-Length body) to keep connections alive, and counts requests.
An optional DELAY (seconds) answers each request that much later, like a real
endpoint would.
"""

from __future__ import annotations

import asyncio
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


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
            self.buffer = self.buffer[end:]
            self.answer()

    def answer(self) -> None:
        assert self.transport is not None
        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, self._write)
        else:
            self.transport.write(RESPONSE)

    def _write(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(RESPONSE)


async def serve(port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: ReceiverProtocol(delay), "127.0.0.1", port, backlog=1024
    )
    print("ready", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    asyncio.run(serve(port, delay))


if __name__ == "__main__":
    main()
