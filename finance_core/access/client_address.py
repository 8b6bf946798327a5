"""Which client address the sign-in limit counts: the peer's, or what a trusted proxy reports.

SPEC 19: the address rule of section 13 counts the address the operator's proxy reports
(DASHBOARD_TRUSTED_PROXIES), never a header any client can set; without a proxy it counts the
peer address, loopback included.

The dashboard sees the address through Streamlit, which runs uvicorn, which by default believes
`X-Forwarded-For` from loopback peers (its FORWARDED_ALLOW_IPS, default `127.0.0.1,::1`) and
reports the header's address instead of the peer's. The dashboard's launchers start it with
FORWARDED_ALLOW_IPS empty, so uvicorn reports the peer itself; started some other way, a
reported address that comes from the header is recognised and not believed (see
`counted_address`).
"""

import os
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address
LOOPBACK = "127.0.0.1"
# uvicorn's own default when FORWARDED_ALLOW_IPS is unset.
UVICORN_DEFAULT_TRUST = "127.0.0.1,::1"


def server_trusts() -> str:
    """The hosts whose X-Forwarded-For this process's uvicorn believes (FORWARDED_ALLOW_IPS)."""
    return os.environ.get("FORWARDED_ALLOW_IPS", UVICORN_DEFAULT_TRUST)


def _parse(text: str) -> Address | None:
    try:
        address = ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: Address, networks: Iterable[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def forwarded_chain(header_values: Sequence[str]) -> list[str]:
    """The addresses of every X-Forwarded-For header, in order (proxies append on the right)."""
    return [part.strip() for value in header_values for part in value.split(",") if part.strip()]


def _reported_by_proxy(chain: Sequence[str], trusted: Sequence[Network]) -> Address | None:
    """The rightmost address not of a trusted proxy: the one the outermost trusted proxy saw."""
    for entry in reversed(chain):
        address = _parse(entry)
        if address is None:
            return None  # garbage where a proxy writes an address: believe none of it
        if not _within(address, trusted):
            return address
    return None


def counted_address(
    *,
    reported: str | None,
    forwarded_for: Sequence[str],
    trusted_proxies: Sequence[Network],
    server_trusts: str = UVICORN_DEFAULT_TRUST,
) -> str:
    """The address whose failed sign-ins this attempt counts.

    `reported` is the address Streamlit reports for the connection (`st.context.ip_address`,
    None for loopback), `forwarded_for` the X-Forwarded-For header values of the connection's
    request, `trusted_proxies` DASHBOARD_TRUSTED_PROXIES and `server_trusts` uvicorn's
    FORWARDED_ALLOW_IPS as the process has it.
    """
    peer_text = reported or LOOPBACK
    chain = forwarded_chain(forwarded_for)
    server_trusted = [part.strip() for part in server_trusts.split(",") if part.strip()]
    if chain and server_trusted and peer_text in chain:
        # uvicorn took the address from the header: the peer was one of the hosts it trusts,
        # which one is lost. Believe the header only if all of them are our trusted proxies.
        hosts = [_parse(host) for host in server_trusted]
        if all(host is not None and _within(host, trusted_proxies) for host in hosts):
            client = _reported_by_proxy(chain, trusted_proxies)
            return str(client) if client is not None else server_trusted[0]
        return str(hosts[0]) if hosts[0] is not None else server_trusted[0]
    peer = _parse(peer_text)
    if peer is None:
        return peer_text
    if chain and _within(peer, trusted_proxies):
        client = _reported_by_proxy(chain, trusted_proxies)
        if client is not None:
            return str(client)
    return str(peer)
