"""The client's address: the socket peer, or, when that peer is a trusted proxy
(QG_TRUSTED_PROXIES), the first address in X-Forwarded-For not itself a trusted proxy (read from
the right: each proxy appends the peer it saw, so everything left of the first untrusted entry
is the client's own claim)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=4096)
def limit_key(address: str) -> str:
    """What per-address limits count under: an IPv4 address as it is, an IPv6 address by its /64
    (`2001:db8:1:2::/64`). One subscriber (a home, a VM) is routinely given a whole /64, so keying by
    the full address would hand one client 2**64 windows; an IPv4-mapped address is its IPv4 one."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return address


def parse_networks(text: str) -> tuple[Network, ...]:
    """CIDRs (or single addresses), comma-separated; ValueError names a bad one."""
    networks = []
    for part in text.split(","):
        part = part.strip()
        if part:
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"QG_TRUSTED_PROXIES: '{part}' is not an address or CIDR") from None
    return tuple(networks)


class ClientAddresses:
    def __init__(self, trusted: str) -> None:
        self.networks = parse_networks(trusted)
        self._trusted = lru_cache(maxsize=4096)(self._is_trusted)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def of(self, scope: Scope) -> str:
        client = scope.get("client")
        peer = client[0] if client else ""
        if not self.networks or not self._trusted(peer):
            return peer
        hops: list[str] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                hops.extend(value.decode("latin-1").split(","))
        for hop in reversed(hops):
            hop = hop.strip()
            if not hop:
                continue
            if self._trusted(hop):
                peer = hop
                continue
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # not an address: a trusted proxy would not write this; the last hop we trust stands
        return peer
