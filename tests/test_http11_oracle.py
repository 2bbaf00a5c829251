"""Our HTTP/1.1 response parser against h11 as an oracle.

Responses are generated from a grammar, valid ones and malformed ones, and fed in
the same random pieces to ``ResponseParser`` and to an h11 client connection that
has sent a POST. Both must accept the bytes and agree on the status, the header
fields, the body and whether the connection may be reused, or both must refuse
them. Where they differ on purpose, the generator marks the case with a *quirk*
and a named predicate below says which way the difference goes, and why; the list
is in docs/transports.md ("Where the parser differs from h11").
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import h11
from hypothesis import given, settings
from hypothesis import strategies as st

from hookdispatch.transports._http11 import IncompleteResponse, ResponseError, ResponseParser

MAX_BODY = 1 << 20

# -- the two parsers, fed the same pieces ------------------------------------------------

Outcome = tuple[object, ...]  # ("done", status, headers, body, reusable) or ("failed",)


def _normalised(headers: dict[str, str]) -> dict[str, str]:
    """Headers as compared: h11 keeps one Content-Length (its single value) and
    lower-cases Transfer-Encoding; ours joins repeated fields as they came."""
    headers = dict(headers)
    if "content-length" in headers:
        values = {value.strip(" \t") for value in headers["content-length"].split(",")}
        assert len(values) == 1
        headers["content-length"] = values.pop()
    if "transfer-encoding" in headers:
        headers["transfer-encoding"] = headers["transfer-encoding"].lower()
    return headers


def ours(pieces: list[bytes], closed: bool) -> tuple[Outcome, str]:
    parser = ResponseParser(max_body=MAX_BODY)
    try:
        for index, piece in enumerate(pieces):
            if parser.feed(piece):
                rest = b"".join(pieces[index + 1 :])
                break
        else:
            if not closed:
                return ("failed",), "incomplete"
            parser.close()
            rest = b""
    except (ResponseError, IncompleteResponse) as exc:
        return ("failed",), str(exc)
    reusable = parser.reusable and not rest and not closed
    return ("done", parser.status, _normalised(parser.headers), parser.body, reusable), ""


def theirs(pieces: list[bytes], closed: bool) -> tuple[Outcome, str]:
    connection = h11.Connection(h11.CLIENT)
    connection.send(h11.Request(method="POST", target="/", headers=[("Host", "x")]))
    connection.send(h11.EndOfMessage())
    status, headers, body = 0, {}, b""
    fed, eof = 0, False
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                if fed < len(pieces):
                    connection.receive_data(pieces[fed])
                    fed += 1
                    continue
                if closed and not eof:
                    connection.receive_data(b"")
                    eof = True
                    continue
                return ("failed",), "incomplete"
            if isinstance(event, h11.ConnectionClosed):
                return ("failed",), "closed"
            if isinstance(event, h11.Response):
                status = event.status_code
                for raw_name, raw_value in event.headers:
                    name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
                    headers[name] = f"{headers[name]}, {value}" if name in headers else value
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
    except h11.RemoteProtocolError as exc:
        return ("failed",), str(exc)
    rest = connection.trailing_data[0] + b"".join(pieces[fed:])
    try:
        connection.start_next_cycle()
        reusable = not closed and not rest
    except h11.LocalProtocolError:
        reusable = False
    return ("done", status, _normalised(headers), body, reusable), ""


def cut(data: bytes, fractions: list[float]) -> list[bytes]:
    cuts = sorted({int(fraction * len(data)) for fraction in fractions} - {0, len(data)})
    return [data[start:end] for start, end in itertools.pairwise([0, *cuts, len(data)])]


# -- the grammar --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    data: bytes
    quirks: frozenset[str]
    malformed: bool  # a mutation meant to make it invalid for both


class _Builder:
    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.quirks: set[str] = set()

    def quirk(self, name: str, chance: bool = True) -> bool:
        if chance:
            self.quirks.add(name)
        return chance


_FIELD_CHAR = st.sampled_from([bytes([b]) for b in range(1, 256) if b not in b" \t\n\x0b\x0c\r"])
_OWS = st.sampled_from([b"", b"", b" ", b"\t", b"  \t "])
_EOL = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"])  # bare LF: both accept it in heads
_NAMES = [b"X-A", b"x-a", b"Server", b"retry-after", b"Content-Type", b"X-Trace-Id", b"ETag"]
_RESERVED = {b"connection", b"content-length", b"transfer-encoding"}


@st.composite
def _token(draw: st.DrawFn) -> bytes:
    name = draw(
        st.one_of(
            st.sampled_from(_NAMES),
            st.from_regex(rb"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}\Z"),
        )
    )
    return b"X-" + name if name.lower() in _RESERVED else name


@st.composite
def _content(draw: st.DrawFn) -> bytes:
    """A field value's content: no whitespace at either end."""
    words = draw(st.lists(st.lists(_FIELD_CHAR, min_size=1, max_size=6), max_size=4))
    content = b""
    for word in words:
        if content:
            content += draw(st.sampled_from([b" ", b"\t", b" \t "]))
        content += b"".join(word)
    return content


