"""Transcoding: a published track decoded and encoded again (another codec, size or bitrate) as a derived
track that sinks subscribe to like any other, with PyAV.

A Transcoder subscribes to its stream track's frames (the stream's shared source, `Stream.frames`) and
emits EncodedFrames on `output` (H.264 Annex B with SPS and PPS before every keyframe, VP8, raw AAC with
its AudioSpecificConfig as extradata, or Opus); `rtp_track()` packetizes that output into a PublishedTrack
that WebRTC viewers attach to as to a publisher's. `Transcoders` keeps one transcoder per distinct
(stream track, Target), shared by every sink that wants it, started by the first `acquire` and stopped
by the last `release`, or by the end of its stream (`Stream.on_end`).

Threads. Codec work never runs on the event loop thread. Each transcoder owns one worker thread that
owns its decoder, scaler and encoder (codec threads default to 1, so the worker's CPU time,
`time.thread_time()`, is all of the transcoder's codec work, and one busy transcoder uses one core).
Input frames go from the loop to the worker through a bounded queue (`queue_frames`, media/worker.py's
FrameWorker in its FRESHEST mode); results come back
with `loop.call_soon_threadsafe`, in batches (one scheduled flush carries everything the worker made
until it runs). PyAV releases the GIL while it decodes, scales and encodes.

Overload policy (the worker cannot keep up), in the order it applies:
1. Input queue full. Video: the queued frames and the incoming one are dropped and further input is
   dropped until the next keyframe, which is queued; the source is asked for a keyframe (the published
   track rate-limits those requests). A keyframe that finds the queue full replaces the queue. Dropping
   whole runs up to a keyframe, rather than single frames, is what keeps every frame the decoder sees
   decodable: a dropped frame would break the references of those after it. Audio (Opus frames are
   independent): the oldest queued frame is dropped. Everything dropped counts in `dropped_input`. The
   queue never holds more than `queue_frames`, and the worker's output is bounded by what was queued.
2. Late video. A decoded picture whose input frame waited more than `late_after` seconds for the worker
   is not encoded (counted in `dropped_late`): decoding must go on for the references, but encoding is
   most of the cost, so skipping it lets a worker that fell behind catch up while the pictures it still
   encodes stay current. Our encoder only references what it encoded, so the output stays decodable; the
   keyframe schedule is by media time, so skipped pictures do not stretch it. Audio is never skipped (it
   is cheap, and gaps are audible).
3. Broken input. A frame the decoder rejects counts in `decode_errors`; video then waits for the next
   keyframe (frames skipped meanwhile count in `skipped_broken`) and asks the source for one. An error
   elsewhere in the worker (`errors`) is logged once and the worker goes on with the next frame.

Timestamps. Output pts are on the stream's timeline (media/encoded.py), like the input's. Video carries
each input frame's pts through. Audio is re-framed (the AAC encoder takes 1024 samples): its pts count
samples from the first input frame's pts, and the input pts keep it in step: a gap in the input (loss,
dropped frames, DTX) of up to AUDIO_FILL_MAX is filled with silence so the output stays continuous; a
longer gap, or input going back in time, re-anchors the count (samples still buffered are dropped). The
encoder's priming (1024 samples for AAC) is accounted for: an AAC packet's pts is the time of its first
decoded sample, priming included. When the audio starts at the stream's epoch that would be negative, so
the first (priming - pts) input samples are dropped instead (at most 21 ms, once).

Keyframes. Video keyframes come every `keyframe_interval` seconds of media time (forced, not by frame
count, since WebRTC frame rates vary; x264 scene cuts are off so segments can be regular) and when a
sink asks (`output.request_keyframe`, or a PLI on the RTP track): the next encoded picture is a
keyframe. Those requests never reach the publisher, whose keyframes only matter to our decoder; they
are limited to one per FORCED_KEYFRAME_INTERVAL.

H.264 is encoded for browsers and HLS: libx264 with tune=zerolatency (no lookahead, one frame in, one
out), the configured preset, baseline profile (x264 marks it constrained baseline, 42c0xx), no
B-frames, level 3.1 up to 720p, VBV capped at the target bitrate, repeated in-band SPS/PPS on every IDR.
"""

from __future__ import annotations

import asyncio
import copy
import fractions
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, cast

