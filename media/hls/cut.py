"""Where segments and parts begin, decided on the event loop thread from frame times. No I/O; `now`
comes in.

A segment starts on a video keyframe once the current one reached the target duration; a part ends
before it would outgrow the part target, or at a keyframe if that leaves no short part behind;
audio-only streams cut on time. A cut travels to the muxing worker with the frame that follows it, and
back with the files made.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..encoded import EncodedFrame
from .settings import HlsSettings


@dataclass(slots=True)
class Cut:
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


class Cutter:
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

    def before(self, frame: EncodedFrame, now: float) -> Cut | None:
        """The cut before `frame`, if one is due; then `frame` belongs to (msn, part)."""
        cut = None
        self.now = now
        if frame.kind == self.lead:
            cut = self._lead_frame(frame)
        self.last_pushed = now
        return cut

    def _lead_frame(self, frame: EncodedFrame) -> Cut | None:
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

    def _cut(self, end_pts: int, end_segment: bool, final: bool = False) -> Cut:
        return Cut(self.msn, self.part, self.segment_start / self.clock, (end_pts - self.part_start) / self.clock,
                    (end_pts - self.segment_start) / self.clock, end_segment, self.part_independent,
                    self.last_pushed, self.now, end_pts, final)

    def finish(self, now: float) -> Cut | None:
        """The cut that ends the stream (the last frame's duration guessed from the one before)."""
        if self.last_pts is None:
            return None
        self.now = now
        return self._cut(self.last_pts + max(self.step, 1), True, final=True)