def _field_lines(b: _Builder, name: bytes, value: bytes) -> bytes:
    """A field line, its value maybe split over obs-fold continuation lines."""
    draw = b.draw
    line = name + b":" + draw(_OWS) + value
    if value and draw(st.integers(0, 4)) == 0:
        # A fold replaces the line break and the whitespace around it by one space: it
        # goes where there is whitespace already, or at either end.
        spaces = [i for i, byte in enumerate(value) if byte in b" \t"]
        cut_at = draw(st.sampled_from([0, len(value), *spaces]))
        head, tail = value[:cut_at].rstrip(b" \t"), value[cut_at:].lstrip(b" \t")
        line = (
            name
            + b":"
            + draw(_OWS)
            + head
            + draw(_EOL)
            + draw(st.sampled_from([b" ", b"\t", b"   "]))
            + tail
        )
        if draw(st.booleans()):
            line += draw(_EOL) + b" " + draw(_OWS)  # an empty continuation line
    return line + draw(_OWS) + draw(_EOL)


def _fields(b: _Builder, count: int) -> list[bytes]:
    draw = b.draw
    lines = []
    for _ in range(draw(st.integers(0, count))):
        value = draw(_content())
        if b.quirk("vt-ff-in-value", draw(st.integers(0, 40)) == 0):
            value += draw(st.sampled_from([b"\x0b", b"\x0c"])) + b"x"
        lines.append(_field_lines(b, draw(_token()), value))
    return lines


def _status_line(b: _Builder, status: int) -> bytes:
    draw = b.draw
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
    if b.quirk("other-http-version", draw(st.integers(0, 30)) == 0):
        version = draw(st.sampled_from([b"1.2", b"2.0", b"0.9", b"1.9"]))
    reason = b""
    if draw(st.integers(0, 5)):
        words = draw(st.lists(_content(), max_size=3))
        reason = b" " + b" ".join(words) + draw(st.sampled_from([b"", b" ", b"\t"]))
        if b.quirk("vt-ff-in-reason", draw(st.integers(0, 40)) == 0):
            reason += b"\x0b"
        if b.quirk("tab-after-status", draw(st.integers(0, 40)) == 0):
            reason = b"\t" + reason[1:]
    return b"HTTP/%s %03d%s" % (version, status, reason) + draw(_EOL)


def _connection(b: _Builder) -> list[bytes]:
    draw = b.draw
    if not draw(st.booleans()):
        return []
    value = draw(
        st.sampled_from(
            [
                b"close",
                b"Close",
                b"keep-alive",
                b"Keep-Alive",
                b"upgrade, close",
                b"te",
                b"keep-alive , CLOSE",
            ]
        )
    )
    if b.quirk("close-substring", draw(st.integers(0, 8)) == 0):
        value = draw(st.sampled_from([b"x-close", b"closed", b"keep-alive, notclose"]))
    return [_field_lines(b, draw(st.sampled_from([b"Connection", b"connection"])), value)]


def _chunk_size_line(b: _Builder, size: int) -> bytes:
    draw = b.draw
    digits = draw(st.sampled_from([b"%x", b"%X"])) % size
    digits = b"0" * draw(st.integers(0, 16 - len(digits))) + digits
    if b.quirk("long-chunk-size", draw(st.integers(0, 60)) == 0):
        digits = b"0" * (draw(st.integers(17, 20)) - len(digits)) + digits
    extension = draw(st.sampled_from([b"", b"", b";ext=1", b";a", b';a="q; \\"x"', b";\x01\xff"]))
    if extension and b.quirk("bws-before-extension", draw(st.integers(0, 40)) == 0):
        extension = b" \t" + extension
    end = draw(st.sampled_from([b"", b"", b" ", b"\t "])) + b"\r\n"
    if b.quirk("bare-lf-chunk-size-line", draw(st.integers(0, 60)) == 0):
        end = b"\n"
    return digits + extension + end


