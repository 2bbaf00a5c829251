"""Regressions of the target policy: IPv6 forms that embed an internal IPv4 address.

Before, only IPv4-mapped IPv6 (``::ffff:a.b.c.d``) was judged by the IPv4 address it
carries; ``::127.0.0.1``, ``64:ff9b::169.254.169.254`` or ``2002:7f00:1::`` went
through the strict default, because Python's ``ipaddress`` calls those ranges global.
"""

from __future__ import annotations

import ipaddress

import pytest

import hookdispatch as hd
import hookdispatch._targets
from hookdispatch._targets import TargetPolicy, embedded_ipv4, literal_address


def teredo(server: str, client: str) -> str:
    """A Teredo address: 2001:0::/32, the server, then the client's bits inverted."""
    value = (
        0x20010000 << 96
        | int(ipaddress.IPv4Address(server)) << 64
        | (~int(ipaddress.IPv4Address(client)) & 0xFFFFFFFF)
    )
    return str(ipaddress.IPv6Address(value))


EMBEDDING_INTERNAL = [
    pytest.param("::127.0.0.1", "127.0.0.1", id="compatible-loopback"),
    pytest.param("::169.254.169.254", "169.254.169.254", id="compatible-metadata"),
    pytest.param("::a00:1", "10.0.0.1", id="compatible-private-hex"),
    pytest.param("::ffff:0:7f00:1", "127.0.0.1", id="siit-translated"),
    pytest.param("64:ff9b::169.254.169.254", "169.254.169.254", id="nat64-metadata"),
    pytest.param("64:ff9b::7f00:1", "127.0.0.1", id="nat64-loopback"),
    pytest.param("64:ff9b::192.168.1.1", "192.168.1.1", id="nat64-private"),
    pytest.param("64:ff9b:1::a9fe:a9fe", "169.254.169.254", id="nat64-local-use"),
    pytest.param("64:ff9b:1:abcd::a00:1", "10.0.0.1", id="nat64-local-use-subnet"),
    pytest.param("2002:a9fe:a9fe::", "169.254.169.254", id="6to4-metadata"),
    pytest.param("2002:7f00:1::", "127.0.0.1", id="6to4-loopback"),
    pytest.param("2002:a00:1:5::1", "10.0.0.1", id="6to4-private-subnet"),
]


@pytest.mark.parametrize(("ipv6", "ipv4"), EMBEDDING_INTERNAL)
def test_ipv6_embedding_an_internal_ipv4_address_is_refused(ipv6: str, ipv4: str) -> None:
    """Every path refuses it: the address check, the URL check, resolution, registration."""
    address = ipaddress.IPv6Address(ipv6)
    assert embedded_ipv4(address) == (ipaddress.IPv4Address(ipv4),)
    strict = TargetPolicy(resolver=lambda host, port: [ipv6])
    assert strict.blocks(address)
    assert literal_address(f"[{ipv6}]") == address
    with pytest.raises(hd.InvalidEndpointError, match=r"TargetPolicy\.local"):
        strict.check_url(f"https://[{ipv6}]/hooks")
    with pytest.raises(hd.BlockedTargetError):
        strict.resolve(ipv6, 443)
    with pytest.raises(hd.BlockedTargetError):  # a name that resolves to it, at connect time
        strict.resolve("rebind.test", 443)
    hooks = hd.Dispatcher(storage=hd.MemoryStorage(), workers=0, targets=strict)
    try:
        with pytest.raises(hd.InvalidEndpointError, match=r"TargetPolicy\.local"):
            hooks.add_endpoint(f"https://[{ipv6}]/hooks")
        with pytest.raises(hd.InvalidEndpointError, match=r"TargetPolicy\.local"):
            hooks.add_endpoint("https://rebind.test/hooks")
        assert hooks.endpoints() == []
    finally:
        hooks.close()


