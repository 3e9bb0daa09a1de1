"""The routing core (media/stream.py) as one layer: real packets, real native and twin modules, and
fake send functions standing in for the transports."""

from __future__ import annotations

import struct
from types import ModuleType

import pytest

from media import native
from media.stream import Codec, PublishedTrack, StreamNameInUse, StreamRegistry, TrackSink


@pytest.fixture(params=["native", "twin"])
def mods(request: pytest.FixtureRequest) -> tuple[ModuleType, ModuleType]:
    python_core = request.param == "twin"
    return native.rtp_module(python_core), native.track_module(python_core)


def vp8(seq: int, ts: int, keyframe: bool, ssrc: int = 0x1111, pt: int = 96) -> bytes:
    header = struct.pack("!BBHII", 0x80, 0x80 | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    descriptor = bytes([0x10])  # S=1, PID=0
    if keyframe:  # VP8 keyframe header: P=0, then the start code and a size
        payload = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]) + b"\x00" * 20
    else:
        payload = bytes([0x11, 0x02, 0x00]) + b"\x00" * 20
    return header + descriptor + payload


class Wire:
    """A fake transport: records what a sink sends; `full` makes it refuse like a full buffer."""

    def __init__(self) -> None:
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []
        self.full = False

    def send_rtp(self, data: bytes) -> bool:
        if self.full:
            return False
        self.rtp.append(data)
        return True

    def send_rtcp(self, data: bytes) -> bool:
        self.rtcp.append(data)
        return True


def make_track(mods: tuple[ModuleType, ModuleType]) -> tuple[PublishedTrack, list[int]]:
    rtp, track = mods
    requests: list[int] = []
    codec = Codec("video", "VP8", 90000, 96)
    return PublishedTrack(codec, track.IngestTrack("VP8", 90000), track, requests.append), requests


def make_sink(mods: tuple[ModuleType, ModuleType], wire: Wire, ssrc: int = 0xAAAA, pt: int = 100) -> TrackSink:
    return TrackSink(mods[0], ssrc, pt, 90000, video=True, send_rtp=wire.send_rtp, send_rtcp=wire.send_rtcp)


def header(mods: tuple[ModuleType, ModuleType], data: bytes):  # type: ignore[no-untyped-def]
    return mods[0].parse_rtp(data)


def test_forwarding_rewrites_ssrc_and_payload_type(mods) -> None:  # type: ignore[no-untyped-def]
    track, _ = make_track(mods)
    wire = Wire()
    track.attach(make_sink(mods, wire), now=0.0)
    for i in range(5):
        track.on_rtp(vp8(1000 + i, 3000 * i, keyframe=i == 0), now=i / 30)
    out = [header(mods, p) for p in wire.rtp]
    assert [(h.ssrc, h.payload_type) for h in out] == [(0xAAAA, 100)] * 5
    assert [h.sequence_number for h in out] == [1000, 1001, 1002, 1003, 1004]
    assert [p[12:] for p in wire.rtp] == [vp8(1000 + i, 0, i == 0)[12:] for i in range(5)]  # payload untouched


def test_a_new_viewer_waits_for_a_keyframe_and_asks_for_one(mods) -> None:  # type: ignore[no-untyped-def]
    track, requests = make_track(mods)
    track.on_rtp(vp8(1, 0, keyframe=False), now=0.0)  # no keyframe yet: nothing cached
    wire = Wire()
    sink = make_sink(mods, wire)
    track.attach(sink, now=0.1)
    assert requests == [0x1111]  # a PLI goes to the publisher's SSRC
    track.on_rtp(vp8(2, 3000, keyframe=False), now=0.2)
    assert wire.rtp == [] and sink.stats.skipped_waiting_keyframe == 1
    track.on_rtp(vp8(3, 6000, keyframe=True), now=0.3)
    track.on_rtp(vp8(4, 9000, keyframe=False), now=0.4)
    assert [header(mods, p).sequence_number for p in wire.rtp] == [3, 4]


def test_a_late_joiner_starts_from_the_cached_gop(mods) -> None:  # type: ignore[no-untyped-def]
    track, _ = make_track(mods)
    for i in range(10):
        track.on_rtp(vp8(100 + i, 3000 * i, keyframe=i in (0, 6)), now=i / 30)
    wire = Wire()
    track.attach(make_sink(mods, wire), now=1.0)
    assert [header(mods, p).sequence_number for p in wire.rtp] == [106, 107, 108, 109]  # last keyframe on


def test_keyframe_requests_are_rate_limited(mods) -> None:  # type: ignore[no-untyped-def]
    track, requests = make_track(mods)
    track.on_rtp(vp8(1, 0, keyframe=True), now=0.0)
    for i in range(50):  # a storm of PLI/FIR from viewers
        track.request_keyframe(now=0.01 * i)
    assert len(requests) == 1
    track.request_keyframe(now=1.5)
    assert len(requests) == 2


def test_a_request_inside_the_rate_limit_goes_out_when_the_limit_is_over(mods) -> None:  # type: ignore[no-untyped-def]
    track, requests = make_track(mods)
    track.on_rtp(vp8(1, 0, keyframe=True), now=0.0)
    track.request_keyframe(now=0.1)  # a viewer joins
    track.request_keyframe(now=0.2)  # another viewer's PLI, inside the limit: held, not lost
    for i in range(2, 12):
        track.on_rtp(vp8(i, 3000 * i, keyframe=False), now=0.1 * i)
    assert len(requests) == 2  # sent with the first packet after the limit (at 1.1 s), once
    assert track.keyframe_requests == 2


