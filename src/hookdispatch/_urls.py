"""Endpoint URLs: one parser, one verdict, for registration and for sending alike.

:func:`parse_url` is built on ``httpx.URL``, the parser the sending side uses, so a
URL accepted when an endpoint is registered is exactly the URL an attempt connects
to: the same host (IDNA 2008, as ASCII), the same port, the same request target.
What it refuses, with :class:`~hookdispatch.exceptions.InvalidEndpointError`:

- a URL that is not a non-empty string;
- spaces, control characters (DEL included) and other invisible characters anywhere;
- a scheme other than ``http`` or ``https``;
- a missing host, or a host that is not a valid host name (IDNA 2008 for non-ASCII
  names; ASCII names of letters, digits, ``-`` and ``_`` in dot-separated labels of 1
  to 63 characters) or a valid IP address (IPv6 without a zone id);
- a port that is not 1 to 65535 in ASCII digits (``httpx`` would read full-width
  digits, ``+`` or ``_`` as a number);
- ``user:password@`` (any ``@`` before the host);
- a non-empty ``#fragment``;
- anything ``httpx.URL`` itself refuses.

Error messages say what is wrong and never repeat the URL: endpoint URLs can embed
tokens, and no endpoint URL goes into a log line, a repr or an error message.

Registration (``Endpoint.create``) and the target policy (``TargetPolicy.check_url``
and ``check_endpoint``) read URLs through :func:`parse_url`, and the transports are to
send what its :class:`Target` says; :func:`written_host` only words the refusal of a
URL that :func:`parse_url` refused.
"""

from __future__ import annotations

import functools
import ipaddress
import re

import httpx
from attrs import frozen

from .exceptions import InvalidEndpointError

