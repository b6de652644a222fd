"""Sending one webhook: the body, the Standard Webhooks signature, the address check, and the HTTP request.

The address rule (SSRF): the host is resolved once, every address it resolves to must be public (not private,
loopback, link-local, multicast, reserved or unspecified, IPv4-mapped IPv6 judged as the IPv4 inside) unless
``webhook_allow_private``, and the request connects to one of those checked addresses, with the ``Host``
header and the TLS server name (SNI, and so the certificate check) set to the URL's host. Resolving again to
connect would let a name that answers differently the second time (DNS rebinding) reach an internal address.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from creditline.webhooks import http1
from models.webhook_deliveries import RESPONSE_LIMIT, Claimed, Outcome
from models.webhook_urls import address_refusal, literal_address

USER_AGENT = "Creditline-Webhooks/1.0"
READ_LIMIT = 4 * RESPONSE_LIMIT
"""Bytes of a response read at most: the log keeps 1,024 characters, and a huge body must not cost memory."""

URL_CACHE_SIZE = 1024
"""Parsed endpoint URLs kept (endpoints are few; the cache is emptied when full)."""

Resolver = Callable[[str, int], Awaitable[list[str]]]


class Refused(Exception):
    """The URL may not be sent to; the message says why (it becomes the attempt's error)."""


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver, without blocking the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in found:
            found.append(address)
    return found


def refusal(address: str) -> str | None:
    """Why an address is refused without ``webhook_allow_private`` (``None``: it is public): the rule the admin
    API checks a registered URL's host by (``models.webhook_urls.address_refusal``)."""
    return address_refusal(address.split("%", 1)[0])  # an IPv6 zone (``fe80::1%eth0``) names no address


async def checked_addresses(url: httpx.URL, allow_private: bool, resolver: Resolver) -> list[str]:
    """The addresses to connect to for ``url``, each checked; raises ``Refused`` when any is refused."""
    if url.scheme not in ("http", "https") or not url.host:
        raise Refused(f"not an http(s) URL: {url}")
    port = url.port or (443 if url.scheme == "https" else 80)
    if literal_address(url.host) is not None:
        addresses = [url.host]
    else:
        try:
            addresses = await resolver(url.host, port)
        except OSError as exc:
            raise Refused(f"cannot resolve {url.host}: {exc}") from exc
    if not addresses:
        raise Refused(f"{url.host} resolves to no address")
    if not allow_private:
        for address in addresses:
            why = refusal(address)
            if why is not None:
                raise Refused(f"refused: {url.host} resolves to {why} (CREDITLINE_WEBHOOK_ALLOW_PRIVATE is off)")
    return addresses


def body_of(claimed: Claimed) -> str:
    """The JSON body: ``{"type", "timestamp", "data"}``, data being the stored payload plus ``sequence``."""
    data: dict[str, Any] = {**claimed.data, "sequence": claimed.sequence}
    message = {
        "type": claimed.event_type,
        "timestamp": claimed.event_created_at.astimezone(UTC).isoformat(),
        "data": data,
    }
    return json.dumps(message, separators=(",", ":"))


def signed_headers(claimed: Claimed, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers: one ``v1,`` signature per valid secret, space-separated."""
    signatures = " ".join(Webhook(secret).sign(claimed.event_public_id, at, body) for secret in claimed.secrets)
    return {
        "webhook-id": claimed.event_public_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


class Sender:
    """Sends claimed deliveries over one pooled HTTP/1.1 client (``http1.Client``; redirects are not followed: a
    3xx is a failure, so a receiver cannot point deliveries elsewhere)."""

    def __init__(
        self,
        timeout: float,
        allow_private: bool,
        resolver: Resolver = resolve,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout = timeout
        self.allow_private = allow_private
        self.resolver = resolver
        self.client = http1.Client(ssl_context)
        self._urls: dict[str, httpx.URL] = {}  # httpx parses one in ~18 µs, a third of a request

    async def aclose(self) -> None:
        await self.client.aclose()

    async def send(self, claimed: Claimed, started_at: datetime) -> Outcome:
        """One attempt; never raises for what the network or the receiver does (that is the outcome)."""
        began = time.monotonic()

        def latency() -> int:
            return round((time.monotonic() - began) * 1000)

        url = self._urls.get(claimed.url)
        if url is None:
            try:
                url = httpx.URL(claimed.url)
            except (httpx.InvalidURL, UnicodeError, ValueError) as exc:  # a stored URL no client can send to
                return Outcome(None, None, None, f"not an http(s) URL: {exc}", started_at)
            if len(self._urls) >= URL_CACHE_SIZE:
                self._urls.clear()
            self._urls[claimed.url] = url
        try:
            async with asyncio.timeout(self.timeout):
                addresses = await checked_addresses(url, self.allow_private, self.resolver)
                body = body_of(claimed).encode()
                headers = signed_headers(claimed, body.decode(), datetime.now(UTC))  # receivers check it against now
                tls = url.scheme == "https"
                port = url.port or (443 if tls else 80)
                host = url.raw_host.decode("ascii")  # IDNA-encoded: the Host header and the TLS server name
                fields = [("host", http1.host_header(host, port, tls)), *headers.items()]
                target = url.raw_path.decode("ascii")
                last_error: http1.ConnectError | None = None
                for address in addresses:
                    try:
                        response = await self.client.request(
                            "POST", address, port, host, tls, target, fields, body, READ_LIMIT
                        )
                    except http1.ConnectError as exc:  # nothing was sent: the next address of the name
                        last_error = exc
                        continue
                    return _outcome(response, latency(), started_at)
                assert last_error is not None
                raise last_error
        except Refused as exc:
            return Outcome(None, None, None, str(exc), started_at)
        except TimeoutError:
            return Outcome(None, latency(), None, f"timed out after {self.timeout:g} s", started_at)
        except (http1.HttpError, OSError, UnicodeError, ValueError) as exc:
            return Outcome(None, latency(), None, f"{type(exc).__name__}: {exc}", started_at)


def _outcome(response: http1.Response, latency_ms: int, started_at: datetime) -> Outcome:
    text = response.body.decode("utf-8", errors="replace")[:RESPONSE_LIMIT]
    error = None
    if 300 <= response.status < 400:
        error = f"redirect not followed (to {response.header('location') or 'nowhere'})"
    return Outcome(response.status, latency_ms, text, error, started_at)