import av
from aiortc.codecs import CODECS as AIORTC_CODECS
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from .encoded import EncodedFrame, FrameSource
from .stream import Codec, PublishedTrack, Stream
from .worker import FrameWorker, Overflow

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
AUDIO_RATE = 48000  # Opus decodes at 48 kHz; the audio output keeps it
AUDIO_LAYOUT = "stereo"
FRAME_RATE_HINT = 30  # for rate control only: pts drive the encoders (90 kHz time base)
DEFAULT_QUEUE_FRAMES = 30  # about a second of 30 fps video, 0.6 s of 20 ms Opus
LATE_AFTER = 0.5  # seconds an input frame may wait for the worker before its picture is not encoded
FORCED_KEYFRAME_INTERVAL = 0.5  # seconds between keyframes forced by requests
AUDIO_FILL_MAX = 1.0  # seconds of missing audio filled with silence; a longer gap re-anchors
AUDIO_JITTER = 0.0025  # seconds of timestamp mismatch taken as continuous audio
DEFAULT_AUDIO_BITRATE = {"AAC": 128_000, "opus": 64_000}
MAX_DIMENSION = 8192
MAX_BITRATE = 100_000_000
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
VP8_CPU_USED = {"ultrafast": 16, "superfast": 12, "veryfast": 8, "faster": 6, "fast": 5}  # else 4

VIDEO_ENCODERS = {"H264": "libx264", "VP8": "libvpx"}
AUDIO_ENCODERS = {"AAC": "aac", "opus": "libopus"}
DECODERS = {"H264": "h264", "VP8": "vp8", "opus": "opus", "AAC": "aac"}
ENCODER_PRIMING = {"aac": 1024, "libopus": 312}  # samples before the first input sample (initial_padding)
_CODEC_NAMES = {"h264": "H264", "vp8": "VP8", "aac": "AAC", "opus": "opus"}
_VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
_AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
_I_FRAME = av.video.frame.PictureType.I
_ANY_FRAME = av.video.frame.PictureType.NONE


class TranscodingDisabled(Exception):
    pass


@dataclass(frozen=True)
class Target:
    """What a sink needs. Codec names are normalized (h264 -> H264, aac -> AAC), so equal needs share."""

    kind: str  # "video" | "audio"
    codec: str  # "H264" | "VP8" | "AAC" | "opus"
    width: int = 0  # 0 = as the source (only one given: the other keeps the aspect ratio)
    height: int = 0
    bitrate: int = 0  # bits/s; 0 = default_bitrate()
    fit: bool = False  # width/height are the largest size: scaled down (aspect kept) only when bigger

    def __post_init__(self) -> None:
        codec = _CODEC_NAMES.get(str(self.codec).lower())
        if codec is None:
            raise ValueError(f"unsupported target codec {self.codec!r}: expected one of H264, VP8, AAC, opus")
        object.__setattr__(self, "codec", codec)
        kind = "video" if codec in VIDEO_ENCODERS else "audio"
        if self.kind != kind:
            raise ValueError(f"{codec} is a {kind} codec, not {self.kind!r}")
        for name, limit in (("width", MAX_DIMENSION), ("height", MAX_DIMENSION), ("bitrate", MAX_BITRATE)):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= limit:
                raise ValueError(f"target {name} must be an int in 0..{limit}, not {value!r}")
        if kind == "audio" and (self.width or self.height):
            raise ValueError("an audio target has no size")


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


def output_size(target: Target, width: int, height: int) -> tuple[int, int]:
    """The encoded size for a source picture: exactly the target's when both are given, else scaled to
    keep the aspect ratio, else the source's; always even (4:2:0 needs it). A `fit` target's width and
    height are bounds: the source's size, scaled down to fit within them, never up."""
    if target.fit:
        scale = min(1.0, *(bound / size for bound, size in ((target.width, width), (target.height, height))
                           if bound and size))
        return _even(width * scale), _even(height * scale)
    if target.width and target.height:
        return _even(target.width), _even(target.height)
    if target.width:
        return _even(target.width), _even(height * target.width / width)
    if target.height:
        return _even(width * target.height / height), _even(target.height)
    return _even(width), _even(height)