def _chunked(b: _Builder, body: bytes) -> bytes:
    draw = b.draw
    encoded, start = b"", 0
    while start < len(body):
        size = draw(st.integers(1, max(1, len(body) - start)))
        encoded += _chunk_size_line(b, size) + body[start : start + size] + b"\r\n"
        start += size
    encoded += _chunk_size_line(b, 0)
    for _ in range(draw(st.integers(0, 2))):
        value = draw(_content())
        encoded += _field_lines(b, draw(_token()), value)
    if b.quirk("framing-fields-in-trailers", draw(st.integers(0, 60)) == 0):
        encoded += (
            draw(st.sampled_from([b"Content-Length: x", b"Transfer-Encoding: gzip"])) + b"\r\n"
        )
    return encoded + draw(_EOL)


@st.composite
def valid_responses(draw: st.DrawFn) -> Case:
    """A response both should read alike, but for the quirks the case is marked with."""
    b = _Builder(draw)
    data = b""
    for _ in range(draw(st.integers(0, 2))):
        data += _status_line(b, draw(st.sampled_from([100, 102, 103, 199])))
        data += b"".join(_fields(b, 2))
        if b.quirk("framing-fields-in-interim", draw(st.integers(0, 60)) == 0):
            data += (
                draw(st.sampled_from([b"Content-Length: x", b"Transfer-Encoding: gzip"])) + b"\r\n"
            )
        data += draw(_EOL)
    status = draw(
        st.sampled_from([200, 201, 202, 204, 299, 301, 304, 400, 404, 429, 500, 503, 599])
    )
    head = _status_line(b, status)
    fields = _fields(b, 5) + _connection(b)
    body = b"" if status in (204, 304) else draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "length", "chunked", "chunked", "close"]))
    if framing == "length":
        digits = b"%d" % len(body)
        digits = b"0" * draw(st.integers(0, 18 - len(digits))) + digits
        if b.quirk("long-content-length", draw(st.integers(0, 40)) == 0):
            digits = b"0" * (draw(st.integers(19, 20)) - len(digits)) + digits
        value = draw(st.sampled_from([b"%s", b"%s, %s", b"%s ,%s,%s"])).replace(b"%s", digits)
        fields += [
            _field_lines(b, draw(st.sampled_from([b"Content-Length", b"content-length"])), value)
        ]
        if draw(st.integers(0, 5)) == 0:  # repeated, with the same value
            fields += [_field_lines(b, b"Content-Length", digits)]
        encoded = body
    elif framing == "chunked":
        codings = [draw(st.sampled_from([b"chunked", b"Chunked", b"CHUNKED"]))]
        if b.quirk("transfer-coding-not-just-chunked", draw(st.integers(0, 20)) == 0):
            codings = draw(
                st.sampled_from(
                    [[b"gzip, chunked"], [b"gzip"], [b"chunked, identity"], [b""], [b"chunked"] * 2]
                )
            )
        for coding in codings:
            name = draw(st.sampled_from([b"Transfer-Encoding", b"transfer-encoding"]))
            fields += [_field_lines(b, name, coding)]
        if b.quirk("both-lengths", draw(st.integers(0, 10)) == 0):
            fields += [_field_lines(b, b"Content-Length", b"%d" % draw(st.integers(0, 400)))]
        encoded = _chunked(b, body)
    else:
        encoded = body
    if status in (204, 304):
        encoded = b""
    head += b"".join(draw(st.permutations(fields)))
    stray = draw(st.sampled_from([b"", b"", b"", b"HTTP/1.1 200 OK\r\n"]))
    return Case(data + head + draw(_EOL) + encoded + stray, frozenset(b.quirks), False)


