"""The sans-I/O HTTP/1.1 codec of the async transport (``_http11``): bytes in, bytes out."""

from __future__ import annotations

import contextlib
import itertools

import h11
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hookdispatch.transports import _http11 as http11
from hookdispatch.transports._http11 import (
    IncompleteResponse,
    ResponseError,
    ResponseParser,
    encode_post,
)

CAP = 64 * 1024


def parse(*pieces: bytes, max_body: int = CAP, close: bool = False) -> ResponseParser:
    """Feed ``pieces`` in order; the parser must be done by the end (or at close)."""
    parser = ResponseParser(max_body=max_body)
    done = False
    for piece in pieces:
        assert not done, "bytes fed after the response was complete"
        done = parser.feed(piece)
    if close and not done:
        done = parser.close()
    assert done
    return parser


def every_split(data: bytes) -> list[tuple[bytes, ...]]:
    """``data`` cut at every point, and byte by byte."""
    return [(data[:i], data[i:]) for i in range(1, len(data))] + [
        tuple(data[i : i + 1] for i in range(len(data)))
    ]


def fed_whole_or_split(data: bytes, **options: object) -> list[ResponseParser]:
    """The parser's result for ``data`` in one piece and in every split of it."""
    results = []
    for pieces in [(data,), *every_split(data)]:
        parser = ResponseParser(**options)  # type: ignore[arg-type]
        done = False
        for piece in pieces:
            if piece:
                done = parser.feed(piece)
        results.append(parser)
        assert done, pieces
    return results


SIMPLE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def test_a_content_length_response_in_one_piece() -> None:
    parser = parse(SIMPLE)
    assert (parser.status, parser.body, parser.reusable) == (200, b"ok", True)
    assert parser.headers == {"content-length": "2", "content-type": "text/plain"}


def test_any_split_of_the_bytes_parses_the_same() -> None:
    for parser in fed_whole_or_split(SIMPLE, max_body=CAP):
        assert (parser.status, parser.body, parser.reusable) == (200, b"ok", True)


CHUNKED = (
    b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n"
    b"5;ext=1\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: yes\r\n\r\n"
)

CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_a_chunked_response_at_every_split() -> None:
    for parser in fed_whole_or_split(CHUNKED, max_body=CAP):
        assert parser.status == 503
        assert parser.body == b"hello world!"
        assert parser.headers["retry-after"] == "7"
        assert parser.reusable


def test_a_body_until_close() -> None:
    parser = ResponseParser(max_body=CAP)
    assert not parser.feed(b"HTTP/1.1 200 OK\r\n\r\nsome")
    assert not parser.feed(b" more")
    assert parser.close()
    assert (parser.body, parser.reusable) == (b"some more", False)


