"""Which local addresses ICE gathers host candidates on.

aioice gathers on every interface address except loopback, and has no setting for it. A media server
needs to choose (the configured ICE addresses), and tests on a loopback-only network need 127.0.0.1.
This module replaces aioice's address lookup for the whole process; it is the one place that does.
"""

from __future__ import annotations

from collections.abc import Sequence

import aioice.ice

_original_get_host_addresses = aioice.ice.get_host_addresses
_chosen: list[str] | None = None


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _chosen is None:
        return _original_get_host_addresses(use_ipv4, use_ipv6)
    return [a for a in _chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


def use_host_addresses(addresses: Sequence[str] | None) -> None:
    """Gather host candidates on exactly these addresses (None or empty: aioice's default, every
    non-loopback interface address)."""
    global _chosen
    _chosen = list(addresses) if addresses else None
    aioice.ice.get_host_addresses = _get_host_addresses


def host_addresses() -> list[str]:
    return _get_host_addresses(True, True)
