"""The SIP gateway's and the RTMP ingest's families in /metrics, scraped with Prometheus's text parser from
a real server: ffmpeg publishing over RTMP shows as an rtmp stream whose ingested frames only grow, and
SIP datagrams (a good OPTIONS, a malformed request) move the SIP message counters by outcome."""

from __future__ import annotations

import socket
from collections.abc import Callable

import aiohttp

from tests.support.rtmp_peers import FfmpegPublisher, clip_fixture, publish_fixture  # noqa: F401
from tests.support.server import ServerProcess
from tests.test_metrics import value, wait_scrape


async def test_an_rtmp_publisher_shows_in_the_metrics(start_server: Callable[..., ServerProcess],
                                                      publish: Callable[..., FfmpegPublisher]) -> None:
    server = start_server([])
    async with aiohttp.ClientSession() as http:
        before = await wait_scrape(http, server, lambda s: ("streaming_rtmp_connections", frozenset()) in s,
                                   "the RTMP families")
        assert value(before, "streaming_streams", kind="rtmp") == 0
        encoder = publish(server.urls["rtmp"] + "/live/cam1")
        first = await wait_scrape(
            http, server, lambda s: value(s, "streaming_streams", kind="rtmp") == 1
            and value(s, "streaming_rtmp_ingested_frames_total", kind="video") > 0, "an RTMP stream ingesting")
        later = await wait_scrape(
            http, server, lambda s: value(s, "streaming_rtmp_ingested_frames_total", kind="video")
            > value(first, "streaming_rtmp_ingested_frames_total", kind="video"), "more frames")
        assert value(later, "streaming_rtmp_ingested_bytes_total") > 0
        assert value(later, "streaming_rtmp_published_total") == 1
        encoder.stop()
        after = await wait_scrape(http, server, lambda s: value(s, "streaming_streams", kind="rtmp") == 0
                                  and value(s, "streaming_rtmp_connections") == 0, "the publisher gone")
        # What the publisher brought in stays counted once it is gone.
        assert value(after, "streaming_rtmp_ingested_frames_total", kind="video") >= value(
            later, "streaming_rtmp_ingested_frames_total", kind="video")


def _options(port: int, local: tuple[str, int], branch: str) -> bytes:
    host, local_port = local
    return (f"OPTIONS sip:probe@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{local_port};branch=z9hG4bK{branch}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:metrics@127.0.0.1>;tag=m1\r\nTo: <sip:probe@127.0.0.1>\r\n"
            f"Call-ID: {branch}@metrics\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


async def test_sip_messages_are_counted_by_outcome(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server([])
    port = int(server.urls["sip_udp"].rsplit(":", 1)[1])
    async with aiohttp.ClientSession() as http:
        before = await wait_scrape(http, server, lambda s: ("streaming_sip_calls", frozenset()) in s,
                                   "the SIP families")
        assert value(before, "streaming_sip_sessions") == 0 and value(before, "streaming_sip_registrations") == 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5)
            sock.sendto(_options(port, sock.getsockname(), "metrics1"), ("127.0.0.1", port))
            assert sock.recv(65536).startswith(b"SIP/2.0 ")
            # A request without the headers an answer needs: counted as malformed, dropped.
            sock.sendto(b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n", ("127.0.0.1", port))
        after = await wait_scrape(
            http, server, lambda s: value(s, "streaming_sip_messages_total", outcome="malformed")
            > value(before, "streaming_sip_messages_total", outcome="malformed"), "the malformed request counted")
        assert value(after, "streaming_sip_messages_total", outcome="received") >= value(
            before, "streaming_sip_messages_total", outcome="received") + 2