# Malformed pieces: each makes a response invalid wherever it goes, for both parsers.
_BAD_STATUS_LINES = [
    b"HTTP/1.1 20 OK\r\n",
    b"HTTP/1.1 2000 OK\r\n",
    b"HTTP/1.1 OK\r\n",
    b"HTTP 200 OK\r\n",
    b"http/1.1 200 OK\r\n",
    b"HTTP/1.1  200 OK\r\n",
    b" HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 200 O\x00K\r\n",
    b"HTTP/1.1 200 OK\r\r\n",
    b"HTTP/1.1 200 O\rK\r\n",
    b"HTTP/1.1 099 Low\r\n",
    b"HTTP/1.1 -20 X\r\n",
    b"HTTP/11 200 OK\r\n",
    b"\r\nHTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n",
]
_BAD_FIELD_LINES = [
    b"X Y: 1\r\n",
    b"X\x01: 1\r\n",
    b": 1\r\n",
    b"X(: 1\r\n",
    b"X@Y: 1\r\n",
    b"\xc4: 1\r\n",
    b"X-A : 1\r\n",
    b"X-A\t: 1\r\n",
    b"no colon\r\n",
    b"X-A: a\rb\r\n",
    b"X-A: a\x00b\r\n",
    b"X-A: a\r\r\n",
    b"X-A: 1\r\n\x00\r\n",
    b"Content-Length: 1, 2\r\n",
    b"Content-Length: 1\r\nContent-Length: 2\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: +1\r\n",
    b"Content-Length: 1.0\r\n",
    b"Content-Length: 0x10\r\n",
    b"Content-Length: \r\n",
    b"Content-Length: 1 2\r\n",
    b"Content-Length: 1,\r\n",
    b"Content-Length: \xd9\xa3\r\n",
    b"Content-Length: \xb2\r\n",
    b"Content-Length: " + b"9" * 5000 + b"\r\n",
    b"Content-Length: " + b"1" * 25 + b"\r\n",
]
_BAD_CHUNK_SIZES = [
    b"zz\r\n",
    b"-1\r\n",
    b"0x5\r\n",
    b"\r\n",
    b" 5\r\n",
    b"+5\r\n",
    b"5\r\r\n",
    b"5\x00\r\n",
    b"g\r\n",
    b"5 5\r\n",
    b"f" * 21 + b"\r\n",
    b"f" * 5000 + b"\r\n",
]


@st.composite
def malformed_responses(draw: st.DrawFn) -> Case:
    """A valid response with one part made invalid: both must refuse it."""
    mutation = draw(
        st.sampled_from(
            [
                "status",
                "field",
                "fold-first",
                "chunk-size",
                "chunk-end",
                "both-lengths-bad",
                "truncated",
            ]
        )
    )
    chunked = mutation in ("chunk-size", "chunk-end") or draw(st.booleans())
    status = draw(st.sampled_from([200, 404, 500] if chunked else [200, 204, 404, 500]))
    body = b"" if status == 204 else draw(st.binary(max_size=40))
    fields = [b"Server: x\r\n", b"X-A: 1\r\n"]
    framing = (
        [b"Transfer-Encoding: chunked\r\n"] if chunked else [b"Content-Length: %d\r\n" % len(body)]
    )
    status_line = b"HTTP/1.1 %d Reason\r\n" % status
    chunk_line = b"%x\r\n" % len(body)
    chunk_end = b"\r\n"
    if mutation == "status":
        status_line = draw(st.sampled_from(_BAD_STATUS_LINES))
    elif mutation == "field":
        bad = draw(st.sampled_from(_BAD_FIELD_LINES))
        fields.insert(draw(st.integers(0, len(fields))), bad)
        if bad.startswith(b"Content-Length"):
            framing = []
    elif mutation == "fold-first":
        status_line += b" folded: 1\r\n"  # a continuation line with nothing to continue
    elif mutation == "chunk-size":
        chunk_line = draw(st.sampled_from(_BAD_CHUNK_SIZES))
    elif mutation == "chunk-end":
        chunk_end = draw(st.sampled_from([b"", b"\n", b"x\r\n", b"\r", b"\rx"]))
        body = body or b"abc"
        chunk_line = b"%x\r\n" % len(body)
        if chunk_end == b"":  # the chunk is longer than its size says
            chunk_line = b"%x\r\n" % (len(body) - 1)
    elif mutation == "both-lengths-bad":
        fields.append(
            draw(st.sampled_from([b"Content-Length: x\r\n", b"Content-Length: 1, 2\r\n"]))
        )
        framing = [b"Transfer-Encoding: chunked\r\n"]
        chunked = True
    head = status_line + b"".join(draw(st.permutations(fields + framing))) + b"\r\n"
    if chunked:
        encoded = (
            chunk_line + body + chunk_end if body or mutation == "chunk-size" else b""
        ) + b"0\r\n\r\n"
    else:
        encoded = body
    data = head + encoded
    if mutation == "truncated":  # closed before its end: incomplete for both
        nothing_after_the_head = not chunked and not body
        data = data[
            : len(head) - 2 if nothing_after_the_head else draw(st.integers(0, len(data) - 1))
        ]
    return Case(data, frozenset(), True)


# -- the deliberate differences -----------------------------------------------------------


