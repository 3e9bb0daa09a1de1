"""RTSP clients served by the native fan-out: datagrams from the server's RTP socket (UDP), and whole
interleaved frames written to the connection's socket (TCP), which must stay whole and in order with
the RTSP answers when the client stops reading and the server's buffers fill."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from media import rtcp, rtp
from streaming.client import Session
from tests.support.server import ServerProcess
from tests.test_rtsp_server import RTSP, RawClient, health, play_interleaved, rtsp_url, wait_for


def rtsp_address(server: ServerProcess) -> tuple[str, int]:
    host, port = server.urls["rtsp"].removeprefix("rtsp://").rsplit(":", 1)
    return host, int(port)


def udp_pair() -> tuple[socket.socket, socket.socket]:
    """Two sockets on an even port and the next, as RTP/RTCP want them."""
    while True:
        rtp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp_sock.bind(("127.0.0.1", 0))
        port = rtp_sock.getsockname()[1]
        if port % 2 == 0 and port < 65535:
            rtcp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp_sock.bind(("127.0.0.1", port + 1))
                return rtp_sock, rtcp_sock
            except OSError:
                rtcp_sock.close()
        rtp_sock.close()


async def test_a_udp_client_gets_its_datagrams_from_the_native_fan_out(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(RTSP)
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec="H264", width=320, height=240)
        url = rtsp_url(server)
        client = await RawClient.open(server)
        status, _h, _sdp = await client.request("DESCRIBE", url)
        assert status == 200
        sockets = [udp_pair(), udp_pair()]
        session = ""
        ssrcs = []
        for track, (rtp_sock, _rtcp_sock) in enumerate(sockets):
            port = rtp_sock.getsockname()[1]
            headers = {"Transport": f"RTP/AVP;unicast;client_port={port}-{port + 1}"}
            if session:
                headers["Session"] = session
            status, reply, _ = await client.request("SETUP", f"{url}/trackID={track}", headers)
            assert status == 200, status
            session = reply["session"].split(";")[0]
            ssrcs.append(int(reply["transport"].split("ssrc=")[1].split(";")[0], 16))
        status, _h, _b = await client.request("PLAY", url, {"Session": session})
        assert status == 200
        assert health(server)["rtsp"]["routes"] == {"udp": 2}
        loop = asyncio.get_running_loop()
        for (rtp_sock, _rtcp_sock), ssrc in zip(sockets, ssrcs, strict=True):
            rtp_sock.setblocking(False)
            seqs = []
            async with asyncio.timeout(15):
                while len(seqs) < 20:
                    header = rtp.parse_rtp(await loop.sock_recv(rtp_sock, 65536))
                    assert header.ssrc == ssrc
                    seqs.append(header.sequence_number)
            assert len(set(seqs)) == len(seqs)
        client.close()
        for pair in sockets:
            for sock in pair:
                sock.close()


async def test_a_tcp_client_that_stops_reading_loses_whole_frames_and_its_answers_stay_whole(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server([*RTSP, "--rtsp-tcp-buffer", "32768"])  # small buffers fill in seconds
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec="H264", width=640, height=480)
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server fills up
        sock.setblocking(False)
        await loop.sock_connect(sock, rtsp_address(server))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        client = RawClient(reader, writer)
        url = rtsp_url(server)
        session, transports = await play_interleaved(client, url)
        assert health(server)["rtsp"]["routes"] == {"tcp": 2}
        ssrcs = {int(t.split("ssrc=")[1], 16) for t in transports}
        # Not reading: the kernel's buffers fill, then asyncio's, then the server drops.
        await wait_for(lambda: health(server)["rtsp"]["dropped"] > 0, "drops for a client that does not read",
                       timeout=60)
        # An answer written while frames wait before it comes whole, between whole frames.
        status, _h, _b = await client.request("GET_PARAMETER", url, {"Session": session}, timeout=30)
        assert status == 200
        await client.read_frames(len(client.frames) + 300, timeout=30)
        for channel, data in client.frames:
            assert channel in (0, 1, 2, 3)
            if channel in (0, 2):
                assert rtp.parse_rtp(data).ssrc in ssrcs
            else:
                assert rtcp.parse_rtcp(data)
        client.close()
