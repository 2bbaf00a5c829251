"""Where webhooks may go: the target policy against SSRF.

Endpoint URLs are typed in by an application's users, so by default hookdispatch
refuses to send anywhere a user could not reach from the internet: loopback,
private, link-local (169.254.169.254, the cloud metadata service, included),
unique-local, multicast, unspecified, reserved and other non-global addresses,
IPv4 and IPv6 alike, IPv4-mapped IPv6 (``::ffff:127.0.0.1``) and the odd IPv4
spellings that resolvers accept (``2130706433``, ``0x7f.1``, ``017700000001``).
Plain ``http://`` is refused too.

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
from urllib.parse import urlsplit

from attrs import field, frozen

from .exceptions import BlockedTargetError, InvalidEndpointError

__all__ = ["IPAddress", "Resolver", "TargetPolicy", "default_targets", "system_resolver"]

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
    except OSError:
        return None


@frozen(kw_only=True)
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
        """Whether sending to ``address`` is refused."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allowed_networks):
            return False
        if self.allow_private:
            return False
        return address.is_multicast or not address.is_global

    def check_url(self, url: str) -> None:
        """Refuse a URL the policy forbids on its face: its scheme, or a literal address.

        Raises InvalidEndpointError naming the switch that would allow it. Runs before
        every attempt, so the verdict is remembered per (policy, URL).
        """
        refusal = _url_refusal(self, url)
        if refusal is not None:
            raise InvalidEndpointError(refusal)

    def _refusal(self, url: str) -> str | None:
        parts = urlsplit(url)
        if parts.scheme == "http" and not self.allow_http:
            return (
                "endpoint URL must use https://; plain http:// is refused by default. For"
                " local development pass targets=TargetPolicy.local(), or allow_http=True"
            )
        address = literal_address(parts.hostname or "")
        if address is not None and self.blocks(address):
            return (
                f"endpoint address {address} is not a public address and is refused by"
                " default (SSRF protection). For local development pass"
                " targets=TargetPolicy.local(); for internal networks, allowed_networks=[...]"
            )
        return None

    def check_endpoint(self, url: str) -> None:
        """The registration check: :meth:`check_url`, then the host's current addresses.

        A name that resolves only to refused addresses is refused now, for early
        feedback; one that does not resolve yet is accepted. Either way every attempt
        checks again at connect time, which is what actually protects.
        """
        self.check_url(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        if literal_address(host) is not None:
            return
        try:
            host.encode("idna")  # what the resolver will ask for
        except UnicodeError as exc:
            raise InvalidEndpointError(
                f"endpoint host {host[:80]!r} is not a valid host name ({exc}): each"
                " dot-separated label must be 1 to 63 characters"
            ) from None
        try:
            self.resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
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


def default_targets() -> TargetPolicy:
    """The policy a dispatcher uses when given none: refuse http and non-public hosts."""
    return _default