def _we_accept_they_refuse(ours_: Outcome, theirs_: Outcome) -> bool:
    return ours_[0] == "done" and theirs_[0] == "failed"


def _they_accept_we_refuse(ours_: Outcome, theirs_: Outcome) -> bool:
    return ours_[0] == "failed" and theirs_[0] == "done"


def _only_reuse_differs(ours_: Outcome, theirs_: Outcome) -> bool:
    return (
        ours_[0] == theirs_[0] == "done"
        and ours_[:4] == theirs_[:4]
        and not ours_[4]
        and theirs_[4]
    )


Difference = Callable[[Case, Outcome, Outcome], bool]

DIFFERENCES: dict[str, Difference] = {
    # Bare LF ends a chunk-size line for us, as it does every line of the head for both:
    # one rule for every line but the CRLF after chunk data. h11 wants CRLF there.
    "bare-lf-chunk-size-line": lambda case, o, t: _we_accept_they_refuse(o, t),
    # RFC 9112, 7.1.1 allows BWS before a chunk extension's ";"; h11 does not.
    "bws-before-extension": lambda case, o, t: _we_accept_they_refuse(o, t),
    # Every number read is bounded: a chunk size of at most 16 hex digits (2**64), a
    # Content-Length of at most 18 digits, leading zeros included. h11 allows 20.
    "long-chunk-size": lambda case, o, t: _they_accept_we_refuse(o, t),
    "long-content-length": lambda case, o, t: _they_accept_we_refuse(o, t),
    # Not reusing a connection is always safe: any "close" in Connection ends it
    # (h11 looks for the exact token), and so do both Transfer-Encoding and
    # Content-Length, a sign of request smuggling (RFC 9112, 6.3 item 3).
    "close-substring": lambda case, o, t: _only_reuse_differs(o, t),
    "both-lengths": lambda case, o, t: _only_reuse_differs(o, t),
    # A transfer coding other than a final "chunked" means the body runs until the
    # close (RFC 9112, 6.3 item 4); h11 refuses all but exactly "chunked".
    "transfer-coding-not-just-chunked": lambda case, o, t: _we_accept_they_refuse(o, t),
    # Framing fields are read where they count only: not in 1xx heads, not in
    # trailers (which we discard). h11 validates Content-Length and
    # Transfer-Encoding wherever they are.
    "framing-fields-in-interim": lambda case, o, t: _we_accept_they_refuse(o, t),
    "framing-fields-in-trailers": lambda case, o, t: _we_accept_they_refuse(o, t),
    # Control characters but CR, LF and NUL may stay in a field value or reason
    # (RFC 9110, 5.5); h11 refuses VT and FF only (its regex's \s), keeps the rest.
    "vt-ff-in-value": lambda case, o, t: _we_accept_they_refuse(o, t),
    "vt-ff-in-reason": lambda case, o, t: _we_accept_they_refuse(o, t),
    # A tab between status code and reason is accepted; RFC 9112 and h11 say SP.
    "tab-after-status": lambda case, o, t: _we_accept_they_refuse(o, t),
    # Only HTTP/1.0 and HTTP/1.1 are read; h11 reads any HTTP/d.d status line.
    "other-http-version": lambda case, o, t: _they_accept_we_refuse(o, t),
}


def _check(case: Case, fractions: list[float], closed: bool) -> None:
    pieces = cut(case.data, fractions)
    ours_, our_error = ours(pieces, closed)
    theirs_, their_error = theirs(pieces, closed)
    if case.malformed:
        assert ours_[0] == theirs_[0] == "failed", (ours_, our_error, theirs_, their_error)
        return
    if not case.quirks and closed:  # a valid response, all of it: both read it
        assert ours_[0] == "done", (our_error, their_error)
    if ours_ == theirs_:
        return
    explained = [name for name in case.quirks if DIFFERENCES[name](case, ours_, theirs_)]
    assert explained, (ours_, our_error, theirs_, their_error, sorted(case.quirks))


_PIECES = st.lists(st.floats(0, 1), max_size=6)


@settings(max_examples=700, deadline=None)
@given(case=valid_responses(), fractions=_PIECES, closed=st.booleans())
def test_valid_responses_read_as_h11_reads_them(
    case: Case, fractions: list[float], closed: bool
) -> None:
    _check(case, fractions, closed)


@settings(max_examples=1000, deadline=None)
@given(case=malformed_responses(), fractions=_PIECES, closed=st.booleans())
def test_malformed_responses_are_refused_by_both(
    case: Case, fractions: list[float], closed: bool
) -> None:
    _check(case, fractions, closed)
