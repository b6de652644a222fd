"""Which webhook URLs and addresses Creditline may send to (docs/rules.md, Webhook endpoints).

Pure functions, shared by the admin API (a URL is checked when it is registered or changed: ``check_url``)
and by the delivery worker (every address the host resolves to is checked again at send time:
``is_public_address``), so that a name that resolves to a private address later is still refused."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import httpx

MAX_URL = 2000


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REFUSED_V4 = tuple(
    (ipaddress.IPv4Network(net), kind)
    for net, kind in (
        ("0.0.0.0/8", "an unspecified"),  # "this network": 0.0.0.0 reaches the host itself on Linux
        ("10.0.0.0/8", "a private"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT)"),
        ("127.0.0.0/8", "a loopback"),
        ("169.254.0.0/16", "a link-local"),
        ("172.16.0.0/12", "a private"),
        ("192.0.0.0/24", "a reserved"),  # IETF protocol assignments
        ("192.0.2.0/24", "a reserved"),  # documentation
        ("192.88.99.0/24", "a reserved"),  # 6to4 relay anycast
        ("192.168.0.0/16", "a private"),
        ("198.18.0.0/15", "a reserved"),  # benchmarking
        ("198.51.100.0/24", "a reserved"),
        ("203.0.113.0/24", "a reserved"),
        ("224.0.0.0/4", "a multicast"),
        ("240.0.0.0/4", "a reserved"),  # and 255.255.255.255
    )
)
_REFUSED_V6 = tuple(
    (ipaddress.IPv6Network(net), kind)
    for net, kind in (
        ("::/128", "an unspecified"),
        ("::1/128", "a loopback"),
        ("64:ff9b:1::/48", "a local-use NAT64"),  # RFC 8215: translated to whatever the local network chose
        ("100::/64", "a reserved"),  # discard
        ("2001::/32", "a Teredo"),  # a tunnel to an IPv4 host the address only obfuscates
        ("2001:db8::/32", "a reserved"),  # documentation
        ("fc00::/7", "a private"),
        ("fe80::/10", "a link-local"),
        ("fec0::/10", "a site-local"),
        ("ff00::/8", "a multicast"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
"""SIIT's IPv4-translated addresses (``::ffff:0:a.b.c.d``, RFC 2765): a translator routes them to that IPv4 host."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to an IPv4 host: IPv4-mapped (``::ffff:a.b.c.d``),
    IPv4-compatible (``::a.b.c.d``, deprecated), IPv4-translated (``::ffff:0:a.b.c.d``, SIIT), 6to4
    (``2002:AABB:CCDD::/48``) and NAT64's well-known prefix (``64:ff9b::a.b.c.d``); a request to it reaches that
    IPv4 host."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or address in _IPV4_TRANSLATED or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(ip: IPAddress | str) -> str | None:
    """Why an address may not be sent to, as ``"<address> is a private address"`` (an IPv6 address carrying an
    IPv4 one: ``"<address> carries 127.0.0.1, a loopback address"``), or ``None`` when it is public. Refused:
    private, shared (100.64.0.0/10), loopback, link-local, multicast, reserved (documentation, benchmarking
    198.18.0.0/15, 240.0.0.0/4...), unspecified (0.0.0.0/8, ``::``), site-local, Teredo and local-use NAT64,
    and everything Python does not count as global; the ranges are listed here so that the rule does not move
    with the Python version."""
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    label = ip if isinstance(ip, str) else str(address)  # as the caller wrote it (``::ffff:10.0.0.1``)
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            why = address_refusal(inner)
            return None if why is None else f"{label} carries {why.replace(' is ', ', ', 1)}"
        table: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = _REFUSED_V6
    else:
        table = _REFUSED_V4
    for network, kind in table:
        if address in network:
            return f"{label} is {kind} address"
    if not address.is_global:
        return f"{label} is not a public address"
    return None


def is_public_address(ip: IPAddress | str) -> bool:
    """Whether Creditline may send to ``ip`` without ``webhook_allow_private`` (``address_refusal``)."""
    return address_refusal(ip) is None


def literal_address(host: str) -> IPAddress | None:
    """The IP address a URL's host is written as, if it is one (``[::1]`` loses its brackets first)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_loopback_host(host: str) -> bool:
    address = literal_address(host)
    if address is not None:
        return address.is_loopback
    return host.lower().rstrip(".") == "localhost" or host.lower().endswith(".localhost")


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def is_host_name(host: str) -> bool:
    """A DNS name every HTTP client sends the same way: valid IDNA, labels of letters, digits and hyphens, and
    a last label that is not a number. ``0177.0.0.1``, ``256.1.1.1``, ``2130706433`` and ``0x7f.1`` are
    refused: clients and resolvers read such hosts differently (some as an address), and a bad ``xn--`` label
    would fail the sender on every attempt."""
    try:
        ascii_host = host.rstrip(".").encode("idna").decode("ascii").lower()
        labels = ascii_host.split(".")
        for label in labels:
            if label.startswith("xn--"):
                label.encode("ascii").decode("idna")  # the punycode must decode
    except UnicodeError:
        return False
    if len(ascii_host) > 253 or not all(_LABEL.match(label) for label in labels):
        return False
    last = labels[-1]
    return not (last.isdigit() or last.startswith("0x"))


_NOT_A_HOST = "url's host must be an IP address or a host name (letters, digits and hyphens, labels of 1-63)"


def sent_host(url: str) -> str | None:
    """The host as the delivery worker sends to it (``creditline.webhooks.sending`` parses a URL with
    ``httpx.URL``: a name IDNA 2008-encoded, an IPv6 address without brackets), or ``None`` when it cannot be
    encoded. Python's own ``idna`` codec is IDNA 2003, which maps ``ｌｏｃａｌｈｏｓｔ`` (fullwidth) and
    ``ℓocalhost`` to ``localhost``: checked that way, such a host passed as a name that is not loopback, yet
    no delivery to it could ever be sent."""
    try:
        return httpx.URL(url).raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError, ValueError):
        return None


def check_url(url: str, *, production: bool, allow_private: bool) -> str | None:
    """Why ``url`` may not be a webhook endpoint's, or ``None`` if it may: absolute http(s) with a host, at
    most 2000 characters, no credentials; https in production (http to loopback too with ``allow_private``);
    a host written as a private, loopback or link-local address only with ``allow_private``."""
    if len(url) > MAX_URL:
        return f"url must be at most {MAX_URL} characters"
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return "url must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port  # a port that is not a number raises here
    except ValueError:
        return "url is not a valid URL"
    if port == 0:
        return "url must not use port 0"
    if parts.scheme not in ("http", "https") or not host:
        return "url must be an absolute http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return "url must not contain credentials (user:password@)"
    if parts.fragment:
        return "url must not have a #fragment"
    encoded = sent_host(url)
    if not encoded:
        if host.isascii():
            return _NOT_A_HOST
        return "url's host is not a valid IDNA 2008 host name (the form webhooks are sent to)"
    host = encoded  # every check below is of the host the worker would send to
    if production and parts.scheme != "https" and not (allow_private and is_loopback_host(host)):
        return "url must use https in production"
    address = literal_address(host)
    if address is None and not is_host_name(host):
        return _NOT_A_HOST
    if address is not None and not is_public_address(address) and not allow_private:
        return "url must not point to a private, loopback or link-local address"
    if address is None and is_loopback_host(host) and not allow_private:
        return "url must not point to a private, loopback or link-local address"
    return None
