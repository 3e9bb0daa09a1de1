"""The muxing worker of one HLS output: a FrameWorker (media/worker.py) that gets each frame with the cut
before it, and control items in order with them, and makes the files with a writer (ts.py, fmp4.py).

Its queue is bounded: when it is full a frame is dropped and counted, and video then waits for the next
keyframe (asking the source for one). Finished parts and segments go back to the loop thread (`post`).
The tracks are not known at first: frames wait on the worker until `configure` names them, since the
writer learns their parameters from those frames.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..encoded import EncodedFrame
from ..worker import FrameWorker, Overflow
from .cut import Cut
from .fmp4 import Fmp4Writer
from .mux import Done, Tracks, Writer
from .ts import TsWriter

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Configure:
    tracks: frozenset[str]


@dataclass(slots=True)
class End:
    cut: Cut


@dataclass(slots=True)
class Delete:
    names: list[str]


Item = tuple[EncodedFrame, Cut | None] | Configure | End | Delete


class Muxing:
    """Loop side: `start`, `admit` then `put` each frame, `configure`, `end`, `delete`, `close`. The rest
    runs on the worker thread, which owns the writer and the files."""

    def __init__(self, directory: Path, low_latency: bool, queue_frames: int,
                 post: Callable[[list[Done]], None], want_keyframe: Callable[[], None]):
        self.directory = directory
        self.low_latency = low_latency
        self.errors = 0  # frames the muxer refused, and parts or segments that failed (worker)
        self._post = post
        self._writer: Writer | None = None
        self._waiting: list[tuple[EncodedFrame, Cut | None]] = []  # frames before the track set is known
        self.worker: FrameWorker[Item] = FrameWorker(f"hls:{directory.name}", self._handle, queue_frames,
                                                     Overflow.KEEP_QUEUED, want_keyframe=want_keyframe,
                                                     on_exit=self._exit)

    # -- loop side ---------------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        return self.worker.dropped

    @property
    def queued(self) -> int:
        return self.worker.queued

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.worker.start(loop)

    def admit(self, frame: EncodedFrame) -> bool:
        return self.worker.admit(frame)

    def put(self, frame: EncodedFrame, cut: Cut | None) -> None:
        self.worker.put((frame, cut))

    def configure(self, kinds: set[str]) -> None:
        self.worker.put_control(Configure(frozenset(kinds)))

    def end(self, cut: Cut) -> None:
        self.worker.put_control(End(cut))

    def delete(self, names: list[str]) -> None:
        self.worker.put_control(Delete(names))

    def close(self, timeout: float = 5.0) -> None:
        """Stop, and delete every file and the folder. Waits for the worker to finish what it has in hand
        (one part or segment at most: pending frames are discarded)."""
        self.worker.stop()
        if self.worker.started:
            self.worker.join(timeout)
        else:  # never started: nothing in the folder of ours
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- worker side -------------------------------------------------------------------------------

    def _count_error(self) -> None:
        self.errors += 1

    def _handle(self, item: Item) -> None:
        try:
            done = self._handle_item(item)
        except Exception:  # a bug or an unforeseen FFmpeg error must not end the output
            log.exception("HLS worker failed on %r", type(item).__name__)
            self.errors += 1
            return
        if done:
            self.worker.post(self._post, done)

    def _handle_item(self, item: Item) -> list[Done]:
        if isinstance(item, tuple):
            frame, cut = item
            if self._writer is None:
                self._waiting.append(item)
                return []
            return self._writer.frame(frame, cut)
        if isinstance(item, Configure):
            tracks = Tracks.from_frames(item.tracks, (frame for frame, _ in self._waiting))
            writer_class = Fmp4Writer if self.low_latency else TsWriter
            self._writer = writer_class(self.directory, tracks, self._count_error)
            done: list[Done] = []
            waiting, self._waiting = self._waiting, []
            for frame, cut in waiting:
                done += self._writer.frame(frame, cut)
            return done
        if isinstance(item, End):
            return self._writer.cut(item.cut) if self._writer is not None else []
        for name in item.names:
            (self.directory / name).unlink(missing_ok=True)
        return []

    def _exit(self) -> None:
        if self._writer is not None:
            self._writer.close()
        shutil.rmtree(self.directory, ignore_errors=True)