def test_http_1_0_and_connection_close_are_not_reused() -> None:
    assert not parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").reusable
    assert not parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").reusable
    assert parse(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").reusable


def test_bytes_after_the_response_make_the_connection_unusable() -> None:
    parser = parse(SIMPLE + b"HTTP/1.1 200 OK\r\n")
    assert (parser.body, parser.reusable) == (b"ok", False)


def test_interim_responses_are_skipped() -> None:
    parser = parse(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n" + SIMPLE
    )
    assert (parser.status, parser.body) == (200, b"ok")
    assert "link" not in parser.headers


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_for_204_and_304_whatever_the_headers_say(status: int) -> None:
    parser = parse(b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % status)
    assert (parser.status, parser.body, parser.reusable) == (status, b"", True)


def test_bare_line_feeds_are_tolerated() -> None:
    parser = parse(b"HTTP/1.1 201 Created\nContent-Length: 3\n\nyes")
    assert (parser.status, parser.body) == (201, b"yes")


def test_folded_header_lines_are_unfolded() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nX-A: one\r\n \t two\r\nContent-Length: 0\r\n\r\n")
    assert parser.headers["x-a"] == "one two"


def test_a_bare_lf_head_is_found_before_a_crlf_pair_in_the_body() -> None:
    parser = parse(b"HTTP/1.1 200 OK\nContent-Length: 6\n\nab\r\n\r\n")
    assert (parser.status, parser.body) == (200, b"ab\r\n\r\n")


def test_both_lengths_given_the_chunks_count_and_the_connection_is_not_reused() -> None:
    parser = parse(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n"
    )
    assert (parser.body, parser.reusable) == (b"ok", False)


def test_repeated_headers_are_joined_and_names_lower_cased() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n")
    assert parser.headers["x-a"] == "1, 2"


def test_a_status_line_without_a_reason_phrase() -> None:
    assert parse(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").status == 200


def test_the_body_kept_stops_at_the_cap_and_the_response_ends_there() -> None:
    head = b"HTTP/1.1 500 Oops\r\nContent-Length: 1000000\r\n\r\n"
    parser = ResponseParser(max_body=10)
    assert not parser.feed(head + b"x" * 4)
    assert parser.feed(b"x" * 100)  # done at the cap, long before the million
    assert (parser.status, parser.body, parser.reusable) == (500, b"x" * 10, False)


def test_a_body_exactly_at_the_cap_is_complete_and_reusable() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" + b"y" * 10, max_body=10)
    assert (parser.body, parser.reusable) == (b"y" * 10, True)


def test_whole_chunks_past_the_cap_end_the_response_too() -> None:
    parser = ResponseParser(max_body=10)
    assert not parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    fed = 0
    while not parser.feed(b"1\r\nx\r\n"):
        fed += 1
        assert fed < 100, "a receiver sending whole chunks forever kept the parser reading"
    assert (parser.body, parser.reusable) == (b"x" * 10, False)


def test_a_head_dripped_a_byte_at_a_time_is_searched_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Searching the whole head again on every byte made 64 KiB dripped bytewise cost
    # 30 s of CPU: the bytes looked at must stay proportional to the head's size.
    looked_at = 0
    search = http11._head_end

    def counting(buffer: bytes | bytearray, start: int) -> tuple[int, int]:
        nonlocal looked_at
        looked_at += len(buffer) - start
        return search(buffer, start)

    monkeypatch.setattr(http11, "_head_end", counting)
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 60_000 + b"\r\n\r\n"
    parser = ResponseParser(max_body=CAP)
    for index in range(len(head)):
        parser.feed(head[index : index + 1])
    assert parser.status == 200
    assert looked_at < 4 * len(head)


def test_the_cap_holds_for_chunked_and_until_close_bodies() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"ffff\r\n" + b"z" * 50
    assert parse(chunked, max_body=20).body == b"z" * 20
    assert parse(b"HTTP/1.1 200 OK\r\n\r\n" + b"w" * 50, max_body=20).body == b"w" * 20


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"SMTP 220 hello there\r\nthis is not http\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/2 200 OK\r\n\r\n", id="http-2-status-line"),
        pytest.param(b"HTTP/1.1 20 OK\r\n\r\n", id="two-digit-status"),
        pytest.param(b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n", id="header-without-colon"),
        pytest.param(b"HTTP/1.1 200 OK\r\nName : v\r\n\r\n", id="space-before-colon"),
        pytest.param(b"HTTP/1.1 200 OK\r\n folded: 1\r\n\r\n", id="fold-without-a-field"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent Length: 1\r\n\r\n", id="space-in-name"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX\x01Y: 1\r\n\r\n", id="control-in-name"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX: a\rContent-Length: 5\r\n\r\n", id="bare-cr"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX: a\x00\r\n\r\n", id="nul-in-value"),
        pytest.param(b"HTTP/1.1 200 O\x00K\r\n\r\n", id="nul-in-reason"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: \x0b5\r\n\r\n", id="odd-space-length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcd\r\n0\r\n\r\n",
            id="chunk-ended-by-bare-lf",
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", id="negative-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", id="two-lengths"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: \xd9\xa3\r\n\r\n", id="non-ascii-digit"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk-size"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n", id="0x-chunk-size"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
            id="chunk-longer-than-its-size",
        ),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", id="switching-protocols"),
        # Found by the h11 oracle (tests/test_http11_oracle.py):
        pytest.param(b"HTTP/1.1 200 OK\r\r\nContent-Length: 0\r\n\r\n", id="cr-ending-status-line"),
        pytest.param(CHUNKED_HEAD + b"5\r\r\nhello\r\n0\r\n\r\n", id="cr-ending-chunk-size"),
        pytest.param(CHUNKED_HEAD + b" 5\r\nhello\r\n0\r\n\r\n", id="space-before-chunk-size"),
        pytest.param(CHUNKED_HEAD + b"0\r\nno colon\r\n\r\n", id="malformed-trailer"),
        pytest.param(CHUNKED_HEAD + b"0\r\nX: a\x00\r\n\r\n", id="nul-in-trailer"),
        pytest.param(CHUNKED_HEAD + b"0\r\n folded: 1\r\n\r\n", id="trailer-fold-first"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            id="invalid-length-beside-chunked",
        ),
        pytest.param(b"HTTP/1.1 204 OK\r\nContent-Length: 1, 2\r\n\r\n", id="invalid-length-204"),
    ],
)
def test_what_is_not_a_valid_response_is_an_error(data: bytes) -> None:
    with pytest.raises(ResponseError):
        ResponseParser(max_body=CAP).feed(data)


