"""MPEG-TS segments (classic HLS): one muxer per segment, each frame muxed as it comes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av

from ..encoded import EncodedFrame
from .cut import Cut
from .mux import Done, Tracks, Writer, packet
from .settings import segment_name

log = logging.getLogger(__name__)


class TsWriter(Writer):
    """One MPEG-TS muxer per segment, muxing each frame as it comes."""

    def __init__(self, directory: Path, tracks: Tracks, errors: Callable[[], None]):
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
            self.container.mux(packet(frame, stream))
        except (av.FFmpegError, ValueError, OSError):
            log.debug("frame refused by the MPEG-TS muxer", exc_info=True)
            self.count_error()

    def end_unit(self, cut: Cut) -> list[Done]:
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
        return [Done("segment", cut, {name: self.directory / name} if ok else {}, ok)]

    def close(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except (av.FFmpegError, OSError, ValueError):
                pass
            self.container = None
