"""Where webhooks may go: the target policy against SSRF.

Endpoint URLs are typed in by an application's users, so by default hookdispatch
refuses to send anywhere a user could not reach from the internet: loopback,
private, link-local (169.254.169.254, the cloud metadata service, included),
unique-local, multicast, unspecified, reserved and other non-global addresses,
IPv4 and IPv6 alike, and the odd IPv4 spellings that resolvers accept
(``2130706433``, ``0x7f.1``, ``017700000001``). Plain ``http://`` is refused too.

An IPv6 address that carries an IPv4 address is judged by that IPv4 address too
(:func:`embedded_ipv4`): IPv4-mapped ``::ffff:0:0/96``, IPv4-compatible ``::/96``,
IPv4-translated ``::ffff:0:0:0/96``, NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``,
6to4 ``2002::/16`` and Teredo ``2001::/32``. For all but Teredo the embedded IPv4
address's verdict is the verdict, whatever Python's ``ipaddress`` tables (which vary
between Python releases) say of the IPv6 range: NAT64 is how IPv6-only hosts reach
the IPv4 internet, so ``64:ff9b::8.8.8.8`` is allowed and
``64:ff9b::169.254.169.254`` is not. Teredo addresses must pass both ways
(``2001::/23`` is not global, so the default refuses them all).

URLs are parsed by :func:`hookdispatch._urls.parse_url`, the sender's parser, so the
host checked here is the host an attempt connects to.

The address check runs on the address actually connected to, at connect time, on
every attempt: the transports resolve the host through :meth:`TargetPolicy.resolve`
and connect to the checked address itself, so DNS that answers differently between
a check and the connection (rebinding) cannot slip through.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable, Iterable

from attrs import field, frozen

from ._urls import parse_url, written_host
from .exceptions import BlockedTargetError, InvalidEndpointError

__all__ = [
    "IPAddress",
    "Resolver",
    "TargetPolicy",
    "default_targets",
    "embedded_ipv4",
    "literal_address",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
"""Turns a host name and port into IP address strings (injected in tests)."""


def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (``getaddrinfo``), addresses in its order.

    Raises OSError for a name that does not resolve, or that IDNA cannot encode.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a label IDNA refuses
        raise OSError(f"cannot resolve {host!r}: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _networks(
    values: Iterable[str | ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(value, strict=False) for value in values)
    except ValueError as exc:
        raise InvalidEndpointError(f"allowed_networks: {exc}") from None


def literal_address(host: str) -> IPAddress | None:
    """The IP address a host literally is, in any spelling a resolver accepts, or None.

    ``127.0.0.1``, ``[::1]``, ``2130706433``, ``0x7f.1`` and ``017700000001`` all
    are; ``example.com`` is not.
    """
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        # inet_aton accepts the historic forms: one to four parts, decimal, octal, hex.
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):  # ValueError: a NUL, or a surrogate that cannot encode
        return None


_COMPATIBLE = ipaddress.IPv6Network("::/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_LAST_32_BITS = (_COMPATIBLE, _TRANSLATED, _NAT64, _NAT64_LOCAL)
"""The forms that carry the IPv4 address in their last 32 bits."""
_LOW_32_BITS = 0xFFFFFFFF


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries, in the transition forms that embed one.

    IPv4-mapped ``::ffff:a.b.c.d``; IPv4-compatible ``::a.b.c.d`` (not ``::`` or
    ``::1``); IPv4-translated (SIIT) ``::ffff:0:a.b.c.d``; NAT64 ``64:ff9b::/96`` and
    ``64:ff9b:1::/48`` (the last 32 bits: RFC 6052's ``/96`` layout, the one DNS64
    synthesises); 6to4 ``2002:AABB:CCDD::/48`` (bits 16 to 47); Teredo ``2001:0::/32``
    (the server, and the client, which is stored inverted). Empty otherwise.
    """
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo  # (server, client): ipaddress undoes the client's inversion
    if address in _COMPATIBLE and int(address) <= 1:
        return ()  # :: and ::1, the IPv6 unspecified and loopback addresses
    if any(address in network for network in _LAST_32_BITS):
        return (ipaddress.IPv4Address(int(address) & _LOW_32_BITS),)
    return ()


