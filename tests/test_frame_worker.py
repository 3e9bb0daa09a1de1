"""media/worker.py: the bounded frame worker every frame output uses, on real H.264 and AAC frames. The
worker is held on its first item (a gate) so the queue's state is known when frames come; nothing waits
on time, only on conditions with a timeout."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from media.encoded import EncodedFrame
from media.worker import KEYFRAME_ASK_EVERY, FrameWorker, Overflow
from tests.support.hls_media import make_frames

TIMEOUT = 10.0


class Held:
    """A handler that records what it gets, and holds the worker on its first item until released."""

    def __init__(self) -> None:
        self.items: list[object] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.threads: set[int] = set()
        self._cond = threading.Condition()

    def __call__(self, item: object) -> None:
        self.threads.add(threading.get_ident())
        if not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(TIMEOUT)
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_items(self, count: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.items) >= count, TIMEOUT), self.items


def video(seconds: float = 2.0, keyframe_interval: int = 15) -> list[EncodedFrame]:
    return make_frames(seconds, audio=False, keyframe_interval=keyframe_interval)


def audio(seconds: float = 1.0) -> list[EncodedFrame]:
    return make_frames(seconds, video=False)


def held_worker(overflow: Overflow, limit: int, asks: list[str] | None = None,
                on_exit: Callable[[], None] | None = None) -> tuple[FrameWorker[object], Held]:
    handler = Held()
    worker: FrameWorker[object] = FrameWorker("test", handler, limit, overflow,
                                              want_keyframe=(lambda: asks.append("key")) if asks is not None else None,
                                              on_exit=on_exit)
    worker.start()
    return worker, handler


def test_a_full_queue_drops_the_new_frame_and_video_resumes_at_a_keyframe() -> None:
    frames = video()  # keyframes at 0, 15, 30, 45
    asks: list[str] = []
    worker, handler = held_worker(Overflow.KEEP_QUEUED, 4, asks)
    assert worker.push(frames[0], frames[0])
    assert handler.entered.wait(TIMEOUT)  # the worker holds frame 0: the queue is empty
    queued = [k for k, frame in enumerate(frames[1:40], 1) if worker.push(frame, frame)]
    # 1-4 fill the queue; 5 is dropped and video waits for the keyframe at 15; 15 finds the queue full.
    assert queued == [1, 2, 3, 4] and worker.queued == 4 and worker.max_depth == 4
    assert worker.dropped == 39 - 4 and worker.skipped == 0
    # At each overflow (frames 5, 15, 30), and at the first frame skipped and KEYFRAME_ASK_EVERY after.
    assert len(asks) == 3 + 2
    handler.gate.set()
    handler.wait_items(5)
    assert worker.queued == 0
    assert worker.push(frames[40], frames[40]) is False  # still waiting: 40 is no keyframe
    assert worker.push(frames[45], frames[45]) and worker.push(frames[46], frames[46])
    worker.stop(drain=True)
    assert worker.join(TIMEOUT)
    assert [frames.index(f) for f in handler.items] == [0, 1, 2, 3, 4, 45, 46]  # type: ignore[arg-type]
    assert worker.queued_total == 7 and worker.dropped == 39 - 4 + 1


def test_freshest_drops_the_queue_for_video_and_the_oldest_for_audio() -> None:
    frames = video()
    asks: list[str] = []
    worker, handler = held_worker(Overflow.FRESHEST, 3, asks)
    worker.push(frames[0], frames[0])
    assert handler.entered.wait(TIMEOUT)
    for frame in frames[1:5]:  # 1, 2, 3 queued; 4 finds it full: all of them go, video waits
        worker.push(frame, frame)
    assert worker.queued == 0 and worker.dropped == 4 and asks == ["key"] and worker.waiting_keyframe
    for frame in frames[5:18]:  # 5..14 wait for the keyframe; 15, 16, 17 are queued
        worker.push(frame, frame)
    assert worker.queued == 3 and worker.dropped == 4 + 10
    assert worker.push(frames[30], frames[30])  # a keyframe that finds the queue full replaces it
    assert worker.queued == 1 and worker.dropped == 14 + 3

    sound = audio()
    for frame in sound[:5]:  # 30 and two audio frames fill it; then the oldest goes each time
        worker.push(frame, frame)
    assert worker.queued == 3 and worker.dropped == 17 + 3
    handler.gate.set()
    worker.stop(drain=True)
    assert worker.join(TIMEOUT)
    assert handler.items == [frames[0], *sound[2:5]]


def test_video_waits_for_its_first_keyframe_and_asks_for_one() -> None:
    frames = video(3.0, keyframe_interval=60)  # keyframes at 0 and 60
    asks: list[str] = []
    worker, handler = held_worker(Overflow.KEEP_QUEUED, 100, asks)
    handler.gate.set()
    sound = audio(0.2)
    assert worker.push(sound[0], sound[0])  # audio needs no keyframe
    for frame in frames[1:]:
        worker.push(frame, frame)
    assert worker.skipped == 59 and worker.dropped == 0  # before the first keyframe: skipped, not dropped
    assert len(asks) == -(-59 // KEYFRAME_ASK_EVERY)  # the first, then every KEYFRAME_ASK_EVERY
    worker.stop(drain=True)
    assert worker.join(TIMEOUT)
    assert handler.items == [sound[0], *frames[60:]]


def test_stop_without_drain_ends_after_the_item_in_hand_and_runs_on_exit_on_the_worker() -> None:
    frames = video(1.0)
    exits: list[int] = []
    worker, handler = held_worker(Overflow.KEEP_QUEUED, 100, on_exit=lambda: exits.append(threading.get_ident()))
    for frame in frames[:10]:
        worker.push(frame, frame)
    worker.put_control("cut")
    assert handler.entered.wait(TIMEOUT)
    worker.stop()
    assert worker.queued == 0 and worker.stopping
    assert worker.push(frames[10], frames[10]) is False and worker.dropped == 0  # after stop: not queued
    worker.put_control("late")
    handler.gate.set()
    assert worker.join(TIMEOUT)
    assert handler.items == [frames[0]]  # the one in hand was finished, the rest discarded
    assert exits == list(handler.threads) and exits[0] != threading.get_ident()


def test_control_items_are_kept_in_order_and_never_dropped() -> None:
    frames = video(1.0)
    worker, handler = held_worker(Overflow.KEEP_QUEUED, 2)
    worker.push(frames[0], frames[0])
    assert handler.entered.wait(TIMEOUT)
    worker.push(frames[1], frames[1])
    worker.put_control("a")
    worker.push(frames[2], frames[2])
    worker.put_control("b")  # the queue holds 2 frames: full, but control items do not count
    assert worker.push(frames[3], frames[3]) is False
    handler.gate.set()
    worker.stop(drain=True)
    assert worker.join(TIMEOUT)
    assert handler.items == [frames[0], frames[1], "a", frames[2], "b"]


def test_a_failing_item_is_counted_and_the_worker_goes_on() -> None:
    frames = audio(0.2)
    done: list[EncodedFrame] = []

    def handle(frame: EncodedFrame) -> None:
        if frame is frames[1]:
            raise RuntimeError("a broken frame")
        done.append(frame)

    worker: FrameWorker[EncodedFrame] = FrameWorker("failing", handle, 10)
    worker.start()
    for frame in frames[:4]:
        worker.push(frame, frame)
    worker.stop(drain=True)
    assert worker.join(TIMEOUT)
    assert worker.failures == 1 and done == [frames[0], *frames[2:4]]


async def test_post_runs_on_the_loop_thread() -> None:
    loop = asyncio.get_running_loop()
    ran: asyncio.Future[int] = loop.create_future()
    worker: FrameWorker[EncodedFrame] = FrameWorker(
        "post", lambda frame: worker.post(ran.set_result, threading.get_ident()), 10)
    worker.start(loop)
    frame = audio(0.1)[0]
    worker.push(frame, frame)
    assert await asyncio.wait_for(ran, TIMEOUT) == worker.thread.ident
    worker.stop()
    assert await asyncio.to_thread(worker.join, TIMEOUT)


def test_queue_frames_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FrameWorker("bad", lambda item: None, 0)
