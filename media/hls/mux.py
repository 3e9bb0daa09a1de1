"""Muxing, on the worker thread: what every HLS container writer shares (the tracks learnt from the first
frames, packets, the writer's interface); `TsWriter` (ts.py) and `Fmp4Writer` (fmp4.py) are the two
containers.

A writer turns frames and cuts into files and says what it finished (`Done`); it never touches the
playlist, which the loop thread builds from those reports.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ..encoded import EncodedFrame, aac_config, h264_parameter_sets, h264_size
from .cut import Cut
from .settings import VIDEO_CLOCK


@dataclass(slots=True)
class Done:
    """A part, segment or init segment the worker finished (ok=False: it failed, list it as a gap)."""

    kind: str  # "init" | "part" | "segment"
    cut: Cut | None
    files: dict[str, Path]
    ok: bool = True


_TEMPLATE_LOCK = threading.Lock()
_TEMPLATES: dict[str, Any] = {}


def template(codec: str) -> Any:
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
class Tracks:
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
    def from_frames(cls, tracks: frozenset[str], frames: Iterable[EncodedFrame]) -> Tracks:
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
            video = container.add_stream_from_template(template("h264"))
            video.codec_context.width, video.codec_context.height = self.width, self.height
            if self.sps_pps:
                video.codec_context.extradata = self.sps_pps
            video.time_base = Fraction(1, VIDEO_CLOCK)
            streams["video"] = video
        if self.audio is not None:
            audio = container.add_stream_from_template(template("aac"))
            audio.codec_context.sample_rate = self.sample_rate
            audio.codec_context.layout = "mono" if self.channels == 1 else "stereo"
            audio.codec_context.extradata = self.asc
            audio.time_base = Fraction(1, self.sample_rate)
            streams["audio"] = audio
        return streams


def packet(frame: EncodedFrame, stream: Any, duration: int | None = None) -> av.Packet:
    packet = av.Packet(frame.data)
    packet.stream = stream
    packet.time_base = Fraction(1, frame.clock_rate)
    packet.pts = packet.dts = frame.pts
    if duration is not None:
        packet.duration = duration
    packet.is_keyframe = frame.keyframe
    return packet


class Writer:
    """Worker side of one output: turns frames and cuts into files. Subclasses know the container."""

    def __init__(self, directory: Path, tracks: Tracks, errors: Callable[[], None]):
        self.directory = directory
        self.tracks = tracks
        self.count_error = errors
        self.msn = 0
        self.part = 0

    def frame(self, frame: EncodedFrame, cut: Cut | None) -> list[Done]:
        done = self.cut(cut) if cut is not None else []
        self.add(frame)
        return done

    def cut(self, cut: Cut) -> list[Done]:
        done = self.end_unit(cut)
        if cut.segment_ends:
            self.msn, self.part = cut.msn + 1, 0
        else:
            self.part = cut.part + 1
        return done

    def add(self, frame: EncodedFrame) -> None:
        raise NotImplementedError

    def end_unit(self, cut: Cut) -> list[Done]:
        raise NotImplementedError

    def close(self) -> None:
        """Drop whatever is open (the output is closing)."""
