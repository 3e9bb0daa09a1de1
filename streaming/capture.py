"""Captures of a session's media packets to pcap files: for `sendBugReport` with `type: no_media` (a few
seconds, saved beside the report) and for `sessionDebug` (from `start` to `stop`).

A capture taps the packets where the media core already has them, and only while it runs: the RTP of
the tracks a session's streams publish or play (the tracks' packet listeners: for a viewer, as the
server received them, before the per-viewer rewrite of SSRC, sequence numbers and timestamps), the
RTCP each of its peers sends, and the RTCP the server sends its publishers. When no capture runs,
nothing is added to any packet's path. Addresses are the peers' (the connected ICE candidate pair);
the file is written by media/pcap.py, at most `max_bytes` long, in a thread.

`sessionDebug` is a direct invocation (the backend may refuse it); the client is answered with
`notifySessionDebugEvent` (the WebSDK's SESSION_STATUS.DEBUG) and the backend gets
SessionDebugStatusEvent. The WebSDK's startDebug also makes it send its log lines (`pushLogs`): while a
session's debug runs they are kept (up to `max_bytes`) and saved beside its capture as a `.log` file;
at other times they are taken and dropped (stopDebug does not turn them off in the client).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from media.pcap import PcapBuffer
from media.sfu import WebRtcPublisher, WebRtcViewer
from media.stream import PublishedTrack

from . import protocol
from .hooks import HookClient
from .protocol import ProtocolError
from .session import Session

if TYPE_CHECKING:
    from .streams import MediaSession

log = logging.getLogger(__name__)

MAX_RUNNING = 4  # captures at once, server-wide (each may hold max_bytes in memory)
DEBUG_MAX_SECONDS = 600.0  # a sessionDebug capture that is never stopped ends after this
UNKNOWN = (("0.0.0.0", 9), ("0.0.0.0", 9))  # a peer not connected (yet): the discard port, no address


class CaptureBusy(Exception):
    """No capture can start now; the message says why."""


class Capture:
    """The taps of one capture on the media sessions of one client session. `start` adds them, `stop`
    removes them (both on the event loop thread) and leaves the packets in `buffer`."""

    def __init__(self, media_sessions: list[MediaSession], max_bytes: int, clock: Callable[[], float] = time.time):
        self.buffer = PcapBuffer(max_bytes)
        self._clock = clock
        self._media = media_sessions
        self._undo: list[Callable[[], None]] = []
        self._addresses: dict[Any, tuple[tuple[str, int], tuple[str, int]]] = {}
        self.full = asyncio.Event()

    def start(self) -> None:
        for ms in self._media:
            endpoint = ms.endpoint
            if endpoint is None:
                continue
            peer = endpoint.peer
            if isinstance(endpoint, WebRtcPublisher) and ms.stream is not None:
                for track in ms.stream.tracks:
                    self._tap_track(track, peer, inbound=True)
                self._tap_sent_rtcp(peer)
            elif isinstance(endpoint, WebRtcViewer):
                for track in endpoint.tracks.values():
                    self._tap_track(track, peer, inbound=False)
            self._tap_received_rtcp(peer)

    def stop(self) -> bytes:
        while self._undo:
            self._undo.pop()()
        return bytes(self.buffer)

    # -- taps ------------------------------------------------------------------------------------------

    def _add(self, data: bytes, peer: Any, inbound: bool, rtcp: bool) -> None:
        # The peer's addresses, looked up once per peer (and again while it is not connected).
        addresses = self._addresses.get(peer)
        if addresses is None:
            addresses = peer.addresses
            if addresses is not None:
                self._addresses[peer] = addresses
            else:
                addresses = UNKNOWN
        local, remote = addresses
        if rtcp:  # rtcp-mux: one port pair carries both; the next port tells RTCP apart for readers
            local, remote = (local[0], local[1] + 1), (remote[0], remote[1] + 1)
        src, dst = (remote, local) if inbound else (local, remote)
        if not self.buffer.add(data, self._clock(), src, dst) and self.buffer.full:
            self.full.set()

    def _tap_track(self, track: PublishedTrack, peer: Any, inbound: bool) -> None:
        def listener(packet: bytes, flags: int, now: float) -> None:
            self._add(packet, peer, inbound, rtcp=False)

        track.listeners.append(listener)
        self._undo.append(lambda: track.listeners.remove(listener) if listener in track.listeners else None)

    def _tap_received_rtcp(self, peer: Any) -> None:
        original = peer.on_rtcp

        def on_rtcp(data: bytes) -> None:
            self._add(data, peer, inbound=True, rtcp=True)
            original(data)

        peer.on_rtcp = on_rtcp

        def undo() -> None:
            if peer.on_rtcp is on_rtcp:  # a closed peer has dropped its callbacks already
                peer.on_rtcp = original

        self._undo.append(undo)

    def _tap_sent_rtcp(self, peer: Any) -> None:
        original = peer.send_rtcp  # the bound method: the publisher calls peer.send_rtcp at each send

        def send_rtcp(data: bytes) -> bool:
            self._add(data, peer, inbound=False, rtcp=True)
            return bool(original(data))

        peer.send_rtcp = send_rtcp
        self._undo.append(lambda: peer.__dict__.pop("send_rtcp", None))


def write_exclusive(path: Path, data: bytes) -> None:
    """Write a new file whole or not at all: never over an existing name (or a planted symlink), and
    never seen half written (written under a temporary name, then linked to its own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.link(partial, path)  # fails if the name exists: nothing is overwritten
    finally:
        os.unlink(partial)


class SessionCaptures:
    """`media_sessions`: the server's streams (a capture takes its session's); `hooks`: the backend
    (sessionDebug); `folder`: where sessionDebug captures are saved (the reports folder)."""

    def __init__(self, media_sessions: Callable[[], list[MediaSession]], hooks: HookClient, folder: Path,
                 seconds: float, max_bytes: int):
        self._media_sessions = media_sessions
        self.hooks = hooks
        self.folder = folder
        self.seconds = seconds
        self.max_bytes = max_bytes
        self._running: dict[str, tuple[Capture, asyncio.Task[None]]] = {}  # by session id
        self._debug_stop: dict[str, asyncio.Event] = {}
        self._debug_logs: dict[str, tuple[Path, list[str]]] = {}  # by session id: the file, its lines
        self.saved = 0
        self.logs_dropped = 0  # pushLogs lines taken outside a debug, or beyond its budget

    def handlers(self) -> dict[str, Any]:
        return {"sessionDebug": self.on_session_debug, "pushLogs": self.on_push_logs}

    async def on_push_logs(self, session: Session, obj: dict[str, Any]) -> None:
        logs = obj.get("logs")
        kept = self._debug_logs.get(session.id)
        if not isinstance(logs, str) or kept is None or sum(map(len, kept[1])) + len(logs) > self.max_bytes:
            self.logs_dropped += 1
            return
        kept[1].append(logs)

    def running(self, session: Session) -> bool:
        return session.id in self._running

    def start(self, session: Session, path: Path, seconds: float, stop: asyncio.Event | None = None) -> None:
        """Capture `session`'s packets for `seconds` (or until `stop` is set, or the budget is spent) and
        save them as `path`. CaptureBusy when the session has one running or too many run."""
        if session.id in self._running:
            raise CaptureBusy("A capture of this session is already running")
        if len(self._running) >= MAX_RUNNING:
            raise CaptureBusy(f"Too many captures running ({MAX_RUNNING}), try again later")
        capture = Capture([ms for ms in self._media_sessions() if ms.session is session], self.max_bytes)
        capture.start()
        task = asyncio.get_running_loop().create_task(self._run(session, capture, path, seconds, stop))
        self._running[session.id] = (capture, task)

    async def _run(self, session: Session, capture: Capture, path: Path, seconds: float,
                   stop: asyncio.Event | None) -> None:
        waits = [asyncio.ensure_future(capture.full.wait())]
        if stop is not None:
            waits.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            data = capture.stop()
            self._running.pop(session.id, None)
        buffer = capture.buffer
        try:
            await asyncio.to_thread(write_exclusive, path, data)
        except OSError as exc:
            log.error("capture of session %s not saved as %s: %s", session.id, path.name, exc)
            return
        self.saved += 1
        log.info("capture of session %s saved as %s: %d packets, %d bytes%s", session.id, path.name,
                 buffer.packets, len(data), f", {buffer.refused} left out" if buffer.refused else "")

    async def shutdown(self) -> None:
        """Stop the captures and save what they hold."""
        for event in self._debug_stop.values():
            event.set()
        tasks = [task for _capture, task in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=10)

    # -- sessionDebug --------------------------------------------------------------------------------

    async def on_session_debug(self, session: Session, obj: dict[str, Any]) -> None:
        command = obj.get("command")
        if command not in ("start", "stop"):
            raise ProtocolError(f"sessionDebug: command must be 'start' or 'stop', not {str(command)[:64]!r}",
                                "sessionDebug")
        body = {"command": command, **session.context}
        result = await self.hooks.call(session.app, "sessionDebug", body,
                                       session.rest_config.for_method("sessionDebug"))
        if not result.allowed:
            await self._debug_status(session, "FAILED", f"Refused: {result.reason or 'Restricted access'}")
            return
        if command == "start":
            await self._debug_start(session)
        else:
            await self._debug_stop_now(session)

    async def _debug_start(self, session: Session) -> None:
        if session.id in self._debug_stop:
            await self._debug_status(session, "STARTED", "Session debug is already running")
            return
        now = datetime.datetime.now(datetime.UTC)
        name = f"session-debug-{now:%Y%m%d-%H%M%S}-{session.id[:8]}.pcap"
        stop = asyncio.Event()
        try:
            self.start(session, self.folder / name, DEBUG_MAX_SECONDS, stop)
        except CaptureBusy as exc:
            await self._debug_status(session, "FAILED", str(exc))
            return
        self._debug_stop[session.id] = stop
        self._debug_logs[session.id] = (self.folder / name.replace(".pcap", ".log"), [])
        if self._forget not in session.close_callbacks:
            session.close_callbacks.append(self._forget)
        await self._debug_status(session, "STARTED", None, name, name.replace(".pcap", ".log"))

    async def _debug_stop_now(self, session: Session) -> None:
        stop = self._debug_stop.pop(session.id, None)
        running = self._running.get(session.id)
        if stop is None or running is None:
            await self._debug_status(session, "STOPPED", "Session debug was not running")
            return
        stop.set()
        await asyncio.shield(running[1])
        await self._save_logs(session)
        await self._debug_status(session, "STOPPED", None)

    async def _save_logs(self, session: Session) -> None:
        kept = self._debug_logs.pop(session.id, None)
        if kept is None or not kept[1]:
            return
        path, lines = kept
        try:
            await asyncio.to_thread(write_exclusive, path, "".join(lines).encode())
        except OSError as exc:
            log.error("client logs of session %s not saved as %s: %s", session.id, path.name, exc)

    async def _debug_status(self, session: Session, status: str, info: str | None, filename: str | None = None,
                            logs: str | None = None) -> None:
        obj: dict[str, Any] = {"status": status}
        if info:
            obj["info"] = info
        if filename:
            obj["filename"] = filename
        if logs:
            obj["logs"] = logs
        await session.send(protocol.frame("notifySessionDebugEvent", obj))
        session.report("SessionDebugStatusEvent", obj)

    async def _forget(self, session: Session, reason: str) -> None:
        stop = self._debug_stop.pop(session.id, None)
        if stop is not None:
            stop.set()
        await self._save_logs(session)
