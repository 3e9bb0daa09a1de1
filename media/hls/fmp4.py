"""Fragmented MP4 (CMAF) parts and segments for low-latency HLS.

Each part is muxed on its own by FFmpeg's mp4 muxer into ftyp+moov+moof+mdat: the ftyp+moov is the init
segment (the same for every part, kept once as init.mp4), the moof+mdat the part's file, and the
segment's file is its parts one after the other.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av

from ..encoded import EncodedFrame
from .cut import Cut
from .mux import Done, Tracks, Writer, packet
from .settings import AAC_SAMPLES_PER_FRAME, INIT_NAME, part_name, segment_name

log = logging.getLogger(__name__)

# One fragment per muxer: written at close (frag_custom never cuts on its own), the moov empty so it is the
# same for every part (init.mp4), tfdt = the first dts (frag_discont + no edit list + no shift to zero).
FMP4_OPTIONS = {
    "movflags": "frag_custom+empty_moov+default_base_moof+frag_discont+skip_trailer+skip_sidx",
    "use_editlist": "0",
    "avoid_negative_ts": "disabled",
}


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


class Fmp4Writer(Writer):
    """Fragmented MP4 (CMAF) parts: each part is muxed on its own by FFmpeg's mp4 muxer into
    ftyp+moov+moof+mdat; the ftyp+moov is the init segment (the same for every part), the moof+mdat the
    part's file, and the segment's file is its parts one after the other."""

    def __init__(self, directory: Path, tracks: Tracks, errors: Callable[[], None]):
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

    def _mux(self, frames: list[EncodedFrame], cut: Cut) -> bytes:
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

    def _last_duration(self, kind: str, frame: EncodedFrame, cut: Cut) -> int:
        lead = "video" if self.tracks.video is not None else "audio"
        if kind == lead:  # up to the next part, which starts with the lead track's next frame
            return max(1, cut.end_pts - frame.pts)
        return self.audio_step  # the other track's next frame may not have come yet

    def _mux_one(self, container: Any, frame: EncodedFrame, streams: dict[str, Any], duration: int) -> None:
        if frame.kind == "audio" and 0 < duration < 4 * AAC_SAMPLES_PER_FRAME:
            self.audio_step = duration
        try:
            container.mux(packet(frame, streams[frame.kind], max(1, duration)))
        except (av.FFmpegError, ValueError):
            log.debug("frame refused by the MP4 muxer", exc_info=True)
            self.count_error()

    def end_unit(self, cut: Cut) -> list[Done]:
        done: list[Done] = []
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
                done.append(Done("init", None, {INIT_NAME: self.directory / INIT_NAME}))
            path.write_bytes(media)
            if self.part == 0:
                self.segment_file = open(self.directory / segment_name(self.msn, True), "wb")  # noqa: SIM115
                self.segment_ok = True
            if self.segment_file is not None:
                self.segment_file.write(media)
            done.append(Done("part", cut, {name: path}))
        except (av.FFmpegError, OSError, ValueError):
            log.warning("cannot make HLS part %s", name, exc_info=True)
            self.count_error()
            self.segment_ok = False
            done.append(Done("part", cut, {}, ok=False))
        if cut.segment_ends:
            done.append(self._end_segment(cut))
        return done

    def _end_segment(self, cut: Cut) -> Done:
        name = segment_name(self.msn, True)
        ok = self.segment_ok and self.segment_file is not None
        if self.segment_file is not None:
            try:
                self.segment_file.close()
            except OSError:
                ok = False
            self.segment_file = None
        return Done("segment", cut, {name: self.directory / name} if ok else {}, ok)

    def close(self) -> None:
        if self.segment_file is not None:
            self.segment_file.close()
            self.segment_file = None

