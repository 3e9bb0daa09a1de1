"""media.rtmp_ingest without sockets: FLV bodies as an RTMP publisher sends them (H.264 in AVCC with its
decoder configuration, AAC with its AudioSpecificConfig) become a stream's RTP tracks, read back the way
every frame reader reads them (the depacketizer's frames), decoded and checked: the pictures in order
with their numbers, SPS/PPS before every keyframe, RTP timestamps from dts + composition time, AAC
turned into Opus that decodes to the tone, and sender reports on both tracks."""

from __future__ import annotations

import asyncio
import struct

import av
import numpy as np
import pytest

from media import native
from media.encoded import EncodedFrame
from media.rtmp.flv import FlvError, UnsupportedCodec
from media.rtmp_ingest import RtmpIngest
from media.sfu import MediaCore
from media.stream import Stream
from media.transcode import Settings
from tests.support.media_gen import encode_video, numbered_picture, read_frame_number, video_encoder
from tests.support.rtmp_client import audio_body, avc_config

FPS = 30


def annexb_nals(access_unit: bytes) -> list[bytes]:
    return [n.lstrip(b"\x00") for n in access_unit.split(b"\x00\x00\x01") if n.strip(b"\x00")]


def avcc(nals: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(n)) + n for n in nals)


def flv_video(keyframe: bool, packet_type: int, cts_ms: int, payload: bytes) -> bytes:
    return bytes(((0x10 if keyframe else 0x20) | 7, packet_type)) + cts_ms.to_bytes(3, "big", signed=True) + payload


