"""The address the sign-in limit counts (finance_core.access.client_address) and its setting."""

from ipaddress import ip_network

import pytest

from finance_core.access.client_address import counted_address
from finance_core.settings import SettingsError, load_settings

PROXY = [ip_network("10.0.0.5/32")]


def count(reported, forwarded=(), trusted=(), server_trusts=""):
    return counted_address(
        reported=reported,
        forwarded_for=list(forwarded),
        trusted_proxies=list(trusted),
        server_trusts=server_trusts,
    )


def test_without_a_proxy_the_peer_counts_loopback_included_whatever_the_header_says():
    assert count(None) == "127.0.0.1"
    assert count(None, ["6.6.6.6"]) == "127.0.0.1"
    assert count("203.0.113.7", ["6.6.6.6, 7.7.7.7"]) == "203.0.113.7"
    assert count("::ffff:203.0.113.7") == "203.0.113.7"


def test_behind_a_trusted_proxy_the_address_it_appended_counts_not_what_the_client_sent():
    # The client sent "6.6.6.6"; the proxy appended the address it saw, 198.51.100.4.
    assert count("10.0.0.5", ["6.6.6.6, 198.51.100.4"], PROXY) == "198.51.100.4"
    assert count("10.0.0.5", ["6.6.6.6", "198.51.100.4"], PROXY) == "198.51.100.4"
    # Two trusted proxies in a row: the address the outer one saw.
    two = [ip_network("10.0.0.0/24")]
    assert count("10.0.0.5", ["6.6.6.6, 198.51.100.4, 10.0.0.9"], two) == "198.51.100.4"
    # A peer that is not the proxy is believed about nothing.
    assert count("198.51.100.9", ["6.6.6.6"], PROXY) == "198.51.100.9"
    # Garbage where the proxy writes an address: the proxy's own address counts.
    assert count("10.0.0.5", ["6.6.6.6, not-an-address"], PROXY) == "10.0.0.5"


def test_an_address_uvicorn_took_from_the_header_is_not_believed():
    # Started without FORWARDED_ALLOW_IPS empty: uvicorn believes loopback peers' headers,
    # and reports the forged address as if it were the peer's.
    assert count("6.6.6.6", ["6.6.6.6"], server_trusts="127.0.0.1,::1") == "127.0.0.1"
    assert count("7.7.7.7", ["6.6.6.6, 7.7.7.7"], server_trusts="127.0.0.1,::1") == "127.0.0.1"
    # ... unless the hosts uvicorn trusts are our trusted proxies: then the proxy's word counts.
    loopback = [ip_network("127.0.0.1/32"), ip_network("::1/128")]
    assert count("7.7.7.7", ["6.6.6.6, 7.7.7.7"], loopback, "127.0.0.1,::1") == "7.7.7.7"


def test_the_setting_takes_addresses_and_networks_and_refuses_anything_else(monkeypatch):
    monkeypatch.setenv("DASHBOARD_TRUSTED_PROXIES", "127.0.0.2, 10.1.0.0/16,::1")
    assert [str(net) for net in load_settings().dashboard_trusted_proxies] == [
        "127.0.0.2/32",
        "10.1.0.0/16",
        "::1/128",
    ]
    monkeypatch.setenv("DASHBOARD_TRUSTED_PROXIES", "proxy.internal")
    with pytest.raises(SettingsError, match=r"DASHBOARD_TRUSTED_PROXIES.*proxy\.internal"):
        load_settings()
    monkeypatch.delenv("DASHBOARD_TRUSTED_PROXIES")
    assert load_settings().dashboard_trusted_proxies == []