def default_bitrate(target: Target, width: int = 0, height: int = 0) -> int:
    """The target's bitrate, or one for its size: 1.5 Mbit/s at 720p, in proportion to the pixel count,
    at least 150 kbit/s; 128 kbit/s AAC, 64 kbit/s Opus."""
    if target.bitrate:
        return target.bitrate
    if target.kind == "audio":
        return DEFAULT_AUDIO_BITRATE[target.codec]
    return max(150_000, round(1_500_000 * width * height / (1280 * 720)))


@dataclass(frozen=True)
class Settings:
    preset: str = "veryfast"  # x264 preset; VP8 maps it to a cpu-used speed
    keyframe_interval: float = 2.0  # seconds of media time between video keyframes
    queue_frames: int = DEFAULT_QUEUE_FRAMES
    late_after: float = LATE_AFTER
    codec_threads: int = 1  # per decoder and encoder; > 1 puts codec work outside the worker's CPU time


@dataclass
class TranscoderStats:
    frames_in: int = 0  # frames received from the source (loop thread)
    dropped_input: int = 0  # of those, dropped before the worker (loop thread)
    max_queue_depth: int = 0  # highest queue length seen (loop thread)
    source_keyframe_requests: int = 0  # keyframes asked of the source (rate-limited there) (loop thread)
    frames_out: int = 0  # encoded frames (worker)
    dropped_late: int = 0  # pictures decoded but not encoded, being late (worker)
    decode_errors: int = 0  # frames the decoder rejected (worker)
    skipped_broken: int = 0  # video frames skipped after a decode error, up to a keyframe (worker)
    errors: int = 0  # other failures in the worker (encoder), each skipping one frame (worker)
    keyframes_out: int = 0  # (worker)
    keyframes_forced: int = 0  # keyframes made on request (worker)
    encode_seconds: float = 0.0  # CPU time of the worker thread (worker)
    worker_thread_id: int | None = None  # the thread the codec work runs on (worker)


_WorkItem = tuple[EncodedFrame, float]  # the frame and when it was queued (time.monotonic())


class TranscodedFrames(FrameSource):
    """A transcoder's output. A keyframe request makes its encoder produce one (never asks the publisher)."""

    def __init__(self, transcoder: Transcoder) -> None:
        super().__init__()
        self.codec = transcoder.target.codec
        self.kind = transcoder.target.kind
        self._transcoder = weakref.ref(transcoder)

    def request_keyframe(self, now: float) -> None:
        transcoder = self._transcoder()
        if transcoder is not None:
            transcoder.request_keyframe()


