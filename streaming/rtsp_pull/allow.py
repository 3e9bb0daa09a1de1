"""Which cameras the server may pull (`rtsp.pull_allowed_hosts`): a guard against being made to connect to
internal addresses (SSRF) by whoever can start a pull (a player's rtsp:// stream name, REST startup).

Entries are host names (`cam1.example.com`, or `*.cams.example.com` for its subdomains), addresses
(`192.0.2.10`) and networks (`10.20.0.0/16`, `2001:db8::/32`). No entries: every host is allowed (the
default). With entries, a URL is allowed when its host name is listed, or when its host is an address
inside a listed one, or when it is a name that resolves only to such addresses: one resolved address
outside is enough to refuse it. A refused URL is never connected to. An allowed name that was checked
through its addresses is connected to by the address that was checked (`PullTarget.address`), so a
second lookup cannot hand the connection elsewhere (DNS rebinding), also on reconnects.

`HostPolicy.decide` is pure; `check` adds the name lookup.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from .failures import CONNECT_FAILED, NOT_ALLOWED, PullFailed

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _host_name(text: str) -> str | None:
    """A host name entry (lower case, no trailing dot; `*.` prefix kept), or None if it is not one."""
    name = text.strip().lower().rstrip(".")
    bare = name[2:] if name.startswith("*.") else name
    labels = bare.split(".")
    if not bare or len(bare) > 253 or not all(
            label and len(label) <= 63 and all(c.isalnum() or c == "-" for c in label)
            and not label.startswith("-") and not label.endswith("-") for label in labels):
        return None
    return name


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(text.split("%", 1)[0])  # a scope id (fe80::1%eth0) is not part of it
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    return address


@dataclass(frozen=True)
class HostPolicy:
    names: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> HostPolicy:
        """From the setting's entries; ValueError names the first one that is neither a host name nor an
        address or network."""
        names: set[str] = set()
        networks: list[Network] = []
        for entry in entries:
            text = str(entry).strip()
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
                continue
            except ValueError:
                pass
            name = _host_name(text)
            if name is None:
                raise ValueError(f"{text!r} is not a host name, an address or a network (CIDR)")
            names.add(name)
        return cls(frozenset(names), tuple(networks))

    @property
    def allows_all(self) -> bool:
        return not self.names and not self.networks

    def name_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        if host in self.names:
            return True
        return any(n.startswith("*.") and host.endswith(n[1:]) for n in self.names)

    def address_allowed(self, text: str) -> bool:
        try:
            address = _address(text)
        except ValueError:
            return False
        return any(address.version == net.version and address in net for net in self.networks)

    def decide(self, host: str, addresses: list[str] | None) -> str | None:
        """None when `host` may be pulled, given what it resolved to (None: not looked up, as for an
        address or a listed name); else why not."""
        if self.allows_all or self.name_allowed(host):
            return None
        try:
            _address(host)
            addresses = [host]
        except ValueError:
            if addresses is None:
                return f"{host} is not in rtsp.pull_allowed_hosts"
            if not addresses:
                return f"{host} resolves to no address"
        outside = [a for a in addresses if not self.address_allowed(a)]
        if outside:
            shown = host if outside == [host] else f"{host} ({', '.join(outside)})"
            return f"{shown} is not in rtsp.pull_allowed_hosts"
        return None


@dataclass(frozen=True)
class PullTarget:
    """Where to connect for a URL: its host as given, or the checked address (see the module doc)."""

    host: str
    address: str | None = None

    @property
    def connect_to(self) -> str:
        return self.address or self.host


async def check(policy: HostPolicy, host: str, port: int) -> PullTarget:
    """Where to connect for `host`, or PullFailed (NOT_ALLOWED; CONNECT_FAILED when the name cannot be
    looked up) before any connection is tried."""
    if policy.allows_all or policy.name_allowed(host):
        return PullTarget(host)
    try:
        _address(host)
        literal = True
    except ValueError:
        literal = False
    addresses: list[str] | None = None
    if not literal and policy.networks:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise PullFailed(CONNECT_FAILED, f"cannot resolve {host}: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    problem = policy.decide(host, addresses)
    if problem is not None:
        raise PullFailed(NOT_ALLOWED, problem)
    return PullTarget(host, None if literal else addresses[0] if addresses else None)
