"""Concurrent bridged SIP calls with G.711 <-> Opus transcoding: server CPU per call, the most calls with
under 1 % loss, and call setup time.

    .venv/bin/python benchmarks/bench_sip.py [--steps 5,10,20,40,60,80] [--seconds 10] [--codec PCMU]

Run it in a loopback-only network namespace (all traffic is on 127.0.0.1):

    unshare --net sh -c 'ip link set lo up && exec .venv/bin/python benchmarks/bench_sip.py'

Three processes. The server (this script with --serve) holds one CallMedia per call (media/sip_media.py:
the browser's WebRTC leg and the SIP leg's RTP, PCMU <-> Opus transcoded on worker threads), driven by
JSON lines on its stdin, as the SIP signalling would drive it. The browser side is aiortc peer
connections in a client process (--browsers: a 440 Hz tone each, Opus, DTLS-SRTP; what they receive is
counted by aiortc's statistics); the SIP side is plain RTP phones in this process: each sends a
pre-encoded 1 kHz PCMU tone every 20 ms from its own port (symmetric RTP) and counts what it gets back.
SIP signalling is not part of it: the calls are set up through the media API directly.

For each step N (calls at once): N calls are set up concurrently; setup time is from the browser's offer
to the first RTP packet of the call at its phone (ICE, DTLS, both transcoders started, the browser's audio
through them). Then, over a steady window: server CPU (utime + stime of the server process, /proc) per
call in % of one core, and the loss each way, end to end: packets the sources sent (the phones; the
browsers' tone frames) against packets the other side received (the browsers' decoded 20 ms frames; the
phones' count), every counter read at the same instant in every process. The largest N
with both losses under 1 % is reported. The client processes' CPU is shown too: on 2 cores they compete
with the server, so a step can fail for the clients' sake. The packet rates per call (50/s each way when
every source keeps its 20 ms pace) show whether the sources kept up.

Prints a table, then one JSON line {"bench": "sip", ...}. BENCH_SIP_PROFILE=file writes a cProfile of the
server's loop thread there.
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
    ok = [r for r in results if max(r["loss_to_browser_pct"], r["loss_to_phone_pct"]) < 1.0]
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
    print(f"\nmost calls with < 1 % loss each way: {best}; server CPU per call (median of steps): {per_call:.2f} % "
          "of one core")
    print(json.dumps({"bench": "sip", "codec": args.codec, "seconds": args.seconds, "steps": results,
                      "max_calls_under_1pct_loss": best, "server_cpu_pct_per_call": round(per_call, 3)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="5,10,20,40,60,80", help="concurrent calls per step, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per step")
    parser.add_argument("--codec", default="PCMU", choices=("PCMU", "PCMA"))
    parser.add_argument("--browsers", type=int, default=2, help="client processes for the browser side")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--browser-side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve and os.environ.get("BENCH_SIP_PROFILE"):
        import cProfile

        cProfile.runctx("asyncio.run(serve(args.codec))", globals(), {"args": args}, os.environ["BENCH_SIP_PROFILE"])
    elif args.serve:
        asyncio.run(serve(args.codec))
    elif args.browser_side:
        asyncio.run(browsers())
    else:
        asyncio.run(drive(args))


if __name__ == "__main__":
    main()
