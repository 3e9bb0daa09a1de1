"""HlsOutput: the HLS output of one stream, on the event loop thread. It takes frames (`push`), decides
the cuts (cut.py), hands frames to its muxing worker (muxing.py), lists what the worker finished
(playlist.py), keeps the table of files it serves, and answers playlist and file requests, blocking ones
included (RFC 8216bis 6.2.5.2, 6.2.6).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ..encoded import EncodedFrame
from .cut import Cutter
from .mux import Done
from .muxing import Muxing
from .playlist import Playlist
from .settings import (
    CONTENT_TYPES,
    SUPPORTED_CODECS,
    VIDEO_CLOCK,
    HlsClosed,
    HlsSettings,
    PlaylistNotReady,
    PlaylistTimeout,
    ReadyDelay,
    part_name,
)

log = logging.getLogger(__name__)


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
        self.skipped = 0  # frames before the output could start (video waits for a keyframe)
        self._skipped_video = 0
        self.ignored = 0  # frames of other codecs, or of a kind the output left out
        self.ready_delays: deque[ReadyDelay] = deque(maxlen=settings.recent_delays)
        # Called (on the loop thread) when video is needed to go on: a segment reached its target duration
        # with no keyframe yet (again each segment duration after), the output waits for its first
        # keyframe, or a frame was dropped. Point it at the source's keyframe request (PLI/FIR), which must
        # rate-limit.
        self.on_keyframe_needed: Callable[[], None] | None = None
        self._cutter = Cutter(settings)
        self._muxing = Muxing(self.directory, settings.low_latency, settings.queue_frames, self._on_done,
                              self._want_keyframe)
        self._playlist = Playlist(settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending_audio: deque[EncodedFrame] = deque()  # before the start, while video may still come
        self._video_seen = False
        self._kinds: set[str] = set()  # kinds queued so far
        self._tracks_fixed = False
        self._files: dict[str, Path] = {}
        self._change: asyncio.Future[None] | None = None

    # -- input --------------------------------------------------------------------------------------------

    @property
    def segments(self) -> int:
        """Segments listed so far."""
        return self._playlist.segments

    @property
    def parts(self) -> int:
        """Parts listed so far (LL)."""
        return self._playlist.parts

    @property
    def dropped(self) -> int:
        """Frames dropped: worker queue full, or video waiting for a keyframe after a drop."""
        return self._muxing.dropped

    @property
    def errors(self) -> int:
        """Frames the muxer refused and parts or segments that failed (listed as gaps)."""
        return self._muxing.errors

    @property
    def queued(self) -> int:
        """Frames waiting for the worker."""
        return self._muxing.queued

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
            self._muxing.start(self._loop)
        if self._playlist.wall_offset is None:
            self._playlist.wall_offset = time.time() - frame.seconds
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
        self._muxing.configure(kinds)

    def _enqueue(self, frame: EncodedFrame) -> None:
        assert self._loop is not None
        if not self._muxing.admit(frame):  # dropped and counted there
            return
        cut = self._cutter.before(frame, self._loop.time())
        if self._cutter.keyframe_wanted:
            self._cutter.keyframe_wanted = False
            self._want_keyframe()
        if self._tracks_fixed:
            self._muxing.put(frame, cut)
            return
        # The muxers' tracks are those with a frame by the first cut; the worker learns them from the
        # frames ahead of the Configure, so it goes after the frame that completes the set, before a cut.
        # (Cuts come on frames of the lead track, which is in the set from the start.)
        self._kinds.add(frame.kind)
        if cut is not None:
            self._fix_tracks(self._kinds)
        self._muxing.put(frame, cut)
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
            self._playlist.finish()
            self._changed()
            return
        if not self._tracks_fixed:
            self._fix_tracks(self._kinds)
        self._muxing.end(cut)

    def close(self) -> None:
        """Stop, and delete every file and the folder. Waits for the worker to finish what it has in hand
        (one part or segment at most: pending frames are discarded)."""
        if self.closed:
            return
        self.closed = True
        self._files.clear()
        self._muxing.close()
        self._changed()

    # -- results from the worker --------------------------------------------------------------------------

    def _on_done(self, done: list[Done]) -> None:
        if self.closed:
            return
        assert self._loop is not None
        now = self._loop.time()
        playlist = self._playlist
        for item in done:
            self._files.update(item.files)
            cut = item.cut
            if cut is None:
                continue
            if item.kind == "part":
                playlist.add_part(cut, item.ok)
                self.ready_delays.append(ReadyDelay("part", cut.msn, cut.part, cut.pushed, cut.decided, now))
                continue
            doomed = playlist.add_segment(cut, item.ok)
            self.ready_delays.append(ReadyDelay("segment", cut.msn, None, cut.pushed, cut.decided, now))
            for name in doomed:
                self._files.pop(name, None)
            if doomed:
                self._muxing.delete(doomed)
        self._changed()

    def _changed(self) -> None:
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
        if not self.settings.low_latency or self._playlist.finished or self.closed or self.playlist_now() is None:
            return None
        return part_name(*self._playlist.next_part)

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
        if self.closed:
            return None
        return self._playlist.text()

    async def wait_ready(self, timeout: float) -> bool:
        """Hold a first request until there is a playlist (on-demand start). False on timeout, or if the
        output closed or ended without making one."""
        deadline = self._now() + timeout
        while self.playlist_now() is None:
            if self.closed or self._playlist.finished or not await self._wait_change(deadline):
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
        wait = timeout if timeout is not None else 3 * self._playlist.target_duration()
        deadline = self._now() + wait
        while True:
            if self.closed:
                raise HlsClosed(self.name)
            text = self.playlist_now()
            if text is not None and (self._playlist.finished or msn is None or self._playlist.has(msn, part)):
                return text
            if self._playlist.finished:
                raise HlsClosed(f"{self.name} ended without media")
            if msn is not None:
                self._playlist.check_ahead(msn, part)
            if not await self._wait_change(deadline):
                raise PlaylistTimeout(f"{self.name}: no playlist with msn={msn} part={part} within {wait:.1f} s")

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
