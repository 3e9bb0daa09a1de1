"""The per-subscriber send path: one call per incoming packet forwards it to every output of a track.

This is the readable Python twin of media/_native/fanout.pyx; both have the same API, counters and
results (tests/test_fanout.py sends through both and compares what arrives). Per output: rewrite SSRC,
payload type, sequence number and timestamp (media.rtp.RtpRewriter), SRTP-protect for WebRTC peers, and
send without ever waiting: a full socket drops the packet and counts it, so a slow subscriber never
holds up the publisher or the others.

Routes of an output:
- UDP: a datagram socket and the peer's address, SRTP-protected with the peer's pylibsrtp session
  (WebRTC) or plain (RTSP over UDP). The socket is duplicated, so the route keeps it open even after its
  owner closed it and the number can never come to name another file.
- TCP: RTSP interleaved frames (RFC 2326 section 10.12) written whole with one send() while the
  connection's own buffer is empty; while it is not (`set_blocked`), `send_framed` takes the packet so
  bytes stay in order, and `write_raw` takes the tail of a frame the kernel took only part of.
- a callable that takes the rewritten packet and says whether it went (anything else: tests, a transport
  not connected yet);
- none: dropped and counted.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from .rtp import RtpRewriter

PREFIX = 4
TRAILER = 144  # libsrtp's SRTP_MAX_TRAILER_LEN: what protect may add
SLOT = 4096
MAX_PACKET_SIZE = SLOT - PREFIX - TRAILER


def _valid(packet: bytes) -> bool:
    return 12 <= len(packet) <= MAX_PACKET_SIZE and packet[0] >> 6 == 2


def _frame(channel: int, packet: bytes | bytearray) -> bytes:
    return bytes((0x24, channel, len(packet) >> 8 & 0xFF, len(packet) & 0xFF)) + packet


class Output:
    """One subscriber's outgoing track: its rewrite state, where its packets go, and what happened."""

    def __init__(self, rewriter: RtpRewriter, video: bool):
        if not isinstance(rewriter, RtpRewriter):
            raise TypeError(f"rewriter must be media.rtp.RtpRewriter, not {type(rewriter).__name__}")
        self.rewriter = rewriter
        self.video = bool(video)
        self.waiting_keyframe = self.video
        self.sent = 0
        self.dropped = 0
        self.skipped_waiting_keyframe = 0
        self.retransmitted = 0
        self.bytes_sent = 0
        self.route = "none"
        self._sock: socket.socket | None = None
        self._addr: Any = None
        self._srtp: Any = None
        self._channel = 0
        self._blocked = False
        self._call: Callable[[bytes], bool] | None = None
        self._write_raw: Callable[[bytes], Any] | None = None

    def __del__(self) -> None:
        if getattr(self, "_sock", None) is not None:
            self._sock.close()  # type: ignore[union-attr]

    def clear_route(self) -> None:
        """No route: packets are dropped (and counted) until one is set."""
        if self._sock is not None:
            self._sock.close()
        self._sock = self._addr = self._srtp = self._call = self._write_raw = None
        self.route = "none"

    def use_callable(self, send: Callable[[bytes], bool]) -> None:
        self.clear_route()
        self._call = send
        self.route = "callable"

    def use_udp(self, fd: int, family: int, address: Any, srtp_session: Any = None) -> None:
        if not 0 <= int(address[1]) <= 0xFFFF:
            raise ValueError(f"port out of range: {address[1]}")
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError(f"unsupported address family {family}")
        self.clear_route()
        self._sock = socket.socket(family, socket.SOCK_DGRAM, fileno=os.dup(fd))
        self._sock.setblocking(False)
        self._addr = tuple(address)
        self._srtp = srtp_session
        self.route = "udp"

    def use_tcp(self, fd: int, channel: int, send_framed: Callable[[bytes], bool],
                write_raw: Callable[[bytes], Any]) -> None:
        if not 0 <= channel <= 255:
            raise ValueError(f"channel out of range: {channel}")
        self.clear_route()
        self._sock = socket.socket(fileno=os.dup(fd))
        self._sock.setblocking(False)
        self._channel = channel
        self._call = send_framed
        self._write_raw = write_raw
        self.route = "tcp"

    def set_blocked(self, blocked: bool) -> None:
        self._blocked = bool(blocked)

    # -- sending -----------------------------------------------------------------------------------

    def _emit(self, buf: bytearray) -> bool | None:
        """Send one rewritten packet by the native routes: True sent, False dropped, None when Python
        must take it (a callable, a blocked TCP connection)."""
        if self.route == "udp":
            assert self._sock is not None
            data = bytes(buf)
            if self._srtp is not None:
                try:
                    data = self._srtp.protect(data)
                except Exception:  # pylibsrtp.Error, or larger than its buffer
                    return False
            try:
                self._sock.sendto(data, self._addr)
            except OSError:  # full (EAGAIN) or gone
                return False
            self.bytes_sent += len(data)
            return True
        if self.route == "tcp" and not self._blocked:
            assert self._sock is not None
            frame = _frame(self._channel, buf)
            try:
                written = self._sock.send(frame, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except OSError:
                return False
            if written <= 0:
                return False
            self.bytes_sent += written
            if written < len(frame) and self._write_raw is not None:
                self._write_raw(frame[written:])  # the rest must follow before anything else
            return True
        if self.route in ("callable", "tcp"):
            return None
        return False

    def _call_send(self, buf: bytearray) -> bool:
        if self._call is not None and self._call(bytes(buf)):
            self.bytes_sent += len(buf)
            return True
        return False

    def send(self, packet: bytes, now: float) -> bool:
        """One packet to this output alone, rewritten with (and advancing) its state; the keyframe gate
        is the caller's. True when it went out; counted as sent or dropped."""
        if not _valid(packet):
            self.dropped += 1
            return False
        buf = bytearray(packet)
        self.rewriter.rewrite(buf, now)
        done = self._emit(buf)
        if done is None:
            done = self._call_send(buf)
        if done:
            self.sent += 1
        else:
            self.dropped += 1
        return done

    def retransmit(self, packet: bytes) -> bool:
        """A cached packet again with the offsets in force, the rewrite state unchanged."""
        if not _valid(packet):
            return False
        rw = self.rewriter
        buf = bytearray(packet)
        seq = (buf[2] << 8 | buf[3]) + rw.seq_offset
        ts = int.from_bytes(buf[4:8], "big") + rw.ts_offset
        buf[1] = (buf[1] & 0x80) | rw.out_payload_type
        buf[2:4] = (seq & 0xFFFF).to_bytes(2, "big")
        buf[4:8] = (ts & 0xFFFFFFFF).to_bytes(4, "big")
        buf[8:12] = rw.out_ssrc.to_bytes(4, "big")
        done = self._emit(buf)
        if done is None:
            done = self._call_send(buf)
        if done:
            self.retransmitted += 1
        return done


class Fanout:
    """The outputs of one published track, forwarded to by one `forward` call per incoming packet."""

    def __init__(self) -> None:
        self._outputs: list[Output] = []
        self.oversized = 0
        self.errors = 0  # exceptions raised by callables, counted

    def __len__(self) -> int:
        return len(self._outputs)

    @property
    def outputs(self) -> list[Output]:
        return list(self._outputs)

    def add(self, output: Output) -> None:
        if not isinstance(output, Output):
            raise TypeError(f"output must be media.fanout.Output, not {type(output).__name__}")
        if output not in self._outputs:
            self._outputs.append(output)

    def remove(self, output: Output) -> None:
        if output in self._outputs:
            self._outputs.remove(output)

    def forward(self, packet: bytes, keyframe: bool, now: float) -> int:
        """Forward one received packet to every output; returns how many took it. An output waiting for
        a keyframe skips (counted) until `keyframe` is set; a full socket or an SRTP failure drops
        (counted)."""
        if not isinstance(packet, bytes):
            raise TypeError(f"packet must be bytes, not {type(packet).__name__}")
        now = float(now)
        outputs = list(self._outputs)
        if not outputs:
            return 0
        if not _valid(packet):
            self.oversized += 1
            for out in outputs:
                out.dropped += 1
            return 0
        sent = 0
        for out in outputs:
            if out.waiting_keyframe:
                if not keyframe:
                    out.skipped_waiting_keyframe += 1
                    continue
                out.waiting_keyframe = False
            if out.route == "none":
                out.dropped += 1
                continue
            buf = bytearray(packet)
            out.rewriter.rewrite(buf, now)
            try:
                done = out._emit(buf)
                if done is None:
                    done = out._call_send(buf)
            except Exception:
                self.errors += 1
                done = False
            if done:
                out.sent += 1
                sent += 1
            else:
                out.dropped += 1
        return sent
