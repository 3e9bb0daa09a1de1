"""/metrics: scraped with Prometheus's own text parser from a real server while a real publisher (the
Python client), a WebRTC viewer, ffmpeg over RTSP and an HLS client use it; the counters move, the gauges
follow the viewers, hook latencies land in the histogram. The ledger that keeps counters of objects that
come and go monotonic, and the plug-in protocol for other services, are tested on their own."""

from __future__ import annotations

import asyncio
import gc
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from streaming import config as config_module
from streaming.client import Session
from streaming.metrics import HlsClients, Ledger
from streaming.server import Server
from tests.support.server import ServerProcess

TOKEN = "metrics-token-0123456789"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sample's value, 0 when absent (a labelled histogram appears with its first observation)."""
    return scraped.get((name, frozenset(labels.items())), 0.0)


async def scrape(http: aiohttp.ClientSession, server: ServerProcess) -> dict[tuple[str, frozenset[tuple[str, str]]],
                                                                             float]:
    async with http.get(server.rest_url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return samples(await resp.text())


async def wait_scrape(http: aiohttp.ClientSession, server: ServerProcess, check: Callable[[Any], bool], what: str,
                      timeout: float = 20.0) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        scraped = await scrape(http, server)
        if check(scraped):
            return scraped
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


# -- the pieces ----------------------------------------------------------------------------------------


class Thing:
    def __init__(self) -> None:
        self.count = 0


def test_ledger_totals_only_grow_and_keep_what_gone_objects_counted() -> None:
    ledger: Ledger[Thing] = Ledger(1)
    a, b = Thing(), Thing()
    a.count, b.count = 5, 7
    ledger.update([(a, "x"), (b, "y")], lambda t: (t.count,))
    assert (ledger.total("x"), ledger.total("y")) == (5, 7)
    a.count = 9  # a counts more, then goes before the next update: held and read once more
    ledger.update([(b, "y")], lambda t: (t.count,))
    assert ledger.total("x") == 9
    ledger.update([(a, "x")], lambda t: (t.count,))  # back again (an RTSP PAUSE, PLAY): not counted twice
    assert ledger.total("x") == 9
    a.count = 10
    ledger.update([], lambda t: (t.count,))
    del a, b
    gc.collect()
    ledger.update([], lambda t: (t.count,))
    assert (ledger.total("x"), ledger.total("y")) == (10, 7)
    assert ledger.labels("z") == ["x", "y", "z"]


def test_hls_clients_are_counted_within_the_window() -> None:
    clients = HlsClients(window=10.0)
    clients.saw("127.0.0.1", "cam1", 100.0)
    clients.saw("127.0.0.1", "cam1", 101.0)
    clients.saw("127.0.0.2", "cam1", 101.0)
    clients.saw("127.0.0.1", "cam2", 105.0)
    assert clients.count(106.0) == 3
    assert clients.count(112.0) == 1


class Gadget:
    """What another service adds, with the protocol of streaming/metrics.py."""

    def metrics(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("streaming_gadget_widgets", "Widgets of the gadget", value=4)

    def viewer_counts(self) -> dict[str, int]:
        return {"gadget": 2}

    def stream_counts(self) -> dict[str, int]:
        return {"gadget": 1}


class Broken:
    def metrics(self) -> Iterable[Metric]:
        raise RuntimeError("boom")


def test_other_services_plug_in(tmp_path: Path) -> None:
    from prometheus_client.exposition import generate_latest

    args = config_module.argparse.Namespace(**{"server.data_dir": str(tmp_path / "data")})
    server = Server(config_module.load(args, environ={}))
    try:
        server.gadget = Gadget()  # type: ignore[attr-defined] # an attribute of the server is found
        server.metrics.register(Broken())  # and one registered; its failure leaves the rest
        scraped = samples(generate_latest(server.metrics.registry).decode())
    finally:
        server.transcoders.close()
        server.apps.close()
    assert value(scraped, "streaming_gadget_widgets") == 4
    assert value(scraped, "streaming_viewers", protocol="gadget") == 2
    assert value(scraped, "streaming_viewers", protocol="webrtc") == 0
    assert value(scraped, "streaming_streams", kind="gadget") == 1
    assert value(scraped, "streaming_streams", kind="rtmp") == 0  # the RTMP service's own, registered
    assert ("streaming_sip_calls", frozenset()) in scraped  # and the SIP gateway's
    assert value(scraped, "streaming_sessions") == 0


# -- the real server -------------------------------------------------------------------------------------


async def test_scraped_metrics_follow_a_publisher_and_its_viewers(server: ServerProcess) -> None:
    hls_url = server.urls["hls"] + "/cam1/cam1.m3u8"
    async with aiohttp.ClientSession() as http:
        before = await scrape(http, server)
        assert value(before, "streaming_sessions") == 0
        assert value(before, "streaming_hook_duration_seconds_count", method="connect") == 0
        async with Session.connect(server.ws_url) as publishing:
            publisher = await publishing.publish("cam1", codec="H264", width=320, height=240)
            scraped = await scrape(http, server)
            assert value(scraped, "streaming_sessions") == 1
            assert value(scraped, "streaming_hook_duration_seconds_count", method="connect") == 1
            assert value(scraped, "streaming_hook_calls_total", method="connect", outcome="ok") == 1
            assert value(scraped, "streaming_hook_duration_seconds_count", method="publishStream") == 1
            assert value(scraped, "streaming_hook_duration_seconds_bucket", method="connect", le="+Inf") == 1
            assert value(scraped, "streaming_hook_duration_seconds_sum", method="connect") > 0
            assert value(scraped, "streaming_streams", kind="webrtc") == 1
            await wait_scrape(http, server, lambda s: value(s, "streaming_received_packets_total", kind="video") > 0,
                              "packets from the publisher")

            async with Session.connect(server.ws_url) as watching:
                player = await watching.play("cam1")
                await player.wait_frames(10, timeout=20)
                ffmpeg = await asyncio.create_subprocess_exec(
                    "ffmpeg", "-v", "error", "-rtsp_transport", "tcp", "-i", server.urls["rtsp"] + "/cam1", "-t", "60",
                    "-c", "copy", "-f", "null", "-", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
                try:
                    async with http.get(hls_url) as resp:  # waits for the first segment
                        assert resp.status == 200
                        await resp.read()
                    playing = await wait_scrape(
                        http, server, lambda s: value(s, "streaming_viewers", protocol="rtsp") == 1, "ffmpeg playing")
                    assert value(playing, "streaming_viewers", protocol="webrtc") == 1
                    assert value(playing, "streaming_viewers", protocol="hls") == 1
                    assert value(playing, "streaming_hls_outputs") == 1
                    assert value(playing, "streaming_hls_requests_total") >= 1
                    assert value(playing, "streaming_transcoders") == 1  # Opus to AAC for the HLS output
                    assert value(playing, "streaming_sessions") == 2
                    assert value(playing, "streaming_hook_duration_seconds_count", method="playStream") == 1
                    assert value(playing, "streaming_keyframe_requests_total") >= 1  # a viewer joined
                    for protocol in ("webrtc", "rtsp"):
                        sent = value(playing, "streaming_forwarded_packets_total", protocol=protocol)
                        more = await wait_scrape(
                            http, server,
                            lambda s, p=protocol, n=sent: value(s, "streaming_forwarded_packets_total", protocol=p) > n,
                            f"packets forwarded over {protocol}")
                        assert value(more, "streaming_forwarded_bytes_total", protocol=protocol) > 12 * sent
                    working = await wait_scrape(
                        http, server, lambda s: value(s, "streaming_transcoder_cpu_seconds_total", kind="audio") > 0,
                        "the transcoder's CPU seconds")
                    received = value(working, "streaming_received_bytes_total", kind="video")
                    assert received > 0
                finally:
                    ffmpeg.kill()
                    await ffmpeg.wait()
                forwarded = value(working, "streaming_forwarded_packets_total", protocol="webrtc")
                await player.stop(wait=True)
            gone = await wait_scrape(http, server,
                                     lambda s: value(s, "streaming_viewers", protocol="webrtc") == 0
                                     and value(s, "streaming_viewers", protocol="rtsp") == 0, "the viewers gone")
            # What the viewers were sent stays counted after they left.
            assert value(gone, "streaming_forwarded_packets_total", protocol="webrtc") >= forwarded
            assert value(gone, "streaming_received_bytes_total", kind="video") >= received
            await publisher.stop(wait=True)
        ended = await wait_scrape(http, server, lambda s: value(s, "streaming_sessions") == 0, "sessions closed")
        assert value(ended, "streaming_streams", kind="webrtc") == 0
        assert value(ended, "streaming_forwarded_packets_total", protocol="webrtc") >= forwarded
        assert value(ended, "process_cpu_seconds_total") > 0


async def test_metrics_asks_for_credentials_as_configured(start_server: Callable[..., ServerProcess]) -> None:
    protected = start_server(extra_args=["--rest-token", TOKEN])
    open_metrics = start_server(extra_args=["--rest-token", TOKEN, "--rest-metrics-auth", "false"])
    async with aiohttp.ClientSession() as http:
        async with http.get(protected.rest_url + "/metrics") as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"] == 'Bearer realm="streaming"'
        async with http.get(protected.rest_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200 and "streaming_sessions 0.0" in await resp.text()
        async with http.get(open_metrics.rest_url + "/metrics") as resp:
            assert resp.status == 200
        async with http.post(open_metrics.rest_url + "/rest-api/connection/find_all", json={}) as resp:
            assert resp.status == 401  # the REST API itself still asks


def test_metrics_auth_is_a_boolean() -> None:
    with pytest.raises(config_module.ConfigError, match="rest.metrics_auth must be true or false"):
        config_module.load(None, environ={"STREAMING_REST_METRICS_AUTH": "maybe"})
