"""The per-subscriber send path, native (media/_native/fanout.pyx) and its twin (media/fanout.py): the
same packets through both, over real sockets, give the same bytes on the wire and the same counters."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pylibsrtp
import pytest

from media import fanout as twin_fanout
from media import native
from media import rtp as twin_rtp

NATIVE_FANOUT = native.fanout_module()
NATIVE_RTP = native.rtp_module()
KEY = bytes(range(30))  # AES-128-CM key and salt


def packet(seq: int, ts: int, ssrc: int = 0x1111, size: int = 200, pt: int = 96) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + bytes([seq & 0xFF]) * size


def make(impl: str, ssrc: int = 0xAAAA, pt: int = 100, video: bool = False) -> tuple[ModuleType, Any]:
    fanout, rtp = (NATIVE_FANOUT, NATIVE_RTP) if impl == "native" else (twin_fanout, twin_rtp)
    return fanout, fanout.Output(rtp.RtpRewriter(ssrc, pt, 90000), video)


def tx_session() -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                              srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    policy.allow_repeat_tx = True
    return pylibsrtp.Session(policy)


def rx_session() -> pylibsrtp.Session:
    return pylibsrtp.Session(pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                                              srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    yield sock
    sock.close()


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(65536))
    except BlockingIOError:
        pass
    return out


def run_callable(impl: str) -> tuple[list[bytes], tuple[int, ...]]:
    """A stream with a keyframe gate, a source switch and bad packets, through a callable route."""
    fanout, out = make(impl, video=True)
    got: list[bytes] = []
    out.use_callable(lambda data: got.append(data) is None)
    fan = fanout.Fanout()
    fan.add(out)
    now = 10.0
    for i in range(40):
        now += 0.01
        ssrc = 0x1111 if i < 20 else 0x2222  # the source restarts with another SSRC and numbering
        seq = 100 + i if i < 20 else 5000 + i
        fan.forward(packet(seq, 3000 * i, ssrc), keyframe=i in (3, 25), now=now)
    fan.forward(b"\x80" * 5, keyframe=True, now=now)  # truncated: dropped and counted
    fan.forward(packet(1, 1, size=5000), keyframe=True, now=now)  # larger than a slot
    assert out.retransmit(packet(110, 3000 * 10))  # with the offsets in force, state unchanged
    return got, (out.sent, out.dropped, out.skipped_waiting_keyframe, out.retransmitted, fan.oversized)


def test_native_and_twin_agree_through_a_callable() -> None:
    native_run, twin_run = run_callable("native"), run_callable("twin")
    assert native_run == twin_run
    got, counters = native_run
    assert counters == (37, 2, 3, 1, 2)  # 3 skipped before the keyframe, 37 sent
    headers = [twin_rtp.parse_rtp(p) for p in got]
    assert {h.ssrc for h in headers} == {0xAAAA} and {h.payload_type for h in headers} == {100}
    seqs = [h.sequence_number for h in headers[:-1]]
    assert seqs == list(range(seqs[0], seqs[0] + 37))  # continuous across the source switch


@pytest.mark.parametrize("srtp", [False, True])
def test_native_and_twin_send_the_same_datagrams(receiver: socket.socket, sender: socket.socket,
                                                 srtp: bool) -> None:
    wire: dict[str, list[bytes]] = {}
    for impl in ("native", "twin"):
        fanout, out = make(impl)
        out.use_udp(sender.fileno(), socket.AF_INET, receiver.getsockname(), tx_session() if srtp else None)
        assert out.route == "udp"
        fan = fanout.Fanout()
        fan.add(out)
        for i in range(20):
            assert fan.forward(packet(1000 + i, 960 * i), keyframe=False, now=i * 0.02) == 1
        assert out.retransmit(packet(1005, 960 * 5))
        wire[impl] = [receiver.recv(65536) for _ in range(21)]
        assert (out.sent, out.dropped, out.retransmitted) == (20, 0, 1)
        assert out.bytes_sent == sum(len(d) for d in wire[impl])
    assert wire["native"] == wire["twin"]
    data = wire["native"]
    if srtp:
        rx = rx_session()
        data = [rx.unprotect(d) for d in data[:-1]] + [rx_session().unprotect(data[-1])]
    assert [twin_rtp.parse_rtp(d).sequence_number for d in data] == [*range(1000, 1020), 1005]
    assert all(d[12:] == packet(1000 + i, 0)[12:] for i, d in enumerate(data[:20]))


@pytest.mark.parametrize("impl", ["native", "twin"])
def test_one_socket_serves_many_outputs_and_a_full_one_drops_alone(impl: str, sender: socket.socket) -> None:
    fanout = make(impl)[0]
    fan = fanout.Fanout()
    receivers = []
    outputs = []
    for k in range(5):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        receivers.append(sock)
        _, out = make(impl, ssrc=0x100 + k)
        out.use_udp(sender.fileno(), socket.AF_INET, sock.getsockname())  # RTSP: one server socket
        fan.add(out)
        outputs.append(out)
    # One output's route is gone (a closed viewer): it drops, the others do not notice.
    outputs[2].clear_route()
    for i in range(50):
        fan.forward(packet(i, 960 * i), keyframe=False, now=i * 0.02)
    for k, (sock, out) in enumerate(zip(receivers, outputs, strict=True)):
        got = drain(sock)
        if k == 2:
            assert (len(got), out.sent, out.dropped) == (0, 0, 50)
        else:
            assert len(got) == out.sent == 50 and {twin_rtp.parse_rtp(d).ssrc for d in got} == {0x100 + k}
        sock.close()


@pytest.mark.parametrize("impl", ["native", "twin"])
def test_a_receiver_that_does_not_read_costs_drops_not_waiting(impl: str, sender: socket.socket) -> None:
    slow = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.bind(("127.0.0.1", 0))
    small = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    small.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    small.bind(("127.0.0.1", 0))
    fanout, out = make(impl)
    out.use_udp(small.fileno(), socket.AF_INET, slow.getsockname())
    fan = fanout.Fanout()
    fan.add(out)
    for i in range(2000):
        fan.forward(packet(i, 960 * i, size=1200), keyframe=False, now=i * 0.02)
    # Loopback delivers into the receiver's buffer or drops there: what the sender could not hand to
    # the kernel is counted here; nothing ever blocked.
    assert out.sent + out.dropped == 2000
    assert len(drain(slow)) <= out.sent
    slow.close()
    small.close()


@pytest.mark.parametrize("impl", ["native", "twin"])
def test_interleaved_frames_stay_whole_when_the_kernel_takes_part_of_one(impl: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    theirs = socket.socket()
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # small windows: the kernel fills up
    theirs.connect(listener.getsockname())
    ours, _ = listener.accept()
    listener.close()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.setblocking(False)
    held: list[bytes] = []  # what "asyncio" holds: the tails, then frames while blocked
    fanout, out = make(impl)

    def send_framed(data: bytes) -> bool:
        held.append(bytes((0x24, 0, len(data) >> 8, len(data) & 0xFF)) + data)
        return True

    def write_raw(tail: bytes) -> None:
        held.append(tail)
        out.set_blocked(True)  # what pause_writing does

    out.use_tcp(ours.fileno(), 0, send_framed, write_raw)
    fan = fanout.Fanout()
    fan.add(out)
    for i in range(300):  # frames larger than what the kernel has room for: it takes part of one
        fan.forward(packet(i, 960 * i, size=3900), keyframe=False, now=i * 0.02)
    assert held, "the socket never filled: the test proves nothing"
    stream = b""
    theirs.setblocking(False)
    try:
        while chunk := theirs.recv(1 << 20):
            stream += chunk
    except BlockingIOError:
        pass
    stream += b"".join(held)
    seqs = []
    while stream:
        assert stream[0] == 0x24 and stream[1] == 0
        size = stream[2] << 8 | stream[3]
        seqs.append(twin_rtp.parse_rtp(stream[4:4 + size]).sequence_number)
        stream = stream[4 + size:]
    assert out.dropped == 0 and seqs == list(range(300))
    ours.close()
    theirs.close()


@pytest.mark.parametrize("impl", ["native", "twin"])
def test_a_callable_that_raises_is_counted_and_the_others_get_the_packet(impl: str) -> None:
    fanout = make(impl)[0]
    fan = fanout.Fanout()
    got: list[bytes] = []
    _, bad = make(impl)

    def boom(data: bytes) -> bool:
        raise RuntimeError("transport gone")

    bad.use_callable(boom)
    _, good = make(impl)
    good.use_callable(lambda data: got.append(data) is None)
    fan.add(bad)
    fan.add(good)
    assert fan.forward(packet(1, 1), keyframe=False, now=0.0) == 1
    assert (len(got), bad.dropped, fan.errors) == (1, 1, 1)


def test_the_native_route_holds_its_own_socket() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2)
    fanout, out = make("native")
    out.use_udp(sock.fileno(), socket.AF_INET, receiver.getsockname())
    sock.close()  # the owner closes it; another file may now take its number
    other = os.open(os.devnull, os.O_WRONLY)
    fan = fanout.Fanout()
    fan.add(out)
    assert fan.forward(packet(1, 1), keyframe=False, now=0.0) == 1
    assert twin_rtp.parse_rtp(receiver.recv(2048)).sequence_number == 1
    os.close(other)
    receiver.close()


@pytest.mark.parametrize("impl", ["native", "twin"])
def test_bad_routes_are_refused(impl: str) -> None:
    _, out = make(impl)
    with pytest.raises(ValueError, match="port out of range"):
        out.use_udp(0, socket.AF_INET, ("127.0.0.1", 70000))
    with pytest.raises(ValueError, match="unsupported address family"):
        out.use_udp(0, socket.AF_UNIX, ("x", 1))
    with pytest.raises(ValueError, match="channel out of range"):
        out.use_tcp(0, 256, lambda d: True, lambda d: None)
    assert out.route == "none"
