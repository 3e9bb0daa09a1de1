"""media/transcode.py with real PyAV codecs and real worker threads: a publisher's RTP (made with PyAV,
packetized like a browser's) goes into a PublishedTrack with the native ingest, and what comes out is
decoded with fresh PyAV decoders. Every picture carries its own frame number (tests/support/media_gen.py),
so a test can tell which input frame an output frame shows, and that its pts is that input frame's."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import cast

import av
import numpy as np
import pytest

from media import native
from media.encoded import EncodedFrame
from media.stream import Codec, PublishedTrack, Stream, TrackSink
from media.transcode import Target, Transcoder, Transcoders, TranscodingDisabled, output_size
from tests.support import media_gen

TRACK = native.track_module()
DEPACKETIZE = native.depacketize_module()
RTP = native.rtp_module()
RTCP = native.rtcp_module()
FRAME_TICKS = 3000  # 30 fps at 90 kHz


async def wait_for(condition: Callable[[], object], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


class Publisher:
    """A stream with a video and an audio track, fed RTP as a WebRTC publisher's are (loop time as now)."""

    def __init__(self, video: str = "VP8") -> None:
        self.stream = Stream("live")
        self.video = PublishedTrack(Codec("video", video, 90000, 96), TRACK.IngestTrack(video, 90000), TRACK,
                                    lambda ssrc: None)
        self.audio = PublishedTrack(Codec("audio", "opus", 48000, 111, {"channels": 2}),
                                    TRACK.IngestTrack("opus", 48000), TRACK, lambda ssrc: None)
        self.stream.tracks += [self.video, self.audio]

    @staticmethod
    def send(track: PublishedTrack, packets: list[bytes]) -> None:
        now = asyncio.get_running_loop().time()
        for packet in packets:
            track.on_rtp(packet, now)

    async def feed(self, track: PublishedTrack, frames: list[list[bytes]], transcoder: Transcoder | None = None
                   ) -> None:
        """Frame by frame; with a transcoder, each once the previous one was taken off its queue (as fast as
        it goes without dropping)."""
        for packets in frames:
            if transcoder is not None:
                await wait_for(lambda: transcoder.queue_depth == 0)
            self.send(track, packets)


def transcoders(**settings: object) -> Transcoders:
    return Transcoders(TRACK, RTP, **settings)  # type: ignore[arg-type]


def decode(codec: str, frames: list[EncodedFrame]) -> list[av.VideoFrame]:
    decoder = cast(av.VideoCodecContext, av.CodecContext.create({"H264": "h264", "VP8": "vp8"}[codec], "r"))
    pictures = []
    for frame in frames:
        packet = av.Packet(frame.data)
        packet.pts = frame.pts
        pictures += decoder.decode(packet)
    return pictures


def nal_types(annex_b: bytes) -> list[int]:
    return [annex_b[i + 3] & 0x1F for i in range(len(annex_b) - 3) if annex_b[i:i + 3] == b"\x00\x00\x01"]


def input_numbers(source_frames: list[EncodedFrame], first: int = 0) -> dict[int, int]:
    """pts -> the frame number the publisher drew (the source emits every frame, in order)."""
    return {frame.pts: first + k for k, frame in enumerate(source_frames)}


def assert_in_step(pictures: list[av.VideoFrame], numbers: dict[int, int]) -> list[int]:
    """Every output picture shows the input frame whose pts it carries; returns the numbers shown."""
    shown = []
    for picture in pictures:
        assert picture.pts in numbers, f"output pts {picture.pts} is no input frame's"
        assert media_gen.read_frame_number(picture) == numbers[picture.pts] % 256, picture.pts
        shown.append(numbers[picture.pts])
    return shown


