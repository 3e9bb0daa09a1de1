"""An RTMP publisher's media as a Stream's tracks: H.264 packetized into RTP as it comes, AAC decoded
and encoded to Opus by a transcoder, so every reader (WebRTC viewers, RTSP clients, HLS, recording,
snapshots) takes the stream like a WebRTC publisher's.

    ingest = RtmpIngest(stream, core, transcode_settings, loop)
    ingest.on_media("video", timestamp_ms, flv_body, now)   # raises FlvError for what cannot be used
    ingest.ready                                            # the tracks the publisher announced exist
    ingest.close()                                          # the transcoder stops; the stream is the caller's

Video: the AVC decoder configuration gives SPS and PPS; each frame's length-prefixed NAL units are
packetized with aiortc's RFC 6184 packetizer (STAP-A / FU-A), SPS and PPS ahead of every keyframe that
lacks them (a viewer that joins starts there), RTP timestamp = (dts + composition time) x 90. Audio:
each raw AAC frame goes to a Transcoder (AAC -> Opus, in its own worker thread: codec work never runs on
the loop), whose Opus packets become one RTP packet each. Sender reports map both tracks' RTP timestamps
to the wall clock of the publisher's timestamps, so WebRTC viewers keep audio and video in sync.

B-frames (OBS's and x264's defaults): WebRTC browsers, the recorder and the HLS muxer take H.264 in
presentation order only, so when the first frame carries a composition time the video goes through a
transcoder (decoded, encoded again by x264 without B-frames, in its worker thread) and the stream's
video track is its output. That costs a core's share per stream: encoders set for live (OBS's x264
tune "zerolatency", or B-frames 0; `-bf 0`) are forwarded as they come. An RTMP publisher cannot be
asked for a keyframe: a viewer that joins mid-GOP starts from the cached GOP, as with any publisher.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiortc.codecs.h264 import H264Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from .encoded import EncodedFrame, FrameSource
from .rtmp.flv import AvcConfig, FlvError, parse_audio, parse_video, split_nal_units
from .sfu import MediaCore
from .stream import Codec, PublishedTrack, Stream
from .transcode import Settings, Target, Transcoder

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
OPUS_CLOCK = 48000
H264_PAYLOAD_TYPE = 102
OPUS_PAYLOAD_TYPE = 111
REPORT_INTERVAL = 2.0  # seconds between sender reports per track
READY_AFTER = 2.0  # seconds of media after which the stream goes on without a track the metadata announced
NTP_EPOCH = 2208988800
AUDIO_QUEUE_FRAMES = 512  # AAC frames waiting for the transcoder (1024 samples each)


@dataclass
class IngestStats:
    video_frames: int = 0
    audio_frames: int = 0
    bytes: int = 0
    bad_frames: int = 0  # could not be read (counted, dropped)
    opus_packets: int = 0


class _AacFrames(FrameSource):
    """The publisher's AAC frames, for the transcoder to take like a track's frames."""

    codec = "AAC"
    kind = "audio"


class _H264Frames(FrameSource):
    """The publisher's H.264 access units (decode order, pts), for the transcoder when it has B-frames."""

    codec = "H264"
    kind = "video"

    def pts_of(self, rtp_timestamp: int) -> int:
        return rtp_timestamp  # the source track's "RTP" timestamps are these pts (sender reports)


class _Packetizer:
    """RTP for one track: random SSRC, sequence start and timestamp offset."""

    def __init__(self, track: PublishedTrack, rtp: Any, clock_rate: int):
        self.track = track
        self._header = rtp.RtpHeader
        self.clock_rate = clock_rate
        self.ssrc = secrets.randbits(32) or 1
        self._seq = secrets.randbits(16)
        self.ts_offset = secrets.randbits(32)

    def timestamp(self, ticks: int) -> int:
        return (ticks + self.ts_offset) & 0xFFFFFFFF

    def send(self, payloads: list[bytes], ticks: int, now: float) -> None:
        timestamp = self.timestamp(ticks)
        last = len(payloads) - 1
        payload_type = self.track.codec.payload_type
        for k, payload in enumerate(payloads):
            header = self._header(marker=k == last, payload_type=payload_type, sequence_number=self._seq,
                                  timestamp=timestamp, ssrc=self.ssrc)
            self._seq = (self._seq + 1) & 0xFFFF
            self.track.on_rtp(bytes(header) + payload, now)


