"""Server-added latency from a raw packet socket on `lo` (needs root; its own process).

SRTP leaves the RTP header in clear. The SFU rewrites SSRC and payload type but keeps the publisher's
sequence numbers and timestamps for the first source (zero offsets), so a publisher packet arriving at
the server and each viewer's copy leaving it share (sequence number, timestamp): the difference of their
kernel timestamps (SO_TIMESTAMPNS) is the time the packet spent in the server, socket queue included.
("frame" mode, for the MediaRelay server, which re-encodes: a video frame's last packet arriving to the
last packet of its re-encoded copy leaving, matched by RTP timestamp plus the relay's timestamp origin,
for the payload type the publisher's video has; see relay_server.py.) ("offset" mode, for Janus, which
rewrites sequence numbers and timestamps per viewer: offsets.py learns each copy's offsets, and every
packet of the source SSRCs passes the filter unsampled.)

The socket listens on every interface of the namespace: `lo`, and the veth pair Janus's media crosses.
A classic BPF filter in the kernel keeps only what is needed: one copy of each packet (PACKET_HOST, not
the PACKET_OUTGOING twin that `lo` and the veth end it left by show too), UDP, RTP version 2, sequence
number & mask == 0 (sampling the same packets in both directions), cut to 96 bytes. Outside a window a
filter drops everything.

Commands over the pipe: start {mask, inbound_ssrcs, video_ssrc, mode, ts_offset} -> {} (capture, so that
packets already in the server when the window opens can be matched); window {from_ns} -> {} (time the
copies leaving from then on: CLOCK_REALTIME, as the kernel stamps); stop -> the window's numbers; exit.
"""

from __future__ import annotations

import collections
import ctypes
import math
import os
import select
import socket
import struct
from multiprocessing.connection import Connection
from typing import Any

from .offsets import OffsetMatcher

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
SOL_PACKET = 263
PACKET_STATISTICS = 6
SNAP = 96
KEEP_NS = 5_000_000_000  # forget publisher packets this old


def _filter(mask: int | None, keep_ssrcs: tuple[int, ...] = ()) -> tuple[ctypes.Array[ctypes.c_char], bytes]:
    """A BPF program (and the buffer it points into, to keep alive): None drops everything. Packets of
    `keep_ssrcs` pass unsampled (where the server rewrites sequence numbers, a sampled copy's original
    is not the one with the same sampled number)."""
    if mask is None:
        program = [(0x06, 0, 0, 0)]  # ret #0
    else:
        keep = [(0x40, 0, 0, 16)] if keep_ssrcs else []  # ld [x+16]: RTP SSRC
        accept = 8 + len(keep) + len(keep_ssrcs) + 2
        drop = accept + 1
        keep += [(0x15, accept - (9 + i + 1), 0, ssrc) for i, ssrc in enumerate(keep_ssrcs)]  # jeq -> accept
        seq = len(keep) + 8
        program = [
            (0x20, 0, 0, 0xFFFFF004),     # ld pkttype
            (0x15, 0, drop - 2, 0),       # jeq PACKET_HOST
            (0x30, 0, 0, 9),              # ldb [9]: IP protocol
            (0x15, 0, drop - 4, 17),      # jeq UDP
            (0xB1, 0, 0, 0),              # ldx 4*([0]&0xf): IP header length
            (0x50, 0, 0, 8),              # ldb [x+8]: RTP first byte
            (0x54, 0, 0, 0xC0),           # and #0xc0
            (0x15, 0, drop - 8, 0x80),    # jeq version 2
            *keep,
            (0x48, 0, 0, 10),             # ldh [x+10]: RTP sequence number
            (0x45, drop - (seq + 2), 0, mask),  # jset mask -> drop
            (0x06, 0, 0, SNAP),           # accept: ret #SNAP
            (0x06, 0, 0, 0),              # drop: ret #0
        ]
    buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in program))
    return buf, struct.pack("HL", len(program), ctypes.addressof(buf))


def percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    rank = max(1, min(len(values), math.ceil(q / 100 * len(values))))
    return float(values[rank - 1])


