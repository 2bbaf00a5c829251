"""HTTP/1.1 on the wire, sans I/O: a POST's bytes out, a response's bytes in.

:func:`encode_post` writes the request; :class:`ResponseParser` is fed whatever
the connection receives and says when the response is complete. Neither touches
a socket or a clock, so the async transport drives them and the tests feed them
bytes directly.

The parser is strict where leniency would be unsafe and bounded everywhere a
receiver could make it hold memory: a head over 64 KiB, more than 100 header
fields, a chunk-size line over 1 KiB or a malformed length is a
:class:`ResponseError`; at most ``max_body`` bytes of a body are kept, and a
longer body ends the response early (the connection is then not reused).
Interim 1xx responses are skipped. A body is delimited by ``Content-Length``,
by chunked coding, or by the receiver closing the connection (RFC 9112, 6.3).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = [
    "MAX_HEAD_BYTES",
    "IncompleteResponse",
    "ResponseError",
    "ResponseParser",
    "encode_post",
]

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 100
_MAX_CHUNK_LINE = 1024

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?:[ \t][^\r\n]*)?")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_checked_names: set[str] = set()


class ResponseError(ValueError):
    """The bytes received are not a valid HTTP/1.1 response."""


class IncompleteResponse(ValueError):
    """The connection closed before the response was complete."""


def _check_name(name: str) -> None:
    if name not in _checked_names:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid HTTP header name")
        if len(_checked_names) < 1024:  # header names are few; bound it all the same
            _checked_names.add(name)


def encode_post(target: bytes, host: bytes, headers: Mapping[str, str], body: bytes) -> bytes:
    """The bytes of ``POST target`` with ``Host``, ``Content-Length``, ``headers`` and ``body``.

    Raises ValueError for a header name that is not an HTTP token, or a value with a
    line break or NUL in it (which would smuggle in a header of its own).
    """
    for name in headers:
        _check_name(name)
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    count = len(headers)
    if fields.count("\n") != count or fields.count("\r") != count or "\0" in fields:
        raise ValueError("an HTTP header value contains a line break or NUL")
    return b"".join(
        (
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n" % (target, host, len(body)),
            fields.encode(),
            b"\r\n",
            body,
        )
    )


# Parser states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class ResponseParser:
    """One response, fed in pieces. After :meth:`feed` or :meth:`close` returns True,
    ``status``, ``headers`` (lower-case names), ``body`` and ``reusable`` are set.

    ``reusable`` says whether the connection may carry another request: the
    receiver kept it alive, the body was delimited and read to its end, and
    nothing followed it.
    """

    __slots__ = (
        "_buffer",
        "_chunks",
        "_keep_alive",
        "_kept",
        "_max_body",
        "_remaining",
        "_state",
        "body",
        "headers",
        "reusable",
        "status",
    )

    def __init__(self, *, max_body: int) -> None:
        self._max_body = max_body
        self._buffer = b""
        self._state = _HEAD
        self._chunks: list[bytes] = []
        self._kept = 0  # body bytes in _chunks
        self._remaining = 0  # of the Content-Length, or of the current chunk
        self._keep_alive = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.reusable = False

    @property
    def started(self) -> bool:
        """Whether any byte of the response has arrived."""
        return bool(self._buffer) or self._state != _HEAD

    def feed(self, data: bytes) -> bool:
        """Take the next bytes received; True once the response is complete.

        Raises ResponseError when they cannot be a valid response.
        """
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        position = 0
        while True:
            state = self._state
            if state == _HEAD:
                position = self._head(buffer, position)
                if position < 0:
                    return False
            elif state in (_LENGTH, _CHUNK_DATA):
                take = min(self._remaining, len(buffer) - position)
                self._keep(buffer[position : position + take])
                position += take
                self._remaining -= take
                if self._remaining:
                    return self._full()  # more to come, unless the kept part is full
                if state == _LENGTH:
                    return self._finish(buffer, position)
                self._state = _CHUNK_END
            elif state == _UNTIL_CLOSE:
                self._keep(buffer[position:])
                return self._full()
            elif state in (_CHUNK_SIZE, _TRAILER):
                end = buffer.find(b"\n", position)
                if end < 0:
                    if len(buffer) - position > _MAX_CHUNK_LINE:
                        raise ResponseError("a chunk-size or trailer line is over 1 KiB")
                    self._buffer = buffer[position:]
                    return False
                line = buffer[position:end].rstrip(b"\r")
                position = end + 1
                if state == _TRAILER:
                    if not line:
                        return self._finish(buffer, position)
                    continue  # trailer fields are not kept
                size = line.split(b";", 1)[0].strip(b" \t")
                if not _HEX.fullmatch(size):
                    raise ResponseError(f"invalid chunk size {size[:20]!r}")
                self._remaining = int(size, 16)
                self._state = _TRAILER if self._remaining == 0 else _CHUNK_DATA
            elif state == _CHUNK_END:
                if buffer.startswith(b"\r\n", position):
                    position += 2
                elif buffer.startswith(b"\n", position):
                    position += 1
                elif len(buffer) - position < 2 and buffer.endswith(b"\r"):
                    self._buffer = buffer[position:]  # the CR came, the LF is on its way
                    return False
                elif position == len(buffer):
                    return False
                else:
                    raise ResponseError("a chunk is longer than its size says")
                self._state = _CHUNK_SIZE
            else:  # done already
                return True

    def close(self) -> bool:
        """The receiver closed the connection: True if that completes the response.

        Raises IncompleteResponse when it does not.
        """
        if self._state == _DONE:
            return True
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
            self.body = b"".join(self._chunks)
            return True
        if not self.started:
            raise IncompleteResponse("the receiver closed the connection without answering")
        raise IncompleteResponse("the receiver closed the connection before the response ended")

    def _head(self, buffer: bytes, position: int) -> int:
        """Parse a head from ``position``; the position after it, or -1 for more bytes."""
        end = buffer.find(b"\r\n\r\n", position)
        if end >= 0:
            after = end + 4
        else:
            found = _HEAD_END.search(buffer, position)  # bare LFs: tolerated, as browsers do
            if found is None:
                if len(buffer) - position > MAX_HEAD_BYTES:
                    raise ResponseError("the response head is over 64 KiB")
                self._buffer = buffer[position:]
                return -1
            end, after = found.start(), found.end()
        if end - position > MAX_HEAD_BYTES:
            raise ResponseError("the response head is over 64 KiB")
        lines = buffer[position:end].split(b"\n")
        status_line = lines[0].rstrip(b"\r")
        matched = _STATUS_LINE.fullmatch(status_line)
        if matched is None:
            raise ResponseError(f"not an HTTP/1.x status line: {status_line[:40]!r}")
        status = int(matched[2])
        if len(lines) > MAX_HEADER_FIELDS + 1:
            raise ResponseError(f"more than {MAX_HEADER_FIELDS} header fields")
        headers: dict[str, str] = {}
        for raw in lines[1:]:
            name, colon, value = raw.partition(b":")
            if not colon or not name or name != name.strip() or name[0] in b" \t":
                raise ResponseError(f"malformed header line {raw[:40]!r}")
            key = name.decode("latin-1").lower()
            text = value.strip(b" \t\r").decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        if 100 <= status < 200:
            if status == 101:
                raise ResponseError("the receiver switched protocols (101); webhooks are HTTP")
            return after  # an interim response: the real one follows
        self.status, self.headers = status, headers
        self._frame(matched[1] == b"1", status, headers)
        return after

    def _frame(self, http11: bool, status: int, headers: dict[str, str]) -> None:
        """How the body ends (RFC 9112, 6.3), and whether the connection may be reused."""
        connection = headers.get("connection", "").lower()
        self._keep_alive = http11 and "close" not in connection
        if status in {204, 304}:
            self._remaining = 0
            self._state = _LENGTH
            return
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if coding.lower().rsplit(",", 1)[-1].strip() != "chunked":
                self._keep_alive = False
                self._state = _UNTIL_CLOSE
                return
            self._state = _CHUNK_SIZE
            return
        length = headers.get("content-length")
        if length is None:
            self._keep_alive = False
            self._state = _UNTIL_CLOSE
            return
        values = {value.strip() for value in length.split(",")}
        if len(values) != 1 or not (value := values.pop()).isdigit() or not value.isascii():
            raise ResponseError(f"invalid Content-Length {length[:40]!r}")
        self._remaining = int(value)
        self._state = _LENGTH

    def _keep(self, data: bytes) -> None:
        """Keep body bytes, up to ``max_body`` in all."""
        room = self._max_body - self._kept
        if data and room > 0:
            kept = data[:room] if len(data) > room else data
            self._chunks.append(kept)
            self._kept += len(kept)

    def _full(self) -> bool:
        """With more body to come: end the response here if the kept part is full."""
        if self._kept < self._max_body:
            return False
        self._state = _DONE
        self.body = b"".join(self._chunks)
        self.reusable = False
        return True

    def _finish(self, buffer: bytes, position: int) -> bool:
        self._state = _DONE
        self.body = b"".join(self._chunks)
        self.reusable = self._keep_alive and position == len(buffer)
        return True
