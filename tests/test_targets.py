"""The target policy (SSRF protection), pure: addresses, spellings, URLs, resolution."""

from __future__ import annotations

import pytest

import hookdispatch as hd
from hookdispatch._targets import TargetPolicy, literal_address

BLOCKED_HOSTS = [
    "127.0.0.1",
    "127.1.2.3",
    "[::1]",
    "2130706433",  # 127.0.0.1 as one decimal number
    "0x7f.1",  # hex, two parts
    "017700000001",  # octal
    "0177.0.0.1",
    "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
    "[::ffff:7f00:1]",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "[fe80::1]",  # link-local
    "[fd12:3456::1]",  # unique-local
    "224.0.0.1",  # multicast
    "[ff02::1]",
    "0.0.0.0",  # unspecified
    "[::]",
    "240.0.0.1",  # reserved
    "100.64.0.1",  # shared address space
    "192.0.2.1",  # documentation
]
PUBLIC_HOSTS = ["8.8.8.8", "1.1.1.1", "[2606:4700:4700::1111]", "93.184.216.34"]


@pytest.mark.parametrize("host", BLOCKED_HOSTS)
def test_non_public_addresses_are_refused(host: str) -> None:
    policy = TargetPolicy()
    address = literal_address(host)
    assert address is not None
    assert policy.blocks(address)
    with pytest.raises(hd.InvalidEndpointError, match=r"TargetPolicy\.local"):
        policy.check_url(f"https://{host}/hooks")
    with pytest.raises(hd.BlockedTargetError):
        policy.resolve(host.strip("[]"), 443)


@pytest.mark.parametrize("host", PUBLIC_HOSTS)
def test_public_addresses_pass(host: str) -> None:
    policy = TargetPolicy()
    policy.check_url(f"https://{host}/hooks")
    assert policy.resolve(host.strip("[]"), 443) == [str(literal_address(host))]


def test_http_is_refused_with_the_switch_named() -> None:
    with pytest.raises(hd.InvalidEndpointError, match=r"https://.*TargetPolicy\.local"):
        TargetPolicy().check_url("http://example.com/hooks")
    TargetPolicy(allow_http=True).check_url("http://example.com/hooks")


def test_local_switch_allows_both() -> None:
    local = TargetPolicy.local()
    local.check_url("http://127.0.0.1:8000/hooks")
    assert local.resolve("127.0.0.1", 8000) == ["127.0.0.1"]


def test_allowed_networks_let_chosen_internal_ranges_through() -> None:
    policy = TargetPolicy(allowed_networks=["10.20.0.0/16", "fd00:1::/32"])
    policy.check_url("https://10.20.3.4/hooks")
    policy.check_url("https://[fd00:1::5]/hooks")
    with pytest.raises(hd.InvalidEndpointError):
        policy.check_url("https://10.21.0.1/hooks")
    with pytest.raises(hd.InvalidEndpointError):
        policy.check_url("https://127.0.0.1/hooks")
    with pytest.raises(hd.InvalidEndpointError, match="allowed_networks"):
        TargetPolicy(allowed_networks=["not a network"])


def test_names_resolve_through_the_policy_and_every_address_is_checked() -> None:
    answers = {"mixed.test": ["127.0.0.1", "8.8.8.8"], "internal.test": ["10.0.0.7"]}
    policy = TargetPolicy(resolver=lambda host, port: answers[host])
    assert policy.resolve("mixed.test", 443) == ["8.8.8.8"]  # the private one is skipped
    with pytest.raises(hd.BlockedTargetError, match=r"10\.0\.0\.7"):
        policy.resolve("internal.test", 443)