@pytest.mark.parametrize("digits", [19, 25, 5000])
def test_an_over_long_content_length_is_a_response_error(digits: int) -> None:
    # 5,000 digits made int() raise its own ValueError ("Exceeds the limit (4300 digits)
    # for integer string conversion"), which is not a ResponseError.
    data = b"HTTP/1.1 200 OK\r\nContent-Length: " + b"1" * digits + b"\r\n\r\n"
    with pytest.raises(ResponseError, match="too large"):
        ResponseParser(max_body=CAP).feed(data)


def test_the_longest_content_length_read_is_18_digits() -> None:
    parser = ResponseParser(max_body=CAP)
    assert not parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 18 + b"\r\n\r\nab")
    assert parser.feed(b"cd" * CAP)  # done at the cap
    assert parser.body == (b"ab" + b"cd" * CAP)[:CAP]


@pytest.mark.parametrize("digits", [17, 1000, 5000])
def test_an_over_long_chunk_size_is_a_response_error(digits: int) -> None:
    with pytest.raises(ResponseError):
        ResponseParser(max_body=CAP).feed(CHUNKED_HEAD + b"f" * digits + b"\r\n")


@pytest.mark.parametrize(
    ("lines", "value"),
    [
        (b"X-A: one\r\n \r\n", "one"),
        (b"X-A: one\r\n \t \r\n\ttwo \r\n", "one two"),
        (b"X-A:\r\n two\r\n", "two"),
        (b"X-A: 1\r\nX-A:\r\n two\r\n", "1, two"),
        (b"X-A: 1\r\nX-A: 2\r\n three\r\n", "1, 2 three"),
    ],
)
def test_folded_lines_add_no_whitespace_at_either_end(lines: bytes, value: str) -> None:
    # An empty continuation line left a trailing space, one after an empty value a
    # leading space, where a fold is one space between two parts (as h11 reads it).
    parser = parse(b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 0\r\n\r\n")
    assert parser.headers["x-a"] == value


def test_valid_trailers_are_accepted_and_discarded() -> None:
    parser = parse(CHUNKED_HEAD + b"0\r\nX-T: 1\r\n folded\r\nY:\r\n\r\n")
    assert (parser.body, parser.reusable, "x-t" in parser.headers) == (b"", True, False)


_PREFIXES = [
    b"",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nContent-Length: ",
    CHUNKED_HEAD,
    CHUNKED_HEAD + b"5;x\r\nhello\r\n",
    CHUNKED_HEAD + b"0\r\n",
]


@settings(max_examples=400, deadline=None)
@given(
    prefix=st.sampled_from(_PREFIXES),
    data=st.binary(max_size=300),
    cut_at=st.lists(st.integers(0, 400), max_size=6),
    close=st.booleans(),
)
def test_any_bytes_in_any_pieces_raise_only_response_errors(
    prefix: bytes, data: bytes, cut_at: list[int], close: bool
) -> None:
    data = prefix + data
    bounds = [0, *sorted(cut for cut in cut_at if cut < len(data)), len(data)]
    parser = ResponseParser(max_body=100)
    with contextlib.suppress(ResponseError, IncompleteResponse):  # and nothing else
        for start, end in itertools.pairwise(bounds):
            parser.feed(data[start:end])
        if close:
            parser.close()


_NUMBER_PREFIXES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: ",
    b"HTTP/1.1 204 OK\r\nContent-Length: 1, ",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: ",
    b"HTTP/1.1 100 Continue\r\nContent-Length: ",
    CHUNKED_HEAD,
    CHUNKED_HEAD + b"1\r\nx\r\n",
    b"HTTP/1.1 ",
]


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.sampled_from(_NUMBER_PREFIXES),
    digits=st.sampled_from([b"0", b"9", b"f", b"12", b"-1", b"+1", b"1,", b" 1"]),
    repeat=st.sampled_from([1, 17, 19, 100, 5000]),
    suffix=st.sampled_from([b"\r\n\r\n", b"\r\n", b";x\r\n", b""]),
)
@example(prefix=_NUMBER_PREFIXES[0], digits=b"9", repeat=5000, suffix=b"\r\n\r\n")
def test_numbers_of_any_length_raise_only_response_errors(
    prefix: bytes, digits: bytes, repeat: int, suffix: bytes
) -> None:
    with contextlib.suppress(ResponseError, IncompleteResponse):
        ResponseParser(max_body=100).feed(prefix + digits * repeat + suffix)


