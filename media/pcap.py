"""A pcap file in memory: what a capture of a session's RTP and RTCP is saved as. No I/O.

The classic libpcap format (https://wiki.wireshark.org/Development/LibpcapFileFormat): a 24-byte global
header, then per packet a 16-byte record header (seconds, microseconds, captured and original length)
and the packet. The link type is LINKTYPE_RAW (101): each packet is an IP packet, so the RTP and RTCP,
which the server holds without their transport headers (after SRTP), are written inside an IPv4 or
IPv6 header and a UDP header made here from the addresses given. tcpdump, Wireshark and ffmpeg's
tools read it; Wireshark shows the RTP with "Decode As" or its RTP heuristics.

`PcapBuffer` keeps to a byte budget: a packet that would take it over is refused (and counted), so a
capture never grows without bound.
"""

from __future__ import annotations

import functools
import ipaddress
import struct

MAGIC = 0xA1B2C3D4  # microsecond timestamps, written in little-endian order
VERSION = (2, 4)
LINKTYPE_RAW = 101
SNAPLEN = 65535
GLOBAL_HEADER = struct.Struct("<IHHiIII")
RECORD_HEADER = struct.Struct("<IIII")
UDP_HEADER = struct.Struct("!HHHH")
IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
IPV6_HEADER = struct.Struct("!IHBB16s16s")
UDP = 17
MAX_PAYLOAD = SNAPLEN - 40 - UDP_HEADER.size

Address = tuple[str, int]  # (IP address, UDP port)


def global_header() -> bytes:
    return GLOBAL_HEADER.pack(MAGIC, VERSION[0], VERSION[1], 0, 0, SNAPLEN, LINKTYPE_RAW)


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of an IPv4 header."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@functools.lru_cache(maxsize=256)
def _packed(address: str) -> bytes:
    """An IP address in network order (4 or 16 bytes); a capture sees the same few again and again."""
    return ipaddress.ip_address(address).packed


def udp_packet(payload: bytes, src: Address, dst: Address) -> bytes:
    """`payload` as an IP/UDP packet from `src` to `dst` (both IPv4 or both IPv6; a mix, or an address
    that is not one, raises ValueError). The UDP checksum is left out (0), which UDP over IPv4 allows
    and readers do not check for captures."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes does not fit a packet of {SNAPLEN}")
    source, destination = _packed(src[0]), _packed(dst[0])
    if len(source) != len(destination):
        raise ValueError(f"addresses of two families: {src[0]} and {dst[0]}")
    udp = UDP_HEADER.pack(src[1] & 0xFFFF, dst[1] & 0xFFFF, UDP_HEADER.size + len(payload), 0)
    if len(source) == 4:
        header = IPV4_HEADER.pack(0x45, 0, 28 + len(payload), 0, 0x4000, 64, UDP, 0, source, destination)
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    else:
        header = IPV6_HEADER.pack(6 << 28, 8 + len(payload), UDP, 64, source, destination)
    return b"".join((header, udp, payload))


def record(packet: bytes, timestamp: float) -> bytes:
    """One record: its header (time since 1970, lengths) and the packet."""
    seconds = int(timestamp)
    micros = min(999_999, int(round((timestamp - seconds) * 1_000_000)))
    return RECORD_HEADER.pack(seconds, micros, len(packet), len(packet)) + packet


class PcapBuffer:
    """A pcap file being built in memory, at most `max_bytes` long (the global header included)."""

    def __init__(self, max_bytes: int):
        if max_bytes < GLOBAL_HEADER.size:
            raise ValueError(f"max_bytes must be at least {GLOBAL_HEADER.size}, not {max_bytes!r}")
        self.max_bytes = max_bytes
        self.data = bytearray(global_header())
        self.packets = 0
        self.refused = 0  # packets left out: over the budget, too big or with bad addresses

    @property
    def full(self) -> bool:
        """No more packets of the smallest kind (an RTCP packet) fit."""
        return len(self.data) + RECORD_HEADER.size + 20 + UDP_HEADER.size + 8 > self.max_bytes

    def add(self, payload: bytes, timestamp: float, src: Address, dst: Address) -> bool:
        """Append a UDP datagram; False (counted in `refused`) when it does not fit or cannot be made."""
        if len(self.data) + RECORD_HEADER.size + 28 + len(payload) > self.max_bytes:  # not even over IPv4
            self.refused += 1
            return False
        try:
            packet = udp_packet(payload, src, dst)
        except ValueError:
            self.refused += 1
            return False
        if len(self.data) + RECORD_HEADER.size + len(packet) > self.max_bytes:
            self.refused += 1
            return False
        self.data += record(packet, timestamp)
        self.packets += 1
        return True

    def __bytes__(self) -> bytes:
        return bytes(self.data)


def read(data: bytes) -> list[tuple[float, bytes]]:
    """The records of a pcap file written by PcapBuffer: (timestamp, IP packet). For tests and tools;
    raises ValueError for anything else."""
    if len(data) < GLOBAL_HEADER.size:
        raise ValueError("shorter than a pcap global header")
    magic, major, minor, _zone, _sigfigs, _snaplen, linktype = GLOBAL_HEADER.unpack_from(data)
    if magic != MAGIC or (major, minor) != VERSION or linktype != LINKTYPE_RAW:
        raise ValueError(f"not a little-endian pcap 2.4 of raw IP: magic {magic:#x}, link type {linktype}")
    out = []
    at = GLOBAL_HEADER.size
    while at < len(data):
        if at + RECORD_HEADER.size > len(data):
            raise ValueError(f"truncated record header at byte {at}")
        seconds, micros, captured, original = RECORD_HEADER.unpack_from(data, at)
        at += RECORD_HEADER.size
        if captured > original or at + captured > len(data):
            raise ValueError(f"truncated record at byte {at}: {captured} bytes announced")
        out.append((seconds + micros / 1_000_000, bytes(data[at : at + captured])))
        at += captured
    return out


def udp_payload(packet: bytes) -> tuple[Address, Address, bytes]:
    """(source, destination, payload) of an IP/UDP packet as udp_packet makes them; ValueError if not."""
    if packet and packet[0] >> 4 == 4 and len(packet) >= 28 and packet[9] == UDP:
        header_length = (packet[0] & 0x0F) * 4
        src_ip, dst_ip = ipaddress.ip_address(packet[12:16]), ipaddress.ip_address(packet[16:20])
    elif packet and packet[0] >> 4 == 6 and len(packet) >= 48 and packet[6] == UDP:
        header_length = 40
        src_ip, dst_ip = ipaddress.ip_address(packet[8:24]), ipaddress.ip_address(packet[24:40])
    else:
        raise ValueError("not an IPv4 or IPv6 UDP packet")
    src_port, dst_port, length, _ = UDP_HEADER.unpack_from(packet, header_length)
    payload = packet[header_length + UDP_HEADER.size : header_length + length]
    if len(payload) != length - UDP_HEADER.size:
        raise ValueError("truncated UDP payload")
    return (str(src_ip), src_port), (str(dst_ip), dst_port), payload