__all__ = ["Target", "parse_url", "written_host"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://([^/?#]*)")
"""The authority as ``httpx`` (and RFC 3986) delimits it: after ``//``, up to ``/?#``."""
_ASCII_DIGITS = re.compile(r"[0-9]+")
_HOST_LABEL = re.compile(r"[a-z0-9_\-]{1,63}")
_MAX_HOST_LENGTH = 253

_EXPECTED = "expected https://host[:port]/path"


@frozen
class Target:
    """Where an endpoint URL sends to, as the sender sees it."""

    scheme: str
    """``"http"`` or ``"https"``."""
    host: str
    """The host connected to: ASCII (IDNA 2008 for international names), lower case;
    an IPv6 address without brackets."""
    port: int
    """The TCP port, the scheme's default filled in."""
    target: bytes
    """The request target: the raw (percent-encoded) path and query."""
    host_header: bytes
    """The ``Host`` header value (``httpx``'s netloc: IPv6 bracketed, default port left out)."""


def _refuse(message: str) -> InvalidEndpointError:
    return InvalidEndpointError(message)


def _invalid_url(exc: httpx.InvalidURL) -> InvalidEndpointError:
    """Our message for an ``httpx.InvalidURL``, whose own message may quote the URL."""
    reason = str(exc)
    if reason.startswith("Invalid IDNA hostname"):
        return _refuse(
            "the endpoint URL's host is not a valid IDNA 2008 host name (symbols such as"
            " emoji, and full-width letters or digits, are not allowed); use the host's"
            " ASCII (xn--) form"
        )
    if reason.startswith("Invalid port"):
        return _refuse(
            f"endpoint URL is malformed: the port must be a number from 1 to 65535; {_EXPECTED}"
        )
    if reason.startswith(("Invalid IPv4 address", "Invalid IPv6 address")):
        return _refuse(
            f"endpoint URL is malformed: its host is not a valid IP address; {_EXPECTED}"
        )
    if reason.startswith("Invalid non-printable"):
        return _refuse("endpoint URL must not contain spaces or control characters")
    if "too long" in reason:
        return _refuse("endpoint URL is too long (the limit is 65,536 characters)")
    return _refuse(f"endpoint URL is malformed (check the host and port); {_EXPECTED}")


def _check_host(host: str) -> None:
    """Refuse a host (as ``httpx`` encoded it) that is neither an IP nor a host name."""
    if ":" in host:  # httpx only lets a bracketed, valid IPv6 address through with ':'
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            address = None
        if address is None or address.scope_id is not None:
            raise _refuse(
                "endpoint URL's host is not a valid IPv6 address (zone ids such as %eth0"
                " are not supported)"
            )
        return
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()  # one trailing dot: the fully qualified form
    if len(host) > _MAX_HOST_LENGTH + 1 or not all(_HOST_LABEL.fullmatch(x) for x in labels):
        raise _refuse(
            "the endpoint URL's host is not a valid host name: each dot-separated label"
            " must be 1 to 63 letters, digits, '-' or '_' (and the whole name at most"
            f" {_MAX_HOST_LENGTH} characters)"
        )


def _authority(url: str) -> str:
    """The authority (``user@host:port``) as written in ``url``, or ``""``."""
    match = _SCHEME_AUTHORITY.match(url)
    return "" if match is None else match.group(1)


def _port_text(authority: str) -> str | None:
    """The port as written, split from the host the way ``httpx`` splits it."""
    if authority.startswith("["):
        end = authority.find("]")
        rest = authority[end + 1 :] if end >= 0 else ""
    else:
        _, colon, port = authority.partition(":")
        rest = colon + port
    return rest[1:] if rest.startswith(":") else None


def written_host(url: str) -> str:
    """The host as written in ``url`` (IPv6 brackets removed), or ``""``.

    Only to word the refusal of a URL that :func:`parse_url` refused (is it an
    internal address, spelled in a way ``httpx`` cannot send?); never to accept one.
    """
    if not isinstance(url, str):
        return ""
    host = _authority(url).rpartition("@")[2]
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.partition(":")[0]


@functools.lru_cache(maxsize=4096)
def parse_url(url: str) -> Target:
    """``url`` as the sender will send it; raises InvalidEndpointError if it cannot be.

    Pure and remembered (4096 URLs): called at registration and before every attempt.
    """
    if not isinstance(url, str) or not url:
        raise _refuse("endpoint URL must be a non-empty string like https://example.com/hooks")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise _refuse(
            "endpoint URL must not contain spaces or control characters (or other"
            " invisible characters); percent-encode them"
        )
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise _invalid_url(exc) from None
    except ValueError:  # UnicodeError included: a parser error httpx did not translate
        raise _refuse(f"endpoint URL is malformed (check the host and port); {_EXPECTED}") from None
    scheme = parsed.scheme
    if scheme not in _DEFAULT_PORTS:
        raise _refuse(
            f"endpoint URL must start with https:// or http:// (got scheme {scheme!r:.20})"
        )
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise _refuse(f"endpoint URL has no host; {_EXPECTED}")
    authority = _authority(url)
    if "@" in authority or parsed.userinfo:
        raise _refuse(
            "endpoint URL must not carry user:password; receivers check the signature instead"
        )
    if parsed.fragment:
        raise _refuse("endpoint URL must not have a #fragment")
    port_text = _port_text(authority)
    if port_text and not _ASCII_DIGITS.fullmatch(port_text):
        raise _refuse(
            "endpoint URL is malformed: the port must be a number from 1 to 65535 in ASCII"
            f" digits; {_EXPECTED}"
        )
    port = _DEFAULT_PORTS[scheme] if parsed.port is None else parsed.port
    if not 1 <= port <= 65535:
        raise _refuse(
            f"endpoint URL is malformed: the port must be a number from 1 to 65535; {_EXPECTED}"
        )
    _check_host(host)
    return Target(
        scheme=scheme,
        host=host,
        port=port,
        target=parsed.raw_path,
        host_header=parsed.netloc,
    )