async def test_vp8_to_h264_decodes_at_source_size_with_regular_keyframes() -> None:
    pub = Publisher("VP8")
    # The source has one keyframe only: the output's keyframes are the transcoder's own.
    frames = media_gen.packetize("VP8", media_gen.encode_video("VP8", frames=60, keyframe_interval=60))
    hub = transcoders(keyframe_interval=0.5)
    loop = asyncio.get_running_loop()
    source_frames: list[EncodedFrame] = []
    pub.stream.frames("video", loop.time()).subscribe(source_frames.append)
    transcoder = hub.acquire(pub.stream, Target("video", "H264"), loop.time())
    out: list[EncodedFrame] = []
    transcoder.output.subscribe(out.append)
    await pub.feed(pub.video, frames, transcoder)
    await wait_for(lambda: len(out) == 60)

    assert out[0].keyframe
    assert all(nal_types(f.data)[:2] == [7, 8] for f in out if f.keyframe)  # SPS, PPS before every IDR
    assert all(5 in nal_types(f.data) for f in out if f.keyframe)
    sps = out[0].data[out[0].data.index(b"\x00\x00\x00\x01\x67") + 5:][:3]
    assert sps[0] == 66 and sps[1] & 0x40  # baseline, constraint_set1: constrained baseline
    assert {(f.width, f.height, f.clock_rate, f.codec) for f in out} == {(320, 240, 90000, "H264")}
    key_pts = [f.pts for f in out if f.keyframe]
    assert [b - a for a, b in zip(key_pts, key_pts[1:], strict=False)] == [45000] * 3  # every 0.5 s
    pts = [f.pts for f in out]
    assert pts == sorted(pts) and len(set(pts)) == 60
    assert pts == [f.pts for f in source_frames]  # carried through

    pictures = decode("H264", out)
    assert {(p.width, p.height) for p in pictures} == {(320, 240)}
    assert assert_in_step(pictures, input_numbers(source_frames)) == list(range(60))
    assert transcoder.stats.frames_out == 60 and transcoder.stats.dropped_input == 0
    hub.close()


@pytest.mark.parametrize("width, height, expected", [(160, 120, (160, 120)), (160, 0, (160, 120)),
                                                     (0, 100, (134, 100)), (200, 100, (200, 100))])
async def test_h264_to_vp8_scaled(width: int, height: int, expected: tuple[int, int]) -> None:
    pub = Publisher("H264")
    frames = media_gen.packetize("H264", media_gen.encode_video("H264", frames=30, keyframe_interval=15))
    hub = transcoders()
    loop = asyncio.get_running_loop()
    source_frames: list[EncodedFrame] = []
    pub.stream.frames("video", loop.time()).subscribe(source_frames.append)
    transcoder = hub.acquire(pub.stream, Target("video", "VP8", width, height), loop.time())
    out: list[EncodedFrame] = []
    transcoder.output.subscribe(out.append)
    await pub.feed(pub.video, frames, transcoder)
    await wait_for(lambda: len(out) == 30)

    assert out[0].keyframe and out[0].codec == "VP8"
    assert {(f.width, f.height) for f in out} == {expected}
    pictures = decode("VP8", out)
    assert {(p.width, p.height) for p in pictures} == {expected}
    assert assert_in_step(pictures, input_numbers(source_frames)) == list(range(30))
    hub.close()


def test_output_size_rules() -> None:
    target = Target("video", "h264", width=161)
    assert target.codec == "H264" and target == Target("video", "H264", 161)
    assert output_size(target, 320, 240) == (160, 120)  # even, aspect kept
    assert output_size(Target("video", "VP8"), 321, 241) == (320, 240)
    assert output_size(Target("video", "VP8", 640, 360), 320, 240) == (640, 360)  # exactly as asked
    for bad in (dict(kind="audio", codec="H264"), dict(kind="video", codec="MPEG2"),
                dict(kind="video", codec="VP8", width=-2), dict(kind="audio", codec="AAC", width=320)):
        with pytest.raises(ValueError):
            Target(**bad)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def decode_aac(frames: list[EncodedFrame]) -> np.ndarray:
    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = frames[0].extradata
    chunks = []
    for frame in frames:
        for samples in decoder.decode(av.Packet(frame.data)):
            chunks.append(samples.to_ndarray()[0])
    return np.concatenate(chunks)


