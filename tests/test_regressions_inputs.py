"""Regressions of input validation: deeply nested event data, and endpoint URLs that
registration accepted but the sender could not send (one parser now decides both)."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import hookdispatch as hd
from hookdispatch._models import MAX_DATA_DEPTH, _nests_deeper_than
from hookdispatch._urls import Target, parse_url

T0 = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)


@pytest.fixture
def hooks() -> Iterator[hd.Dispatcher]:
    """An inline dispatcher on MemoryStorage with one catch-all endpoint, on a local
    port nothing listens on: a stored event would show as a delivery, and sending it
    (had it been accepted) would stay on this machine."""
    dispatcher = hd.Dispatcher(
        storage=hd.MemoryStorage(), workers=0, targets=hd.TargetPolicy.local()
    )
    dispatcher.add_endpoint("http://127.0.0.1:9/hooks", id="ep_catch_all")
    yield dispatcher
    dispatcher.close()


def stored(hooks: hd.Dispatcher) -> tuple[object, ...]:
    return (
        [(e.id, e.url) for e in hooks.storage.list_endpoints()],
        [d.id for d in hooks.storage.list_deliveries()],
    )


def nested(depth: int, leaf: Any = 1) -> Any:
    """``leaf`` inside ``depth`` lists and dicts, alternating."""
    data = leaf
    for level in range(depth):
        data = [data] if level % 2 else {"k": data}
    return data


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


# Deeply nested data -------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_DATA_DEPTH + 1, 500, 1_000, 5_000, 100_000])
def test_deeply_nested_data_is_refused_with_our_error(hooks: hd.Dispatcher, depth: int) -> None:
    """``d = []`` then ``d = [d]`` a thousand times raised RecursionError from dispatch."""
    data: Any = []
    for _ in range(depth):
        data = [data]
    before = stored(hooks)
    with pytest.raises(hd.InvalidEventError, match="nested too deeply") as info:
        hooks.dispatch("user.created", data, id="evt_deep")
    assert f"the limit is {MAX_DATA_DEPTH} levels" in str(info.value)
    assert info.value.__cause__ is None
    assert stored(hooks) == before
    with pytest.raises(hd.UnknownEventError):
        hooks.get_event("evt_deep")


def test_data_at_the_depth_limit_is_accepted_and_read_back(tmp_path: Any) -> None:
    storage = hd.SQLiteStorage(tmp_path / "hooks.db")
    hooks = hd.Dispatcher(storage=storage, workers=0, targets=hd.TargetPolicy.local())
    try:
        event = hooks.dispatch("user.created", nested(MAX_DATA_DEPTH, '[{\\"}]'))
        assert hooks.get_event(event.id).data == event.data
        with pytest.raises(hd.InvalidEventError, match="nested too deeply"):
            hooks.dispatch("user.created", nested(MAX_DATA_DEPTH + 1))
    finally:
        hooks.close()


def test_circular_and_other_unencodable_data_stay_our_error(hooks: hd.Dispatcher) -> None:
    circular: list[Any] = []
    circular.append(circular)
    before = stored(hooks)
    for data in (circular, {"n": 10**5000}, {("a",): 1}, {"x": float("nan")}):
        with pytest.raises(hd.InvalidEventError):
            hooks.dispatch("user.created", data)
    assert stored(hooks) == before


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\n', max_size=6),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\k', max_size=3), children, max_size=3)
    ),
    max_leaves=40,
)


@given(json_values, st.integers(min_value=0, max_value=12))
@example(nested(30, '"]]]'), 30)
@example(nested(30, '\\"[[[['), 29)
def test_the_depth_check_on_the_body_matches_the_data(data: Any, limit: int) -> None:
    """The bytes-only check agrees with a recursive count, whatever the strings hold."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    assert _nests_deeper_than(body, limit) == (depth_of(data) > limit)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # hostile depth: RecursionError before
        b"not json",
        b'{"id": "evt_1"}',
        b"[]",
        b'{"id":"evt_1","event":"a","created_at":"yesterday","data":1}',
    ],
    ids=["deep", "not-json", "missing-fields", "not-an-object", "bad-date"],
)
def test_from_body_raises_storage_error_for_bytes_that_are_no_event(body: bytes) -> None:
    with pytest.raises(hd.StorageError, match="not an event"):
        hd.Event.from_body(body)


