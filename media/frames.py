"""Frames of a published track, for sinks that need media rather than RTP to forward: the HLS
segmenter, the recorder, the transcoder and snapshots.

A FrameTap listens to a PublishedTrack's packets (after ingest, duplicates left out), reassembles them
with the native Depacketizer and hands each complete frame on. For video it starts at a keyframe, asking
the publisher for one; frames broken by loss are dropped by the depacketizer, which then waits for the
next keyframe.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from .stream import PublishedTrack


class FrameTap:
    def __init__(self, track: PublishedTrack, depacketize: ModuleType, on_frame: Callable[[Any, float], None],
                 now: float):
        self.track = track
        self.depacketizer = depacketize.Depacketizer(track.codec.name, track.codec.clock_rate)
        self.on_frame = on_frame
        self.frames = 0
        track.listeners.append(self._on_packet)
        if track.kind == "video":
            track.request_keyframe(now)

    def _on_packet(self, packet: bytes, flags: int, now: float) -> None:
        try:
            frames = self.depacketizer.push(packet)
        except ValueError:
            return  # ingest counted it as junk already
        for frame in frames:
            self.frames += 1
            self.on_frame(frame, now)

    def close(self) -> None:
        if self._on_packet in self.track.listeners:
            self.track.listeners.remove(self._on_packet)