@pytest.mark.parametrize(("ipv6", "ipv4"), EMBEDDING_INTERNAL)
def test_the_switches_still_let_embedded_internal_addresses_through(ipv6: str, ipv4: str) -> None:
    address = ipaddress.IPv6Address(ipv6)
    assert not TargetPolicy.local().blocks(address)
    assert not TargetPolicy(allowed_networks=[f"{ipv4}/32"]).blocks(address)  # the IPv4
    assert not TargetPolicy(allowed_networks=[f"{ipv6}/128"]).blocks(address)  # the IPv6
    assert TargetPolicy(allowed_networks=["203.0.113.0/24"]).blocks(address)  # another


@pytest.mark.parametrize(
    "ipv6",
    [
        "64:ff9b::8.8.8.8",  # NAT64: how IPv6-only hosts reach the IPv4 internet
        "64:ff9b::5db8:d822",
        "64:ff9b:1::808:808",  # local-use NAT64; newer Pythons call the /48 not global
        "2002:808:808::1",  # 6to4 of a public address; newer Pythons: not global
        "::ffff:8.8.8.8",
    ],
)
def test_ipv6_embedding_a_public_ipv4_address_is_judged_by_it(ipv6: str) -> None:
    """The embedded address decides, whatever this Python's ipaddress tables say."""
    policy = TargetPolicy()
    assert not policy.blocks(ipaddress.IPv6Address(ipv6))
    policy.check_url(f"https://[{ipv6}]/hooks")
    assert policy.resolve(ipv6, 443) == [str(ipaddress.IPv6Address(ipv6))]


def test_unspecified_and_loopback_ipv6_are_not_read_as_compatible_addresses() -> None:
    assert embedded_ipv4(ipaddress.IPv6Address("::")) == ()
    assert embedded_ipv4(ipaddress.IPv6Address("::1")) == ()
    assert TargetPolicy().blocks(ipaddress.IPv6Address("::1"))
    assert TargetPolicy().blocks(ipaddress.IPv6Address("::"))
    assert not TargetPolicy(allowed_networks=["::1/128"]).blocks(ipaddress.IPv6Address("::1"))


def test_teredo_is_judged_by_its_server_and_its_deobfuscated_client() -> None:
    internal_client = ipaddress.IPv6Address(teredo("8.8.8.8", "127.0.0.1"))
    internal_server = ipaddress.IPv6Address(teredo("169.254.169.254", "8.8.4.4"))
    public = ipaddress.IPv6Address(teredo("8.8.8.8", "8.8.4.4"))
    assert embedded_ipv4(internal_client) == (
        ipaddress.IPv4Address("8.8.8.8"),
        ipaddress.IPv4Address("127.0.0.1"),
    )
    for address in (internal_client, internal_server, public):
        assert TargetPolicy().blocks(address)  # 2001::/23 is not global at all
    # Even where the IPv6 range is let through, an internal embedded address is not...
    lenient = TargetPolicy(allowed_networks=["8.8.0.0/16"])
    assert lenient.blocks(internal_client)
    assert lenient.blocks(internal_server)
    # ... while a policy covering both embedded addresses, or the IPv6 range, allows it.
    assert not lenient.blocks(public)
    assert not TargetPolicy(allowed_networks=["2001::/32"]).blocks(internal_client)


def test_the_default_policy_refuses_them_when_a_dispatcher_is_given_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without targets=, a Dispatcher uses the strict default (conftest swaps it out)."""
    monkeypatch.setattr(hookdispatch._targets, "_default", TargetPolicy())
    hooks = hd.Dispatcher(storage=hd.MemoryStorage(), workers=0)
    try:
        for url in ("https://[::127.0.0.1]/", "https://[64:ff9b::a9fe:a9fe]/latest/meta-data/"):
            with pytest.raises(hd.InvalidEndpointError, match="SSRF"):
                hooks.add_endpoint(url)
    finally:
        hooks.close()


@pytest.mark.parametrize("host", ["a\x00b", "127.0.0.1\x00", "\ud800", "\uff11\uff12\uff17.0.0.1"])
def test_any_host_text_is_either_an_address_or_not_never_an_error(host: str) -> None:
    """literal_address raised ValueError for a NUL or a lone surrogate (inet_aton)."""
    assert literal_address(host) is None
    with pytest.raises(hd.InvalidEndpointError):
        TargetPolicy().check_url(f"https://{host}/hooks")
