"""A client worker process: hosts the publisher or a share of the viewers, driven by commands over a
multiprocessing pipe (a dict in, a dict out, one command at a time).

Commands:
- publish {mode: "sfu"|"relay", url, name, video, audio} -> {ssrcs}: the pre-encoded file and Opus packets;
- viewers {mode: "sfu"|"relay"|"janus", url, name, count, concurrency, timeout, ice_address} -> {joins_ms,
  errors}: `count` more viewers (for Janus, `name` is the mountpoint id and `ice_address` the veth end's
  address and device);
- snapshot -> {at, viewers: {index: (expected, received, frames)}}: each viewer's counters so far;
- close -> {}: every viewer and the publisher;
- exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from media import ice
from streaming.client import Session
from streaming.client.media import H264FileTrack
from streaming.client.webrtc import Publisher, codec_preferences

from .children import serve
from .janus_viewer import bind_ice_to_device
from .source import OpusPacketTrack, read_opus_packets
from .viewer import CountingViewer


def main(conn: Connection, name: str, nice: int = 0) -> None:
    """Entry point of the process; `nice` lowers its priority below the server's."""
    if nice:
        os.nice(nice)
    logging.basicConfig(level=logging.WARNING, format=f"{name} %(name)s %(levelname)s %(message)s")
    ice.use_host_addresses(["127.0.0.1"])
    asyncio.run(Worker(conn).run())


class Worker:
    def __init__(self, conn: Connection):
        self.conn = conn
        self.viewers: list[CountingViewer] = []
        self.publisher_session: Session | None = None
        self.publisher_pc: RTCPeerConnection | None = None
        self.http: aiohttp.ClientSession | None = None
        self._next_index = 0

    async def run(self) -> None:
        self.http = aiohttp.ClientSession()
        try:
            await serve(self.conn, self)
        finally:
            await self.http.close()

    async def op_publish(self, mode: str, url: str, name: str, video: str, audio: str) -> dict[str, Any]:
        opus = OpusPacketTrack(read_opus_packets(Path(audio)))
        if mode == "sfu":
            self.publisher_session = session = await Session.connect(url)
            publisher = Publisher(session, name, audio=False, codec="H264", file=video)
            publisher.pc.addTrack(opus)  # the Opus packets as they are, where the client would encode a tone
            publisher.tracks.append(opus)
            publisher.has_audio = True
            session.media.append(publisher)
            await publisher.start(20)
            pc = publisher.pc
        else:
            self.publisher_pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTrack(opus)
            pc.addTrack(H264FileTrack(video))
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "video":
                    transceiver.setCodecPreferences(codec_preferences("video", "H264"))
            await pc.setLocalDescription(await pc.createOffer())
            assert self.http is not None
            async with self.http.post(f"{url}/publish", json={"sdp": pc.localDescription.sdp, "type": "offer"},
                                      timeout=aiohttp.ClientTimeout(total=20)) as resp:
                resp.raise_for_status()
                answer = await resp.json()
            connected = asyncio.Event()

            @pc.on("connectionstatechange")
            def on_state() -> None:
                if pc.connectionState == "connected":
                    connected.set()

            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            await asyncio.wait_for(connected.wait(), 20)
        return {"ssrcs": {t.kind: t.sender._ssrc for t in pc.getTransceivers()}}

    # -- viewers -----------------------------------------------------------------------------------

    async def op_viewers(self, mode: str, url: str, name: str, count: int, concurrency: int,
                         timeout: float, ice_address: str = "127.0.0.1", ice_device: str | None = None
                         ) -> dict[str, Any]:
        # Janus gathers no candidates on loopback: its viewers gather on the benchmark's veth address.
        ice.use_host_addresses([ice_address])
        if ice_device:
            bind_ice_to_device(ice_address, ice_device)
        limit = asyncio.Semaphore(concurrency)
        added = []

        async def join(viewer: CountingViewer) -> None:
            async with limit:
                try:
                    if mode == "sfu":
                        await viewer.play_sfu(url, name, timeout)
                    elif mode == "janus":  # name: the mountpoint's numeric id
                        assert self.http is not None
                        await viewer.play_janus(self.http, url, int(name), timeout)
                    else:
                        assert self.http is not None
                        await viewer.play_relay(self.http, url, timeout)
                except Exception as exc:
                    viewer.error = f"{type(exc).__name__}: {exc}"

        for _ in range(count):
            viewer = CountingViewer(self._next_index)
            self._next_index += 1
            added.append(viewer)
            self.viewers.append(viewer)
        await asyncio.gather(*(join(v) for v in added))
        return {"joins_ms": [v.join_ms for v in added if v.error is None and v.join_ms is not None],
                "errors": [v.error for v in added if v.error is not None]}

    async def op_snapshot(self) -> dict[str, Any]:
        return {"at": time.monotonic(), "viewers": {v.index: v.totals() for v in self.viewers if v.error is None}}

    async def op_close(self) -> dict[str, Any]:
        viewers, self.viewers = self.viewers, []
        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
        if self.publisher_session is not None:
            await self.publisher_session.close()
            self.publisher_session = None
        if self.publisher_pc is not None:
            for transceiver in self.publisher_pc.getTransceivers():
                if transceiver.sender.track is not None:
                    transceiver.sender.track.stop()
            await self.publisher_pc.close()
            self.publisher_pc = None
        return {}