def test_identical_repeated_content_lengths_are_accepted() -> None:
    assert parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok").body == b"ok"


def test_a_receiver_cannot_make_the_parser_hold_an_endless_head() -> None:
    parser = ResponseParser(max_body=CAP)
    assert not parser.feed(b"HTTP/1.1 200 OK\r\nX-Big: ")
    for _ in range(63):
        assert not parser.feed(b"a" * 1024)
    with pytest.raises(ResponseError, match="64 KiB"):
        parser.feed(b"a" * 2048)


def test_nor_an_endless_chunk_size_line_nor_countless_headers() -> None:
    parser = ResponseParser(max_body=CAP)
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(ResponseError, match="1 KiB"):
        parser.feed(b"1" + b" " * 2000)
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(101))
    with pytest.raises(ResponseError, match="100 header fields"):
        ResponseParser(max_body=CAP).feed(b"HTTP/1.1 200 OK\r\n" + many + b"\r\n")


def test_a_close_before_the_end_is_an_incomplete_response() -> None:
    with pytest.raises(IncompleteResponse, match="without answering"):
        ResponseParser(max_body=CAP).close()
    parser = ResponseParser(max_body=CAP)
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    with pytest.raises(IncompleteResponse, match="before the response ended"):
        parser.close()
    interim_only = ResponseParser(max_body=CAP)
    interim_only.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
    with pytest.raises(IncompleteResponse, match="before the response ended"):
        interim_only.close()


def test_encode_post_writes_host_length_headers_and_body() -> None:
    data = encode_post(b"/hook?a=1", b"example.com:8443", {"content-type": "x/y"}, b"{}")
    assert data == (
        b"POST /hook?a=1 HTTP/1.1\r\nHost: example.com:8443\r\nContent-Length: 2\r\n"
        b"content-type: x/y\r\n\r\n{}"
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"x-a": "1\r\nX-Injected: yes"},
        {"x-a": "1\nX-Injected: yes"},
        {"x-a": "1\rX"},
        {"x-a": "nul\0"},
        {"bad name": "1"},
        {"x-a\r\nX-Injected": "yes"},
        {"": "empty name"},
    ],
)
def test_encode_post_refuses_header_smuggling(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="header"):
        encode_post(b"/", b"example.com", headers, b"")


# Differential: any valid response, cut anywhere, reads as h11 (httpcore's parser) reads it.

_STATUSES = [200, 201, 204, 302, 304, 400, 404, 410, 429, 500, 503]


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    """A valid HTTP/1.x response, possibly after interim ones and before stray bytes."""
    interim = b"".join(
        b"HTTP/1.1 1%02d Info\r\nX-I: 1\r\n\r\n" % code
        for code in draw(st.lists(st.sampled_from([0, 2, 3]), max_size=2))
    )
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
    status = draw(st.sampled_from(_STATUSES))
    reason = draw(st.sampled_from([b" OK", b" ", b"", b" Some Reason Phrase"]))
    body = b"" if status in (204, 304) else draw(st.binary(max_size=3000))
    fields = draw(
        st.lists(
            st.tuples(
                st.sampled_from([b"X-A", b"x-a", b"Retry-After", b"Server"]),
                st.sampled_from([b"1", b"v v", b"", b"a,b"]),
            ),
            max_size=4,
        )
    )
    if draw(st.booleans()):
        fields.append((b"Connection", draw(st.sampled_from([b"close", b"keep-alive", b"Close"]))))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    if framing == "length" or status in (204, 304):
        fields.append((b"Content-Length", b"%d" % len(body)))
        encoded = body
    elif framing == "chunked":
        fields.append((b"Transfer-Encoding", draw(st.sampled_from([b"chunked", b"Chunked"]))))
        sizes = draw(st.lists(st.integers(1, 200), max_size=40))
        encoded, start = b"", 0
        for size in sizes:
            piece = body[start : start + size]
            start += size
            if piece:
                extension = draw(st.sampled_from([b"", b";ext=1", b"; a=b"]))
                encoded += b"%x%s\r\n%s\r\n" % (len(piece), extension, piece)
        if start < len(body):
            encoded += b"%x\r\n%s\r\n" % (len(body) - start, body[start:])
        encoded += b"0\r\n" + draw(st.sampled_from([b"", b"T: 1\r\n"])) + b"\r\n"
    else:
        encoded = body
    head = b"HTTP/%s %d%s\r\n" % (version, status, reason)
    head += b"".join(
        name + b": " + value + b"\r\n" for name, value in draw(st.permutations(fields))
    )
    stray = draw(st.sampled_from([b"", b"", b"HTTP/1.1 200 OK\r\n"]))
    return interim + head + b"\r\n" + encoded + stray