def test_a_held_request_is_dropped_when_a_keyframe_comes_first(mods) -> None:  # type: ignore[no-untyped-def]
    track, requests = make_track(mods)
    track.on_rtp(vp8(1, 0, keyframe=True), now=0.0)
    track.request_keyframe(now=0.1)
    track.request_keyframe(now=0.2)  # held
    track.on_rtp(vp8(2, 3000, keyframe=True), now=0.3)  # the answer to the first: the second has it too
    for i in range(3, 20):
        track.on_rtp(vp8(i, 3000 * i, keyframe=False), now=0.1 * i)
    assert len(requests) == 1


def test_nack_is_answered_from_the_cache_with_the_viewers_numbering(mods) -> None:  # type: ignore[no-untyped-def]
    rtp, _ = mods
    track, requests = make_track(mods)
    wire = Wire()
    sink = make_sink(mods, wire)
    track.on_rtp(vp8(500, 0, keyframe=True), now=0.0)
    track.attach(sink, now=0.0)
    for i in range(1, 5):
        track.on_rtp(vp8(500 + i, 3000 * i, keyframe=False), now=i / 30)
    sent = {header(mods, p).sequence_number: p for p in wire.rtp}
    wire.rtp.clear()
    asked = len(requests)  # attaching asked for one keyframe
    lost = sorted(sent)[1:3]
    assert track.nack(sink, lost) == 2
    assert {header(mods, p).sequence_number: p for p in wire.rtp} == {s: sent[s] for s in lost}
    assert sink.stats.retransmitted == 2
    assert track.nack(sink, [(lost[0] + 30000) & 0xFFFF]) == 0  # never sent: nothing to resend
    assert len(requests) == asked  # the publisher was not bothered by the NACKs


def test_a_slow_viewer_drops_and_never_holds_up_the_others(mods) -> None:  # type: ignore[no-untyped-def]
    track, _ = make_track(mods)
    slow, fast = Wire(), Wire()
    slow_sink, fast_sink = make_sink(mods, slow, ssrc=1), make_sink(mods, fast, ssrc=2)
    track.on_rtp(vp8(0, 0, keyframe=True), now=0.0)
    track.attach(slow_sink, now=0.0)
    track.attach(fast_sink, now=0.0)
    slow.full = True
    for i in range(1, 101):
        track.on_rtp(vp8(i, 3000 * i, keyframe=False), now=i / 30)
    assert slow_sink.stats.dropped == 100
    assert [header(mods, p).sequence_number for p in slow.rtp] == [0]  # only what went before it filled
    assert fast_sink.stats.sent == 101 and fast_sink.stats.dropped == 0
    slow.full = False
    track.on_rtp(vp8(101, 303000, keyframe=False), now=4.0)
    assert header(mods, slow.rtp[-1]).sequence_number == 101  # it goes on where the stream is


def test_sender_reports_are_moved_onto_each_viewers_timeline(mods) -> None:  # type: ignore[no-untyped-def]
    rtp, _ = mods
    track, _ = make_track(mods)
    wire = Wire()
    sink = make_sink(mods, wire)
    track.on_rtp(vp8(0, 90000, keyframe=True), now=0.0)
    track.attach(sink, now=0.0)
    track.on_rtp(vp8(1, 93000, keyframe=False), now=0.033)
    track.on_sender_report(0x1234567800000000, 93000, now=0.04)
    assert native.is_twin(sink.rtcp) == native.is_twin(rtp)  # the sink's RTCP is of its RTP's kind
    (report,) = native.rtcp_module(native.is_twin(rtp)).parse_rtcp(wire.rtcp[-1])
    assert report.ssrc == 0xAAAA
    assert report.ntp_timestamp == 0x1234567800000000
    assert report.rtp_timestamp == (93000 + sink.rewriter.ts_offset) & 0xFFFFFFFF
    assert report.packet_count == 2


def test_duplicates_and_junk_are_not_forwarded(mods) -> None:  # type: ignore[no-untyped-def]
    track, _ = make_track(mods)
    wire = Wire()
    track.on_rtp(vp8(0, 0, keyframe=True), now=0.0)
    track.attach(make_sink(mods, wire), now=0.0)
    track.on_rtp(vp8(1, 3000, keyframe=False), now=0.03)
    track.on_rtp(vp8(1, 3000, keyframe=False), now=0.04)  # again
    track.on_rtp(b"\x80\x60\x00", now=0.05)  # truncated
    assert len(wire.rtp) == 2 and track.junk == 1


def test_stream_names_are_unique_while_published() -> None:
    registry = StreamRegistry()
    stream = registry.claim("cam")
    with pytest.raises(StreamNameInUse):
        registry.claim("cam")
    registry.release(stream)
    assert stream.closed and registry.claim("cam") is not stream


def test_nack_after_a_source_restart_maps_through_the_offset(mods) -> None:  # type: ignore[no-untyped-def]
    """The publisher restarts (new SSRC, new numbering): the viewer's numbering stays continuous, and a
    NACK in the viewer's numbering finds the right packet of the new source."""
    track, _ = make_track(mods)
    wire = Wire()
    sink = make_sink(mods, wire)
    track.on_rtp(vp8(10, 0, keyframe=True), now=0.0)
    track.attach(sink, now=0.0)
    for i in range(1, 4):
        track.on_rtp(vp8(10 + i, 3000 * i, keyframe=False), now=i / 30)
    for i in range(4):
        track.on_rtp(vp8(40000 + i, 777000 + 3000 * i, keyframe=i == 0, ssrc=0x2222), now=1 + i / 30)
    numbers = [header(mods, p).sequence_number for p in wire.rtp]
    assert numbers == list(range(10, 18))  # continuous across the restart
    assert sink.rewriter.seq_offset != 0
    by_number = {header(mods, p).sequence_number: p for p in wire.rtp}
    wire.rtp.clear()
    assert track.nack(sink, [16]) == 1
    assert wire.rtp == [by_number[16]]
