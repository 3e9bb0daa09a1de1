"""The RTP reader base (media/reader.py) that WebRTC viewers and RTSP clients share: attach and detach,
and the RTCP a receiver sends back (NACK answered, PLI/FIR turned into keyframe requests)."""

from __future__ import annotations

from types import ModuleType

import pytest

from media import native
from media.reader import RtpReader
from media.stream import Codec, PublishedTrack, Stream, TrackSink
from tests.test_stream_routing import Wire, vp8


@pytest.fixture(params=["native", "twin"])
def mods(request: pytest.FixtureRequest) -> tuple[ModuleType, ModuleType, ModuleType]:
    python_core = request.param == "twin"
    return native.rtp_module(python_core), native.rtcp_module(python_core), native.track_module(python_core)

VIDEO_SSRC = 0xB1DE0
AUDIO_SSRC = 0xA0D10


def reader_of_two_tracks(core: tuple[ModuleType, ModuleType, ModuleType]) -> tuple[RtpReader, Wire, list[int]]:
    rtp, rtcp, track_mod = core
    stream = Stream("cam")
    requests: list[int] = []
    video = PublishedTrack(Codec("video", "VP8", 90000, 96), track_mod.IngestTrack("VP8", 90000), track_mod,
                           requests.append)
    audio = PublishedTrack(Codec("audio", "opus", 48000, 111), track_mod.IngestTrack("opus", 48000), track_mod,
                           requests.append)
    stream.tracks += [video, audio]
    reader = RtpReader(stream, rtcp)
    wire = Wire()
    reader.add_sink(video, TrackSink(rtp, VIDEO_SSRC, 100, 90000, True, wire.send_rtp, wire.send_rtcp), 0.0)
    reader.add_sink(audio, TrackSink(rtp, AUDIO_SSRC, 111, 48000, False, wire.send_rtp, wire.send_rtcp), 0.0)
    return reader, wire, requests


def test_attach_forwards_and_detach_starts_over_at_a_keyframe(mods) -> None:  # type: ignore[no-untyped-def]
    reader, wire, _requests = reader_of_two_tracks(mods)
    video = reader.stream.tracks[0]
    assert reader.attach(now=0.0) and not reader.attach(now=0.0)
    video.on_rtp(vp8(1, 0, keyframe=True), now=0.1)
    video.on_rtp(vp8(2, 3000, keyframe=False), now=0.2)
    assert len(wire.rtp) == 2
    reader.detach()
    video.on_rtp(vp8(3, 6000, keyframe=False), now=0.3)
    assert len(wire.rtp) == 2  # detached
    reader.attach(now=0.4)  # a PLAY after PAUSE: the cached GOP first, then on from there
    assert len(wire.rtp) == 5
    reader.stream.end()
    reader.detach()
    assert not reader.attach(now=0.5)  # the stream is over


def test_nack_pli_fir_and_junk(mods) -> None:  # type: ignore[no-untyped-def]
    rtcp = mods[1]
    reader, wire, requests = reader_of_two_tracks(mods)
    video = reader.stream.tracks[0]
    reader.attach(now=0.0)
    for i in range(5):
        video.on_rtp(vp8(10 + i, 3000 * i, keyframe=i == 0), now=0.1 * i)
    requests.clear()
    sent = len(wire.rtp)
    reader.on_rtcp(rtcp.build_nack(1, VIDEO_SSRC, [12, 13]), now=2.0)
    assert reader.nacks_answered == 2 and len(wire.rtp) == sent + 2
    reader.on_rtcp(rtcp.build_nack(1, 0xDEAD, [12]), now=2.0)  # not ours: nothing
    assert reader.nacks_answered == 2
    reader.on_rtcp(rtcp.build_pli(1, AUDIO_SSRC), now=2.0)  # a PLI about audio asks for no video keyframe
    assert requests == []
    reader.on_rtcp(rtcp.build_pli(1, VIDEO_SSRC), now=2.0)
    assert len(requests) == 1
    reader.on_rtcp(rtcp.build_pli(1, 0), now=3.5)  # names none of ours: every video track
    reader.on_rtcp(rtcp.build_fir(1, VIDEO_SSRC, 1), now=5.0)
    assert len(requests) == 3
    reader.on_rtcp(b"\x00garbage", now=5.0)
    assert reader.rtcp_junk == 1 and reader.last_rtcp_at == 5.0
    assert reader.totals().retransmitted == 2
