"""The playlist of one HLS output: what is listed (segments, LL-HLS parts, the window, the preload hint),
its text, and the rules of blocking reloads (RFC 8216bis 6.2.5.2). No I/O and no clock: the output tells
it what the worker finished, and it says which files left the window for good.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .cut import Cut
from .settings import INIT_NAME, HlsSettings, PlaylistNotReady, part_name, segment_name


@dataclass(slots=True)
class PartEntry:
    index: int
    duration: float
    independent: bool
    gap: bool


@dataclass(slots=True)
class SegmentEntry:
    msn: int
    start: float  # seconds on the timeline
    duration: float | None = None  # None while in progress (LL)
    gap: bool = False
    parts: list[PartEntry] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.duration is not None


class Playlist:
    """Segments and parts as they are listed; `text()` is the playlist, cached until the next change."""

    def __init__(self, settings: HlsSettings):
        self.settings = settings
        self.wall_offset: float | None = None  # time.time() at timeline 0, for EXT-X-PROGRAM-DATE-TIME
        self.segments = 0  # segments listed so far
        self.parts = 0  # parts listed so far (LL)
        self.finished = False  # the final segment is listed (after the end), or the end came with none
        self.last_complete = -1  # msn of the last complete segment listed
        self.last_part = (0, -1)  # (msn, part) of the last part listed
        self.next_part = (0, 0)  # what the preload hint names
        self._entries: deque[SegmentEntry] = deque()
        self._longest = 0.0
        self._parts_from = 0  # lowest msn whose parts are listed
        self._version = 0
        self._cached: tuple[int, str] | None = None

    def add_part(self, cut: Cut, ok: bool) -> None:
        self._entry(cut).parts.append(PartEntry(cut.part, cut.part_duration, cut.independent, not ok))
        self.parts += 1
        self.last_part = (cut.msn, cut.part)
        self.next_part = (cut.msn + 1, 0) if cut.segment_ends else (cut.msn, cut.part + 1)
        self._version += 1

    def add_segment(self, cut: Cut, ok: bool) -> list[str]:
        """The segment is complete: listed, and the window slides. Returns the names of the files that
        left it (after the grace) and can go."""
        entry = self._entry(cut)
        entry.duration = cut.segment_duration
        entry.gap = not ok
        self.segments += 1
        self.last_complete = cut.msn
        self._longest = max(self._longest, round(cut.segment_duration, 3))
        self.next_part = (cut.msn + 1, 0)
        if cut.final:
            self.finished = True
        self._version += 1
        return self._slide()

    def finish(self) -> None:
        """The end came with nothing more to list."""
        self.finished = True
        self._version += 1

    def text(self) -> str | None:
        """The playlist; None until the first segment (TS) or part (LL) is listed."""
        if not self._entries:
            return None
        if not self.settings.low_latency and self.last_complete < 0:
            return None
        if self._cached is None or self._cached[0] != self._version:
            self._cached = (self._version, self._build())
        return self._cached[1]

    def _entry(self, cut: Cut) -> SegmentEntry:
        if not self._entries or self._entries[-1].msn != cut.msn:
            self._entries.append(SegmentEntry(cut.msn, cut.segment_start))
        return self._entries[-1]

    def _slide(self) -> list[str]:
        """Forget what left the playlist (after the grace); the names of its files."""
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
        return doomed

    def _first_msn_with_parts(self) -> int:
        """Parts are listed for the segments that end within three target durations of the live edge."""
        horizon = 3 * self.target_duration()
        edge = 0.0
        first = self._entries[-1].msn if self._entries else 0
        for entry in reversed(self._entries):
            if entry.complete:
                if edge >= horizon:
                    break
                edge += entry.duration or 0.0
            first = entry.msn
        return first

    def _resolve(self, msn: int, part: int | None) -> tuple[int, int | None]:
        """A part index past the last part of a complete segment means part 0 of the next segment."""
        last_msn, last_part = self.last_part
        if part is not None and msn == last_msn and part > last_part and self.last_complete >= msn:
            return msn + 1, 0
        return msn, part

    def has(self, msn: int, part: int | None) -> bool:
        if part is None:
            return self.last_complete >= msn
        return self._resolve(msn, part) <= self.last_part

    def check_ahead(self, msn: int, part: int | None) -> None:
        if msn > self.last_complete + 2:
            raise PlaylistNotReady(f"_HLS_msn={msn} is more than two segments ahead")
        msn, part = self._resolve(msn, part)
        if part is None:
            return
        target = self.settings.part_duration
        limit = math.ceil(3 / target) if target < 1 else 3  # the Advance Part Limit
        last_msn, last_part = self.last_part
        per_segment = max(1, math.ceil(self.settings.segment_duration / target - 1e-9))
        ahead = (msn - last_msn) * per_segment + part - last_part
        if ahead > limit:
            raise PlaylistNotReady(f"_HLS_part={part} of {msn} is beyond the Advance Part Limit ({limit})")

    def target_duration(self) -> int:
        """RFC 8216 4.3.3.1: every EXTINF rounded to the nearest integer fits. Not the ceiling: segments
        cut at the first keyframe past 2 s last 2.001 s, and a target of 3 would make players hold back
        3 x 3 s instead of 3 x 2 s."""
        longest = self._longest if self._longest else self.settings.segment_duration
        return max(1, math.floor(longest + 0.5))

    def _program_date(self, start: float) -> str:
        wall = (self.wall_offset or 0.0) + start
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
                 f"#EXT-X-TARGETDURATION:{self.target_duration()}"]
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
        if self.finished:
            lines.append("#EXT-X-ENDLIST")
        elif low_latency:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{part_name(*self.next_part)}"')
        return "\n".join(lines) + "\n"
