"""Recording of one stream to a file: the publisher's encoded frames remuxed by FFmpeg (PyAV), never
re-encoded, into a container that survives a crash.

    recorder = Recorder(file, container_for("H264", "opus"), video="H264", audio="opus", on_done=done)
    source.subscribe(recorder.push)                     # EncodedFrames, on the event loop thread
    recorder.on_keyframe_needed = lambda: source.request_keyframe(loop.time())
    recorder.stop()                                     # the file is finished by the worker; done(result)

Containers (`container_for`): H.264 video (with AAC or Opus) goes to fragmented MP4, VP8 (with Opus) to
WebM, anything else to Matroska. Both are written fragment by fragment: FFmpeg's MP4 muxer keeps a
fragment (moof + mdat) in memory and writes it whole once it is complete (`frag_keyframe` or
`frag_duration`, whichever comes first), the Matroska muxer does the same with clusters
(`cluster_time_limit`), and `flush_packets` hands each finished one to the kernel at once. A `kill -9`
of the server therefore leaves a file that plays up to the last fragment written: the one in progress,
at most `fragment_duration` of media, is what is lost. Closing normally adds the index (MP4 `mfra`,
Matroska cues) for fast seeking.

Who does what:
- The event loop thread (`push`) hands frames to the recording's FrameWorker (media/worker.py): video
  starts at the first keyframe (asking for one); the queue is bounded: when it is full, frames are
  dropped and counted, and video then waits for the next keyframe. With `keyframe_interval`, it asks the
  source for a keyframe that often, so the file can be seeked (WebRTC publishers send keyframes only
  when asked).
- The worker thread muxes (`RecordWriter`) and writes. A write that fails (disk full, the
  file gone, an I/O error) ends the recording: the result, with the reason, goes back to the loop with
  `call_soon_threadsafe` and `on_done` is called there.

Timestamps: the file starts at 0 at the first frame recorded (the first video keyframe, or the first
audio frame of an audio-only stream); audio and video keep their offsets on the stream's timeline. Each
packet is muxed when the next frame of its track arrives, so its duration is known (the MP4 muxer needs
it for the last sample of a fragment).
"""

from __future__ import annotations

import asyncio
import errno
import io
import logging
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, BinaryIO

import av

from .encoded import EncodedFrame, aac_config, h264_parameter_sets, h264_size
from .worker import FrameWorker, Overflow

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
VIDEO_CODECS = ("H264", "VP8")
AUDIO_CODECS = ("opus", "AAC")


@dataclass(frozen=True, slots=True)
class Container:
    format: str  # FFmpeg muxer name
    extension: str  # with the dot
    content_type: str


MP4 = Container("mp4", ".mp4", "video/mp4")
WEBM = Container("webm", ".webm", "video/webm")
MATROSKA = Container("matroska", ".mkv", "video/x-matroska")
CONTAINERS = {c.extension: c for c in (MP4, WEBM, MATROSKA)}


def container_for(video: str | None, audio: str | None) -> Container:
    """The container that takes these codecs as they are (None: no such track)."""
    if video is None and audio is None:
        raise ValueError("a recording needs a video or an audio track")
    if video is not None and video not in VIDEO_CODECS:
        raise ValueError(f"cannot record {video!r} video")
    if audio is not None and audio not in AUDIO_CODECS:
        raise ValueError(f"cannot record {audio!r} audio")
    if video == "H264" or (video is None and audio == "AAC"):
        return MP4
    if audio != "AAC":
        return WEBM  # VP8 and/or Opus
    return MATROSKA  # VP8 with AAC


class RecordError(Exception):
    """The recording cannot go on; `reason` says why in words for people (it goes to the client and the
    backend)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def reason_of(exc: BaseException) -> str:
    """A short reason for an I/O or FFmpeg error: the system's words for its errno when it has one."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int) and number:
        if number == errno.ENOSPC:
            return "No space left on device"
        return os.strerror(number)
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------------------------------------
# Codec parameters taken from the first frames


def opus_head(channels: int, sample_rate: int = 48000) -> bytes:
    """The OpusHead (RFC 7845 5.1) MP4 and Matroska carry as codec private data; no pre-skip: WebRTC Opus
    is decoded from wherever it starts."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, 0, sample_rate, 0, 0)


def vp8_size(keyframe: bytes) -> tuple[int, int]:
    """Width and height from a VP8 keyframe's header (RFC 6386 9.1), (0, 0) if it is not one."""
    if len(keyframe) < 10 or keyframe[0] & 1 or keyframe[3:6] != b"\x9d\x01\x2a":
        return 0, 0
    width, height = struct.unpack_from("<HH", keyframe, 6)
    return width & 0x3FFF, height & 0x3FFF