def aac_frames(seconds: float) -> tuple[bytes, list[bytes]]:
    encoder = av.CodecContext.create("aac", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 44100, "stereo", "fltp"
    encoder.open()
    out = []
    t = np.arange(int(seconds * 44100)) / 44100
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, len(tone) - 1024, 1024):
        frame = av.AudioFrame.from_ndarray(np.stack([tone[start:start + 1024]] * 2), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 44100, start
        out += [bytes(p) for p in encoder.encode(frame)]
    return bytes(encoder.extradata), out


def new_ingest(transcode: bool = True) -> tuple[RtmpIngest, MediaCore]:
    core = MediaCore(native.rtp_module(), native.rtcp_module(), native.track_module())
    stream = Stream("rtmp")
    stream.depacketize = native.depacketize_module()
    settings = Settings("veryfast", 2.0, 30, 0.5, 1) if transcode else None
    return RtmpIngest(stream, core, settings, asyncio.get_running_loop()), core


async def test_h264_frames_become_rtp_that_decodes_in_order() -> None:
    samples = encode_video("H264", 320, 240, frames=60, keyframe_interval=30)
    ingest, core = new_ingest()
    ingest.on_metadata({"videocodecid": 7.0})
    first = annexb_nals(samples[0].data)
    sps = [n for n in first if n[0] & 0x1F == 7]
    pps = [n for n in first if n[0] & 0x1F == 8]
    ingest.on_media("video", 0, flv_video(True, 0, 0, avc_config(sps[0], pps[0])), core.now())
    got: list[EncodedFrame] = []
    rtp_timestamps: list[int] = []
    for k, sample in enumerate(samples):
        if k == 1:  # the track exists from the first keyframe on
            track = ingest.stream.track("video")
            assert track is not None and track.codec.name == "H264" and ingest.video_transcoder is None
            assert track.codec.parameters["profile-level-id"] == sps[0][1:4].hex()
            ingest.stream.frames("video", core.now()).subscribe(got.append)
            track.listeners.append(lambda packet, flags, now: rtp_timestamps.append(
                struct.unpack_from(">I", packet, 4)[0]))
        # as RTMP carries them: no SPS/PPS in the frames (they came in the configuration), dts + cts
        nals = [n for n in annexb_nals(sample.data) if n[0] & 0x1F not in (7, 8)]
        ingest.on_media("video", k * 1000 // FPS, flv_video(sample.keyframe, 1, 0, avcc(nals)), core.now())
    assert ingest.ready(core.now())
    decoder = av.CodecContext.create("h264", "r")
    numbers = [read_frame_number(p) for f in got for p in decoder.decode(av.Packet(f.data))]
    numbers += [read_frame_number(p) for p in decoder.decode(None)]
    assert numbers == list(range(30, 60))  # a frame reader starts at a keyframe
    assert [f.keyframe for f in got] == [k % 30 == 0 for k in range(30, 60)]
    for frame in (f for f in got if f.keyframe):  # SPS and PPS put back before every keyframe
        assert [n[0] & 0x1F for n in annexb_nals(frame.data)][:2] == [7, 8]
    base = rtp_timestamps[0]
    assert sorted({(ts - base) & 0xFFFFFFFF for ts in rtp_timestamps}) == \
        [(k * 1000 // FPS - 1000 // FPS) * 90 for k in range(1, 60)]
    assert track.ingest.keyframes == 2 and ingest.stats.video_frames == 60
    ingest.close()


async def test_aac_becomes_opus_through_the_transcoder() -> None:
    config, frames = aac_frames(2.0)
    ingest, core = new_ingest()
    ingest.on_media("audio", 0, audio_body("config")[:2] + config, core.now())
    track = ingest.stream.track("audio")
    assert track is not None and track.codec.name == "opus" and track.codec.clock_rate == 48000
    got: list[EncodedFrame] = []
    ingest.stream.frames("audio", core.now()).subscribe(got.append)
    for k, frame in enumerate(frames):
        ingest.on_media("audio", k * 1024 * 1000 // 44100, bytes((0xAF, 1)) + frame, core.now())
        await asyncio.sleep(0)
    async with asyncio.timeout(15):
        while len(got) < 80:
            await asyncio.sleep(0.02)
    decoder = av.CodecContext.create("opus", "r")
    pcm = np.concatenate([p.to_ndarray()[0] for f in got[10:80] for p in decoder.decode(av.Packet(f.data))])
    spectrum = np.abs(np.fft.rfft(pcm))
    peak_hz = np.argmax(spectrum) * 48000 / len(pcm)
    assert abs(peak_hz - 440) < 10, peak_hz
    assert ingest.transcoder is not None and ingest.transcoder.stats.decode_errors == 0
    ingest.close()
    assert not ingest.transcoder.running


async def test_sender_reports_and_unsupported_input() -> None:
    ingest, core = new_ingest(transcode=False)
    ingest.on_media("video", 0, flv_video(True, 0, 0, avc_config()), core.now())
    ingest.on_media("audio", 0, audio_body("config"), core.now())
    assert ingest.audio_problem is not None and "transcoding is disabled" in ingest.audio_problem
    assert ingest.stream.tracks == []
    idr = b"\x65\x88\x84" + bytes(30)
    ingest.on_media("video", 20, flv_video(False, 1, 0, avcc([b"\x41\x9a" + bytes(10)])), core.now())
    assert ingest.stream.tracks == []  # a track starts at a keyframe
    ingest.on_media("video", 30, flv_video(True, 1, 0, avcc([idr])), core.now())
    assert [t.kind for t in ingest.stream.tracks] == ["video"]
    track = ingest.stream.track("video")
    assert track is not None
    reports: list[tuple[int, int]] = []
    track.report_listeners.append(lambda ntp, rtp_ts, now: reports.append((ntp, rtp_ts)))
    ingest._next_report = 0.0
    ingest.on_media("video", 40, flv_video(True, 1, 0, avcc([idr])), core.now())
    ingest._next_report = 0.0
    ingest.on_media("video", 2040, flv_video(False, 1, 0, avcc([b"\x41\x9a" + bytes(10)])), core.now())
    assert len(reports) == 2
    (ntp0, rtp0), (ntp1, rtp1) = reports
    assert (rtp1 - rtp0) & 0xFFFFFFFF == 2000 * 90
    assert abs((ntp1 - ntp0) / 2**32 - 2.0) < 1e-6
    with pytest.raises(UnsupportedCodec):
        ingest.on_media("video", 80, b"\x22\x00\x00", core.now())
    with pytest.raises(FlvError, match="NAL unit of 200 bytes"):
        ingest.on_media("video", 80, flv_video(False, 1, 0, struct.pack(">I", 200) + b"x"), core.now())
    assert ingest.stats.bad_frames == 1
    ingest.close()


async def test_b_frames_are_re_encoded_without_them() -> None:
    """x264 with B-frames (OBS's default): frames come in decode order with composition times; the stream's
    video is the transcoder's, in presentation order, every picture there."""
    encoder = video_encoder("H264", 320, 240, FPS, keyframe_interval=30)
    encoder.options = {"preset": "ultrafast", "bframes": "2", "b-adapt": "0", "sc_threshold": "0"}
    encoder.max_b_frames = 2
    packets = []
    for n in range(45):
        picture = numbered_picture(n, 320, 240)
        picture.pts = n * 3000
        packets += encoder.encode(picture)
    packets += encoder.encode(None)
    assert any(p.pts != p.dts for p in packets)
    ingest, core = new_ingest()
    nals = annexb_nals(bytes(packets[0]))
    sps = next(n for n in nals if n[0] & 0x1F == 7)
    pps = next(n for n in nals if n[0] & 0x1F == 8)
    ingest.on_media("video", 0, flv_video(True, 0, 0, avc_config(sps, pps)), core.now())
    got: list[EncodedFrame] = []
    for k, packet in enumerate(packets):
        dts_ms, pts_ms = round(packet.dts / 90) + 100, round(packet.pts / 90) + 100
        units = [n for n in annexb_nals(bytes(packet)) if n[0] & 0x1F not in (7, 8)]
        ingest.on_media("video", dts_ms, flv_video(packet.is_keyframe, 1, pts_ms - dts_ms, avcc(units)), core.now())
        if k == 0:
            assert ingest.video_transcoder is not None and ingest.reordered
            ingest.stream.frames("video", core.now()).subscribe(got.append)
        await asyncio.sleep(0.005)
    async with asyncio.timeout(20):
        while len(got) < 40:
            await asyncio.sleep(0.02)
    assert all(b.pts > a.pts for a, b in zip(got, got[1:], strict=False))  # presentation order
    decoder = av.CodecContext.create("h264", "r")
    numbers = [read_frame_number(p) for f in got for p in decoder.decode(av.Packet(f.data))]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) and len(numbers) >= 38
    assert ingest.describe()["videoTranscoded"] is True
    ingest.close()
