"""The client address of a request, believing ``X-Forwarded-For`` only from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def trusted_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def parse_address(value: str) -> IPAddress | None:
    """An IP address, also from ``a.b.c.d:port`` and ``[v6]:port`` forms; None if not one."""
    text = value.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]
) -> str | None:
    """The address a login is attributed to.

    The socket peer, unless it is a trusted proxy (the gateway on loopback) that
    sent ``X-Forwarded-For``: then the nearest hop that is not itself a trusted
    proxy, reading from the right. With one proxy that sets the header to the
    caller's address this is the header's first entry; when a proxy appends to a
    header the caller supplied, entries the caller made up are never reached.
    """
    if peer is None:
        return None
    peer_address = parse_address(peer)
    if peer_address is None or not _trusted(peer_address, trusted):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    chosen: IPAddress = peer_address
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            break  # a forged or garbled hop: keep the last address a proxy vouched for
        chosen = address
        if not _trusted(address, trusted):
            break
    return str(chosen)