_TEMPLATE_LOCK = threading.Lock()
_TEMPLATES: dict[str, Any] = {}
_TEMPLATE_ENCODERS = {"H264": "h264", "VP8": "libvpx", "opus": "libopus", "AAC": "aac"}


def _template(codec: str) -> Any:
    """A stream to copy (add_stream_from_template): it is never opened, so no encoder runs, and its codec
    context takes extradata (the SPS/PPS, OpusHead, AudioSpecificConfig), which add_mux_stream's has no
    room for."""
    with _TEMPLATE_LOCK:
        if not _TEMPLATES:
            holder = av.open(io.BytesIO(), "w", format="matroska")  # never written
            _TEMPLATES["holder"] = holder
            for name, encoder in _TEMPLATE_ENCODERS.items():
                _TEMPLATES[name] = holder.add_stream(encoder)
        return _TEMPLATES[codec]


# ---------------------------------------------------------------------------------------------------------
# Worker side: the muxer


def muxer_options(container: Container, fragment_duration: float) -> dict[str, str]:
    """Options that make FFmpeg write the file fragment by fragment, each flushed when complete."""
    if container is MP4:
        return {"movflags": "frag_keyframe+empty_moov+default_base_moof",
                "frag_duration": str(round(fragment_duration * 1_000_000)), "flush_packets": "1"}
    return {"cluster_time_limit": str(round(fragment_duration * 1000)), "flush_packets": "1"}


class RecordWriter:
    """Muxes EncodedFrames into `file` (seekable, binary, opened by the caller) in the calling thread.

    `video` and `audio` are the codecs of the tracks to record (None: leave that track out), audio at
    `audio_rate` Hz with `audio_channels` (1 or 2; the Opus clock is always 48 kHz). The container
    header is written at the first frame that can start the file: a video keyframe, or the first audio
    frame when there is no video. Raises RecordError when the file cannot be written."""

    def __init__(self, file: BinaryIO, container: Container, video: str | None, audio: str | None,
                 fragment_duration: float = 1.0, audio_rate: int = 48000, audio_channels: int = 2):
        self.file = file
        self.audio_rate = audio_rate
        self.audio_channels = audio_channels if audio_channels in (1, 2) else 2
        self.container_kind = container
        self.video = video
        self.audio = audio
        self.fragment_duration = fragment_duration
        self.container: Any = None
        self.streams: dict[str, Any] = {}
        self.origin: float | None = None  # seconds on the stream's timeline at 0 in the file
        self._origin_ticks: dict[str, int] = {}
        self._pending: dict[str, EncodedFrame] = {}  # each track's last frame, muxed when the next comes
        self._last_duration: dict[str, int] = {}
        self._last_pts: dict[str, int] = {}
        self._waiting_audio: deque[EncodedFrame] = deque(maxlen=64)  # before the first keyframe
        self.frames = 0  # muxed
        self.skipped = 0  # before the start, or out of order
        self.media_seconds = 0.0  # the end of the last frame muxed, seconds from the start
        self.closed = False

    @property
    def started(self) -> bool:
        return self.container is not None

    def write(self, frame: EncodedFrame) -> None:
        kind = frame.kind
        if (self.video if kind == "video" else self.audio) != frame.codec:
            self.skipped += 1
            return
        if self.container is None:
            if kind == "audio" and self.video is not None:
                self._waiting_audio.append(frame)
                return
            if kind == "video" and not frame.keyframe:
                self.skipped += 1
                return
            self._open(frame)
            waiting = [a for a in self._waiting_audio if a.seconds >= frame.seconds]
            self.skipped += len(self._waiting_audio) - len(waiting)
            self._waiting_audio.clear()
            self._add(frame)
            for audio in waiting:
                self._add(audio)
            return
        self._add(frame)

    def _add(self, frame: EncodedFrame) -> None:
        kind = frame.kind
        pts = frame.pts - self._origin_ticks[kind]
        if pts < 0 or pts <= self._last_pts.get(kind, -1):
            self.skipped += 1  # before the start, or not after the previous frame of its track
            return
        self._last_pts[kind] = pts
        previous = self._pending.get(kind)
        if previous is not None:
            self._mux(previous, pts - (previous.pts - self._origin_ticks[kind]))
        self._pending[kind] = frame

    def _open(self, first: EncodedFrame) -> None:
        self.origin = first.seconds
        try:
            self.container = av.open(self.file, "w", format=self.container_kind.format,
                                     options=muxer_options(self.container_kind, self.fragment_duration))
            if self.video is not None:
                self.streams["video"] = self._video_stream(first)
                self._origin_ticks["video"] = round(self.origin * VIDEO_CLOCK)
            if self.audio is not None:
                self.streams["audio"] = self._audio_stream(first if first.kind == "audio" else None)
                self._origin_ticks["audio"] = round(self.origin * self.audio_rate)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise RecordError(f"Cannot start the recording: {reason_of(exc)}") from exc

    def _video_stream(self, keyframe: EncodedFrame) -> Any:
        assert self.video is not None
        stream = self.container.add_stream_from_template(_template(self.video))
        width, height = keyframe.width, keyframe.height
        if not width or not height:
            width, height = vp8_size(keyframe.data) if self.video == "VP8" else h264_size(keyframe.data)
        stream.codec_context.width, stream.codec_context.height = width, height
        if self.video == "H264":
            parameter_sets = h264_parameter_sets(keyframe.data)
            if parameter_sets:
                stream.codec_context.extradata = parameter_sets
        stream.time_base = Fraction(1, VIDEO_CLOCK)
        return stream

    def _audio_stream(self, first: EncodedFrame | None) -> Any:
        assert self.audio is not None
        stream = self.container.add_stream_from_template(_template(self.audio))
        channels = self.audio_channels
        stream.codec_context.sample_rate = self.audio_rate
        stream.codec_context.layout = "mono" if channels == 1 else "stereo"
        if self.audio == "opus":
            stream.codec_context.extradata = opus_head(channels, self.audio_rate)
        else:
            given = first.extradata if first is not None else None
            stream.codec_context.extradata = given or aac_config(self.audio_rate, channels)
        stream.time_base = Fraction(1, self.audio_rate)
        return stream

    def _mux(self, frame: EncodedFrame, duration: int) -> None:
        kind = frame.kind
        duration = max(1, duration)
        self._last_duration[kind] = duration
        pts = frame.pts - self._origin_ticks[kind]
        packet = av.Packet(frame.data)
        packet.stream = self.streams[kind]
        packet.time_base = Fraction(1, frame.clock_rate)
        packet.pts = packet.dts = pts
        packet.duration = duration
        packet.is_keyframe = frame.keyframe
        try:
            self.container.mux(packet)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise RecordError(f"Recording failed: {reason_of(exc)}") from exc
        self.frames += 1
        # From `pts`, not packet.pts: the muxer rescales the packet to the stream's time base.
        self.media_seconds = max(self.media_seconds, (pts + duration) / frame.clock_rate)

    def close(self) -> None:
        """Mux what is pending and finish the file (its index); the file object stays open."""
        if self.closed:
            return
        self.closed = True
        if self.container is None:
            return
        try:
            for kind, frame in list(self._pending.items()):
                default = 3000 if kind == "video" else 960
                self._mux(frame, self._last_duration.get(kind, default))
            self._pending.clear()
            self.container.close()
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise RecordError(f"Cannot finish the recording: {reason_of(exc)}") from exc
        finally:
            self.container = None

    def abandon(self) -> None:
        """Give up after an error: free the muxer without writing anything more."""
        self.closed = True
        container, self.container = self.container, None
        if container is not None:
            try:
                container.close()
            except (av.FFmpegError, OSError, ValueError):
                pass


