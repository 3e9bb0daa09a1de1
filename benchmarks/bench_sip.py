"""Concurrent bridged SIP calls with G.711 <-> Opus transcoding: server CPU per call, the most calls with
under 1 % loss, and call setup time.

    .venv/bin/python benchmarks/bench_sip.py [--steps 5,10,20,30,40] [--seconds 10] [--browsers 2]
    .venv/bin/python benchmarks/bench_sip.py --media-only [--steps ...] [--codec PCMU|PCMA]

Run it in a loopback-only network namespace (all traffic is on 127.0.0.1):

    unshare --net sh -c 'ip link set lo up && exec .venv/bin/python benchmarks/bench_sip.py'

Through the gateway (the default). The real server (`streaming serve` with its SIP gateway) in its own
process; browser sides in --browsers client processes: per call, one WebSocket session speaking the WebSDK
protocol with a SIP account (no registration: `sipDomain` 127.0.0.1 at SIPp's port) and one aiortc peer
connection sending a 440 Hz tone (Opus, DTLS-SRTP); it sends `call`, sets the `setRemoteSDP` answer and
waits for `talk`. The callee is SIPp's built-in UAS, answering PCMU, with -rtp_echo: every RTP packet goes
back to where it came from. So each call's audio is transcoded Opus -> PCMU, echoed, PCMU -> Opus. For each
step N (calls set up at once): setup time from `call` to `talk` (ESTABLISHED) and to the first echoed audio
frame at the browser; then, over a steady window, server CPU (utime + stime of the server process, /proc)
per call in % of one core, and the round-trip loss: tone frames the browsers sent against frames they got
back, read at one instant. Then --compare calls again with SIPp answering Opus (the same scenario, its
SDP changed): forwarded both ways, no transcoder; the ratio of server CPU per call, transcoded over
forwarded, is printed.

Media only (--media-only). No signalling: a server process of this script holds CallMedia objects and is
driven over its stdin as the signalling would drive it; the browser sides are aiortc peers as above; the
SIP side is plain RTP phones in this process, each sending a pre-encoded 1 kHz G.711 tone every 20 ms
from its own port and counting what comes back. Setup time is from the browser's offer to the first RTP
packet at the phone; loss is measured each way (sources' sent against the other side's received, every
counter read at one instant in every process).

A step counts (the largest N that does is reported) when its loss is under 1 % and every source kept its
pace (at least 95 % of 50 packets/s per call): on 2 cores the client processes compete with the server,
and a client that falls behind sends less, which no loss figure shows. Client and SIPp CPU are shown.

Prints a table, then one JSON line {"bench": "sip", ...}. BENCH_SIP_PROFILE=file (media only) writes a
cProfile of the server's loop thread there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fanout import procstat  # noqa: E402

PTIME = 0.02
PACED = 0.95 / PTIME  # packets/s per call a source must keep for its step to count (its clients kept up)


# -- the server process ------------------------------------------------------------------------------


async def serve(codec: str) -> None:
    from media import ice, native
    from media.sfu import MediaCore
    from media.sip_media import CallMedia, SipMediaSettings
    from media.stream import StreamRegistry
    from media.transcode import Transcoders

    ice.use_host_addresses(["127.0.0.1"])
    core = MediaCore(native.rtp_module(), native.rtcp_module(), native.track_module())
    registry = StreamRegistry()
    transcoders = Transcoders(core.track, core.rtp)
    settings = SipMediaSettings(codecs=(codec,), port_min=30000, port_max=39999, rtp_timeout=600)
    calls: dict[str, CallMedia] = {}
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    async def handle(request: dict[str, Any]) -> None:
        op = request["op"]
        if op == "call":
            call = CallMedia(core, transcoders, settings, call_id=request["id"], has_video=False,
                             claim=registry.claim, release=registry.release, on_dtmf=lambda d: None,
                             on_timeout=lambda: None)
            calls[request["id"]] = call
            answer = await call.browser_answer(request["offer"])
            sip_answer = call.sip_answer(request["phone_sdp"])
            reply({"id": request["id"], "answer": answer, "sip_answer": sip_answer,
                   "port": call.describe()["sip"]["local_port"]})
        elif op == "stats":
            described = [c.describe() for c in calls.values()]
            reply({"id": request["id"], "calls": len(calls),
                   "browser_dropped": sum(d["browser"]["dropped"] for d in described),
                   "transcoder_dropped": sum(t["dropped"] for d in described for t in d["transcoders"]),
                   "transcoders": sum(len(d["transcoders"]) for d in described)})
        elif op == "close":
            for call in list(calls.values()):
                await call.close()
            calls.clear()
            reply({"id": request["id"]})

    while line := await reader.readline():
        request = json.loads(line)
        loop.create_task(handle(request))
    for call in calls.values():
        await call.close()


# -- the browser side (a client process) -------------------------------------------------------------


async def browsers() -> None:
    """Peer connections on request (JSON lines on stdin): make an offer, take an answer, report stats."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from media import ice
    from streaming.client.media import ToneTrack

    ice.use_host_addresses(["127.0.0.1"])
    pcs: dict[str, RTCPeerConnection] = {}
    tones: list[ToneTrack] = []
    counts = {"received": 0}
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    drains: list[asyncio.Task[None]] = []

    def reply(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    async def drain(track: Any) -> None:
        while True:
            try:
                await track.recv()
            except Exception:
                return
            counts["received"] += 1  # one 20 ms frame per packet

    async def handle(request: dict[str, Any]) -> None:
        op = request["op"]
        if op == "offer":
            pc = RTCPeerConnection()
            tone = ToneTrack(440.0)
            tones.append(tone)
            pc.addTransceiver(tone, direction="sendrecv")

            @pc.on("track")
            def on_track(track: Any) -> None:
                drains.append(loop.create_task(drain(track)))

            pcs[request["call"]] = pc
            await pc.setLocalDescription(await pc.createOffer())
            reply({"id": request["id"], "offer": pc.localDescription.sdp})
        elif op == "answer":
            await pcs[request["call"]].setRemoteDescription(RTCSessionDescription(request["answer"], "answer"))
            reply({"id": request["id"]})
        elif op == "snapshot":  # the counters at a given instant (CLOCK_MONOTONIC is one for all processes)
            await asyncio.sleep(max(0.0, request["at"] - time.monotonic()))
            reply({"id": request["id"], "sent": sum(t.frames_sent for t in tones), "received": counts["received"]})
        elif op == "close":
            for task in drains:
                task.cancel()
            await asyncio.gather(*(pc.close() for pc in pcs.values()), return_exceptions=True)
            pcs.clear()
            reply({"id": request["id"]})

    while line := await reader.readline():
        loop.create_task(handle(json.loads(line)))


# -- the browser side through the real gateway (--sip) ---------------------------------------------


async def sip_browsers() -> None:
    """WebSDK-protocol sessions with SIP accounts (no registration: calls go to SIPp directly), each with
    one call whose media is an aiortc peer connection; JSON lines on stdin."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from media import ice
    from streaming.client.media import ToneTrack
    from streaming.client.session import Session

    ice.use_host_addresses(["127.0.0.1"])
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    calls: list[dict[str, Any]] = []
    counts = {"received": 0}

    def reply(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    async def drain(track: Any, call: dict[str, Any]) -> None:
        while True:
            try:
                await track.recv()
            except Exception:
                return
            counts["received"] += 1
            if call["first_frame"] is None:
                call["first_frame"] = time.monotonic()

    def message(session: Any, name: str, call_id: str) -> dict[str, Any] | None:
        for doc in session.messages:
            data = doc.get("data") or []
            if doc.get("message") == name and data and (data[0] == call_id or (
                    isinstance(data[0], dict) and data[0].get("callId") == call_id)):
                return doc
        return None

    async def one_call(request: dict[str, Any]) -> None:
        call_id = request["call"]
        sip = {"sipLogin": "bench", "sipAuthenticationName": "bench", "sipPassword": "bench",
               "sipDomain": "127.0.0.1", "sipPort": str(request["sip_port"]), "sipRegisterRequired": False}

        class SipSession(Session):
            def connection_message(self) -> dict[str, Any]:
                return {**super().connection_message(), **sip}

        session = await SipSession.connect(request["ws"])
        pc = RTCPeerConnection()
        tone = ToneTrack(440.0)
        pc.addTransceiver(tone, direction="sendrecv")
        call: dict[str, Any] = {"session": session, "pc": pc, "tone": tone, "first_frame": None, "tasks": []}
        calls.append(call)

        @pc.on("track")
        def on_track(track: Any) -> None:
            call["tasks"].append(loop.create_task(drain(track, call)))

        await pc.setLocalDescription(await pc.createOffer())
        sent_at = time.monotonic()
        await session.send("call", {"callId": call_id, "callee": "service", "visibleName": "bench",
                                    "hasVideo": False, "hasAudio": True, "sdp": pc.localDescription.sdp})
        await session.wait_for(lambda: message(session, "setRemoteSDP", call_id) is not None
                               or message(session, "finish", call_id) is not None, "setRemoteSDP", 30)
        answer = message(session, "setRemoteSDP", call_id)
        if answer is None:
            raise RuntimeError(f"call failed: {message(session, 'finish', call_id)}")
        await pc.setRemoteDescription(RTCSessionDescription(answer["data"][1], "answer"))
        await session.wait_for(lambda: message(session, "talk", call_id) is not None, "talk", 30)
        talk_at = time.monotonic()
        await session.wait_for(lambda: call["first_frame"] is not None, "first audio", 30)
        reply({"id": request["id"], "established_ms": (talk_at - sent_at) * 1000,
               "media_ms": (call["first_frame"] - sent_at) * 1000})

    async def handle(request: dict[str, Any]) -> None:
        op = request["op"]
        try:
            if op == "call":
                await one_call(request)
            elif op == "snapshot":
                await asyncio.sleep(max(0.0, request["at"] - time.monotonic()))
                reply({"id": request["id"], "sent": sum(c["tone"].frames_sent for c in calls),
                       "received": counts["received"]})
            elif op == "close":
                for call in calls:
                    for task in call["tasks"]:
                        task.cancel()
                await asyncio.gather(*(c["pc"].close() for c in calls), return_exceptions=True)
                await asyncio.gather(*(c["session"].close() for c in calls), return_exceptions=True)
                calls.clear()
                reply({"id": request["id"]})
        except Exception as exc:
            reply({"id": request["id"], "error": f"{type(exc).__name__}: {exc}"})

    while line := await reader.readline():
        loop.create_task(handle(json.loads(line)))


# -- the driver: phones, steps, report ---------------------------------------------------------------


class Child:
    """A process of this script speaking JSON lines."""

    def __init__(self, mode: str, *extra: str):
        self.mode = mode
        self.extra = extra
        self.proc: asyncio.subprocess.Process | None = None
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.counter = 0
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> Child:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, f"--{self.mode}", *self.extra, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=1 << 24)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            future = self.waiting.pop(message["id"], None)
            if future is not None:
                future.set_result(message)

    async def ask(self, request: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        request.setdefault("id", f"r{self.counter}")
        self.counter += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[request["id"]] = future
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        async with asyncio.timeout(timeout):
            return await future

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def tone_payloads(codec: str) -> list[bytes]:
    """One second of a 1 kHz tone in 20 ms PCMU/PCMA payloads (the peak repeats every 20 ms)."""
    import av
    import numpy as np

    encoder = cast(av.AudioCodecContext, av.CodecContext.create({"PCMU": "pcm_mulaw", "PCMA": "pcm_alaw"}[codec], "w"))
    encoder.sample_rate, encoder.layout, encoder.format = 8000, "mono", "s16"
    encoder.open()
    t = np.arange(8000) / 8000
    pcm = (np.sin(2 * np.pi * 1000 * t) * 8000).astype(np.int16)
    out = []
    for start in range(0, 8000, 160):
        frame = av.AudioFrame.from_ndarray(pcm[start:start + 160].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 8000
        frame.pts = start
        out += [bytes(p) for p in encoder.encode(frame)]
    return out


class Phones(asyncio.DatagramProtocol):
    """The SIP side of every call: one socket per phone, all ticking on one timer."""

    def __init__(self, codec: str):
        self.codec = codec
        self.payload_type = {"PCMU": 0, "PCMA": 8}[codec]
        self.payloads = tone_payloads(codec)
        self.phones: dict[str, dict[str, Any]] = {}
        self.tick = 0
        self._task: asyncio.Task[None] | None = None

    async def add(self, call_id: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        phone: dict[str, Any] = {"sent": 0, "received": 0, "first_at": None, "remote": None, "first": asyncio.Event(),
                                 "ssrc": hash(call_id) & 0xFFFFFFFF, "seq": 0}

        class Port(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                phone["received"] += 1
                if phone["first_at"] is None:
                    phone["first_at"] = time.monotonic()
                    phone["first"].set()

        transport, _ = await loop.create_datagram_endpoint(Port, local_addr=("127.0.0.1", 0))
        phone["transport"] = transport
        phone["port"] = transport.get_extra_info("sockname")[1]
        self.phones[call_id] = phone
        return phone

    def sdp(self, phone: dict[str, Any]) -> str:
        return (f"v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {phone['port']} RTP/AVP {self.payload_type}\r\na=ptime:20\r\na=sendrecv\r\n")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            payload = self.payloads[self.tick % len(self.payloads)]
            for phone in self.phones.values():
                if phone["remote"] is None:
                    continue
                phone["seq"] = (phone["seq"] + 1) & 0xFFFF
                header = struct.pack("!BBHII", 0x80, self.payload_type, phone["seq"], (self.tick * 160) & 0xFFFFFFFF,
                                     phone["ssrc"])
                phone["transport"].sendto(header + payload, phone["remote"])
                phone["sent"] += 1
            self.tick += 1
            await asyncio.sleep(max(0.0, start + self.tick * PTIME - loop.time()))

    def totals(self) -> tuple[int, int]:
        """Packets sent and received by all phones."""
        phones = self.phones.values()
        return sum(p["sent"] for p in phones), sum(p["received"] for p in phones)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for phone in self.phones.values():
            phone["transport"].close()
        self.phones.clear()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def one_step(n: int, seconds: float, codec: str, client_count: int) -> dict[str, Any]:
    server = await Child("serve", "--codec", codec).start()
    clients = [await Child("browser-side").start() for _ in range(client_count)]
    phones = Phones(codec)
    phones.start()
    setup_ms: list[float] = []
    loop = asyncio.get_running_loop()

    async def one_call(k: int) -> None:
        call_id = f"call{k}"
        client = clients[k % len(clients)]
        phone = await phones.add(call_id)
        started = time.monotonic()
        offer = (await client.ask({"op": "offer", "id": f"o{call_id}", "call": call_id}))["offer"]
        answered = await server.ask({"op": "call", "id": call_id, "offer": offer, "phone_sdp": phones.sdp(phone)})
        phone["remote"] = ("127.0.0.1", answered["port"])
        await client.ask({"op": "answer", "id": f"a{call_id}", "call": call_id, "answer": answered["answer"]})
        async with asyncio.timeout(60):
            await phone["first"].wait()
        setup_ms.append((phone["first_at"] - started) * 1000)

    try:
        await asyncio.gather(*(one_call(k) for k in range(n)))
        await asyncio.sleep(2.0)  # settle: jitter buffers, first transcoder frames
        snapshots = []
        for edge in range(2):
            at = time.monotonic() + 0.5  # every counter read at this instant, in every process
            asked = [loop.create_task(c.ask({"op": "snapshot", "at": at})) for c in clients]
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            phone_sent, phone_received = phones.totals()
            cpu = procstat.cpu_seconds(server.pid)
            client_cpu = sum(procstat.cpu_seconds(c.pid) for c in clients)
            browser = await asyncio.gather(*asked)
            snapshots.append((time.monotonic(), phone_sent, phone_received, cpu, client_cpu,
                              sum(b["sent"] for b in browser), sum(b["received"] for b in browser)))
            if edge == 0:
                await asyncio.sleep(seconds)
        (t0, ps0, pr0, cpu0, ccpu0, bs0, br0), (t1, ps1, pr1, cpu1, ccpu1, bs1, br1) = snapshots
        wall = t1 - t0
        server_stats = await server.ask({"op": "stats"})
        # End to end, over the same window in every process: what the sources sent against what the
        # other side received (a few packets in flight at each edge cancel out in a steady state).
        to_browser_loss = max(0.0, 1 - (br1 - br0) / (ps1 - ps0)) if ps1 > ps0 else 1.0
        to_phone_loss = max(0.0, 1 - (pr1 - pr0) / (bs1 - bs0)) if bs1 > bs0 else 1.0
        browser_received, phone_received = br1 - br0, pr1 - pr0
        browser_sent, phone_sent = bs1 - bs0, ps1 - ps0
        return {
            "calls": n,
            "server_cpu_pct": 100 * (cpu1 - cpu0) / wall,
            "server_cpu_pct_per_call": 100 * (cpu1 - cpu0) / wall / n,
            "client_cpu_pct": 100 * (ccpu1 - ccpu0) / wall,
            "loss_to_browser_pct": 100 * to_browser_loss,
            "loss_to_phone_pct": 100 * to_phone_loss,
            "setup_p50_ms": percentile(setup_ms, 0.5),
            "setup_p99_ms": percentile(setup_ms, 0.99),
            "pps_from_phone_per_call": phone_sent / wall / n,
            "pps_to_browser_per_call": browser_received / wall / n,
            "pps_from_browser_per_call": browser_sent / wall / n,
            "pps_to_phone_per_call": phone_received / wall / n,
            "transcoders": server_stats["transcoders"],
            "transcoder_dropped": server_stats["transcoder_dropped"],
        }
    finally:
        phones.close()
        for child in (server, *clients):
            try:
                await child.ask({"op": "close"}, timeout=30)
            except (TimeoutError, ConnectionError):
                pass
            await child.stop()


def uas_scenario(codec: str, workdir: Path) -> list[str]:
    """SIPp arguments for its built-in UAS answering PCMU, or the same scenario answering Opus."""
    if codec == "PCMU":
        return ["-sn", "uas"]
    import subprocess

    from tests.support.sip_peers import SIPP

    scenario = subprocess.run([SIPP, "-sd", "uas"], capture_output=True, text=True).stdout  # exits 99 when done
    if "RTP/AVP 0" not in scenario:
        raise RuntimeError("sipp -sd uas did not print its UAS scenario")
    scenario = scenario.replace("RTP/AVP 0", "RTP/AVP 111").replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:111 opus/48000/2")
    path = workdir / "uas-opus.xml"
    path.write_text(scenario)
    return ["-sf", str(path)]


async def one_sip_step(n: int, seconds: float, client_count: int, workdir: Path,
                       codec: str = "PCMU") -> dict[str, Any]:
    """N calls through the real server: the WebSDK call protocol, the SIP gateway, SIPp as the callee
    (its built-in UAS answering PCMU, or Opus, -rtp_echo sending every RTP packet back to where it came
    from)."""
    import shutil
    import subprocess

    from tests.support.server import ServerProcess
    from tests.support.sip_peers import SIPP, free_port

    server = ServerProcess(workdir / f"server-{n}", ["--sip-udp-port", "0", "--sip-tcp-port", "0",
                                                     "--sip-rtp-port-min", "30000", "--sip-rtp-port-max", "39999"])
    await asyncio.to_thread(server.start)
    assert server.proc is not None
    sip_port, media_port = free_port(), free_port()
    sipp = await asyncio.create_subprocess_exec(
        SIPP, *uas_scenario(codec, workdir), "-i", "127.0.0.1", "-p", str(sip_port), "-mi", "127.0.0.1",
        "-mp", str(media_port), "-rtp_echo", "-nostdin", "-timeout", "600s",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    clients = [await Child("sip-browser-side").start() for _ in range(client_count)]
    loop = asyncio.get_running_loop()
    established: list[float] = []
    media: list[float] = []
    try:
        await asyncio.sleep(0.5)  # SIPp binds its port

        async def one_call(k: int) -> None:
            answer = await clients[k % len(clients)].ask({"op": "call", "call": f"bench-{k}", "ws": server.ws_url,
                                                          "sip_port": sip_port}, timeout=90)
            if "error" in answer:
                raise RuntimeError(answer["error"])
            established.append(answer["established_ms"])
            media.append(answer["media_ms"])

        await asyncio.gather(*(one_call(k) for k in range(n)))
        await asyncio.sleep(2.0)
        snapshots = []
        for edge in range(2):
            at = time.monotonic() + 0.5
            asked = [loop.create_task(c.ask({"op": "snapshot", "at": at})) for c in clients]
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            cpu = procstat.cpu_seconds(server.proc.pid)
            sipp_cpu = procstat.cpu_seconds(sipp.pid)
            client_cpu = sum(procstat.cpu_seconds(c.pid) for c in clients)
            counts = await asyncio.gather(*asked)
            snapshots.append((time.monotonic(), cpu, sipp_cpu, client_cpu, sum(c["sent"] for c in counts),
                              sum(c["received"] for c in counts)))
            if edge == 0:
                await asyncio.sleep(seconds)
        (t0, cpu0, sc0, cc0, sent0, rec0), (t1, cpu1, sc1, cc1, sent1, rec1) = snapshots
        wall = t1 - t0
        sent, received = sent1 - sent0, rec1 - rec0
        loss = max(0.0, 1 - received / sent) if sent else 1.0
        return {
            "calls": n,
            "callee_codec": codec,
            "server_cpu_pct": 100 * (cpu1 - cpu0) / wall,
            "server_cpu_pct_per_call": 100 * (cpu1 - cpu0) / wall / n,
            "client_cpu_pct": 100 * (cc1 - cc0) / wall,
            "sipp_cpu_pct": 100 * (sc1 - sc0) / wall,
            "loss_round_trip_pct": 100 * loss,
            "pps_sent_per_call": sent / wall / n,
            "pps_back_per_call": received / wall / n,
            "established_p50_ms": percentile(established, 0.5),
            "established_p99_ms": percentile(established, 0.99),
            "media_p50_ms": percentile(media, 0.5),
            "media_p99_ms": percentile(media, 0.99),
        }
    finally:
        for child in clients:
            try:
                await child.ask({"op": "close"}, timeout=60)
            except (TimeoutError, ConnectionError):
                pass
            await child.stop()
        sipp.kill()
        await sipp.wait()
        await asyncio.to_thread(server.stop)
        shutil.rmtree(workdir / f"server-{n}", ignore_errors=True)


async def drive_sip(args: argparse.Namespace) -> None:
    import tempfile

    steps = [int(s) for s in args.steps.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-sip-") as folder:
        for n in steps:
            result = await one_sip_step(n, args.seconds, args.browsers, Path(folder))
            results.append(result)
            print(f"  {n} calls: server {result['server_cpu_pct']:.0f} % CPU, round-trip loss "
                  f"{result['loss_round_trip_pct']:.2f} %", file=sys.stderr)
            if result["loss_round_trip_pct"] >= 1.0 and n != steps[0]:
                break
        # The same calls with an Opus callee: forwarded both ways, no transcoder (the ratio's baseline).
        forwarded = await one_sip_step(args.compare, args.seconds, args.browsers, Path(folder), "opus")
    transcoded = next((r for r in results if r["calls"] == args.compare), None)
    ok = [r for r in results if r["loss_round_trip_pct"] < 1.0 and r["pps_sent_per_call"] >= PACED]
    best = max((r["calls"] for r in ok), default=0)
    print(f"\nBridged calls through the SIP gateway (WebSDK call protocol -> INVITE -> SIPp UAS, PCMU, RTP echoed),"
          f" Opus <-> PCMU transcoded both ways, {args.seconds:.0f} s window per step, {os.cpu_count()} cores")
    print(f"{'calls':>7} {'server CPU %':>12} {'per call %':>10} {'clients CPU %':>13} {'SIPp CPU %':>10} "
          f"{'loss (round trip) %':>19} {'pkt/s sent -> back':>19} {'talk p50/p99 ms':>16} {'audio p50/p99 ms':>17}")
    for r in [*results, forwarded]:
        label = f"{r['calls']}" + (" opus" if r["callee_codec"] == "opus" else "")
        print(f"{label:>7} {r['server_cpu_pct']:>12.1f} {r['server_cpu_pct_per_call']:>10.2f} "
              f"{r['client_cpu_pct']:>13.1f} {r['sipp_cpu_pct']:>10.1f} {r['loss_round_trip_pct']:>19.2f} "
              f"{r['pps_sent_per_call']:>9.1f} ->{r['pps_back_per_call']:>7.1f} "
              f"{r['established_p50_ms']:>7.0f}/{r['established_p99_ms']:<8.0f} "
              f"{r['media_p50_ms']:>8.0f}/{r['media_p99_ms']:<8.0f}")
    per_call = statistics.median(r["server_cpu_pct_per_call"] for r in results)
    ratio = (transcoded["server_cpu_pct_per_call"] / forwarded["server_cpu_pct_per_call"]
             if transcoded and forwarded["server_cpu_pct_per_call"] else None)
    print(f"\nmost calls with < 1 % round-trip loss, the browsers at pace: {best}; "
          f"server CPU per call (median of steps): {per_call:.2f} % of one core")
    if ratio is not None:
        print(f"{args.compare} calls, server CPU per call: PCMU (transcoded) / Opus (forwarded) = {ratio:.2f}")
    print(json.dumps({"bench": "sip", "mode": "gateway", "seconds": args.seconds, "steps": results,
                      "forwarded_opus": forwarded, "transcoded_over_forwarded_cpu": ratio,
                      "max_calls_under_1pct_loss": best, "server_cpu_pct_per_call": round(per_call, 3)}))


async def drive(args: argparse.Namespace) -> None:
    steps = [int(s) for s in args.steps.split(",")]
    results = []
    for n in steps:
        result = await one_step(n, args.seconds, args.codec, args.browsers)
        results.append(result)
        print(f"  {n} calls: server {result['server_cpu_pct']:.0f} % CPU, loss to browser "
              f"{result['loss_to_browser_pct']:.2f} %, to phone {result['loss_to_phone_pct']:.2f} %", file=sys.stderr)
        if max(result["loss_to_browser_pct"], result["loss_to_phone_pct"]) >= 1.0 and n != steps[0]:
            break
    ok = [r for r in results if max(r["loss_to_browser_pct"], r["loss_to_phone_pct"]) < 1.0
          and min(r["pps_from_phone_per_call"], r["pps_from_browser_per_call"]) >= PACED]
    best = max((r["calls"] for r in ok), default=0)
    print(f"\nBridged calls, {args.codec} <-> Opus transcoded, {args.seconds:.0f} s window per step, "
          f"{os.cpu_count()} cores ({platform.processor() or platform.machine()})")
    print(f"{'calls':>5} {'server CPU %':>12} {'per call %':>10} {'clients CPU %':>13} {'loss->browser %':>15} "
          f"{'loss->phone %':>13} {'pkt/s phone->browser':>20} {'pkt/s browser->phone':>20} {'setup p50 ms':>12} "
          f"{'setup p99 ms':>12} {'transcoders':>11}")
    for r in results:
        print(f"{r['calls']:>5} {r['server_cpu_pct']:>12.1f} {r['server_cpu_pct_per_call']:>10.2f} "
              f"{r['client_cpu_pct']:>13.1f} {r['loss_to_browser_pct']:>15.2f} {r['loss_to_phone_pct']:>13.2f} "
              f"{r['pps_from_phone_per_call']:>9.1f} ->{r['pps_to_browser_per_call']:>9.1f} "
              f"{r['pps_from_browser_per_call']:>9.1f} ->{r['pps_to_phone_per_call']:>9.1f} "
              f"{r['setup_p50_ms']:>12.0f} {r['setup_p99_ms']:>12.0f} {r['transcoders']:>11}")
    per_call = statistics.median(r["server_cpu_pct_per_call"] for r in results)
    print(f"\nmost calls with < 1 % loss each way, every source at pace: {best}; "
          f"server CPU per call (median of steps): {per_call:.2f} % "
          "of one core")
    print(json.dumps({"bench": "sip", "codec": args.codec, "seconds": args.seconds, "steps": results,
                      "max_calls_under_1pct_loss": best, "server_cpu_pct_per_call": round(per_call, 3)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="5,10,20,30,40", help="concurrent calls per step, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per step")
    parser.add_argument("--codec", default="PCMU", choices=("PCMU", "PCMA"))
    parser.add_argument("--browsers", type=int, default=2, help="client processes for the browser side")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compare", type=int, default=10,
                        help="calls of the Opus-callee step (forwarded, no transcoding) compared with the same "
                             "number transcoded")
    parser.add_argument("--media-only", action="store_true",
                        help="drive the media API directly, plain RTP phones as the SIP side (no SIP signalling)")
    parser.add_argument("--browser-side", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sip-browser-side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve and os.environ.get("BENCH_SIP_PROFILE"):
        import cProfile

        cProfile.runctx("asyncio.run(serve(args.codec))", globals(), {"args": args}, os.environ["BENCH_SIP_PROFILE"])
    elif args.serve:
        asyncio.run(serve(args.codec))
    elif args.browser_side:
        asyncio.run(browsers())
    elif args.sip_browser_side:
        asyncio.run(sip_browsers())
    elif args.media_only:
        asyncio.run(drive(args))
    else:
        asyncio.run(drive_sip(args))


if __name__ == "__main__":
    main()