class Transcoder:
    """One decode/encode pipeline from a stream track to a Target, with its own worker thread. Made and
    shared by Transcoders; `users` is the number of acquires not yet released."""

    def __init__(self, stream: Stream, track: PublishedTrack, target: Target, settings: Settings,
                 track_module: ModuleType, rtp_module: ModuleType) -> None:
        if track.kind != target.kind:
            raise ValueError(f"a {target.kind} target needs a {target.kind} track, not {track.kind}")
        if track.codec.name not in DECODERS:
            raise ValueError(f"cannot decode {track.codec.name!r}: expected one of {', '.join(DECODERS)}")
        self.stream = stream
        self.track = track
        self.target = target
        self.settings = settings
        self.kind = target.kind
        self.users = 0
        self.stats = TranscoderStats()
        self.output = TranscodedFrames(self)
        self._track_module = track_module
        self._rtp_module = rtp_module
        self._source: FrameSource | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._work: _VideoWork | _AudioWork | None = None  # made on the worker thread
        self._outbox: list[EncodedFrame] = []
        self._out_lock = threading.Lock()
        self._flush_scheduled = False
        self._keyframe_requested = False  # set on the loop, taken by the worker
        self._last_forced_request = -1e9
        self._rtp: _RtpOutput | None = None
        self._worker: FrameWorker[_WorkItem] = FrameWorker(
            f"transcode {stream.name} {target.kind}", self._process, settings.queue_frames, Overflow.FRESHEST,
            want_keyframe=self._request_source_keyframe, setup=self._setup)

    @property
    def thread(self) -> threading.Thread:
        """The worker thread, which owns the codecs."""
        return self._worker.thread

    # -- loop side ---------------------------------------------------------------------------------

    def start(self, source: FrameSource, loop: asyncio.AbstractEventLoop) -> None:
        self._source = source
        self._loop = loop
        self._worker.start(loop)
        source.subscribe(self._on_input)
        if self.kind == "video":
            self._request_source_keyframe()  # a shared source may be mid-GOP

    def stop(self) -> None:
        """Stop taking input and let the worker end after the frame it is on (no waiting here: see join)."""
        if self._stopping:
            return
        self._stopping = True
        if self._source is not None:
            self._source.unsubscribe(self._on_input)
        if self._on_source_report in self.track.report_listeners:
            self.track.report_listeners.remove(self._on_source_report)
        self._worker.stop()
        self.output.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker thread to end (after stop()); True when it has. Blocks: not for the loop."""
        return self._worker.join(timeout)

    @property
    def running(self) -> bool:
        return not self._stopping

    @property
    def queue_depth(self) -> int:
        return self._worker.queued

    def request_keyframe(self) -> None:
        """The next encoded picture is a keyframe (at most one forced per FORCED_KEYFRAME_INTERVAL)."""
        now = time.monotonic()
        if self.kind != "video" or now - self._last_forced_request < FORCED_KEYFRAME_INTERVAL:
            return
        self._last_forced_request = now
        self._keyframe_requested = True

    def rtp_track(self) -> PublishedTrack:
        """The output as RTP, for WebRTC viewers (video only); made on the first call."""
        if self.kind != "video":
            raise ValueError("only video output is packetized for WebRTC")
        if self._rtp is None:
            self._rtp = _RtpOutput(self.target.codec, self._track_module, self._rtp_module, self._on_rtp_pli)
            self.output.subscribe(self._rtp.on_frame)
            self.track.report_listeners.append(self._on_source_report)
        return self._rtp.track

    def _on_source_report(self, ntp: int, rtp_ts: int, now: float) -> None:
        """The publisher's sender report, moved onto the derived track's timestamps (pts carried through
        plus its offset), so viewers keep the transcoded video in sync with the forwarded audio."""
        pts_of = getattr(self._source, "pts_of", None)
        pts = pts_of(rtp_ts) if pts_of is not None else None
        if pts is None or self._rtp is None or self._stopping:
            return
        self._rtp.track.on_sender_report(ntp, self._rtp.timestamp(pts), now)

    def _on_rtp_pli(self, ssrc: int) -> None:
        self.request_keyframe()

    def _on_input(self, frame: EncodedFrame) -> None:
        stats = self.stats
        stats.frames_in += 1
        if self._stopping:
            return
        worker = self._worker
        worker.push(frame, (frame, time.monotonic()))
        # Input skipped waiting for the first keyframe counts as dropped too: the worker never saw it.
        stats.dropped_input = worker.dropped + worker.skipped
        stats.max_queue_depth = worker.max_depth

    def _request_source_keyframe(self) -> None:
        if self._source is not None and self._loop is not None and not self._stopping:
            self.stats.source_keyframe_requests += 1
            self._source.request_keyframe(self._loop.time())

    def _flush(self) -> None:
        with self._out_lock:
            frames, self._outbox = self._outbox, []
            self._flush_scheduled = False
        if self._stopping:
            return
        for frame in frames:
            self.output.emit(frame)

    # -- worker side -------------------------------------------------------------------------------

    def _setup(self) -> None:
        self.stats.worker_thread_id = threading.get_ident()
        try:
            self._work = _VideoWork(self) if self.kind == "video" else _AudioWork(self)
        except Exception:
            log.exception("transcoder %s of %r could not start", self.target, self.stream.name)
            self.stats.errors += 1
            raise

    def _process(self, item: _WorkItem) -> None:
        frame, queued_at = item
        assert self._work is not None
        try:
            out = self._work.process(frame, queued_at)
        except Exception:
            self.stats.errors += 1
            if self.stats.errors == 1:
                log.exception("transcoder %s of %r failed on a frame", self.target, self.stream.name)
            out = []
        self.stats.encode_seconds = self._worker.thread_cpu_seconds()
        if out:
            self.stats.frames_out += len(out)
            self._post(out)

    def _post(self, frames: list[EncodedFrame]) -> None:
        with self._out_lock:
            self._outbox.extend(frames)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        if not self._worker.post(self._flush):  # the loop is closed: nobody is left to receive
            self._stopping = True

    def _take_keyframe_request(self) -> bool:
        if self._keyframe_requested:
            self._keyframe_requested = False
            return True
        return False

    def _ask_source_for_keyframe(self) -> None:
        self._worker.post(self._request_source_keyframe)


def _set_threads(context: Any, threads: int) -> None:
    context.thread_count = threads
    if threads > 1:
        context.thread_type = "SLICE"  # frame threading would delay every frame by a frame per thread


class _VideoWork:
    """The worker's video pipeline: decode, scale, encode. Touched by the worker thread only."""

    def __init__(self, transcoder: Transcoder) -> None:
        self.t = transcoder
        self.target = transcoder.target
        self.settings = transcoder.settings
        self.decoder = cast(av.VideoCodecContext,
                            av.CodecContext.create(DECODERS[transcoder.track.codec.name], "r"))
        _set_threads(self.decoder, self.settings.codec_threads)
        self.decoder.flags = self.decoder.flags | av.codec.context.Flags.low_delay
        self.encoder: av.VideoCodecContext | None = None
        self.size: tuple[int, int] | None = None
        self.waiting_keyframe = False  # after a decode error
        self.interval = round(self.settings.keyframe_interval * VIDEO_CLOCK)
        self.next_keyframe: int | None = None  # pts at or after which the next keyframe is due
        self.tolerance = VIDEO_CLOCK // (2 * FRAME_RATE_HINT)  # half a frame: timestamps jitter

    def process(self, frame: EncodedFrame, queued_at: float) -> list[EncodedFrame]:
        stats = self.t.stats
        if self.waiting_keyframe:
            if not frame.keyframe:
                stats.skipped_broken += 1
                return []
            self.waiting_keyframe = False
        packet = av.Packet(frame.data)
        packet.pts = frame.pts
        packet.time_base = _VIDEO_TIME_BASE
        try:
            pictures = self.decoder.decode(packet)
        except av.FFmpegError:
            stats.decode_errors += 1
            self.waiting_keyframe = True
            self.t._ask_source_for_keyframe()
            return []
        out: list[EncodedFrame] = []
        for picture in pictures:
            if time.monotonic() - queued_at > self.settings.late_after:
                stats.dropped_late += 1
                continue
            out.extend(self._encode(picture, frame.pts if picture.pts is None else int(picture.pts)))
        return out

    def _encode(self, picture: av.VideoFrame, pts: int) -> list[EncodedFrame]:
        stats = self.t.stats
        width, height = output_size(self.target, picture.width, picture.height)
        if self.encoder is None or self.size != (width, height):
            self.encoder = self._open(width, height)
            self.size = (width, height)
            self.next_keyframe = None
        if picture.width != width or picture.height != height or picture.format.name != "yuv420p":
            picture = picture.reformat(width=width, height=height, format="yuv420p")
        forced = self.t._take_keyframe_request()
        due = self.next_keyframe is None or pts >= self.next_keyframe - self.tolerance
        picture.pict_type = _I_FRAME if forced or due else _ANY_FRAME
        picture.pts = pts
        picture.time_base = _VIDEO_TIME_BASE
        try:
            packets = self.encoder.encode(picture)
        except av.FFmpegError:
            stats.errors += 1
            self.encoder = None  # a fresh one next time, starting with a keyframe
            return []
        out = []
        for packet in packets:
            keyframe = bool(packet.is_keyframe)
            packet_pts = pts if packet.pts is None else int(packet.pts)
            if keyframe:
                stats.keyframes_out += 1
                if forced and not due:
                    stats.keyframes_forced += 1
                scheduled = self.next_keyframe
                if due and not forced and scheduled is not None and packet_pts < scheduled + self.interval // 2:
                    self.next_keyframe = scheduled + self.interval  # on schedule: jitter does not add up
                else:  # the first, a forced one, or after a long hole in the input: a new schedule
                    self.next_keyframe = packet_pts + self.interval
            out.append(EncodedFrame(self.target.codec, bytes(packet), packet_pts, VIDEO_CLOCK, keyframe,
                                    width=width, height=height))
        return out

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        settings = self.settings
        bitrate = default_bitrate(self.target, width, height)
        context = cast(av.VideoCodecContext, av.CodecContext.create(VIDEO_ENCODERS[self.target.codec], "w"))
        context.width, context.height = width, height
        context.pix_fmt = "yuv420p"
        context.time_base = _VIDEO_TIME_BASE
        context.framerate = fractions.Fraction(FRAME_RATE_HINT, 1)
        context.bit_rate = bitrate
        # A backstop only: keyframes are forced by media time (see _encode).
        context.gop_size = max(60, round(settings.keyframe_interval * 2 * 60))
        context.max_b_frames = 0
        _set_threads(context, settings.codec_threads)
        if self.target.codec == "H264":
            macroblocks = ((width + 15) // 16) * ((height + 15) // 16)
            options = {"preset": settings.preset, "tune": "zerolatency", "profile": "baseline",
                       "forced-idr": "1", "sc_threshold": "0", "maxrate": str(bitrate), "bufsize": str(bitrate)}
            if macroblocks <= 3600:
                options["level"] = "3.1"
            elif macroblocks <= 8192:
                options["level"] = "4.1"
        else:
            options = {"deadline": "realtime", "cpu-used": str(VP8_CPU_USED.get(settings.preset, 4)),
                       "lag-in-frames": "0", "auto-alt-ref": "0", "static-thresh": "1", "partitions": "0",
                       "minrate": str(bitrate), "maxrate": str(bitrate), "bufsize": str(bitrate),
                       "undershoot-pct": "100", "overshoot-pct": "15"}
            context.qmin, context.qmax = 2, 56
        context.options = options
        context.open()
        if context.options:  # PyAV leaves there what the encoder did not take
            log.warning("%s ignored the options %s", context.name, context.options)
        return context


class _AudioWork:
    """The worker's audio pipeline: decode, convert, re-frame (the encoder's frame size), encode."""

    def __init__(self, transcoder: Transcoder) -> None:
        self.t = transcoder
        self.target = transcoder.target
        self.decoder = cast(av.AudioCodecContext,
                            av.CodecContext.create(DECODERS[transcoder.track.codec.name], "r"))
        self.decoder.sample_rate = AUDIO_RATE
        self.decoder.layout = AUDIO_LAYOUT
        name = AUDIO_ENCODERS[self.target.codec]
        encoder = cast(av.AudioCodecContext, av.CodecContext.create(name, "w"))
        encoder.sample_rate = AUDIO_RATE
        encoder.layout = AUDIO_LAYOUT
        formats = encoder.codec.audio_formats
        encoder.format = formats[0].name if formats else "fltp"
        encoder.bit_rate = default_bitrate(self.target)
        encoder.time_base = _AUDIO_TIME_BASE
        encoder.open()
        self.encoder = encoder
        self.format = encoder.format.name
        self.frame_size = encoder.frame_size or 1024
        self.priming = ENCODER_PRIMING.get(name, 0)
        self.extradata = bytes(encoder.extradata) if encoder.extradata else None
        self.resampler = av.AudioResampler(format=self.format, layout=AUDIO_LAYOUT, rate=AUDIO_RATE)
        self.fifo = av.AudioFifo()
        self.next_pos: int | None = None  # where the next decoded sample should be, output samples
        self.fifo_pts = 0  # pts of the first sample in the fifo
        self.trim = 0  # samples still to drop at the start (priming before the epoch)
        self.jitter = round(AUDIO_JITTER * AUDIO_RATE)
        self.fill_max = round(AUDIO_FILL_MAX * AUDIO_RATE)
        self.samples_dropped = 0  # buffered samples lost to a re-anchor

    def process(self, frame: EncodedFrame, queued_at: float) -> list[EncodedFrame]:
        packet = av.Packet(frame.data)
        packet.pts = frame.pts
        packet.time_base = fractions.Fraction(1, frame.clock_rate)
        if frame.extradata and self.decoder.extradata is None:
            self.decoder.extradata = frame.extradata  # AAC: its AudioSpecificConfig, before the first decode
        try:
            decoded = self.decoder.decode(packet)
        except av.FFmpegError:
            self.t.stats.decode_errors += 1
            return []
        position = frame.pts * AUDIO_RATE // frame.clock_rate
        for samples in decoded:
            self._write(samples, position)
            position += samples.samples * AUDIO_RATE // samples.sample_rate
        out: list[EncodedFrame] = []
        while self.fifo.samples >= self.frame_size:
            chunk = self.fifo.read(self.frame_size)
            assert chunk is not None  # there were enough samples
            chunk.pts = self.fifo_pts
            chunk.time_base = _AUDIO_TIME_BASE
            self.fifo_pts += self.frame_size
            for packet_out in self.encoder.encode(chunk):
                pts = chunk.pts - self.priming if packet_out.pts is None else int(packet_out.pts)
                out.append(EncodedFrame(self.target.codec, bytes(packet_out), pts, AUDIO_RATE, True, channels=2,
                                        extradata=self.extradata))
        return out

    def _write(self, samples: av.AudioFrame, position: int) -> None:
        gap = None if self.next_pos is None else position - self.next_pos
        if gap is None or gap < -self.jitter or gap > self.fill_max:
            self.samples_dropped += self.fifo.samples
            self.fifo = av.AudioFifo()
            next_pos = self.fifo_pts = position
            if gap is None:
                self.trim = max(0, self.priming - position)
        else:
            assert self.next_pos is not None
            next_pos = self.next_pos
            if gap > self.jitter:
                self.fifo.write(self._silence(gap))
                next_pos += gap
        for converted in self.resampler.resample(samples):
            converted.pts = None  # the fifo checks continuity of pts it is given: we keep our own
            self.fifo.write(converted)
            next_pos += converted.samples
        self.next_pos = next_pos
        if self.trim and self.fifo.samples:
            n = min(self.trim, self.fifo.samples)
            self.fifo.read(n)
            self.fifo_pts += n
            self.trim -= n

    def _silence(self, count: int) -> av.AudioFrame:
        silence = av.AudioFrame(format=self.format, layout=AUDIO_LAYOUT, samples=count)
        silence.sample_rate = AUDIO_RATE
        for plane in silence.planes:
            plane.update(bytes(plane.buffer_size))
        return silence


def _aiortc_codec(name: str) -> RTCRtpCodecParameters:
    """aiortc's own parameters for a codec we send (H.264: packetization-mode 1, 42e01f)."""
    for params in AIORTC_CODECS["video"]:
        if params.mimeType.lower() != f"video/{name.lower()}":
            continue
        if name == "H264" and params.parameters.get("profile-level-id") != "42e01f":
            continue
        return copy.deepcopy(params)
    raise ValueError(f"aiortc has no {name} codec")  # pragma: no cover - the pinned aiortc has both


class _RtpOutput:
    """A transcoder's output packetized as a publisher's track: random SSRC, sequence start and
    timestamp offset; marker on each frame's last packet; aiortc's packetizers (RFC 6184 STAP-A/FU-A,
    RFC 7741 with a 15-bit PictureID)."""

    def __init__(self, codec: str, track_module: ModuleType, rtp_module: ModuleType,
                 on_keyframe_request: Callable[[int], None]) -> None:
        params = _aiortc_codec(codec)
        assert params.payloadType is not None
        info = Codec("video", codec, VIDEO_CLOCK, params.payloadType, dict(params.parameters), native=params)
        self.codec = codec
        self.track = PublishedTrack(info, track_module.IngestTrack(codec, VIDEO_CLOCK), track_module,
                                    on_keyframe_request)
        self._header = rtp_module.RtpHeader
        self._ssrc = secrets.randbits(32) or 1
        self._seq = secrets.randbits(16)
        self._ts_offset = secrets.randbits(32)
        self._picture_id = secrets.randbits(15)
        self.packets = 0

    def timestamp(self, pts: int) -> int:
        return (pts + self._ts_offset) & 0xFFFFFFFF

    def on_frame(self, frame: EncodedFrame) -> None:
        if self.codec == "H264":
            payloads = H264Encoder._packetize(H264Encoder._split_bitstream(frame.data))
        else:
            payloads = Vp8Encoder._packetize(frame.data, self._picture_id)
            self._picture_id = (self._picture_id + 1) & 0x7FFF
        timestamp = self.timestamp(frame.pts)
        now = asyncio.get_running_loop().time()
        last = len(payloads) - 1
        for k, payload in enumerate(payloads):
            header = self._header(marker=k == last, payload_type=self.track.codec.payload_type,
                                  sequence_number=self._seq, timestamp=timestamp, ssrc=self._ssrc)
            self._seq = (self._seq + 1) & 0xFFFF
            self.packets += 1
            self.track.on_rtp(bytes(header) + payload, now)


class Transcoders:
    """All transcoders of a server: shared by target, created on demand, stopped when unused or when their
    stream ends.

    Call from the event loop thread (acquire needs the running loop: results come back to it)."""

    def __init__(self, track: ModuleType, rtp: ModuleType, enabled: bool = True,
                 preset: str = "veryfast", keyframe_interval: float = 2.0, queue_frames: int = DEFAULT_QUEUE_FRAMES,
                 late_after: float = LATE_AFTER, codec_threads: int = 1) -> None:
        if preset not in X264_PRESETS:
            raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(X264_PRESETS)}")
        if not keyframe_interval > 0:
            raise ValueError(f"keyframe_interval must be positive, not {keyframe_interval!r}")
        if queue_frames < 1:
            raise ValueError(f"queue_frames must be at least 1, not {queue_frames!r}")
        if not late_after > 0:
            raise ValueError(f"late_after must be positive, not {late_after!r}")
        if codec_threads < 1:
            raise ValueError(f"codec_threads must be at least 1, not {codec_threads!r}")
        self.track_module = track
        self.rtp_module = rtp
        self.enabled = enabled
        self.settings = Settings(preset, keyframe_interval, queue_frames, late_after, codec_threads)
        self._transcoders: dict[tuple[PublishedTrack, Target], Transcoder] = {}
        self._streams: set[Stream] = set()  # streams whose end this listens for
        self._created = 0

    def acquire(self, stream: Stream, target: Target, now: float) -> Transcoder:
        """The shared transcoder of the stream's track of target.kind to target, started if new. Each
        acquire needs a release."""
        if not self.enabled:
            raise TranscodingDisabled("transcoding is disabled on this server")
        track = stream.track(target.kind)
        if track is None:
            raise LookupError(f"stream {stream.name!r} has no {target.kind} track")
        key = (track, target)
        transcoder = self._transcoders.get(key)
        if transcoder is None:
            transcoder = Transcoder(stream, track, target, self.settings, self.track_module, self.rtp_module)
            source = stream.frames(target.kind, now)
            self._transcoders[key] = transcoder
            self._created += 1
            transcoder.start(source, asyncio.get_running_loop())
            log.info("transcoding %r %s %s -> %s", stream.name, target.kind, track.codec.name, target)
            if stream not in self._streams:
                self._streams.add(stream)
                stream.on_end(self._stream_ended)  # at once if it has ended already
        transcoder.users += 1
        return transcoder

    def release(self, transcoder: Transcoder) -> None:
        """One user fewer; the last one stops it (the worker ends after its current frame)."""
        if transcoder.users > 0:
            transcoder.users -= 1
        if transcoder.users == 0:
            self._stop(transcoder)

    def _stop(self, transcoder: Transcoder) -> None:
        key = (transcoder.track, transcoder.target)
        if self._transcoders.get(key) is transcoder:
            del self._transcoders[key]
        transcoder.stop()
        stream = transcoder.stream
        if stream in self._streams and not any(t.stream is stream for t in self._transcoders.values()):
            self._streams.discard(stream)
            stream.remove_end_listener(self._stream_ended)

    def active(self) -> int:
        return len(self._transcoders)

    def created(self) -> int:
        return self._created

    def transcoders(self) -> list[Transcoder]:
        return list(self._transcoders.values())

    def _stream_ended(self, stream: Stream) -> None:
        """The publisher is gone: stop its transcoders, whoever uses them."""
        self._streams.discard(stream)
        for transcoder in [t for t in self._transcoders.values() if t.stream is stream]:
            transcoder.users = 0
            self._stop(transcoder)

    def close(self) -> None:
        """Stop everything (server shutdown). Threads end on their own; join them if you must wait."""
        for transcoder in list(self._transcoders.values()):
            transcoder.users = 0
            self._stop(transcoder)

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for transcoder in self._transcoders.values():
            stats = transcoder.stats
            target = transcoder.target
            out.append({
                "stream": transcoder.stream.name,
                "kind": target.kind,
                "source": transcoder.track.codec.name,
                "target": {"codec": target.codec, "width": target.width, "height": target.height,
                           "bitrate": target.bitrate, "fit": target.fit},
                "users": transcoder.users,
                "frames_in": stats.frames_in,
                "frames_out": stats.frames_out,
                "dropped_input": stats.dropped_input,
                "dropped_late": stats.dropped_late,
                "decode_errors": stats.decode_errors,
                "errors": stats.errors,
                "encode_seconds": round(stats.encode_seconds, 3),
                "queue_depth": transcoder.queue_depth,
            })
        return out
