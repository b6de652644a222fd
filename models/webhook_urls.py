"""Which webhook URLs and addresses Creditline may send to (docs/rules.md, Webhook endpoints).

Pure functions, shared by the admin API (a URL is checked when it is registered or changed: ``check_url``)
and by the delivery worker (every address the host resolves to is checked again at send time:
``is_public_address``), so that a name that resolves to a private address later is still refused."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

MAX_URL = 2000


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> bool:
    """False for private, loopback, link-local, multicast, reserved and unspecified addresses (an IPv4 address
    inside IPv6, ``::ffff:10.0.0.1``, is judged as the IPv4 address it carries)."""
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
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
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        return "url is not a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return "url must be an absolute http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return "url must not contain credentials (user:password@)"
    if parts.fragment:
        return "url must not have a #fragment"
    if production and parts.scheme != "https" and not (allow_private and is_loopback_host(host)):
        return "url must use https in production"
    address = literal_address(host)
    if address is None and not is_host_name(host):
        return "url's host must be an IP address or a host name (letters, digits and hyphens, labels of 1-63)"
    if address is not None and not is_public_address(address) and not allow_private:
        return "url must not point to a private, loopback or link-local address"
    if address is None and is_loopback_host(host) and not allow_private:
        return "url must not point to a private, loopback or link-local address"
    return None
