"""The pcap writer (media/pcap.py) without I/O, and tcpdump reading what it writes."""

from __future__ import annotations

import ipaddress
import struct
import subprocess
from pathlib import Path

import pytest

from media import pcap

RTP = bytes([0x80, 96, 0, 1]) + struct.pack("!II", 1000, 0x11223344) + b"payload"


def test_a_written_file_reads_back_with_times_addresses_and_payloads() -> None:
    buffer = pcap.PcapBuffer(10_000)
    assert buffer.add(RTP, 1_700_000_000.25, ("127.0.0.1", 5000), ("127.0.0.2", 6000))
    assert buffer.add(b"\x81\xc9" + bytes(6), 1_700_000_001.5, ("::1", 5001), ("::2", 6001))
    records = pcap.read(bytes(buffer))
    assert [ts for ts, _ in records] == [1_700_000_000.25, 1_700_000_001.5]
    assert pcap.udp_payload(records[0][1]) == (("127.0.0.1", 5000), ("127.0.0.2", 6000), RTP)
    assert pcap.udp_payload(records[1][1]) == (("::1", 5001), ("::2", 6001), b"\x81\xc9" + bytes(6))
    assert buffer.packets == 2 and buffer.refused == 0


def test_the_ipv4_header_checksum_is_right() -> None:
    packet = pcap.udp_packet(RTP, ("10.0.0.1", 1), ("10.0.0.2", 2))
    header = packet[:20]
    words = struct.unpack("!10H", header)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF  # a header with its checksum sums to all ones
    assert ipaddress.ip_address(header[12:16]) == ipaddress.ip_address("10.0.0.1")


def test_the_budget_is_kept_and_bad_packets_are_refused_and_counted() -> None:
    buffer = pcap.PcapBuffer(24 + 3 * (16 + 28 + len(RTP)))
    for _ in range(5):
        buffer.add(RTP, 1.0, ("127.0.0.1", 1), ("127.0.0.1", 2))
    assert buffer.packets == 3 and buffer.refused == 2 and len(bytes(buffer)) == buffer.max_bytes
    assert not buffer.add(RTP, 1.0, ("127.0.0.1", 1), ("::1", 2))  # two families
    assert not buffer.add(RTP, 1.0, ("not an address", 1), ("127.0.0.1", 2))
    assert not buffer.add(bytes(70_000), 1.0, ("127.0.0.1", 1), ("127.0.0.1", 2))
    assert buffer.refused == 5
    with pytest.raises(ValueError):
        pcap.PcapBuffer(10)


@pytest.mark.parametrize("data", [b"", b"\xd4\xc3\xb2\xa1" + bytes(20), pcap.global_header() + b"\x01\x02",
                                  pcap.global_header() + struct.pack("<IIII", 0, 0, 100, 100) + b"short"])
def test_the_reader_refuses_what_is_not_a_whole_file(data: bytes) -> None:
    with pytest.raises(ValueError):
        pcap.read(data)


def test_tcpdump_reads_it(tmp_path: Path) -> None:
    buffer = pcap.PcapBuffer(10_000)
    buffer.add(RTP, 1_700_000_000.0, ("127.0.0.1", 40000), ("127.0.0.5", 50000))
    buffer.add(RTP, 1_700_000_000.02, ("::1", 40000), ("::1", 50000))
    path = tmp_path / "capture.pcap"
    path.write_bytes(bytes(buffer))
    done = subprocess.run(["/usr/bin/tcpdump", "-nn", "-r", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert "IP 127.0.0.1.40000 > 127.0.0.5.50000: UDP, length 19" in lines[0]
    assert "IP6 ::1.40000 > ::1.50000: UDP, length 19" in lines[1]
