"""Which URLs a webhook endpoint may have, and which addresses may be sent to (models/webhook_urls.py): the
rules the admin API applies when a URL is registered and the delivery worker after DNS resolution."""

from __future__ import annotations

import pytest

from models.webhook_urls import address_refusal, check_url, is_public_address

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
    ("address", "refused"),
    [
        # IPv6 addresses that carry an IPv4 one reach that IPv4 host: judged by it
        ("2002:7f00:1::", "2002:7f00:1:: carries 127.0.0.1, a loopback address"),  # 6to4
        ("2002:a00:1::5", "2002:a00:1::5 carries 10.0.0.1, a private address"),
        ("2002:808:808::1", None),  # 6to4 of 8.8.8.8
        ("64:ff9b::7f00:1", "64:ff9b::7f00:1 carries 127.0.0.1, a loopback address"),  # NAT64
        ("64:ff9b::a9fe:a9fe", "64:ff9b::a9fe:a9fe carries 169.254.169.254, a link-local address"),
        ("64:ff9b::808:808", None),
        ("64:ff9b:1::808:808", "64:ff9b:1::808:808 is a local-use NAT64 address"),
        ("::ffff:192.168.0.1", "::ffff:192.168.0.1 carries 192.168.0.1, a private address"),  # IPv4-mapped
        ("::127.0.0.1", "::127.0.0.1 carries 127.0.0.1, a loopback address"),  # IPv4-compatible
        ("::8.8.8.8", None),
        ("::ffff:0:7f00:1", "::ffff:0:7f00:1 carries 127.0.0.1, a loopback address"),  # IPv4-translated (SIIT)
        ("::ffff:0:a00:1", "::ffff:0:a00:1 carries 10.0.0.1, a private address"),
        ("::ffff:0:808:808", None),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:0:4136:e378:8000:63bf:3fff:fdd2 is a Teredo address"),
        ("0.0.0.0", "0.0.0.0 is an unspecified address"),
        ("0.1.2.3", "0.1.2.3 is an unspecified address"),  # 0.0.0.0/8
        ("100.64.0.1", "100.64.0.1 is a shared (carrier-grade NAT) address"),
        ("100.127.255.254", "100.127.255.254 is a shared (carrier-grade NAT) address"),
        ("100.128.0.1", None),
        ("198.18.0.1", "198.18.0.1 is a reserved address"),  # benchmarking, 198.18.0.0/15
        ("198.19.255.254", "198.19.255.254 is a reserved address"),
        ("198.20.0.1", None),
        ("224.0.0.1", "224.0.0.1 is a multicast address"),
        ("233.252.0.1", "233.252.0.1 is a multicast address"),  # Python counts this one global
        ("ff0e::1", "ff0e::1 is a multicast address"),  # and this one
        ("240.0.0.1", "240.0.0.1 is a reserved address"),
        ("255.255.255.255", "255.255.255.255 is a reserved address"),
        ("192.0.2.10", "192.0.2.10 is a reserved address"),
        ("2001:db8::1", "2001:db8::1 is a reserved address"),
        ("fec0::1", "fec0::1 is a site-local address"),  # deprecated, and global to Python 3.11
        ("::", ":: is an unspecified address"),
        ("::1", "::1 is a loopback address"),
    ],
)
def test_every_special_range_is_refused_with_its_kind(address: str, refused: str | None) -> None:
    assert address_refusal(address) == refused
    assert is_public_address(address) is (refused is None)
    assert (
        check_url(
            f"https://[{address}]/in" if ":" in address else f"https://{address}/in",
            production=True,
            allow_private=False,
        )
        is None
    ) is (refused is None)


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
        ("http://example.com:0/in", False, False, "url must not use port 0"),  # no client can connect to it
        ("http://127.0.0.1:0/in", False, True, "url must not use port 0"),
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


IDNA_2008 = "url's host is not a valid IDNA 2008 host name (the form webhooks are sent to)"


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        # Python's IDNA 2003 codec maps these to localhost; the sender (IDNA 2008) can never send to them
        ("http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:8391/ok", IDNA_2008),  # fullwidth
        ("http://\u2113ocalhost/", IDNA_2008),  # script small l
        ("https://hooks.\uff45xample.com/h", IDNA_2008),
        ("https://B\u00fcCHER.example/h", None),  # IDNA 2008 after lower-casing, as the sender encodes it
    ],
)
def test_a_host_is_checked_as_the_sender_encodes_it(url: str, refusal: str | None, allow_private: bool) -> None:
    assert check_url(url, production=False, allow_private=allow_private) == refusal