async def test_opus_to_aac_in_step_with_the_input() -> None:
    pub = Publisher()
    opus = media_gen.encode_opus(1.0)  # 50 packets, 48000 samples
    hub = transcoders()
    loop = asyncio.get_running_loop()
    source_frames: list[EncodedFrame] = []
    pub.stream.frames("audio", loop.time()).subscribe(source_frames.append)
    transcoder = hub.acquire(pub.stream, Target("audio", "AAC"), loop.time())
    out: list[EncodedFrame] = []
    transcoder.output.subscribe(out.append)
    await pub.feed(pub.audio, media_gen.packetize("opus", opus, payload_type=111), transcoder)
    start = source_frames[0].pts
    end = source_frames[-1].pts + 960
    # The encoder holds back 1024 samples of lookahead plus the frame it works on, and the re-framing
    # keeps up to 1023: the output trails the input by less than three AAC frames.
    await wait_for(lambda: out and out[-1].pts + 1024 > end - 3 * 1024)
    await asyncio.sleep(0.1)  # nothing more is coming: the rest stays buffered

    assert {(f.codec, f.clock_rate, f.channels) for f in out} == {("AAC", 48000, 2)}
    assert out[0].extradata and out[0].extradata[:2] == b"\x11\x90"  # AAC-LC, 48 kHz, stereo
    pts = [f.pts for f in out]
    assert pts == list(range(pts[0], pts[0] + 1024 * len(out), 1024))  # continuous
    assert pts[0] >= 0 and pts[0] <= start + 1024  # the priming never goes before the stream's epoch
    assert end - 3 * 1024 < pts[-1] + 1024 <= end
    decoded = decode_aac(out)
    assert len(decoded) == 1024 * len(out)
    assert abs(dominant_frequency(decoded[2048:], 48000) - 440) < 5
    assert transcoder.stats.decode_errors == 0 and transcoder.stats.dropped_input == 0
    hub.close()


async def test_audio_gap_is_filled_so_the_output_stays_continuous() -> None:
    pub = Publisher()
    packets = media_gen.packetize("opus", media_gen.encode_opus(1.0), payload_type=111)
    lost = packets[:20] + packets[25:]  # 100 ms lost in the network
    hub = transcoders()
    loop = asyncio.get_running_loop()
    transcoder = hub.acquire(pub.stream, Target("audio", "AAC"), loop.time())
    out: list[EncodedFrame] = []
    transcoder.output.subscribe(out.append)
    await pub.feed(pub.audio, lost, transcoder)
    await wait_for(lambda: len(out) >= 44)
    pts = [f.pts for f in out]
    assert pts == list(range(pts[0], pts[0] + 1024 * len(out), 1024))
    decoded = decode_aac(out)
    # The gap (samples 19200..24000 of the input) is silent, the rest is the sine.
    gap = decoded[19200 - pts[0] + 600:24000 - pts[0] - 600]
    assert np.abs(gap).max() < 0.05
    assert np.abs(decoded[30000 - pts[0]:40000 - pts[0]]).max() > 0.3
    hub.close()


@pytest.mark.parametrize("codec", ["H264", "VP8"])
async def test_rtp_track_depacketizes_and_keyframe_requests_stay_with_the_encoder(codec: str) -> None:
    pub = Publisher("VP8" if codec == "H264" else "H264")
    source_codec = pub.video.codec.name
    frames = media_gen.packetize(source_codec, media_gen.encode_video(source_codec, frames=60, keyframe_interval=10))
    hub = transcoders(keyframe_interval=100.0)
    loop = asyncio.get_running_loop()
    transcoder = hub.acquire(pub.stream, Target("video", codec), loop.time())
    rtp = transcoder.rtp_track()
    assert transcoder.rtp_track() is rtp
    native_codec = rtp.codec.native
    assert native_codec.mimeType == f"video/{codec}" and rtp.codec.payload_type == native_codec.payloadType
    if codec == "H264":
        assert native_codec.parameters == {"packetization-mode": "1", "level-asymmetry-allowed": "1",
                                           "profile-level-id": "42e01f"}
    out: list[EncodedFrame] = []
    transcoder.output.subscribe(out.append)
    await pub.feed(pub.video, frames[:20], transcoder)
    await wait_for(lambda: len(out) == 20)
    publisher_requests = pub.video.keyframe_requests

    sent: list[bytes] = []

    def send(packet: bytes) -> bool:
        sent.append(packet)
        return True

    sink = TrackSink(RTP, 0x5EED, 102, 90000, True, send, lambda packet: True)
    rtp.attach(sink, loop.time())  # the GOP so far at once, and a keyframe request (a viewer's PLI)
    await pub.feed(pub.video, frames[20:], transcoder)
    await wait_for(lambda: len(out) == 60)
    for k in range(5):  # more PLIs, each past the track's rate limit
        rtp.request_keyframe(loop.time() + 2 * (k + 1))
        transcoder.output.request_keyframe(loop.time())
    assert [k for k, f in enumerate(out) if f.keyframe] == [0, 20]  # the request, served on the next frame
    assert transcoder.stats.keyframes_forced == 1
    assert pub.video.keyframe_requests == publisher_requests  # never passed on to the publisher

    depacketizer = DEPACKETIZE.Depacketizer(codec, 90000)
    received = [f for packet in sent for f in depacketizer.push(packet)]
    assert depacketizer.dropped_frames == 0 and len(received) == 60
    assert [f.keyframe for f in received].count(True) == 2
    encoded = [EncodedFrame(codec, f.data, f.timestamp, 90000, f.keyframe) for f in received]
    shown = [media_gen.read_frame_number(p) for p in decode(codec, encoded)]
    assert shown == list(range(60))
    ts = [f.timestamp for f in received]
    assert [(b - a) & 0xFFFFFFFF for a, b in zip(ts, ts[1:], strict=False)] == [FRAME_TICKS] * 59
    assert sink.stats.sent == len(sent) == rtp.ingest.packets
    hub.close()