@frozen(kw_only=True, cache_hash=True)  # hashed per attempt (the refusal cache's key)
class TargetPolicy:
    """Which endpoint URLs and addresses hookdispatch may send to.

    The default refuses ``http://`` and every address that is not globally
    routable. ``allow_http`` and ``allow_private`` lift those rules;
    ``allowed_networks`` lets chosen internal networks through while the rest
    stays refused (for internal deployments). :meth:`local` is the one switch for
    local development and tests: both rules off.
    """

    allow_http: bool = False
    allow_private: bool = False
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default=(), converter=_networks
    )
    resolver: Resolver = field(default=system_resolver, repr=False, eq=False)

    @classmethod
    def local(cls) -> TargetPolicy:
        """Allow ``http://`` and local addresses: for development and tests only."""
        return cls(allow_http=True, allow_private=True)

    def blocks(self, address: IPAddress) -> bool:
        """Whether sending to ``address`` is refused.

        Refused: multicast and every address Python's ``ipaddress`` does not call
        global, unless ``allow_private`` or an ``allowed_networks`` entry covers it.
        An IPv6 address that embeds IPv4 addresses (:func:`embedded_ipv4`) is refused
        if any of them is; an entry covering the IPv6 address, or entries covering
        every IPv4 address it embeds, let it through. For every form but Teredo the
        embedded address alone decides; Teredo must pass as an IPv6 address too.
        """
        if self.allow_private or self._allowed(address):
            return False
        if isinstance(address, ipaddress.IPv6Address):
            embedded = embedded_ipv4(address)
            if embedded:
                if all(self._allowed(ipv4) for ipv4 in embedded):
                    return False
                if any(_refused(ipv4) for ipv4 in embedded if not self._allowed(ipv4)):
                    return True
                if address.teredo is None:
                    return False
        return _refused(address)

    def _allowed(self, address: IPAddress) -> bool:
        return any(address in network for network in self.allowed_networks)

    def check_url(self, url: str) -> None:
        """Refuse a URL the policy forbids on its face: its scheme, or a literal address.

        Raises InvalidEndpointError naming the switch that would allow it. Runs before
        every attempt, so the verdict is remembered per (policy, URL).
        """
        refusal = _url_refusal(self, url)
        if refusal is not None:
            raise InvalidEndpointError(refusal)

    def _refusal(self, url: str) -> str | None:
        try:
            target = parse_url(url)
        except InvalidEndpointError as exc:
            # Refused either way; an internal address is the more useful news.
            address = literal_address(written_host(url))
            if address is not None and self.blocks(address):
                return _not_public(address)
            return str(exc)
        if target.scheme == "http" and not self.allow_http:
            return (
                "endpoint URL must use https://; plain http:// is refused by default. For"
                " local development pass targets=TargetPolicy.local(), or allow_http=True"
            )
        address = literal_address(target.host)
        if address is not None and self.blocks(address):
            return _not_public(address)
        return None

    def check_endpoint(self, url: str) -> None:
        """The registration check: :meth:`check_url`, then the host's current addresses.

        A name that resolves only to refused addresses is refused now, for early
        feedback; one that does not resolve yet is accepted. Either way every attempt
        checks again at connect time, which is what actually protects.
        """
        self.check_url(url)
        target = parse_url(url)  # parsed (and valid: check_url passed) as the sender will
        if literal_address(target.host) is not None:
            return
        try:
            self.resolve(target.host, target.port)
        except BlockedTargetError as exc:
            raise InvalidEndpointError(
                f"{exc}; refused by default (SSRF protection). For local development pass"
                " targets=TargetPolicy.local(); for internal networks, allowed_networks=[...]"
            ) from None
        except OSError:
            return

    def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host``, every one checked; never empty.

        Raises BlockedTargetError when every address the host resolves to is refused.
        """
        literal = literal_address(host)
        addresses = [str(literal)] if literal is not None else self.resolver(host, port)
        allowed = [a for a in addresses if not self.blocks(ipaddress.ip_address(a))]
        if not allowed:
            raise BlockedTargetError(
                f"{host} resolves only to addresses the target policy refuses"
                f" ({', '.join(addresses) or 'none'})"
            )
        return allowed


@functools.lru_cache(maxsize=4096)
def _url_refusal(policy: TargetPolicy, url: str) -> str | None:
    return policy._refusal(url)


_default = TargetPolicy()


def _not_public(address: IPAddress) -> str:
    return (
        f"endpoint address {address} is not a public address and is refused by"
        " default (SSRF protection). For local development pass"
        " targets=TargetPolicy.local(); for internal networks, allowed_networks=[...]"
    )


def _refused(address: IPAddress) -> bool:
    return address.is_multicast or not address.is_global


def default_targets() -> TargetPolicy:
    """The policy a dispatcher uses when given none: refuse http and non-public hosts."""
    return _default