def test_from_body_still_reads_what_create_wrote() -> None:
    event = hd.Event.create("user.created", nested(MAX_DATA_DEPTH), now=T0)
    assert hd.Event.from_body(event.body) == event


# Endpoint URLs: one parser ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://☃.net/", ("IDNA 2008",)),  # IDNA 2003 took it; httpx cannot send it
        ("https://\uff45xample.com/", ("IDNA 2008",)),  # full-width letters
        ("https://\uff11\uff12\uff17.0.0.1/", ("IDNA 2008",)),  # full-width digits in the host
        ("https://example.com:\uff14\uff14\uff13/", ("port", "ASCII digits")),  # full-width port
        ("https://example.com:+443/", ("port", "ASCII digits")),
        ("https://example.com:4_43/", ("port", "ASCII digits")),
        ("https://example.com/hooks\x7f", ("control",)),  # DEL
        ("https://exa\x7fmple.com/", ("control",)),
        ("https://example.com/\x85", ("control",)),  # C1 control
        ("https://example.com/\u200b", ("control",)),  # zero-width space
        ("https://example.com/\u2028", ("control",)),
        ("https://exa%41mple.com/", ("not a valid host name",)),
        ("https://@example.com/", ("user:password",)),
        ("https://example.com\\@evil.example/", ("user:password",)),
        ("https://a@b@example.com/", ("user:password",)),
        ("https://[fe80::1%25eth0]/", ("zone",)),
        ("https://[::1]x/", ("malformed",)),
    ],
)
def test_urls_the_sender_cannot_send_are_refused_at_registration(
    url: str, words: tuple[str, ...]
) -> None:
    hooks = hd.Dispatcher(storage=hd.MemoryStorage(), workers=0, targets=hd.TargetPolicy.local())
    try:
        with pytest.raises(hd.InvalidEndpointError) as info:
            hooks.add_endpoint(url)
        for word in words:
            assert word in str(info.value), str(info.value)
        assert hooks.endpoints() == []
    finally:
        hooks.close()
    with pytest.raises(hd.InvalidEndpointError):
        parse_url(url)
    with pytest.raises(hd.InvalidEndpointError):  # the per-attempt check agrees
        hd.TargetPolicy.local().check_url(url)


def test_registration_resolves_the_host_the_sender_connects_to() -> None:
    """IDNA 2008 (httpx): faß.de is xn--fa-hia.de; IDNA 2003 (the stdlib codec) made it
    fass.de, another domain, so registration checked another host than the one sent to."""
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(f"{host}:{port}")
        return ["93.184.216.34"]

    hooks = hd.Dispatcher(
        storage=hd.MemoryStorage(), workers=0, targets=hd.TargetPolicy(resolver=resolver)
    )
    try:
        hooks.add_endpoint("https://Faß.de:8443/hooks")
        hooks.add_endpoint("https://例え.テスト/hooks")
    finally:
        hooks.close()
    assert asked == ["xn--fa-hia.de:8443", "xn--r8jz45g.xn--zckzah:443"]


@pytest.mark.parametrize(
    ("url", "target"),
    [
        (
            "https://example.com/hooks",
            Target("https", "example.com", 443, b"/hooks", b"example.com"),
        ),
        (
            "HTTP://Example.COM:80/a%20b/ü?q=ä&x",
            # httpx keeps an explicit :80 when the scheme is written in capitals
            Target("http", "example.com", 80, b"/a%20b/%C3%BC?q=%C3%A4&x", b"example.com:80"),
        ),
        (
            "http://127.0.0.1:8000/hook",
            Target("http", "127.0.0.1", 8000, b"/hook", b"127.0.0.1:8000"),
        ),
        ("http://[::1]:8080/x", Target("http", "::1", 8080, b"/x", b"[::1]:8080")),
        ("https://example.com", Target("https", "example.com", 443, b"/", b"example.com")),
        ("https://example.com/h#", Target("https", "example.com", 443, b"/h", b"example.com")),
        ("https://xn--n3h.net/", Target("https", "xn--n3h.net", 443, b"/", b"xn--n3h.net")),
        ("https://a_b.example/", Target("https", "a_b.example", 443, b"/", b"a_b.example")),
    ],
)
def test_parse_url_gives_what_the_sender_sends(url: str, target: Target) -> None:
    assert parse_url(url) == target
    hd.Endpoint.create(url, now=T0)