async def test_publisher_sender_reports_are_moved_onto_the_derived_tracks_timestamps() -> None:
    """A viewer of transcoded video keeps A/V sync with the forwarded audio only if the derived track's
    sender reports map the same NTP time to the RTP timestamp of the same picture."""
    pub = Publisher("VP8")
    frames = media_gen.packetize("VP8", media_gen.encode_video("VP8", frames=10, keyframe_interval=10))
    hub = transcoders()
    loop = asyncio.get_running_loop()
    transcoder = hub.acquire(pub.stream, Target("video", "H264"), loop.time())
    rtp = transcoder.rtp_track()
    sent: list[bytes] = []
    reports: list[bytes] = []
    sink = TrackSink(RTP, 0x5EED, 102, 90000, True, lambda p: sent.append(p) is None,
                     lambda p: reports.append(p) is None)
    rtp.attach(sink, loop.time())
    await pub.feed(pub.video, frames, transcoder)
    await wait_for(lambda: transcoder.stats.frames_out == 10)
    fifth = RTP.parse_rtp(frames[4][0]).timestamp  # the publisher's RTP timestamp of input frame 4
    ntp = 0xE1234567_80000000
    pub.video.on_sender_report(ntp, fifth, loop.time())
    (report,) = [p for p in RTCP.parse_rtcp(reports[-1]) if p.packet_type == RTCP.RTCP_SR]
    assert report.ntp_timestamp == ntp
    # The derived packets of the picture made from input frame 4 carry exactly that timestamp.
    derived = list(dict.fromkeys(RTP.parse_rtp(p).timestamp for p in sent))  # in the order sent
    assert report.rtp_timestamp == derived[4]
    hub.close()
    assert pub.video.report_listeners == []  # stopped: no longer listening


async def test_one_transcoder_per_target_stopped_with_its_last_user() -> None:
    pub = Publisher()
    hub = transcoders()
    now = asyncio.get_running_loop().time()
    first = hub.acquire(pub.stream, Target("video", "H264", 160, 120), now)
    second = hub.acquire(pub.stream, Target("video", "h264", 160, 120), now)
    assert second is first and first.users == 2 and hub.created() == 1
    other = hub.acquire(pub.stream, Target("video", "H264", 320, 240), now)
    assert other is not first and hub.created() == 2 and hub.active() == 2
    assert pub.stream.frames("video", now) is pub.stream.frames("video", now)
    assert len(pub.video.listeners) == 1  # one tap feeds both
    assert first.thread.is_alive() and other.thread.is_alive()
    assert [d["users"] for d in hub.describe()] == [2, 1]

    hub.release(first)
    assert hub.active() == 2 and first.thread.is_alive()
    hub.release(second)
    assert hub.active() == 1
    await wait_for(lambda: not first.thread.is_alive(), 5)
    assert len(pub.video.listeners) == 1
    hub.release(other)
    await wait_for(lambda: not other.thread.is_alive(), 5)
    assert hub.active() == 0 and pub.video.listeners == [] and hub.describe() == []
    again = hub.acquire(pub.stream, Target("video", "H264", 160, 120), now)
    assert again is not first and hub.created() == 3 and len(pub.video.listeners) == 1
    hub.release(again)
    assert pub.video.listeners == []


