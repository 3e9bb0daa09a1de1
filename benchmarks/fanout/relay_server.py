"""The fan-out aiortc users write by default, as in aiortc's examples/server: plain HTTP offer/answer,
one RTCPeerConnection per peer, the publisher's tracks decoded once by aiortc and handed to every viewer
through `MediaRelay().subscribe(track)`, each viewer's sender encoding its own copy (H.264 with libx264,
as aiortc does).

    python benchmarks/fanout/relay_server.py --ice-address 127.0.0.1

POST /publish and POST /play take {"sdp", "type": "offer"} and answer the same; GET /stats gives the RTP
packets sent to viewers so far. Prints `ready {"rest": "http://…"}` when listening (port 0: any).

One change for the benchmark's sake: aiortc starts each sender's RTP timestamps at a random origin; here
it starts at 0. aiortc's receiver rebases decoded frames to start at 0 as well (GET /stats tells the
publisher timestamp it maps to 0), so a sent video frame's RTP timestamp plus that origin is the
timestamp of the publisher's frame it was decoded from, and the sniffer can match them (arrival of a
frame to departure of its re-encoded copy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

import aiortc.rtcrtpsender
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from media import ice  # noqa: E402

log = logging.getLogger("relay")

_random32 = aiortc.rtcrtpsender.random32


def _timestamp_origin_zero() -> int:
    if sys._getframe(1).f_code.co_name == "_run_rtp":  # the sender's RTP timestamp origin
        return 0
    return _random32()


class Relay:
    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.tracks: dict[str, MediaStreamTrack] = {}
        self.publisher: RTCPeerConnection | None = None
        self.viewers: set[RTCPeerConnection] = set()
        self.got_tracks = asyncio.Event()

    async def publish(self, request: web.Request) -> web.Response:
        params = await request.json()
        pc = RTCPeerConnection()
        self.publisher = pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tracks[track.kind] = track
            if len(self.tracks) == len(pc.getTransceivers()):
                self.got_tracks.set()

        await pc.setRemoteDescription(RTCSessionDescription(params["sdp"], params["type"]))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})

    async def play(self, request: web.Request) -> web.Response:
        params = await request.json()
        try:
            await asyncio.wait_for(self.got_tracks.wait(), 10)
        except TimeoutError:
            return web.json_response({"error": "nothing published"}, status=404)
        pc = RTCPeerConnection()
        self.viewers.add(pc)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.viewers.discard(pc)
                await pc.close()

        await pc.setRemoteDescription(RTCSessionDescription(params["sdp"], params["type"]))
        for transceiver in pc.getTransceivers():
            track = self.tracks.get(transceiver.kind)
            if track is not None:
                pc.addTrack(self.relay.subscribe(track))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})

    async def stats(self, request: web.Request) -> web.Response:
        sent = 0
        for pc in list(self.viewers):
            for stats in (await pc.getStats()).values():
                if stats.type == "outbound-rtp":
                    sent += stats.packetsSent
        return web.json_response({"viewers": len(self.viewers), "sent": sent, "tracks": len(self.tracks),
                                  "video_origin": self.video_origin()})

    def video_origin(self) -> int | None:
        """The publisher's RTP timestamp that aiortc's receiver maps to 0 (it rebases decoded frames)."""
        for transceiver in self.publisher.getTransceivers() if self.publisher else []:
            if transceiver.kind == "video":
                mapper = getattr(transceiver.receiver, "_RTCRtpReceiver__timestamp_mapper", None)
                origin = getattr(mapper, "_origin", None)
                return origin if isinstance(origin, int) else None
        return None

    async def close(self) -> None:
        pcs = list(self.viewers) + ([self.publisher] if self.publisher else [])
        await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)


async def serve(args: argparse.Namespace) -> None:
    ice.use_host_addresses(args.ice_address)
    aiortc.rtcrtpsender.random32 = _timestamp_origin_zero
    relay = Relay()
    app = web.Application()
    app.router.add_post("/publish", relay.publish)
    app.router.add_post("/play", relay.play)
    app.router.add_get("/stats", relay.stats)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, args.bind, args.port)
    await site.start()
    port = runner.addresses[0][1]
    print("ready " + json.dumps({"rest": f"http://{args.bind}:{port}"}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await relay.close()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ice-address", action="append", default=[], help="repeatable")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()

