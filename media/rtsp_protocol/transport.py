"""The RTSP Transport header (RFC 2326 section 12.39): what a client asks for in SETUP and the answer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Transport:
    tcp: bool
    client_ports: tuple[int, int] | None = None  # UDP
    interleaved: tuple[int, int] | None = None  # TCP


class UnsupportedTransport(ValueError):
    pass


def parse_transport(header: str) -> Transport:
    """The first transport of the list we can serve: unicast RTP/AVP over UDP (with client_port) or
    over TCP (interleaved). Raises UnsupportedTransport (461) when there is none."""
    why = "no transport offered"
    for spec in header.split(","):
        params = [p.strip() for p in spec.split(";") if p.strip()]
        if not params:
            continue
        protocol = params[0].upper()
        values: dict[str, str] = {}
        for param in params[1:]:
            key, _, value = param.partition("=")
            values[key.strip().lower()] = value.strip()
        if "multicast" in values:
            why = "multicast is not served"
            continue
        if values.get("mode", "play").strip('"').lower() != "play":
            why = "only mode=play is served"
            continue
        if protocol in ("RTP/AVP", "RTP/AVP/UDP"):
            ports = port_pair(values.get("client_port", ""), need_even=False, low=1)
            if ports is None:
                why = "UDP needs client_port=RTP-RTCP"
                continue
            return Transport(tcp=False, client_ports=ports)
        if protocol == "RTP/AVP/TCP":
            channels = None
            if "interleaved" in values:
                channels = port_pair(values["interleaved"], need_even=False, low=0, high=255)
                if channels is None:
                    why = "interleaved must be two channels 0..255"
                    continue
            return Transport(tcp=True, interleaved=channels)
        why = f"{params[0][:40]} is not served (RTP/AVP over UDP or TCP is)"
    raise UnsupportedTransport(why)


def port_pair(text: str, need_even: bool, low: int, high: int = 65535) -> tuple[int, int] | None:
    first, sep, second = text.partition("-")
    if not first.isdigit() or len(first) > 5 or (sep and (not second.isdigit() or len(second) > 5)):
        return None
    a = int(first)
    b = int(second) if sep else a + 1
    if not (low <= a <= high and low <= b <= high) or (need_even and a % 2):
        return None
    return a, b


def transport_reply(transport: Transport, ssrc: int, server_ports: tuple[int, int] | None) -> str:
    if transport.tcp:
        assert transport.interleaved is not None
        a, b = transport.interleaved
        return f"RTP/AVP/TCP;unicast;interleaved={a}-{b};ssrc={ssrc:08X}"
    assert transport.client_ports is not None and server_ports is not None
    a, b = transport.client_ports
    return (f"RTP/AVP;unicast;client_port={a}-{b};server_port={server_ports[0]}-{server_ports[1]};"
            f"ssrc={ssrc:08X}")
