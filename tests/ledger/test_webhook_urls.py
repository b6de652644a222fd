"""Which URLs a webhook endpoint may have, and which addresses may be sent to (models/webhook_urls.py): the
rules the admin API applies when a URL is registered and the delivery worker after DNS resolution."""

from __future__ import annotations

import pytest

from models.webhook_urls import check_url, is_public_address

PRIVATE = "url must not point to a private, loopback or link-local address"
HTTPS = "url must use https in production"


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("127.8.9.10", False),
        ("10.0.0.1", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("169.254.169.254", False),  # cloud metadata
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
    ],
)
def test_only_global_unicast_addresses_are_public(address: str, public: bool) -> None:
    assert is_public_address(address) is public


@pytest.mark.parametrize(
    ("url", "production", "allow_private", "problem"),
    [
        ("https://hooks.example.com/in", True, False, None),
        ("http://hooks.example.com/in", False, False, None),
        ("http://hooks.example.com/in", True, False, HTTPS),
        ("http://hooks.example.com/in", True, True, HTTPS),  # the setting opens loopback only, not plain http
        ("http://127.0.0.1:9000/in", True, True, None),
        ("http://localhost:9000/in", True, True, None),
        ("http://127.0.0.1:9000/in", False, False, PRIVATE),
        ("https://10.0.0.8/in", False, True, None),
        ("https://10.0.0.8/in", True, True, None),
        ("http://10.0.0.8/in", True, True, HTTPS),
        ("https://[fe80::1]/in", False, False, PRIVATE),
        ("https://HOOKS.example.com:8443/in?x=1", True, False, None),
    ],
)
def test_a_url_is_checked_for_the_deployment_it_is_registered_with(
    url: str, production: bool, allow_private: bool, problem: str | None
) -> None:
    assert check_url(url, production=production, allow_private=allow_private) == problem


HOST = "url's host must be an IP address or a host name (letters, digits and hyphens, labels of 1-63)"


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("https://0177.0.0.1/h", HOST),  # octal: some clients read 127.0.0.1
        ("https://256.1.1.1/h", HOST),
        ("https://1.2.3.04/h", HOST),
        ("https://2130706433/h", HOST),  # 127.0.0.1 as one number
        ("https://0x7f.1/h", HOST),
        ("https://xn--/h", HOST),  # punycode that does not decode: the sender failed on it every attempt
        ("https://-hooks.example.com/h", HOST),
        ("https://hooks_1.example.com/h", HOST),
        (f"https://{'a' * 64}.example.com/h", HOST),
        ("https://hooks.example.com/h", None),
        ("https://bücher.example/h", None),  # IDNA, sent as xn--bcher-kva.example
        ("https://8.8.8.8/h", None),
    ],
)
def test_a_host_every_client_reads_the_same_way_is_required(url: str, refusal: str | None) -> None:
    assert check_url(url, production=True, allow_private=False) == refusal