class Sniffer:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        self._prog = self._attach(None)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        # Not bound: every interface (loopback, and the veth pair when Janus runs).
        self.sock.setblocking(False)
        self.active = False
        self.reset([], None, "packet")

    def _attach(self, mask: int | None, keep_ssrcs: tuple[int, ...] = ()) -> ctypes.Array[ctypes.c_char]:
        buf, fprog = _filter(mask, keep_ssrcs)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        return buf

    def reset(self, inbound_ssrcs: list[int], video_ssrc: int | None, mode: str, ts_offset: int = 0) -> None:
        self.inbound_ssrcs = set(inbound_ssrcs)
        self.video_ssrc = video_ssrc
        self.video_pt: int | None = None
        self.mode = mode
        self.ts_offset = ts_offset
        self.arrived: dict[tuple[int, int], int] = {}
        self.expiry: collections.deque[tuple[int, tuple[int, int]]] = collections.deque()
        self.sent: set[tuple[int, int, int]] = set()
        self.latencies: list[int] = []
        self.inbound = self.outbound = self.unmatched = 0
        self.count_from = 1 << 62  # no copy is timed before `window`
        self.matcher = OffsetMatcher()
        self.source_pts: set[int] = set()

    def start(self, mask: int, inbound_ssrcs: list[int], video_ssrc: int | None, mode: str,
              ts_offset: int = 0) -> None:
        self._prog = self._attach(mask, tuple(inbound_ssrcs) if mode == "offset" else ())
        self.drain(process=False)  # whatever passed the old filter
        self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)  # reading resets the counters
        self.reset(inbound_ssrcs, video_ssrc, mode, ts_offset)
        self.active = True

    def stop(self) -> dict[str, Any]:
        self._prog = self._attach(None)
        self.drain(process=True)
        self.active = False
        _packets, drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        lat = sorted(self.latencies)
        unmatched = self.matcher.unanchored if self.mode == "offset" else self.unmatched
        result = {"samples": len(lat), "inbound": self.inbound, "outbound": self.outbound,
                  "unmatched": unmatched, "kernel_drops": drops,
                  "p50_us": percentile(lat, 50) / 1000, "p99_us": percentile(lat, 99) / 1000,
                  "max_us": (lat[-1] / 1000) if lat else float("nan")}
        self.reset([], None, "packet")
        return result

    def drain(self, process: bool) -> None:
        while True:
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(SNAP, 64)
            except BlockingIOError:
                return
            if process:
                stamp = 0
                for _level, kind, raw in ancillary:
                    if kind == SO_TIMESTAMPNS:
                        seconds, nanos = struct.unpack("qq", raw[:16])
                        stamp = seconds * 1_000_000_000 + nanos
                self.packet(data, stamp)

    def packet(self, data: bytes, stamp: int) -> None:
        rtp = (data[0] & 0x0F) * 4 + 8
        if len(data) < rtp + 12:
            return
        second = data[rtp + 1]
        if 72 <= second & 0x7F <= 79:  # RTCP (packet types 200..207)
            return
        seq = (data[rtp + 2] << 8) | data[rtp + 3]
        timestamp = int.from_bytes(data[rtp + 4:rtp + 8], "big")
        ssrc = int.from_bytes(data[rtp + 8:rtp + 12], "big")
        if self.mode == "offset":
            self.offset_packet(second & 0x7F, seq, timestamp, ssrc, stamp)
            return
        if self.mode == "frame":  # match video frames by their last packet (marker bit)
            if not second & 0x80:
                return
            seq = 0
            if ssrc in self.inbound_ssrcs:
                if ssrc != self.video_ssrc:
                    return
                self.video_pt = second & 0x7F
            elif second & 0x7F != self.video_pt:  # audio (every Opus packet has the marker bit)
                return
            else:
                timestamp = (timestamp + self.ts_offset) & 0xFFFFFFFF
        if ssrc in self.inbound_ssrcs:
            self.inbound += 1
            key = (seq, timestamp)
            if key not in self.arrived:
                self.arrived[key] = stamp
                self.expiry.append((stamp, key))
                while self.expiry and self.expiry[0][0] < stamp - KEEP_NS:
                    self.arrived.pop(self.expiry.popleft()[1], None)
            return
        if stamp < self.count_from:
            return
        self.outbound += 1
        copy = (ssrc, seq, timestamp)
        if copy in self.sent:  # a retransmission of a copy already timed
            return
        self.sent.add(copy)
        arrived = self.arrived.get((seq, timestamp))
        if arrived is None:
            self.unmatched += 1
        else:
            self.latencies.append(stamp - arrived)


    def offset_packet(self, pt: int, seq: int, timestamp: int, ssrc: int, stamp: int) -> None:
        """A packet in "offset" mode: the source's feed the matcher, copies of its payload types (not
        retransmissions, which have their own) are timed once their SSRC's offsets are known."""
        if ssrc in self.inbound_ssrcs:
            self.inbound += 1
            self.source_pts.add(pt)
            self.matcher.source(pt, seq, timestamp, stamp)
            return
        if pt not in self.source_pts:
            return
        for departed, arrived in self.matcher.copy(ssrc, pt, seq, timestamp, stamp):
            if departed >= self.count_from:
                self.outbound += 1
                self.latencies.append(departed - arrived)


def main(conn: Connection, nice: int = 0) -> None:
    if nice:
        os.nice(nice)  # kernel timestamps do not depend on when we read them
    sniffer = Sniffer()
    while True:
        readable, _, _ = select.select([conn.fileno(), sniffer.sock.fileno()], [], [], 1.0)
        if sniffer.sock.fileno() in readable:
            sniffer.drain(process=sniffer.active)
        if conn.fileno() in readable:
            try:
                command = conn.recv()
            except EOFError:
                return
            op = command["op"]
            if op == "exit":
                conn.send({})
                return
            if op == "start":
                sniffer.start(**command["args"])
                conn.send({})
            elif op == "window":
                sniffer.drain(process=True)  # what the kernel stamped before from_ns is not timed
                sniffer.count_from = command["args"]["from_ns"]
                conn.send({})
            elif op == "stop":
                conn.send(sniffer.stop())