# ---------------------------------------------------------------------------------------------------------
# Loop side and the worker thread


@dataclass
class RecordSettings:
    fragment_duration: float = 1.0  # seconds of media a crash may lose, at most
    keyframe_interval: float = 0.0  # ask the source for a keyframe this often (seconds; 0: never)
    queue_frames: int = 600  # frames waiting for the worker; beyond that they are dropped and counted

    def __post_init__(self) -> None:
        if not self.fragment_duration > 0:
            raise ValueError("fragment_duration must be positive")
        if self.keyframe_interval < 0:
            raise ValueError("keyframe_interval must not be negative")
        if self.queue_frames < 1:
            raise ValueError("queue_frames must be at least 1")


@dataclass(slots=True)
class RecordResult:
    ok: bool
    reason: str | None  # why it failed
    frames: int  # muxed
    bytes: int  # file size at the end
    media_seconds: float  # length of the recording
    dropped: int  # frames dropped on the loop side (queue full, waiting for a keyframe after a drop)
    cpu_seconds: float  # the worker thread's CPU time


class Recorder:
    """One recording. Every method runs on the event loop thread; `on_done(result)` is called there once,
    when the worker finished the file (after stop()) or gave up (an error)."""

    def __init__(self, file: BinaryIO, container: Container, video: str | None, audio: str | None,
                 settings: RecordSettings | None = None,
                 on_done: Callable[[RecordResult], None] | None = None, label: str = "record",
                 audio_rate: int = 48000, audio_channels: int = 2):
        self.settings = settings = settings or RecordSettings()
        self.file = file
        self.video = video
        self.audio = audio
        self.on_done = on_done
        # Called when video needs a keyframe to go on (the start, after a drop, every keyframe_interval).
        # Point it at the source's keyframe request (PLI/FIR), which rate-limits.
        self.on_keyframe_needed: Callable[[], None] | None = None
        self.writer = RecordWriter(file, container, video, audio, settings.fragment_duration, audio_rate,
                                   audio_channels)
        self.pushed = 0
        self.stopped = False
        self.result: RecordResult | None = None
        self._done = threading.Event()
        self._failed = False  # set by the worker: frames are no longer wanted
        self._reason: str | None = None  # why the worker gave up
        self._last_keyframe: float | None = None  # seconds on the timeline
        self._asked_at: float | None = None
        # The file keeps every frame queued (KEEP_QUEUED): a drop costs the frames up to the next keyframe.
        self._worker: FrameWorker[EncodedFrame] = FrameWorker(
            f"record:{label}", self._write, settings.queue_frames, Overflow.KEEP_QUEUED,
            want_keyframe=self._want_keyframe, on_exit=self._finish)

    @property
    def dropped(self) -> int:
        """Frames dropped on the loop side (queue full, waiting for a keyframe after a drop)."""
        return self._worker.dropped

    @property
    def queued(self) -> int:
        return self._worker.queued

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def push(self, frame: EncodedFrame) -> None:
        if self.stopped or self._failed:
            return
        if not self._worker.started:
            self._worker.start(asyncio.get_running_loop())
        if frame.kind == "video":
            if frame.codec != self.video:
                return
            self._keyframe_schedule(frame)
        if self._worker.push(frame, frame):
            self.pushed += 1

    def _keyframe_schedule(self, frame: EncodedFrame) -> None:
        """With keyframe_interval, a keyframe is asked for that long after the last one, so the file can
        be seeked (WebRTC publishers send keyframes only when asked)."""
        if frame.keyframe:
            self._last_keyframe = frame.seconds
            return
        interval = self.settings.keyframe_interval
        if (interval and not self._worker.waiting_keyframe and self._last_keyframe is not None
                and frame.seconds - self._last_keyframe >= interval
                and (self._asked_at is None or frame.seconds - self._asked_at >= interval)):
            self._asked_at = frame.seconds
            self._want_keyframe()

    def _want_keyframe(self) -> None:
        if self.on_keyframe_needed is not None:
            try:
                self.on_keyframe_needed()
            except Exception:
                log.exception("keyframe request failed")

    def stop(self) -> None:
        """No more frames: the worker muxes what is queued, finishes the file and reports."""
        if self.stopped:
            return
        self.stopped = True
        if not self._worker.started:  # never got a frame: the thread still finishes the (empty) file
            self._worker.start(asyncio.get_running_loop())
        self._worker.stop(drain=True)

    async def wait(self, timeout: float | None = None) -> RecordResult | None:
        """Until the worker is done (after stop() or a failure); the result, or None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.is_set():
            if deadline is not None and time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        await asyncio.sleep(0)  # let on_done, posted before _done was set, run first
        return self.result

    def join(self, timeout: float | None = None) -> bool:
        """Block until the worker is done (server shutdown); False on timeout."""
        return self._done.wait(timeout)

    # -- worker thread ----------------------------------------------------------------------------

    def _write(self, frame: EncodedFrame) -> None:
        if self._failed:
            return
        try:
            self.writer.write(frame)
        except RecordError as exc:
            self._give_up(exc.reason)
        except Exception as exc:  # a bug or an unforeseen FFmpeg error: fail the recording, not the server
            log.exception("recording worker failed")
            self._give_up(f"Recording failed: {reason_of(exc)}")

    def _give_up(self, reason: str) -> None:
        self._reason = reason
        self._failed = True
        self._worker.stop()  # what is queued is of no use now

    def _finish(self) -> None:
        """The worker's last step: finish (or abandon) the file, close it, report."""
        writer = self.writer
        reason = self._reason
        if reason is None:
            try:
                writer.close()
            except RecordError as exc:
                reason = exc.reason
            except Exception as exc:
                log.exception("recording worker failed")
                reason = f"Recording failed: {reason_of(exc)}"
        if reason is not None:
            self._failed = True
            writer.abandon()
        size = 0
        try:
            self.file.flush()
            size = os.fstat(self.file.fileno()).st_size
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        try:
            self.file.close()
        except OSError as exc:
            if reason is None:
                reason = f"Cannot finish the recording: {reason_of(exc)}"
        result = RecordResult(reason is None, reason, writer.frames, size, round(writer.media_seconds, 3),
                              self.dropped, self._worker.thread_cpu_seconds())
        self.result = result
        if self.on_done is not None:
            self._worker.post(self._report, result)
        self._done.set()

    def _report(self, result: RecordResult) -> None:
        if self.on_done is not None:
            try:
                self.on_done(result)
            except Exception:
                log.exception("recording result callback failed")
