"""Publishing over WHIP (RFC 9725) and playing over WHEP (draft-ietf-wish-whep) with aiortc: an HTTP
POST of the offer (with every candidate in it, so nothing is trickled), the answer from the 201, a
DELETE of the `Location` to end. No WebSocket session: a stream that the server ends shows as the media
connection failing or closing (`ended`).

    publisher = await WhipPublisher.start("http://127.0.0.1:8081/whip/cam1", token="secret")
    player = await WhepPlayer.start("http://127.0.0.1:8081/whep/cam1")
    await player.wait_frames(30, timeout=10)
    await publisher.stop()

From the command line (a JSON summary on stdout, `ready {...}` on stderr once connected; exit status 1
when the endpoint refused or the stream failed):

    python -m streaming.client.whip publish http://127.0.0.1:8081/whip/cam1 --duration 30 [--token T]
    python -m streaming.client.whip play http://127.0.0.1:8081/whep/cam1 --frames 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urljoin

import aiohttp
import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .media import TestPatternTrack, ToneTrack
from .session import ClientError, WaitTimeout
from .webrtc import VIDEO_CODECS, codec_preferences, negotiated_codecs, use_ice_addresses

log = logging.getLogger(__name__)


class HttpRefused(ClientError):
    """The WHIP/WHEP endpoint answered the POST with an error: its status and text."""

    def __init__(self, status: int, text: str):
        super().__init__(f"{status}: {text.strip()}")
        self.status = status
        self.text = text.strip()


class _HttpStream:
    """A peer connection signalled by one HTTP POST; `location` is the session's resource."""

    def __init__(self, url: str, token: str | None):
        self.url = url
        self.token = token
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.location: str | None = None
        self.etag: str | None = None
        self.answer: str | None = None
        self._changed = asyncio.Event()
        self.pc.on("connectionstatechange", self._changed.set)

    @property
    def codecs(self) -> dict[str, str]:
        return negotiated_codecs(self.answer)

    @property
    def ended(self) -> bool:
        return self.pc.connectionState in ("failed", "closed")

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _negotiate(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription.sdp
        async with aiohttp.ClientSession() as http:
            async with http.post(self.url, data=offer.encode(), headers=self._headers("application/sdp"),
                                 timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                text = await response.text()
                if response.status != 201:
                    raise HttpRefused(response.status, text)
                self.location = urljoin(self.url, response.headers["Location"])
                self.etag = response.headers.get("ETag")
                self.answer = text
        await self.pc.setRemoteDescription(RTCSessionDescription(text, "answer"))
        await self._wait(lambda: self.pc.connectionState == "connected", "connected", deadline - loop.time())

    async def _wait(self, condition: Any, what: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            if self.ended and what != "end":
                raise ClientError(f"the media connection {self.pc.connectionState} while waiting for {what}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise WaitTimeout(f"no {what} of {self.url} within {timeout:g} s "
                                  f"(connection {self.pc.connectionState})")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining if math.isfinite(remaining) else None)
            except TimeoutError:
                pass

    async def wait_ended(self, timeout: float = 10.0) -> None:
        """Until the server ended the stream (the media connection failed or closed)."""
        await self._wait(lambda: self.ended, "end", timeout)

    async def stop(self) -> int | None:
        """DELETE the session (the HTTP status, None when there was none) and close the connection."""
        status = None
        try:
            if self.location is not None:
                async with aiohttp.ClientSession() as http:
                    async with http.delete(self.location, headers=self._headers(),
                                           timeout=aiohttp.ClientTimeout(total=10)) as response:
                        status = response.status
        finally:
            await self._close()
        return status

    async def _close(self) -> None:
        await self.pc.close()


class WhipPublisher(_HttpStream):
    """Publishes a test pattern and a tone to a WHIP endpoint."""

    def __init__(self, url: str, token: str | None = None, *, codec: str | None = None, video: bool = True,
                 audio: bool = True, width: int = 640, height: int = 480, fps: float = 30.0):
        super().__init__(url, token)
        self.tracks: list[MediaStreamTrack] = []
        if audio:
            self.tracks.append(ToneTrack())
        if video:
            self.tracks.append(TestPatternTrack(width, height, fps))
        for track in self.tracks:
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            if codec is not None and track.kind == "video":
                transceiver.setCodecPreferences(codec_preferences("video", codec.upper()))

    @classmethod
    async def start(cls, url: str, token: str | None = None, timeout: float = 20.0, **options: Any) -> WhipPublisher:
        publisher = cls(url, token, **options)
        try:
            await publisher._negotiate(timeout)
        except BaseException:
            await publisher._close()
            raise
        return publisher

    async def _close(self) -> None:
        for track in self.tracks:
            track.stop()
        await super()._close()


class WhepPlayer(_HttpStream):
    """Plays a stream from a WHEP endpoint and counts (decoded) frames."""

    def __init__(self, url: str, token: str | None = None, *, codec: str | None = None):
        super().__init__(url, token)
        self.frames = {"video": 0, "audio": 0}
        self.width: int | None = None
        self.height: int | None = None
        self.first_frame_at: float | None = None
        self._readers: list[asyncio.Task[None]] = []
        self.pc.addTransceiver("audio", direction="recvonly")
        video = self.pc.addTransceiver("video", direction="recvonly")
        if codec is not None:
            video.setCodecPreferences(codec_preferences("video", codec.upper(), receiving=True))
        self.pc.on("track", self._on_track)

    @classmethod
    async def start(cls, url: str, token: str | None = None, timeout: float = 20.0, **options: Any) -> WhepPlayer:
        player = cls(url, token, **options)
        try:
            await player._negotiate(timeout)
        except BaseException:
            await player._close()
            raise
        return player

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._readers.append(asyncio.get_running_loop().create_task(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                self.frames[track.kind] += 1
                if isinstance(frame, av.VideoFrame):
                    self.width, self.height = frame.width, frame.height
                    if self.first_frame_at is None:
                        self.first_frame_at = time.monotonic()
                self._changed.set()
        except MediaStreamError:
            self._changed.set()

    async def wait_frames(self, count: int, timeout: float = 10.0, kind: str = "video") -> None:
        await self._wait(lambda: self.frames[kind] >= count, f"{count} {kind} frames (got {self.frames[kind]})",
                         timeout)

    async def _close(self) -> None:
        for task in self._readers:
            task.cancel()
        await super()._close()
        for task in self._readers:
            try:
                await task
            except (asyncio.CancelledError, MediaStreamError):
                pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streaming.client.whip",
                                     description="Publish over WHIP or play over WHEP (aiortc).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (("publish", "publish a test pattern and a tone to a WHIP URL"),
                       ("play", "play a WHEP URL and count its frames")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("url", help="the endpoint, e.g. http://127.0.0.1:8081/whip/cam1")
        sub.add_argument("--token", default=None, help="sent as Authorization: Bearer TOKEN")
        sub.add_argument("--codec", type=str.upper, choices=VIDEO_CODECS, default=None, help="video codec")
        sub.add_argument("--duration", type=float, default=None, metavar="S", help="seconds to keep it up")
        sub.add_argument("--timeout", type=float, default=20.0, metavar="S", help="seconds to get connected")
        sub.add_argument("--ice-address", action="append", default=None, metavar="ADDR",
                         help="gather ICE candidates on this address (repeatable); 127.0.0.1 on loopback")
        if name == "play":
            sub.add_argument("--frames", type=int, default=None, metavar="N", help="stop after N video frames")
    return parser


async def _run(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    if args.ice_address:
        use_ice_addresses(args.ice_address)
    summary: dict[str, Any] = {"command": args.command, "url": args.url}
    stream: _HttpStream | None = None
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):  # stop: DELETE the session, print the summary
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    try:
        if args.command == "publish":
            stream = await WhipPublisher.start(args.url, args.token, args.timeout, codec=args.codec)
        else:
            stream = await WhepPlayer.start(args.url, args.token, args.timeout, codec=args.codec)
        summary.update(location=stream.location, codecs=stream.codecs)
        print("ready " + json.dumps({"location": stream.location}), file=sys.stderr, flush=True)
        wait = float("inf") if args.duration is None else args.duration
        if isinstance(stream, WhepPlayer) and args.frames is not None:
            await stream.wait_frames(args.frames, wait)
        else:
            try:
                await stream.wait_ended(wait)
                raise ClientError(f"the stream ended: the media connection is {stream.pc.connectionState}")
            except WaitTimeout:
                pass  # up for the whole duration
        code = 0
    except ClientError as exc:
        summary["error"] = str(exc)
        code = 1
    except asyncio.CancelledError:
        summary["interrupted"] = True
        code = 0
    finally:
        if stream is not None:
            if isinstance(stream, WhepPlayer):
                summary.update(frames=stream.frames["video"], audioFrames=stream.frames["audio"],
                               width=stream.width, height=stream.height)
            summary["deleted"] = await stream.stop()
    return code, summary


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    code, summary = asyncio.run(_run(args))
    print(json.dumps(summary, indent=2, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
