"""HLS output of one stream: MPEG-TS segments, or low-latency HLS (fMP4/CMAF parts), and their playlists.

No HTTP here: the server's HTTP layer serves what an `HlsOutput` makes, through a small API:

    hls = HlsOutput("cam1", folder, HlsSettings(low_latency=True))
    frames.subscribe(hls.push)                          # EncodedFrames, on the event loop thread
    hls.on_keyframe_needed = lambda: frames.request_keyframe(loop.time())
    await hls.wait_ready(timeout)                       # on-demand start: hold the first request
    text = await hls.playlist(msn, part)                # GET /cam1/cam1.m3u8[?_HLS_msn=M&_HLS_part=N]
    path = await hls.wait_file(name)                    # GET /cam1/<name>: a Path, or None (404)
    hls.content_type(name)
    hls.end()                                           # the publisher stopped: EXT-X-ENDLIST
    hls.close()                                         # every file and the folder deleted

playlist() raises PlaylistNotReady (answer 400), PlaylistTimeout (503) and HlsClosed (404); see there.

Who does what:
- The event loop thread (`push`) decides where segments and parts begin (`_Cutter`, no I/O: a segment
  starts on a video keyframe once the current one reached the target duration; a part ends before it
  would outgrow the part target, or at a keyframe if that leaves no short part behind; audio-only streams
  cut on time) and queues each frame for the worker, marked with the cut that comes before it.
- One worker thread per output muxes with FFmpeg through PyAV and writes the files (`_TsWriter`: one
  MPEG-TS muxer per segment, frames muxed as they come; `_Fmp4Writer`: one fragmented-MP4 muxer per part,
  its ftyp+moov kept once as init.mp4, its moof+mdat written as the part's file and appended to the
  segment's file, so a segment is its parts one after the other). Its queue is bounded: when full, frames
  are dropped and counted (video then waits for the next keyframe). Finished parts and segments go back
  to the loop with `call_soon_threadsafe`.
- The loop thread lists them (the playlist text is built there, from this object's state, and cached),
  wakes blocked playlist requests (RFC 8216bis 6.2.5.2) and waiters on the preload-hinted part (6.2.6),
  and has the worker delete what left the window, after a grace of a few segments for players still
  fetching them.

A segment or part is known to be finished when the frame after it arrives (about one frame interval);
the worker then needs a few milliseconds (`ready_delays`, benchmarks/bench_hls.py).

The tracks are those with a frame by the first cut: video and audio, video only, or audio only (when
`video` is None, after `detect_seconds` of audio with no video frame). A track that shows up later is
ignored (counted in `ignored`). The init segment is made from the first keyframe's SPS/PPS; parameter sets
that change later are carried in band only.

Timestamps: frames carry pts on the stream's timeline; segments keep them (the TS and tfdt times are the
stream's), and EXT-X-PROGRAM-DATE-TIME maps the timeline to the wall clock read when the first frame came.

File names are ours, never built from a request: segmentN.ts (or segmentN.m4s), partN.K.m4s, init.mp4.
`file(name)` is a lookup in the table of files this output made and still holds.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from .encoded import EncodedFrame, aac_config, h264_parameter_sets, h264_size

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".mp4": "video/mp4",
    ".m4s": "video/mp4",
}
SUPPORTED_CODECS = ("H264", "AAC")
VIDEO_CLOCK = 90000
AAC_SAMPLES_PER_FRAME = 1024
INIT_NAME = "init.mp4"

# One fragment per muxer: written at close (frag_custom never cuts on its own), the moov empty so it is the
# same for every part (init.mp4), tfdt = the first dts (frag_discont + no edit list + no shift to zero).
FMP4_OPTIONS = {
    "movflags": "frag_custom+empty_moov+default_base_moof+frag_discont+skip_trailer+skip_sidx",
    "use_editlist": "0",
    "avoid_negative_ts": "disabled",
}


@dataclass
class HlsSettings:
    low_latency: bool = False
    segment_duration: float = 2.0  # target, seconds; video cuts at the first keyframe past it
    window: int = 6  # segments listed in the playlist
    # LL-HLS part target, seconds. 0.5 s: at 30 fps a part is 15 frames, a 2 s segment 4 parts, and
    # PART-HOLD-BACK (3 part targets) is 1.5 s (hls.js in Chromium played 1 s segments about 2.4 s behind).
    part_duration: float = 0.5
    grace: int = 2  # segments (and parts of segments) kept on disk and served after they leave the playlist
    video: bool | None = None  # False: leave video out; None: audio-only if no video comes (detect_seconds)
    audio: bool | None = None  # False: leave audio out
    detect_seconds: float = 1.0  # with video=None, audio this long with no video frame makes it audio-only
    queue_frames: int = 600  # frames waiting for the worker; beyond that they are dropped and counted
    recent_delays: int = 1000  # ReadyDelay entries kept

    def __post_init__(self) -> None:
        if not self.segment_duration > 0 or not self.part_duration > 0:
            raise ValueError("segment_duration and part_duration must be positive")
        if self.low_latency and self.part_duration > self.segment_duration:
            raise ValueError("part_duration must not exceed segment_duration")
        if self.window < 1 or self.grace < 0 or self.queue_frames < 1:
            raise ValueError("window and queue_frames must be at least 1, grace at least 0")


class PlaylistNotReady(Exception):
    """A blocking playlist request asks for too far ahead, or for a part without a media sequence number
    (RFC 8216bis 6.2.5.2): answer 400 Bad Request."""


class PlaylistTimeout(TimeoutError):
    """The requested playlist (or the first one) did not come within the timeout: answer 503."""


class HlsClosed(Exception):
    """The output was closed, or ended before it made anything: answer 404."""


@dataclass(frozen=True, slots=True)
class ReadyDelay:
    """How long a finished segment or part took to get listed."""

    kind: str  # "segment" | "part"
    msn: int
    part: int | None
    pushed: float  # loop time its last frame was pushed
    cut: float  # loop time the next frame came, so it was known to be finished
    listed: float  # loop time it was listed in the playlist

    @property
    def seconds(self) -> float:
        return self.listed - self.pushed


@dataclass(slots=True)
class _Cut:
    """The end of a part (LL) and maybe of its segment, decided on the loop thread; travels to the worker
    with the frame that follows it, and back with the files made."""

    msn: int
    part: int  # index of the part that ends; 0 in TS mode
    segment_start: float  # seconds on the timeline
    part_duration: float  # seconds
    segment_duration: float  # seconds so far; the segment's duration when segment_ends
    segment_ends: bool
    independent: bool  # the part starts with a keyframe (or is audio)
    pushed: float  # loop time the last frame of the part was pushed
    decided: float  # loop time of the cut
    end_pts: int  # the next part's start, in lead clock ticks
    final: bool = False


def segment_name(msn: int, low_latency: bool) -> str:
    return f"segment{msn}.{'m4s' if low_latency else 'ts'}"


def part_name(msn: int, part: int) -> str:
    return f"part{msn}.{part}.m4s"


# ---------------------------------------------------------------------------------------------------------
# Loop thread: where segments and parts begin


class _Cutter:
    """Segment and part boundaries from frame times. No I/O; `now` comes in."""

    def __init__(self, settings: HlsSettings):
        self.settings = settings
        self.lead = ""  # "video" | "audio" once started
        self.clock = 0
        self.msn = 0
        self.part = 0
        self.segment_start = 0
        self.part_start = 0
        self.part_independent = True
        self.last_pts: int | None = None  # of the lead track
        self.step = 0  # the lead track's frame interval, last seen
        self.last_pushed = 0.0
        self.now = 0.0
        self.keyframe_wanted = False  # the segment reached its target and waits for a keyframe
        self._keyframe_asked: int | None = None  # pts of the last time it was set

    @property
    def started(self) -> bool:
        return bool(self.lead)

    def start(self, lead: str, clock: int) -> None:
        self.lead, self.clock = lead, clock

    def before(self, frame: EncodedFrame, now: float) -> _Cut | None:
        """The cut before `frame`, if one is due; then `frame` belongs to (msn, part)."""
        cut = None
        self.now = now
        if frame.kind == self.lead:
            cut = self._lead_frame(frame)
        self.last_pushed = now
        return cut

    def _lead_frame(self, frame: EncodedFrame) -> _Cut | None:
        pts = frame.pts
        independent = frame.keyframe or self.lead == "audio"
        if self.last_pts is None:
            self.segment_start = self.part_start = self.last_pts = pts
            self.part_independent = independent
            return None
        if pts > self.last_pts:
            self.step = pts - self.last_pts
        self.last_pts = max(self.last_pts, pts)
        settings = self.settings
        segment_ticks = round(settings.segment_duration * self.clock)
        part_ticks = round(settings.part_duration * self.clock)
        segment_elapsed = pts - self.segment_start
        part_elapsed = pts - self.part_start
        if part_elapsed <= 0:
            return None
        if self.lead == "video":
            # half a frame of slack: capture jitter must not push a cut to the keyframe after
            end_segment = frame.keyframe and segment_elapsed >= segment_ticks - self.step // 2
            if not end_segment and segment_elapsed >= segment_ticks and (
                    self._keyframe_asked is None or pts - self._keyframe_asked >= segment_ticks
                    or self._keyframe_asked < self.segment_start):
                self.keyframe_wanted = True  # again after each segment duration without one
                self._keyframe_asked = pts
        elif settings.low_latency:
            end_segment = False  # decided with the part below
        else:
            end_segment = segment_elapsed + self.step > segment_ticks
        end_part = end_segment
        if settings.low_latency and not end_part:
            # a keyframe starts an independent part, unless that would leave a short part behind
            end_part = part_elapsed + self.step > part_ticks or (
                self.lead == "video" and frame.keyframe and 2 * part_elapsed >= part_ticks)
            if end_part and self.lead == "audio":
                end_segment = segment_elapsed + part_ticks > segment_ticks + self.step // 2
        if not end_part:
            return None
        cut = self._cut(pts, end_segment)
        self.part_start = pts
        self.part_independent = independent
        if end_segment:
            self.msn += 1
            self.part = 0
            self.segment_start = pts
        else:
            self.part += 1
        return cut

    def _cut(self, end_pts: int, end_segment: bool, final: bool = False) -> _Cut:
        return _Cut(self.msn, self.part, self.segment_start / self.clock, (end_pts - self.part_start) / self.clock,
                    (end_pts - self.segment_start) / self.clock, end_segment, self.part_independent,
                    self.last_pushed, self.now, end_pts, final)

    def finish(self, now: float) -> _Cut | None:
        """The cut that ends the stream (the last frame's duration guessed from the one before)."""
        if self.last_pts is None:
            return None
        self.now = now
        return self._cut(self.last_pts + max(self.step, 1), True, final=True)


# ---------------------------------------------------------------------------------------------------------
# Worker thread: muxing and files


@dataclass(slots=True)
class _Done:
    """A part, segment or init segment the worker finished (ok=False: it failed, list it as a gap)."""

    kind: str  # "init" | "part" | "segment"
    cut: _Cut | None
    files: dict[str, Path]
    ok: bool = True


@dataclass(slots=True)
class _Config:
    tracks: frozenset[str]


@dataclass(slots=True)
class _End:
    cut: _Cut


@dataclass(slots=True)
class _Delete:
    names: list[str]


class _Stop:
    pass


_Item = tuple[EncodedFrame, "_Cut | None"] | _Config | _End | _Delete | _Stop


class _WorkQueue:
    """Frames (bounded: the producer checks `full` and drops) and control items (never dropped)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.frames = 0
        self._items: deque[_Item] = deque()
        self._cond = threading.Condition()

    @property
    def full(self) -> bool:
        return self.frames >= self.limit

    def put(self, item: _Item) -> None:
        with self._cond:
            if isinstance(item, tuple):
                self.frames += 1
            self._items.append(item)
            self._cond.notify()

    def get(self) -> _Item:
        with self._cond:
            while not self._items:
                self._cond.wait()
            item = self._items.popleft()
            if isinstance(item, tuple):
                self.frames -= 1
            return item

    def discard_pending(self) -> None:
        with self._cond:
            self._items.clear()
            self.frames = 0


_TEMPLATE_LOCK = threading.Lock()
_TEMPLATES: dict[str, Any] = {}


def _template(codec: str) -> Any:
    """A stream to copy (add_stream_from_template) for one codec. PyAV's add_mux_stream has no codec
    context to carry extradata (the AAC AudioSpecificConfig, the H.264 SPS/PPS), and add_stream would open
    an encoder; a stream made from a template is never opened, and its codec context takes extradata."""
    with _TEMPLATE_LOCK:
        if not _TEMPLATES:
            holder = av.open(io.BytesIO(), "w", format="mpegts")  # never written
            _TEMPLATES["holder"] = holder
            _TEMPLATES["h264"] = holder.add_stream("h264")
            _TEMPLATES["aac"] = holder.add_stream("aac")
        return _TEMPLATES[codec]


@dataclass(slots=True)
class _Tracks:
    """What the muxers need to know of each track, from its first frames."""

    video: EncodedFrame | None = None  # the first keyframe
    audio: EncodedFrame | None = None  # the first audio frame
    width: int = 0
    height: int = 0
    sps_pps: bytes = b""
    asc: bytes = b""
    sample_rate: int = 0
    channels: int = 0

    @classmethod
    def from_frames(cls, tracks: frozenset[str], frames: Iterable[EncodedFrame]) -> _Tracks:
        out = cls()
        for frame in frames:
            if frame.kind == "video" and "video" in tracks and out.video is None and frame.keyframe:
                out.video = frame
            elif frame.kind == "audio" and "audio" in tracks and out.audio is None:
                out.audio = frame
        if out.video is not None:
            out.sps_pps = h264_parameter_sets(out.video.data)
            out.width, out.height = out.video.width, out.video.height
            if not out.width or not out.height:
                out.width, out.height = h264_size(out.video.data)
        if out.audio is not None:
            out.sample_rate = out.audio.clock_rate
            asc = out.audio.extradata or b""
            channels = out.audio.channels or ((asc[1] >> 3) & 0x0F if len(asc) >= 2 else 0) or 2
            out.channels = channels
            out.asc = asc or aac_config(out.sample_rate, channels)
        return out

    def add_streams(self, container: Any) -> dict[str, Any]:
        streams: dict[str, Any] = {}
        if self.video is not None:
            video = container.add_stream_from_template(_template("h264"))
            video.codec_context.width, video.codec_context.height = self.width, self.height
            if self.sps_pps:
                video.codec_context.extradata = self.sps_pps
            video.time_base = Fraction(1, VIDEO_CLOCK)
            streams["video"] = video
        if self.audio is not None:
            audio = container.add_stream_from_template(_template("aac"))
            audio.codec_context.sample_rate = self.sample_rate
            audio.codec_context.layout = "mono" if self.channels == 1 else "stereo"
            audio.codec_context.extradata = self.asc
            audio.time_base = Fraction(1, self.sample_rate)
            streams["audio"] = audio
        return streams


def _packet(frame: EncodedFrame, stream: Any, duration: int | None = None) -> av.Packet:
    packet = av.Packet(frame.data)
    packet.stream = stream
    packet.time_base = Fraction(1, frame.clock_rate)
    packet.pts = packet.dts = frame.pts
    if duration is not None:
        packet.duration = duration
    packet.is_keyframe = frame.keyframe
    return packet


class _Writer:
    """Worker side of one output: turns frames and cuts into files. Subclasses know the container."""

    def __init__(self, directory: Path, tracks: _Tracks, errors: Callable[[], None]):
        self.directory = directory
        self.tracks = tracks
        self.count_error = errors
        self.msn = 0
        self.part = 0

    def frame(self, frame: EncodedFrame, cut: _Cut | None) -> list[_Done]:
        done = self.cut(cut) if cut is not None else []
        self.add(frame)
        return done

    def cut(self, cut: _Cut) -> list[_Done]:
        done = self.end_unit(cut)
        if cut.segment_ends:
            self.msn, self.part = cut.msn + 1, 0
        else:
            self.part = cut.part + 1
        return done

    def add(self, frame: EncodedFrame) -> None:
        raise NotImplementedError

    def end_unit(self, cut: _Cut) -> list[_Done]:
        raise NotImplementedError

    def close(self) -> None:
        """Drop whatever is open (the output is closing)."""


class _TsWriter(_Writer):
    """One MPEG-TS muxer per segment, muxing each frame as it comes."""

    def __init__(self, directory: Path, tracks: _Tracks, errors: Callable[[], None]):
        super().__init__(directory, tracks, errors)
        self.container: Any = None
        self.streams: dict[str, Any] = {}
        self.failed = False  # the segment in hand could not be opened or written

    def _open(self) -> None:
        path = self.directory / segment_name(self.msn, False)
        try:
            self.container = av.open(str(path), "w", format="mpegts")
            self.streams = self.tracks.add_streams(self.container)
        except (av.FFmpegError, OSError, ValueError):
            log.warning("cannot open HLS segment %s", path, exc_info=True)
            self.failed = True
            self.container = None

    def add(self, frame: EncodedFrame) -> None:
        if self.container is None and not self.failed:
            self._open()
        stream = self.streams.get(frame.kind)
        if self.container is None or stream is None:
            return
        try:
            self.container.mux(_packet(frame, stream))
        except (av.FFmpegError, ValueError, OSError):
            log.debug("frame refused by the MPEG-TS muxer", exc_info=True)
            self.count_error()

    def end_unit(self, cut: _Cut) -> list[_Done]:
        name = segment_name(self.msn, False)
        path = self.directory / name
        ok = self.container is not None and not self.failed
        if self.container is not None:
            try:
                self.container.close()
            except (av.FFmpegError, OSError, ValueError):
                log.warning("cannot finish HLS segment %s", name, exc_info=True)
                ok = False
        if ok and not path.exists():  # every frame refused: the muxer never started
            ok = False
        if not ok:
            self.count_error()
        self.container, self.failed = None, False
        return [_Done("segment", cut, {name: self.directory / name} if ok else {}, ok)]

    def close(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except (av.FFmpegError, OSError, ValueError):
                pass
            self.container = None


def _boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """Top-level ISO BMFF boxes: (type, offset, size)."""
    out = []
    offset = 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        if size == 1 and offset + 16 <= len(data):
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size < 8 or offset + size > len(data):
            raise ValueError(f"truncated {kind!r} box at {offset}")
        out.append((kind, offset, size))
        offset += size
    return out


class _Fmp4Writer(_Writer):
    """Fragmented MP4 (CMAF) parts: each part is muxed on its own by FFmpeg's mp4 muxer into
    ftyp+moov+moof+mdat; the ftyp+moov is the init segment (the same for every part), the moof+mdat the
    part's file, and the segment's file is its parts one after the other."""

    def __init__(self, directory: Path, tracks: _Tracks, errors: Callable[[], None]):
        super().__init__(directory, tracks, errors)
        self.frames: list[EncodedFrame] = []
        self.segment_file: Any = None
        self.segment_ok = True
        self.init_written = False
        self.fragment = 1  # mfhd sequence number of the next part
        self.audio_step = AAC_SAMPLES_PER_FRAME

    def add(self, frame: EncodedFrame) -> None:
        if (self.tracks.video if frame.kind == "video" else self.tracks.audio) is not None:
            self.frames.append(frame)

    def _mux(self, frames: list[EncodedFrame], cut: _Cut) -> bytes:
        buffer = io.BytesIO()
        options = dict(FMP4_OPTIONS, fragment_index=str(self.fragment))
        with av.open(buffer, "w", format="mp4", options=options) as container:
            streams = self.tracks.add_streams(container)
            last: dict[str, EncodedFrame] = {}
            for frame in frames:  # each packet's duration is known once the track's next frame is
                previous = last.get(frame.kind)
                if previous is not None:
                    self._mux_one(container, previous, streams, frame.pts - previous.pts)
                last[frame.kind] = frame
            for kind, frame in last.items():
                self._mux_one(container, frame, streams, self._last_duration(kind, frame, cut))
        self.fragment += 1
        return buffer.getvalue()

    def _last_duration(self, kind: str, frame: EncodedFrame, cut: _Cut) -> int:
        lead = "video" if self.tracks.video is not None else "audio"
        if kind == lead:  # up to the next part, which starts with the lead track's next frame
            return max(1, cut.end_pts - frame.pts)
        return self.audio_step  # the other track's next frame may not have come yet

    def _mux_one(self, container: Any, frame: EncodedFrame, streams: dict[str, Any], duration: int) -> None:
        if frame.kind == "audio" and 0 < duration < 4 * AAC_SAMPLES_PER_FRAME:
            self.audio_step = duration
        try:
            container.mux(_packet(frame, streams[frame.kind], max(1, duration)))
        except (av.FFmpegError, ValueError):
            log.debug("frame refused by the MP4 muxer", exc_info=True)
            self.count_error()

    def end_unit(self, cut: _Cut) -> list[_Done]:
        done: list[_Done] = []
        frames, self.frames = self.frames, []
        name = part_name(self.msn, self.part)
        path = self.directory / name
        try:
            data = self._mux(frames, cut)
            boxes = _boxes(data)
            head = sum(size for kind, _, size in boxes if kind in (b"ftyp", b"moov"))
            media = b"".join(data[offset : offset + size] for kind, offset, size in boxes
                             if kind in (b"moof", b"mdat"))
            if not media:
                raise ValueError("the muxer wrote no fragment")
            if not self.init_written:
                (self.directory / INIT_NAME).write_bytes(data[:head])
                self.init_written = True
                done.append(_Done("init", None, {INIT_NAME: self.directory / INIT_NAME}))
            path.write_bytes(media)
            if self.part == 0:
                self.segment_file = open(self.directory / segment_name(self.msn, True), "wb")  # noqa: SIM115
                self.segment_ok = True
            if self.segment_file is not None:
                self.segment_file.write(media)
            done.append(_Done("part", cut, {name: path}))
        except (av.FFmpegError, OSError, ValueError):
            log.warning("cannot make HLS part %s", name, exc_info=True)
            self.count_error()
            self.segment_ok = False
            done.append(_Done("part", cut, {}, ok=False))
        if cut.segment_ends:
            done.append(self._end_segment(cut))
        return done

    def _end_segment(self, cut: _Cut) -> _Done:
        name = segment_name(self.msn, True)
        ok = self.segment_ok and self.segment_file is not None
        if self.segment_file is not None:
            try:
                self.segment_file.close()
            except OSError:
                ok = False
            self.segment_file = None
        return _Done("segment", cut, {name: self.directory / name} if ok else {}, ok)

    def close(self) -> None:
        if self.segment_file is not None:
            self.segment_file.close()
            self.segment_file = None


class _Worker:
    """The thread that muxes and writes for one output."""

    def __init__(self, directory: Path, low_latency: bool, queue: _WorkQueue,
                 post: Callable[[list[_Done]], None]):
        self.directory = directory
        self.low_latency = low_latency
        self.queue = queue
        self.post = post
        self.errors = 0
        self.closing = False
        self.writer: _Writer | None = None
        self.waiting: list[tuple[EncodedFrame, _Cut | None]] = []  # frames before the track set is known
        self.thread = threading.Thread(target=self._run, name=f"hls:{directory.name}", daemon=True)

    def _count_error(self) -> None:
        self.errors += 1

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if isinstance(item, _Stop):
                break
            if self.closing:
                continue
            try:
                done = self._handle(item)
            except Exception:  # a bug or an unforeseen FFmpeg error must not end the output
                log.exception("HLS worker failed on %r", type(item).__name__)
                self.errors += 1
                continue
            if done:
                self.post(done)
        if self.writer is not None:
            self.writer.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _handle(self, item: _Item) -> list[_Done]:
        if isinstance(item, tuple):
            frame, cut = item
            if self.writer is None:
                self.waiting.append(item)
                return []
            return self.writer.frame(frame, cut)
        if isinstance(item, _Config):
            tracks = _Tracks.from_frames(item.tracks, (frame for frame, _ in self.waiting))
            writer_class = _Fmp4Writer if self.low_latency else _TsWriter
            self.writer = writer_class(self.directory, tracks, self._count_error)
            done: list[_Done] = []
            waiting, self.waiting = self.waiting, []
            for frame, cut in waiting:
                done += self.writer.frame(frame, cut)
            return done
        if isinstance(item, _End):
            return self.writer.cut(item.cut) if self.writer is not None else []
        if isinstance(item, _Delete):
            for name in item.names:
                (self.directory / name).unlink(missing_ok=True)
        return []


# ---------------------------------------------------------------------------------------------------------
# Loop thread: playlists and the table of files


@dataclass(slots=True)
class _PartEntry:
    index: int
    duration: float
    independent: bool
    gap: bool


@dataclass(slots=True)
class _SegmentEntry:
    msn: int
    start: float  # seconds on the timeline
    duration: float | None = None  # None while in progress (LL)
    gap: bool = False
    parts: list[_PartEntry] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.duration is not None


class HlsOutput:
    """The HLS output of one stream. Every method runs on the event loop thread."""

    def __init__(self, name: str, directory: Path, settings: HlsSettings | None = None):
        self.name = name
        self.directory = Path(directory)
        self.settings = settings = settings or HlsSettings()
        self.playlist_name = f"{name}.m3u8"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ended = False  # end() was called
        self.closed = False
        self.segments = 0  # segments listed so far
        self.parts = 0  # parts listed so far (LL)
        self.dropped = 0  # frames dropped: worker queue full, or video waiting for a keyframe after a drop
        self.skipped = 0  # frames before the output could start (video waits for a keyframe)
        self._skipped_video = 0
        self.ignored = 0  # frames of other codecs, or of a kind the output left out
        self.ready_delays: deque[ReadyDelay] = deque(maxlen=settings.recent_delays)
        # Called (on the loop thread) when video is needed to go on: a segment reached its target duration
        # with no keyframe yet (again each segment duration after), or the output waits for its first
        # keyframe. Point it at the source's keyframe request (PLI/FIR), which must rate-limit.
        self.on_keyframe_needed: Callable[[], None] | None = None
        self._cutter = _Cutter(settings)
        self._queue = _WorkQueue(settings.queue_frames)
        self._worker = _Worker(self.directory, settings.low_latency, self._queue, self._post)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wall_offset: float | None = None  # time.time() at timeline 0
        self._pending_audio: deque[EncodedFrame] = deque()  # before the start, while video may still come
        self._video_seen = False
        self._kinds: set[str] = set()  # kinds queued so far
        self._tracks_fixed = False
        self._video_gap = False  # a video frame was dropped: drop video until a keyframe
        self._files: dict[str, Path] = {}
        self._entries: deque[_SegmentEntry] = deque()
        self._longest = 0.0
        self._last_complete = -1  # msn of the last complete segment listed
        self._last_part = (0, -1)  # (msn, part) of the last part listed
        self._next_part = (0, 0)  # what the preload hint names
        self._finished = False  # the final segment is listed (after end())
        self._parts_from = 0  # lowest msn whose parts are listed
        self._version = 0
        self._cached: tuple[int, str] | None = None
        self._change: asyncio.Future[None] | None = None

    # -- input --------------------------------------------------------------------------------------------

    @property
    def errors(self) -> int:
        """Frames the muxer refused and parts or segments that failed (listed as gaps)."""
        return self._worker.errors

    @property
    def queued(self) -> int:
        """Frames waiting for the worker."""
        return self._queue.frames

    def push(self, frame: EncodedFrame) -> None:
        if self.ended or self.closed:
            return
        kind = frame.kind
        wanted = self.settings.video if kind == "video" else self.settings.audio
        if frame.codec not in SUPPORTED_CODECS or wanted is False or (self._tracks_fixed and kind not in self._kinds):
            self.ignored += 1
            return
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._worker.thread.start()
        if self._wall_offset is None:
            self._wall_offset = time.time() - frame.seconds
        if not self._cutter.started:
            self._before_start(frame)
            return
        self._enqueue(frame)

    def _before_start(self, frame: EncodedFrame) -> None:
        if frame.kind == "video":
            if not frame.keyframe:
                if self._skipped_video % 30 == 0:  # the first one, then now and then
                    self._want_keyframe()
                self._skipped_video += 1
                self._video_seen = True
                self.skipped += 1
                return
            self._video_seen = True
            self._cutter.start("video", VIDEO_CLOCK)
            self._enqueue(frame)
            for audio in self._pending_audio:  # what came before the first picture is left out
                if audio.seconds >= frame.seconds:
                    self._enqueue(audio)
                else:
                    self.skipped += 1
            self._pending_audio.clear()
            return
        if self.settings.video is False:
            self._start_audio_only([frame])
            return
        self._pending_audio.append(frame)
        first = self._pending_audio[0]
        if (self.settings.video is None and not self._video_seen
                and frame.seconds - first.seconds >= self.settings.detect_seconds):
            pending = list(self._pending_audio)
            self._pending_audio.clear()
            self._start_audio_only(pending)
            return
        while frame.seconds - self._pending_audio[0].seconds > self.settings.detect_seconds:
            self._pending_audio.popleft()
            self.skipped += 1

    def _start_audio_only(self, frames: list[EncodedFrame]) -> None:
        self._cutter.start("audio", frames[0].clock_rate)
        self._enqueue(frames[0])
        self._fix_tracks({"audio"})  # after a frame: the worker learns the track's parameters from it
        for frame in frames[1:]:
            self._enqueue(frame)

    def _fix_tracks(self, kinds: set[str]) -> None:
        self._kinds = set(kinds)
        self._tracks_fixed = True
        self._queue.put(_Config(frozenset(kinds)))

    def _enqueue(self, frame: EncodedFrame) -> None:
        assert self._loop is not None
        if frame.kind == "video" and self._video_gap:
            if not frame.keyframe:
                self.dropped += 1
                return
            self._video_gap = False
        if self._queue.full:
            self.dropped += 1
            if frame.kind == "video":
                self._video_gap = True
            return
        cut = self._cutter.before(frame, self._loop.time())
        if self._cutter.keyframe_wanted:
            self._cutter.keyframe_wanted = False
            self._want_keyframe()
        if self._tracks_fixed:
            self._queue.put((frame, cut))
            return
        # The muxers' tracks are those with a frame by the first cut; the worker learns them from the
        # frames ahead of the _Config, so it goes after the frame that completes the set, before a cut.
        # (Cuts come on frames of the lead track, which is in the set from the start.)
        self._kinds.add(frame.kind)
        if cut is not None:
            self._fix_tracks(self._kinds)
        self._queue.put((frame, cut))
        if cut is None and len(self._kinds) == 2:
            self._fix_tracks(self._kinds)

    def _want_keyframe(self) -> None:
        if self.on_keyframe_needed is not None:
            try:
                self.on_keyframe_needed()
            except Exception:
                log.exception("keyframe request failed")

    def end(self) -> None:
        """The publisher stopped: the part and segment in progress are finished and listed, then the
        playlist gets EXT-X-ENDLIST."""
        if self.ended or self.closed:
            return
        self.ended = True
        if not self._cutter.started and self._pending_audio and self.settings.video is not True:
            pending = list(self._pending_audio)  # a short audio-only stream: no time left to detect
            self._pending_audio.clear()
            self._start_audio_only(pending)
        cut = self._cutter.finish(self._now() if self._loop is not None else 0.0)
        if cut is None:
            self._finished = True
            self._changed()
            return
        if not self._tracks_fixed:
            self._fix_tracks(self._kinds)
        self._queue.put(_End(cut))

    def close(self) -> None:
        """Stop, and delete every file and the folder. Waits for the worker to finish what it has in hand
        (one part or segment at most: pending frames are discarded)."""
        if self.closed:
            return
        self.closed = True
        self._files.clear()
        self._worker.closing = True
        self._queue.discard_pending()
        self._queue.put(_Stop())
        if self._worker.thread.is_alive():
            self._worker.thread.join(timeout=5.0)
        elif self._worker.thread.ident is None:  # never started: nothing in the folder of ours
            shutil.rmtree(self.directory, ignore_errors=True)
        self._changed()

    # -- results from the worker --------------------------------------------------------------------------

    def _post(self, done: list[_Done]) -> None:
        """Worker thread: hand finished files to the loop."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._on_done, done)
        except RuntimeError:  # the loop is closed
            pass

    def _on_done(self, done: list[_Done]) -> None:
        if self.closed:
            return
        assert self._loop is not None
        now = self._loop.time()
        for item in done:
            self._files.update(item.files)
            cut = item.cut
            if cut is None:
                continue
            entry = self._entry(cut)
            if item.kind == "part":
                entry.parts.append(_PartEntry(cut.part, cut.part_duration, cut.independent, not item.ok))
                self.parts += 1
                self._last_part = (cut.msn, cut.part)
                self._next_part = (cut.msn + 1, 0) if cut.segment_ends else (cut.msn, cut.part + 1)
                self.ready_delays.append(ReadyDelay("part", cut.msn, cut.part, cut.pushed, cut.decided, now))
            else:
                entry.duration = cut.segment_duration
                entry.gap = not item.ok
                self.segments += 1
                self._last_complete = cut.msn
                self._longest = max(self._longest, round(cut.segment_duration, 3))
                self._next_part = (cut.msn + 1, 0)
                self.ready_delays.append(ReadyDelay("segment", cut.msn, None, cut.pushed, cut.decided, now))
                if cut.final:
                    self._finished = True
                self._slide()
        self._changed()

    def _entry(self, cut: _Cut) -> _SegmentEntry:
        if not self._entries or self._entries[-1].msn != cut.msn:
            self._entries.append(_SegmentEntry(cut.msn, cut.segment_start))
        return self._entries[-1]

    def _slide(self) -> None:
        """Forget and delete (after the grace) what left the playlist."""
        settings = self.settings
        complete = [entry for entry in self._entries if entry.complete]
        first_listed = complete[-settings.window].msn if len(complete) >= settings.window else complete[0].msn
        doomed: list[str] = []
        while self._entries and self._entries[0].msn < first_listed - settings.grace:
            entry = self._entries.popleft()
            doomed.append(segment_name(entry.msn, settings.low_latency))
            doomed += [part_name(entry.msn, part.index) for part in entry.parts]
        if settings.low_latency:
            self._parts_from = self._first_msn_with_parts()
            for entry in self._entries:
                if entry.msn >= self._parts_from - settings.grace:
                    break
                doomed += [part_name(entry.msn, part.index) for part in entry.parts]
                entry.parts.clear()
        for name in doomed:
            self._files.pop(name, None)
        if doomed:
            self._queue.put(_Delete(doomed))

    def _first_msn_with_parts(self) -> int:
        """Parts are listed for the segments that end within three target durations of the live edge."""
        horizon = 3 * self._target_duration()
        edge = 0.0
        first = self._entries[-1].msn if self._entries else 0
        for entry in reversed(self._entries):
            if entry.complete:
                if edge >= horizon:
                    break
                edge += entry.duration or 0.0
            first = entry.msn
        return first

    def _changed(self) -> None:
        self._version += 1
        change, self._change = self._change, None
        if change is not None and not change.done():
            change.set_result(None)

    # -- serving ------------------------------------------------------------------------------------------

    @staticmethod
    def content_type(name: str) -> str:
        return CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")

    def file(self, name: str) -> Path | None:
        """The file of that name if this output made it and still holds it, else None."""
        return self._files.get(name) if isinstance(name, str) else None

    def preload_hint(self) -> str | None:
        """The part the playlist's EXT-X-PRELOAD-HINT names, if any."""
        if not self.settings.low_latency or self._finished or self.closed or self.playlist_now() is None:
            return None
        return part_name(*self._next_part)

    async def wait_file(self, name: str, timeout: float | None = None) -> Path | None:
        """Like file(), but a request for the preload-hinted part waits until it is written (RFC 8216bis
        6.2.6): returns its Path, or None if it was not made within the timeout (default 3 part targets)
        or the hint moved on without it."""
        path = self.file(name)
        if path is not None or name != self.preload_hint():
            return path
        deadline = self._now() + (timeout if timeout is not None else 3 * self.settings.part_duration)
        while await self._wait_change(deadline):
            path = self.file(name)
            if path is not None or name != self.preload_hint():  # made, or the hint moved on (end, close)
                return path
        return None

    def playlist_now(self) -> str | None:
        """The playlist as it is; None until the first segment (TS) or part (LL) is listed, or once
        closed."""
        if self.closed or not self._entries:
            return None
        if not self.settings.low_latency and self._last_complete < 0:
            return None
        if self._cached is None or self._cached[0] != self._version:
            self._cached = (self._version, self._build())
        return self._cached[1]

    async def wait_ready(self, timeout: float) -> bool:
        """Hold a first request until there is a playlist (on-demand start). False on timeout, or if the
        output closed or ended without making one."""
        deadline = self._now() + timeout
        while self.playlist_now() is None:
            if self.closed or self._finished or not await self._wait_change(deadline):
                return False
        return True

    async def playlist(self, msn: int | None = None, part: int | None = None, timeout: float | None = None) -> str:
        """The playlist; with `msn` (and `part`), a blocking reload (RFC 8216bis 6.2.5.2): waits until
        segment `msn` is complete (or part `part` of it is listed; a part index past the segment's last
        means part 0 of the next). Without a playlist yet, waits for the first one.

        Raises PlaylistNotReady (400) for a request too far ahead (msn beyond the last complete segment
        + 2, a part beyond the Advance Part Limit) or a part without msn; PlaylistTimeout (503) when the
        wait exceeds `timeout` (default three target durations); HlsClosed (404) once closed, or if the
        output ended without making anything. After the end, msn and part are ignored."""
        if part is not None and msn is None:
            raise PlaylistNotReady("_HLS_part without _HLS_msn")
        if part is not None and not self.settings.low_latency:
            raise PlaylistNotReady("this playlist has no parts")
        if (msn is not None and msn < 0) or (part is not None and part < 0):
            raise PlaylistNotReady("negative _HLS_msn or _HLS_part")
        wait = timeout if timeout is not None else 3 * self._target_duration()
        deadline = self._now() + wait
        while True:
            if self.closed:
                raise HlsClosed(self.name)
            text = self.playlist_now()
            if text is not None and (self._finished or msn is None or self._has(msn, part)):
                return text
            if self._finished:
                raise HlsClosed(f"{self.name} ended without media")
            if msn is not None:
                self._check_ahead(msn, part)
            if not await self._wait_change(deadline):
                raise PlaylistTimeout(f"{self.name}: no playlist with msn={msn} part={part} within {wait:.1f} s")

    def _resolve(self, msn: int, part: int | None) -> tuple[int, int | None]:
        """A part index past the last part of a complete segment means part 0 of the next segment."""
        last_msn, last_part = self._last_part
        if part is not None and msn == last_msn and part > last_part and self._last_complete >= msn:
            return msn + 1, 0
        return msn, part

    def _has(self, msn: int, part: int | None) -> bool:
        if part is None:
            return self._last_complete >= msn
        return self._resolve(msn, part) <= self._last_part

    def _check_ahead(self, msn: int, part: int | None) -> None:
        if msn > self._last_complete + 2:
            raise PlaylistNotReady(f"_HLS_msn={msn} is more than two segments ahead")
        msn, part = self._resolve(msn, part)
        if part is None:
            return
        target = self.settings.part_duration
        limit = math.ceil(3 / target) if target < 1 else 3  # the Advance Part Limit
        last_msn, last_part = self._last_part
        per_segment = max(1, math.ceil(self.settings.segment_duration / target - 1e-9))
        ahead = (msn - last_msn) * per_segment + part - last_part
        if ahead > limit:
            raise PlaylistNotReady(f"_HLS_part={part} of {msn} is beyond the Advance Part Limit ({limit})")

    def _now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    async def _wait_change(self, deadline: float) -> bool:
        """Wait for the next change of state; False if the deadline came first."""
        remaining = deadline - self._now()
        if remaining <= 0:
            return False
        if self._change is None:
            self._change = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._change), remaining)
        except TimeoutError:
            return False
        return True

    # -- playlist text ------------------------------------------------------------------------------------

    def _target_duration(self) -> int:
        """RFC 8216 4.3.3.1: every EXTINF rounded to the nearest integer fits. Not the ceiling: segments
        cut at the first keyframe past 2 s last 2.001 s, and a target of 3 would make players hold back
        3 x 3 s instead of 3 x 2 s."""
        longest = self._longest if self._longest else self.settings.segment_duration
        return max(1, math.floor(longest + 0.5))

    def _program_date(self, start: float) -> str:
        wall = (self._wall_offset or 0.0) + start
        stamp = datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")
        return stamp.replace("+00:00", "Z")

    def _build(self) -> str:
        settings = self.settings
        low_latency = settings.low_latency
        complete = [entry for entry in self._entries if entry.complete]
        listed = complete[-settings.window :]
        if low_latency and self._entries and not self._entries[-1].complete:
            listed.append(self._entries[-1])
        first_msn = listed[0].msn if listed else self._entries[0].msn
        lines = ["#EXTM3U", f"#EXT-X-VERSION:{9 if low_latency else 3}",
                 f"#EXT-X-TARGETDURATION:{self._target_duration()}"]
        if low_latency:
            lines += [f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={3 * settings.part_duration:.3f}",
                      f"#EXT-X-PART-INF:PART-TARGET={settings.part_duration:.3f}"]
        lines += [f"#EXT-X-MEDIA-SEQUENCE:{first_msn}", "#EXT-X-INDEPENDENT-SEGMENTS"]
        if low_latency:
            lines.append(f'#EXT-X-MAP:URI="{INIT_NAME}"')
        for entry in listed:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{self._program_date(entry.start)}")
            if low_latency and entry.msn >= self._parts_from:
                for part in entry.parts:
                    attributes = f"DURATION={part.duration:.5f},URI=\"{part_name(entry.msn, part.index)}\""
                    if part.independent:
                        attributes += ",INDEPENDENT=YES"
                    if part.gap:
                        attributes += ",GAP=YES"
                    lines.append(f"#EXT-X-PART:{attributes}")
            if entry.complete:
                if entry.gap:
                    lines.append("#EXT-X-GAP")
                lines += [f"#EXTINF:{entry.duration:.5f},", segment_name(entry.msn, low_latency)]
        if self._finished:
            lines.append("#EXT-X-ENDLIST")
        elif low_latency:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{part_name(*self._next_part)}"')
        return "\n".join(lines) + "\n"