SECRET = "tok_5ecr3t"


@pytest.mark.parametrize(
    "url",
    [
        f"https://user:{SECRET}@example.com/hooks",
        f"https://example.com/hooks?token={SECRET}#frag",
        f"https://example.com:99999/hooks?token={SECRET}",
        f"https://☃.net/hooks?token={SECRET}",
        f"https://example.com/hooks/{SECRET}\x7f",
        f"ftp://example.com/{SECRET}",
        f"https:///{SECRET}",
        f"https://a..b/{SECRET}",
        f"https://[::1/{SECRET}",
        f"https://{SECRET}%00.example/",
    ],
)
def test_refusals_never_repeat_the_url(url: str) -> None:
    with pytest.raises(hd.InvalidEndpointError) as info:
        hd.Endpoint.create(url, now=T0)
    assert SECRET not in str(info.value)
    assert SECRET not in (hd.TargetPolicy()._refusal(url) or "")


hosts = st.one_of(
    st.sampled_from(["example.com", "EXAMPLE.com", "faß.de", "127.0.0.1", "[::1]", "a_b.c"]),
    st.sampled_from(
        [
            "☃.net",
            "xn--n3h.net",
            "\uff11\uff12\uff17.0.0.1",
            "127.0.0.1",
            "0177.0.0.1",
            "2130706433",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "[fe80::1%25eth0]",
            "[::1",
            "a..b",
            "example.com.",
            "",
        ]
    ),
    st.text(
        alphabet=string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@[]\\\x7fé☃\uff11",
        max_size=20,
    ),
)
ports = st.one_of(
    st.just(""),
    st.integers(min_value=1, max_value=65535).map(lambda p: f":{p}"),
    st.integers(min_value=-1, max_value=70000).map(lambda p: f":{p}"),
    st.sampled_from(
        [":", ":\uff10\uff18", ":\uff14\uff14\uff13", ":+80", ":8_0", ": 80", ":0x50", ":080"]
    ),
)
URL_SAFE = string.ascii_letters + string.digits + "/?&=%-._~!$'()*+,;:@[]"
rests = st.one_of(
    st.just(""),
    st.text(alphabet=URL_SAFE + "é☃ü", max_size=20).map(lambda rest: "/" + rest),
    st.text(alphabet=string.printable + "\x7f\x85é☃\u200b#?/", max_size=20),
)
urls = st.builds(
    lambda scheme, sep, user, host, port, rest: f"{scheme}{sep}{user}{host}{port}{rest}",
    st.sampled_from(["https", "http", "https", "http", "HTTPS", "ftp", ""]),
    st.sampled_from(["://"] * 6 + [":/", ":", "//", ":///"]),
    st.sampled_from(["", "", "", "", "", "", "user@", "u:p@", "@"]),
    hosts,
    ports,
    rests,
)


@given(st.one_of(urls, st.text(max_size=40)))
@example("https://☃.net/")
@example("https://example.com:\uff14\uff14\uff13/")
@example("https://example.com/\x7f")
@example("http://[::1]:8080/x?y=1")
def test_whatever_parse_url_accepts_httpx_sends_the_same_way(url: str) -> None:
    try:
        target = parse_url(url)
    except hd.InvalidEndpointError:
        return
    sent = httpx.URL(url)  # the sender's parser: parses it, and agrees
    assert sent.scheme == target.scheme in ("http", "https")
    assert sent.raw_host.decode("ascii") == target.host
    assert (sent.port or {"http": 80, "https": 443}[sent.scheme]) == target.port
    assert sent.raw_path == target.target
    assert sent.netloc == target.host_header
    assert 1 <= target.port <= 65535
    assert target.host.isascii()
    assert target.host == target.host.lower()
    assert sent.userinfo == b""
    assert sent.fragment == ""
    assert not any(ch.isspace() or not ch.isprintable() for ch in url)
    hd.Endpoint.create(url, now=T0)  # registration accepts it too