async def test_the_end_of_the_stream_stops_everything_of_the_stream() -> None:
    pub = Publisher()
    hub = transcoders()
    now = asyncio.get_running_loop().time()
    video = hub.acquire(pub.stream, Target("video", "H264"), now)
    video.rtp_track()
    audio = hub.acquire(pub.stream, Target("audio", "AAC"), now)
    audio.output.subscribe(lambda frame: None)
    pub.stream.end()  # the publisher is gone
    assert hub.active() == 0 and pub.video.listeners == [] and pub.audio.listeners == []
    assert video.output.subscribers == [] and audio.output.subscribers == []
    await wait_for(lambda: not video.thread.is_alive() and not audio.thread.is_alive(), 5)


async def test_audio_and_video_of_a_stream_share_one_timeline() -> None:
    pub = Publisher()
    hub = transcoders()
    loop = asyncio.get_running_loop()
    firsts: dict[str, EncodedFrame] = {}
    audio = hub.acquire(pub.stream, Target("audio", "AAC"), loop.time())
    audio.output.subscribe(lambda frame: firsts.setdefault("audio", frame))
    video = hub.acquire(pub.stream, Target("video", "H264"), loop.time())
    video.output.subscribe(lambda frame: firsts.setdefault("video", frame))
    opus = media_gen.packetize("opus", media_gen.encode_opus(0.5), payload_type=111)
    await pub.feed(pub.audio, opus[:5])
    await asyncio.sleep(0.3)  # the video starts 0.3 s after the audio, on the same clock
    vp8 = media_gen.packetize("VP8", media_gen.encode_video("VP8", frames=3))
    await pub.feed(pub.video, vp8)
    await pub.feed(pub.audio, opus[5:])
    await wait_for(lambda: len(firsts) == 2)
    assert firsts["audio"].seconds < 0.05
    assert 0.3 <= firsts["video"].seconds < 0.5
    hub.close()


async def test_disabled_transcoding_is_refused() -> None:
    pub = Publisher()
    hub = transcoders(enabled=False)
    with pytest.raises(TranscodingDisabled):
        hub.acquire(pub.stream, Target("video", "H264"), 0.0)
    assert hub.created() == 0 and pub.video.listeners == []


async def test_overload_drops_up_to_a_keyframe_and_recovers() -> None:
    pub = Publisher()
    frames = media_gen.packetize("VP8", media_gen.encode_video("VP8", frames=90, keyframe_interval=15))
    hub = transcoders(queue_frames=2, late_after=60.0)
    loop = asyncio.get_running_loop()
    source_frames: list[EncodedFrame] = []
    pub.stream.frames("video", loop.time()).subscribe(source_frames.append)
    transcoder = hub.acquire(pub.stream, Target("video", "H264"), loop.time())
    out: list[EncodedFrame] = []
    transcoder.output.subscribe(out.append)
    await pub.feed(pub.video, frames[:10], transcoder)  # the decoder has a reference chain going
    await wait_for(lambda: len(out) == 10)
    requests = transcoder.stats.source_keyframe_requests
    for packets in frames[10:40]:  # a burst: far faster than the worker decodes and encodes
        pub.send(pub.video, packets)
    stats = transcoder.stats
    assert stats.dropped_input > 0 and stats.max_queue_depth <= 2 and transcoder.queue_depth <= 2
    assert stats.source_keyframe_requests > requests  # the source was asked for a keyframe
    # At the normal pace again, from mid-GOP (the next keyframe is frame 45).
    await pub.feed(pub.video, frames[40:], transcoder)
    await wait_for(lambda: out and out[-1].pts == source_frames[-1].pts)

    shown = assert_in_step(decode("H264", out), input_numbers(source_frames))
    assert shown[:10] == list(range(10)) and shown[-45:] == list(range(45, 90))  # every frame after the burst
    assert stats.decode_errors == 0 and stats.skipped_broken == 0  # the decoder never saw a broken chain
    # Frames that reached the worker are a run from the start, then runs that each begin at a keyframe.
    runs = [shown[0]] + [b for a, b in zip(shown, shown[1:], strict=False) if b != a + 1]
    assert all(start % 15 == 0 for start in runs), runs
    assert stats.frames_in == 90 and stats.frames_out == len(out) == 90 - stats.dropped_input
    hub.close()