def _as_h11_reads(data: bytes, closed: bool) -> tuple[object, ...]:
    connection = h11.Connection(h11.CLIENT)
    connection.send(h11.Request(method="POST", target="/", headers=[("Host", "x")]))
    connection.send(h11.EndOfMessage())
    connection.receive_data(data)
    if closed:
        connection.receive_data(b"")
    status, headers, body = 0, {}, b""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            return ("incomplete",)
        if isinstance(event, h11.Response):
            status = event.status_code
            for raw_name, raw_value in event.headers:
                name, value = raw_name.decode().lower(), raw_value.decode("latin-1")
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            try:
                connection.start_next_cycle()
                reusable = not closed and not connection.trailing_data[0]
            except h11.LocalProtocolError:
                reusable = False
            headers.pop("transfer-encoding", None)
            return ("done", status, headers, body, reusable)


def _as_we_read(data: bytes, cuts: list[int], closed: bool) -> tuple[object, ...]:
    parser = ResponseParser(max_body=1 << 20)
    bounds = [0, *cuts, len(data)]
    pieces = [data[start:end] for start, end in itertools.pairwise(bounds)]
    done = False
    for index, piece in enumerate(pieces):
        if parser.feed(piece):
            done, rest = True, b"".join(pieces[index + 1 :])
            break
    if not done:
        if not closed:
            return ("incomplete",)
        try:
            parser.close()
        except IncompleteResponse:
            return ("incomplete",)
        rest = b""
    parser.headers.pop("transfer-encoding", None)
    reusable = parser.reusable and not rest and not closed
    return ("done", parser.status, parser.headers, parser.body, reusable)


@settings(max_examples=300, deadline=None)
@given(data=responses(), cut_at=st.lists(st.floats(0, 1), max_size=5), closed=st.booleans())
def test_any_valid_response_cut_anywhere_reads_as_h11_reads_it(
    data: bytes, cut_at: list[float], closed: bool
) -> None:
    cuts = sorted({int(fraction * len(data)) for fraction in cut_at} - {0, len(data)})
    assert _as_we_read(data, cuts, closed) == _as_h11_reads(data, closed)


# The quick reading of a head's field lines (one match per line) against the line by
# line one: the same fields whenever it takes the lines, and it takes every plain head.
_HEAD_BYTES = st.sampled_from(
    [b"a", b"Z", b"-", b":", b" ", b"\t", b"\r", b"\n", b"\0", b"\xe9", b"ok"]
)


@given(st.lists(st.lists(_HEAD_BYTES, max_size=12).map(b"".join), max_size=8))
@example([b"A: 1", b"a: 2 ", b" folded", b"B:\t"])
@example([b"X:" + b" " * 3000 + b"\0"])  # a run of blanks, then a byte no value holds
def test_quick_field_reading_agrees_with_the_line_by_line_one(lines: list[bytes]) -> None:
    head = b"".join(line + b"\r\n" for line in lines)
    quick = http11._plain_fields(head, 0, len(head))
    try:
        slow: dict[str, str] | None = http11._fields([b"HTTP/1.1 200 OK", *head.split(b"\n")[:-1]])
    except http11.ResponseError:
        slow = None
    if quick is not None:
        assert quick == slow
    elif slow is not None:  # refused by the quick reading, taken line by line: not plain
        assert any(not http11._FIELD_LINE.fullmatch(line + b"\r\n") for line in lines)


def test_quick_field_reading_takes_at_most_the_fields_allowed() -> None:
    head = b"".join(b"F%d: v\r\n" % n for n in range(http11.MAX_HEADER_FIELDS + 1))
    assert http11._plain_fields(head, 0, len(head)) is None
    with pytest.raises(http11.ResponseError, match="more than 100 header fields"):
        http11.ResponseParser(max_body=10).feed(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n")
