"""Raw-socket receivers that misbehave on purpose, for the deadline tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

Behaviour = Callable[[socket.socket, threading.Event], None]


def read_head(conn: socket.socket) -> None:
    conn.settimeout(5)
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk


def never_answer(conn: socket.socket, stop: threading.Event) -> None:
    """Read the request, then hold the connection open without a word."""
    read_head(conn)
    stop.wait(30)


def drip_headers(conn: socket.socket, stop: threading.Event) -> None:
    """Send the status line and headers one byte per second, forever slower than a deadline."""
    read_head(conn)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Padding: " + b"a" * 100 + b"\r\n\r\nok"
    for byte in head:
        if stop.wait(1.0):
            return
        try:
            conn.sendall(bytes([byte]))
        except OSError:
            return


class RawServer:
    """A TCP server on 127.0.0.1 that runs ``behaviour`` on every connection."""

    def __init__(self, behaviour: Behaviour) -> None:
        self._behaviour = behaviour
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.connections = 0
        self.finished = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._behaviour(conn, self._stop)
        finally:
            self.finished += 1  # this side has closed the connection

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=2)


@contextlib.contextmanager
def raw_server(behaviour: Behaviour) -> Iterator[RawServer]:
    server = RawServer(behaviour)
    try:
        yield server
    finally:
        server.close()


def unused_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# Fault injection -------------------------------------------------------------------


def huge_body(conn: socket.socket, stop: threading.Event) -> None:
    """Answer 500 with a 1 GiB body, streamed for as long as the client reads."""
    read_head(conn)
    chunk = b"x" * 65536
    try:
        conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 1073741824\r\n\r\n")
        for _ in range(1073741824 // len(chunk)):
            if stop.is_set():
                return
            conn.sendall(chunk)
    except OSError:
        return


def invalid_http(conn: socket.socket, stop: threading.Event) -> None:
    """Answer with bytes that are not an HTTP response."""
    read_head(conn)
    with contextlib.suppress(OSError):
        conn.sendall(b"SMTP 220 hello there\r\nthis is not http\r\n\r\n")


def late_response(conn: socket.socket, stop: threading.Event) -> None:
    """Answer 200, but only after 3 s: later than the tests' 1 s deadline."""
    read_head(conn)
    if not stop.wait(3.0):
        with contextlib.suppress(OSError):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def reset_mid_response(conn: socket.socket, stop: threading.Event) -> None:
    """Send the head and part of the body, then reset the connection (RST)."""
    read_head(conn)
    with contextlib.suppress(OSError):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        time.sleep(0.05)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def close_after_headers(conn: socket.socket, stop: threading.Event) -> None:
    """Send a complete head promising a body, then close cleanly (FIN) without it."""
    read_head(conn)
    with contextlib.suppress(OSError):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")


def never_close(conn: socket.socket, stop: threading.Event) -> None:
    """Answer 200 with a body delimited by close, dripped, and never close."""
    read_head(conn)
    with contextlib.suppress(OSError):
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        while not stop.wait(0.2):
            conn.sendall(b".")


# Keep-alive receivers ------------------------------------------------------------


def read_one_request(conn: socket.socket, buffer: bytearray) -> bool:
    """Read one request (head and Content-Length body) from ``buffer``+socket."""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        rest += chunk
    buffer[:] = rest[length:]
    return True


def keep_alive(
    *, body: bytes = b"ok", per_connection: int | None = None, delay: float = 0.0
) -> Callable[[socket.socket, threading.Event], None]:
    """Answer 200 to every request on a connection; hang up after ``per_connection``."""

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        conn.settimeout(10)
        buffer = bytearray()
        served = 0
        with contextlib.suppress(OSError):
            while not stop.is_set() and read_one_request(conn, buffer):
                if delay:
                    time.sleep(delay)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                served += 1
                if per_connection is not None and served >= per_connection:
                    return  # closes without a word: no "Connection: close"

    return behaviour


class CountingServer(RawServer):
    """Tracks how many connections are open at once."""

    def __init__(self, behaviour: Callable[[socket.socket, threading.Event], None]) -> None:
        self.open_now = 0
        self.most_open = 0
        self._count_lock = threading.Lock()
        super().__init__(behaviour)

    def _handle(self, conn: socket.socket) -> None:
        with self._count_lock:
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)
        try:
            super()._handle(conn)
        finally:
            with self._count_lock:
                self.open_now -= 1


def serve_once_and_note_the_hang_up(hung_up: threading.Event) -> Behaviour:
    """Answer one request, keep the connection open, and set ``hung_up`` when the
    client closes it."""

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        conn.settimeout(10)
        if read_one_request(conn, bytearray()):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        with contextlib.suppress(OSError):
            if conn.recv(1) == b"":
                hung_up.set()

    return behaviour