async def test_late_pictures_are_decoded_but_not_encoded() -> None:
    pub = Publisher()
    frames = media_gen.packetize("VP8", media_gen.encode_video("VP8", 640, 480, frames=60, keyframe_interval=60))
    hub = transcoders(queue_frames=200, late_after=0.05)
    loop = asyncio.get_running_loop()
    source_frames: list[EncodedFrame] = []
    pub.stream.frames("video", loop.time()).subscribe(source_frames.append)
    transcoder = hub.acquire(pub.stream, Target("video", "H264"), loop.time())
    out: list[EncodedFrame] = []
    transcoder.output.subscribe(out.append)
    for packets in frames[:40]:  # queued at once: the last ones wait far longer than 50 ms
        pub.send(pub.video, packets)
    stats = transcoder.stats
    for sent, packets in enumerate(frames[40:], start=41):
        # Each once the worker has finished all before it: it waits for its own decode only, far
        # below 50 ms however busy the machine is.
        await wait_for(lambda before=sent - 1: stats.frames_out + stats.dropped_late >= before)
        pub.send(pub.video, packets)
    await wait_for(lambda: out and out[-1].pts == source_frames[-1].pts)

    assert stats.dropped_late > 0 and stats.dropped_input == 0
    assert stats.frames_out == len(out) == 60 - stats.dropped_late
    shown = assert_in_step(decode("H264", out), input_numbers(source_frames))  # no broken reference
    assert shown[-20:] == list(range(40, 60))  # caught up
    hub.close()


async def test_codec_work_runs_on_the_worker_thread() -> None:
    pub = Publisher()
    frames = media_gen.packetize("VP8", media_gen.encode_video("VP8", 640, 480, frames=30))
    hub = transcoders()
    loop = asyncio.get_running_loop()
    transcoder = hub.acquire(pub.stream, Target("video", "H264"), loop.time())
    out: list[EncodedFrame] = []
    transcoder.output.subscribe(out.append)
    loop_cpu = time.thread_time()
    await pub.feed(pub.video, frames, transcoder)
    await wait_for(lambda: len(out) == 30)
    loop_cpu = time.thread_time() - loop_cpu
    stats = transcoder.stats
    assert stats.worker_thread_id not in (None, threading.get_ident())
    assert transcoder.thread.ident == stats.worker_thread_id
    assert stats.encode_seconds > 0 and loop_cpu < stats.encode_seconds, (loop_cpu, stats.encode_seconds)
    hub.close()


async def test_garbage_input_is_counted_and_the_worker_goes_on() -> None:
    pub = Publisher()
    frames = media_gen.packetize("VP8", media_gen.encode_video("VP8", frames=60, keyframe_interval=30))
    hub = transcoders()
    loop = asyncio.get_running_loop()
    source = pub.stream.frames("video", loop.time())
    source_frames: list[EncodedFrame] = []
    source.subscribe(source_frames.append)
    transcoder = hub.acquire(pub.stream, Target("video", "H264"), loop.time())
    out: list[EncodedFrame] = []
    transcoder.output.subscribe(out.append)
    await pub.feed(pub.video, frames[:10], transcoder)
    await wait_for(lambda: len(out) == 10)
    garbage_pts = source_frames[-1].pts + FRAME_TICKS // 2  # an output frame with it would be the garbage
    for data, keyframe in ((b"\x10\x02\x00" + bytes(40), True), (b"garbage" * 20, False)):
        source.emit(EncodedFrame("VP8", data, garbage_pts, 90000, keyframe))
    await pub.feed(pub.video, frames[10:], transcoder)
    await wait_for(lambda: out and out[-1].pts == source_frames[-1].pts)

    stats = transcoder.stats
    assert stats.decode_errors >= 1 and stats.skipped_broken >= 1 and transcoder.thread.is_alive()
    numbers = input_numbers([f for f in source_frames if f.pts != garbage_pts])
    shown = assert_in_step(decode("H264", out), numbers)
    assert shown == list(range(10)) + list(range(30, 60))  # waited for the next keyframe
    assert stats.source_keyframe_requests >= 2  # and asked for it
    hub.close()
