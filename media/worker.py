"""The bounded frame worker: one thread that does an output's slow work (muxing, writing files, decoding
and encoding) on frames the event loop thread hands over, so the loop never waits for it.

The HLS muxer, the recorder and each transcoder use one, and so follow the same rules:
- Bounded: at most `queue_frames` frames wait. When the queue is full a frame is dropped and counted
  (`dropped`), never waited for: a slow output must not hold up the publisher or the other readers.
  Which frame goes is the output's choice (`Overflow`): KEEP_QUEUED (files: what is queued gets written,
  the new frame goes) or FRESHEST (live work: video drops the whole queue, audio its oldest frame).
- Video starts at a keyframe, and after a drop waits for the next one (later frames reference the
  dropped one); meanwhile the source is asked for a keyframe (`want_keyframe`: at each overflow, at the
  first frame skipped and every KEYFRAME_ASK_EVERY after; sources rate-limit those requests). Frames
  skipped before the first keyframe count in `skipped`, after a drop in `dropped`.
- Control items (an output's cuts, ends, deletions) travel in the same queue, in order, and are never
  dropped or counted as frames.
- A clean stop: `stop(drain=True)` lets the worker finish everything queued, `stop(drain=False)` only the
  item in hand; then `on_exit` runs on the worker thread (finish or delete files), and `join` waits.

Loop side: `start`, `push` (or `admit` then `put`), `put_control`, `stop`. Worker side: `handle(item)`,
`post` to run something on the loop, `stop` (an output that gives up).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from .encoded import EncodedFrame

log = logging.getLogger(__name__)

KEYFRAME_ASK_EVERY = 30  # video frames skipped between keyframe requests (about a second at 30 fps)

Item = TypeVar("Item")


class Overflow(enum.Enum):
    KEEP_QUEUED = "keep-queued"  # the incoming frame is dropped; video then waits for a keyframe
    FRESHEST = "freshest"  # video: the queued frames go too (unless a keyframe came); audio: the oldest


class FrameWorker(Generic[Item]):
    """One worker thread and its bounded queue. `handle(item)` runs on the worker thread for every frame
    item and control item, in order; an exception it lets out is logged and counted in `failures`, and
    the worker goes on."""

    def __init__(self, name: str, handle: Callable[[Item], object], queue_frames: int,
                 overflow: Overflow = Overflow.KEEP_QUEUED, want_keyframe: Callable[[], None] | None = None,
                 setup: Callable[[], None] | None = None, on_exit: Callable[[], None] | None = None):
        if queue_frames < 1:
            raise ValueError(f"queue_frames must be at least 1, not {queue_frames!r}")
        self.name = name
        self.queue_frames = queue_frames
        self.overflow = overflow
        self.want_keyframe = want_keyframe
        self._handle = handle
        self._setup = setup
        self._on_exit = on_exit
        # Loop side counters.
        self.queued_total = 0  # frames queued
        self.dropped = 0  # frames dropped: queue full, or video waiting for a keyframe after a drop
        self.skipped = 0  # video frames before the first keyframe
        self.max_depth = 0  # most frames queued at once
        # Worker side.
        self.failures = 0  # exceptions `handle` let out
        self.cpu_seconds = 0.0  # the worker thread's CPU time, as of the last item handled
        self._cpu_start = 0.0
        self._queue: deque[tuple[bool, Item]] = deque()  # (is a frame, item)
        self._frames = 0  # frames in _queue
        self._cond = threading.Condition()
        self._video_started = False
        self._video_gap = False  # a video frame was dropped: drop video up to a keyframe
        self._skipped_video = 0  # video frames skipped while waiting, for the keyframe requests
        self._stopping = False
        self._drain = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- loop side ---------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self.thread.ident is not None

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def queued(self) -> int:
        """Frames waiting for the worker."""
        return self._frames

    @property
    def waiting_keyframe(self) -> bool:
        """Video frames are being dropped until a keyframe (none yet, or one was dropped)."""
        return not self._video_started or self._video_gap

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the thread; `loop` is where `post` sends work back to."""
        self._loop = loop
        if not self.started:
            self.thread.start()

    def admit(self, frame: EncodedFrame) -> bool:
        """Whether `frame` may be queued now (then `put` its item at once). A frame refused here is
        counted, and a keyframe asked for when video needs one."""
        if self._stopping:
            return False
        video = frame.kind == "video"
        if video and self.waiting_keyframe:
            if not frame.keyframe:
                if self._video_started:
                    self.dropped += 1
                else:
                    self.skipped += 1
                if self._skipped_video % KEYFRAME_ASK_EVERY == 0:  # the first one, then now and then
                    self._ask_keyframe()
                self._skipped_video += 1
                return False
            self._video_started = True
            self._video_gap = False
        if self._frames < self.queue_frames:
            return True
        if self.overflow is Overflow.KEEP_QUEUED:
            self.dropped += 1
            if video:
                self._video_gap = True
                self._ask_keyframe()
            return False
        with self._cond:  # FRESHEST
            if video:
                self.dropped += self._frames
                self._queue = deque(entry for entry in self._queue if not entry[0])
                self._frames = 0
                if frame.keyframe:
                    return True  # a keyframe replaces the queue
                self.dropped += 1
                self._video_gap = True
            else:
                for k, (is_frame, _item) in enumerate(self._queue):
                    if is_frame:
                        del self._queue[k]
                        self._frames -= 1
                        self.dropped += 1
                        break
                return True
        self._ask_keyframe()
        return False

    def put(self, item: Item) -> None:
        """Queue the item of a frame `admit` let through."""
        with self._cond:
            self._queue.append((True, item))
            self._frames += 1
            self.queued_total += 1
            self.max_depth = max(self.max_depth, self._frames)
            self._cond.notify()

    def push(self, frame: EncodedFrame, item: Item) -> bool:
        """`admit` and `put`: True when queued."""
        if not self.admit(frame):
            return False
        self.put(item)
        return True

    def put_control(self, item: Item) -> None:
        """An item that is never dropped (after `stop`, it is not queued)."""
        with self._cond:
            if self._stopping:
                return
            self._queue.append((False, item))
            self._cond.notify()

    def stop(self, drain: bool = False) -> None:
        """No more items. With `drain` the worker handles what is queued first, else only the item in
        hand. Either way `on_exit` runs on the worker thread after that. Any thread may call this."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._drain = drain
            if not drain:
                self._queue.clear()
                self._frames = 0
            self._cond.notify()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker thread to end (after stop()); True when it has, or never started. Blocks:
        not for the loop thread."""
        if self.started and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        return not self.thread.is_alive()

    def _ask_keyframe(self) -> None:
        if self.want_keyframe is not None:
            try:
                self.want_keyframe()
            except Exception:
                log.exception("%s: keyframe request failed", self.name)

    # -- worker side -------------------------------------------------------------------------------

    def post(self, callback: Callable[..., object], *args: object) -> bool:
        """Run `callback(*args)` on the loop thread soon; False if there is no loop (any more)."""
        loop = self._loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is left to receive
            return False
        return True

    def thread_cpu_seconds(self) -> float:
        """On the worker thread: its CPU time so far (the work of this output alone)."""
        return time.thread_time() - self._cpu_start

    def _run(self) -> None:
        self._cpu_start = time.thread_time()
        try:
            if self._setup is not None:
                self._setup()
        except Exception:
            log.exception("%s could not start", self.name)
            self.stop()
        else:
            while True:
                with self._cond:
                    while not self._queue and not self._stopping:
                        self._cond.wait()
                    if not self._queue or (self._stopping and not self._drain):
                        break
                    is_frame, item = self._queue.popleft()
                    if is_frame:
                        self._frames -= 1
                try:
                    self._handle(item)
                except Exception:  # a bug or an unforeseen FFmpeg error must not end the output
                    self.failures += 1
                    if self.failures == 1:
                        log.exception("%s failed on an item", self.name)
                    else:
                        log.debug("%s failed on an item", self.name, exc_info=True)
                self.cpu_seconds = self.thread_cpu_seconds()
        if self._on_exit is not None:
            try:
                self._on_exit()
            except Exception:
                log.exception("%s failed to finish", self.name)
        self.cpu_seconds = self.thread_cpu_seconds()
