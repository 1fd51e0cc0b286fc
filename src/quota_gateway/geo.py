"""Client address -> ISO 3166 alpha-2 country, offline.

The data ships inside the `iptocc` wheel (allocations published by the five regional internet
registries), so nothing is fetched at run time. Callers keep the country, never the address.
"""

from __future__ import annotations

import ipaddress

import iptocc


def country_of(address: str | None) -> str | None:
    """The country of a public address; None for private, loopback, malformed or unknown ones."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if not ip.is_global:
        return None
    code = iptocc.country_code(str(ip))
    return code.upper() if isinstance(code, str) and len(code) == 2 else None