def h264_codec(config: AvcConfig) -> Codec:
    parameters = {"level-asymmetry-allowed": "1", "packetization-mode": "1",
                  "profile-level-id": config.profile_level_id}
    native = RTCRtpCodecParameters(mimeType="video/H264", clockRate=VIDEO_CLOCK, payloadType=H264_PAYLOAD_TYPE,
                                   parameters=dict(parameters))
    return Codec("video", "H264", VIDEO_CLOCK, H264_PAYLOAD_TYPE, parameters, native=native)


def opus_codec() -> Codec:
    native = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=OPUS_CLOCK, channels=2,
                                   payloadType=OPUS_PAYLOAD_TYPE)
    return Codec("audio", "opus", OPUS_CLOCK, OPUS_PAYLOAD_TYPE, {"channels": 2}, native=native)


class RtmpIngest:
    def __init__(self, stream: Stream, core: MediaCore, transcode: Settings | None,
                 loop: asyncio.AbstractEventLoop):
        self.stream = stream
        self.core = core
        self.transcode = transcode  # None: transcoding is off, AAC is left out (video only)
        self.loop = loop
        self.stats = IngestStats()
        self.announced: set[str] = set()  # kinds the metadata says will come
        self.avc: AvcConfig | None = None
        self.video: _Packetizer | None = None
        self.audio: _Packetizer | None = None
        self.audio_problem: str | None = None  # why the audio is left out
        self.transcoder: Transcoder | None = None  # AAC -> Opus
        self.video_transcoder: Transcoder | None = None  # H.264 with B-frames -> H.264 without
        self.reordered = False  # the publisher's H.264 has B-frames
        self._h264 = _H264Frames()
        self._h264_source_track: PublishedTrack | None = None
        self._aac = _AacFrames()
        self._aac_config: bytes | None = None
        self._aac_rate = 0
        self._aac_channels = 0
        self._first_media: float | None = None
        self._wall0: float | None = None  # wall clock at the publisher's timestamp _ts0
        self._ts0 = 0
        self._next_report = 0.0
        self.closed = False

    # -- readiness ---------------------------------------------------------------------------------

    def on_metadata(self, values: dict[str, Any]) -> None:
        if values.get("videocodecid") not in (None, 0, 0.0, ""):
            self.announced.add("video")
        if values.get("audiocodecid") not in (None, 0, 0.0, ""):
            self.announced.add("audio")

    def ready(self, now: float) -> bool:
        """The stream has the tracks the publisher announced (or waited long enough for them)."""
        if not self.stream.tracks or self._first_media is None:
            return False
        have = {t.kind for t in self.stream.tracks}
        if self.audio_problem is not None:
            have.add("audio")
        return self.announced <= have or now - self._first_media >= READY_AFTER

    # -- media -------------------------------------------------------------------------------------

    def on_media(self, kind: str, timestamp: int, body: bytes, now: float) -> None:
        """One FLV audio or video body. Raises FlvError (UnsupportedCodec for codecs that are not H.264
        or AAC: the caller decides whether the connection goes on)."""
        if self.closed:
            return
        self.stats.bytes += len(body)
        if self._first_media is None:
            self._first_media = now
            self._wall0, self._ts0 = time.time(), timestamp
        if kind == "video":
            self._video(timestamp, body, now)
        else:
            self._audio(timestamp, body, now)
        if now >= self._next_report:
            self._next_report = now + REPORT_INTERVAL
            self._send_reports(timestamp, now)

    def _video(self, timestamp: int, body: bytes, now: float) -> None:
        tag = parse_video(body)
        if tag.kind == "config":
            assert tag.config is not None
            self.avc = tag.config
            return
        if tag.kind != "nalus" or self.avc is None:
            return  # end of sequence, or frames before the decoder configuration
        try:
            nals = split_nal_units(tag.data, self.avc.length_size)
        except FlvError:
            self.stats.bad_frames += 1
            raise
        nals = [n for n in nals if n[0] & 0x1F != 9]  # access unit delimiters: RTP marks frames itself
        if not nals:
            return
        keyframe = any(n[0] & 0x1F == 5 for n in nals)
        if keyframe and not any(n[0] & 0x1F == 7 for n in nals):
            nals = [*self.avc.sps, *self.avc.pps, *nals]
        if self.video is None and self.video_transcoder is None:
            if not keyframe:
                return  # a track starts at a keyframe
            self._start_video(reordered=tag.composition_time != 0)
        self.stats.video_frames += 1
        ticks = ((timestamp + tag.composition_time) & 0xFFFFFFFF) * (VIDEO_CLOCK // 1000)
        if self.video is not None:
            if tag.composition_time and not self.reordered:
                self.reordered = True
                log.warning("rtmp %r: the publisher's H.264 has B-frames (composition times), which began "
                            "without: they are forwarded, recordings and HLS may skip them", self.stream.name)
            self.video.send(H264Encoder._packetize(nals), ticks, now)
        else:
            data = b"".join(b"\x00\x00\x00\x01" + n for n in nals)
            self._h264.emit(EncodedFrame("H264", data, ticks, VIDEO_CLOCK, keyframe))

    def _start_video(self, reordered: bool) -> None:
        """The stream's video track: the publisher's H.264 as it comes, or (B-frames, which WebRTC,
        recording and HLS take in presentation order only) re-encoded without them by a transcoder."""
        assert self.avc is not None
        self.reordered = reordered
        if not reordered or self.transcode is None:
            if reordered:
                log.warning("rtmp %r: the publisher's H.264 has B-frames and transcoding is off: forwarded as "
                            "they are; recordings and HLS may skip them", self.stream.name)
            track = PublishedTrack(h264_codec(self.avc), self.core.track.IngestTrack("H264", VIDEO_CLOCK),
                                   self.core.track, self._keyframe_requested)
            self.stream.tracks.insert(0, track)
            self.video = _Packetizer(track, self.core.rtp, VIDEO_CLOCK)
            return
        log.info("rtmp %r: the publisher's H.264 has B-frames: re-encoded without them for the outputs",
                 self.stream.name)
        self._h264_source_track = PublishedTrack(
            Codec("video", "H264", VIDEO_CLOCK, H264_PAYLOAD_TYPE), self.core.track.IngestTrack("H264", VIDEO_CLOCK),
            self.core.track, lambda ssrc: None)
        self.video_transcoder = Transcoder(self.stream, self._h264_source_track, Target("video", "H264"),
                                           self.transcode, self.core.track, self.core.rtp)
        self.video_transcoder.start(self._h264, self.loop)
        self.stream.tracks.insert(0, self.video_transcoder.rtp_track())

    def _audio(self, timestamp: int, body: bytes, now: float) -> None:
        if self.audio_problem is not None:
            return
        tag = parse_audio(body)
        if tag.kind == "config":
            if self._aac_config is None:
                self._aac_config, self._aac_rate, self._aac_channels = tag.data, tag.sample_rate, tag.channels
                self._start_audio()
            return
        if self._aac_config is None or self.transcoder is None or not tag.data:
            return
        self.stats.audio_frames += 1
        pts = (timestamp & 0xFFFFFFFF) * self._aac_rate // 1000
        self._aac.emit(EncodedFrame("AAC", tag.data, pts, self._aac_rate, True, channels=self._aac_channels,
                                    extradata=self._aac_config))

    def _start_audio(self) -> None:
        if self.transcode is None:
            self.audio_problem = "transcoding is disabled: AAC cannot become Opus"
            log.warning("rtmp %r: %s; the stream has no audio", self.stream.name, self.audio_problem)
            return
        source_track = PublishedTrack(Codec("audio", "AAC", self._aac_rate, 0), None, self.core.track,
                                      lambda ssrc: None)
        track = PublishedTrack(opus_codec(), self.core.track.IngestTrack("opus", OPUS_CLOCK), self.core.track,
                               lambda ssrc: None)
        self.audio = _Packetizer(track, self.core.rtp, OPUS_CLOCK)
        self.stream.tracks.append(track)
        # An encoder sends in bursts (a reconnect, a publisher not paced in real time): AAC frames are
        # cheap to hold, so the queue takes AUDIO_QUEUE_FRAMES (about 10 s) rather than drop audio.
        settings = dataclasses.replace(self.transcode, queue_frames=max(self.transcode.queue_frames,
                                                                        AUDIO_QUEUE_FRAMES))
        self.transcoder = Transcoder(self.stream, source_track, Target("audio", "opus"), settings,
                                     self.core.track, self.core.rtp)
        self.transcoder.output.subscribe(self._on_opus)
        self.transcoder.start(self._aac, self.loop)

    def _on_opus(self, frame: EncodedFrame) -> None:
        """A transcoded Opus packet (on the loop thread): one RTP packet."""
        if self.audio is None or self.closed:
            return
        self.stats.opus_packets += 1
        self.audio.send([frame.data], frame.pts, self.core.now())

    def _keyframe_requested(self, ssrc: int) -> None:
        """Viewers' PLI/FIR: an RTMP publisher cannot be asked; they start from the cached GOP."""

    # -- sync --------------------------------------------------------------------------------------

    def _send_reports(self, timestamp: int, now: float) -> None:
        """Sender reports: the publisher's timestamp `timestamp` (ms) is wall clock _wall0 + its offset."""
        if self._wall0 is None:
            return
        seconds = self._wall0 + ((timestamp - self._ts0) & 0xFFFFFFFF) / 1000 + NTP_EPOCH
        ntp = int(seconds * (1 << 32)) & 0xFFFFFFFFFFFFFFFF
        for packetizer, ticks_per_ms in ((self.video, VIDEO_CLOCK // 1000), (self.audio, OPUS_CLOCK // 1000)):
            if packetizer is not None and packetizer.track.ingest.ssrc is not None:
                rtp_ts = packetizer.timestamp((timestamp & 0xFFFFFFFF) * ticks_per_ms)
                packetizer.track.on_sender_report(ntp, rtp_ts, now)
        if self._h264_source_track is not None:  # the transcoder moves it onto its output's timestamps
            self._h264_source_track.on_sender_report(ntp, (timestamp & 0xFFFFFFFF) * (VIDEO_CLOCK // 1000), now)

    def describe(self) -> dict[str, Any]:
        return {"videoFrames": self.stats.video_frames, "audioFrames": self.stats.audio_frames,
                "opusPackets": self.stats.opus_packets, "bytes": self.stats.bytes,
                "badFrames": self.stats.bad_frames, "audioProblem": self.audio_problem,
                "bFrames": self.reordered, "videoTranscoded": self.video_transcoder is not None,
                "tracks": [{"kind": t.kind, "codec": t.codec.name, "packets": t.ingest.packets,
                            "keyframes": t.ingest.keyframes, "viewers": len(t.sinks)} for t in self.stream.tracks]}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for transcoder in (self.transcoder, self.video_transcoder):
            if transcoder is not None:
                transcoder.stop()
        self._aac.close()
        self._h264.close()
