"""Prometheus metrics of the server, served at `/metrics` on the REST port.

Nothing here runs per packet. At scrape time (and once a second, see below) the collector reads the
counters the server keeps anyway: sessions, the stream service's media sessions, the routing core's
tracks and their sinks (every viewer's fan-out output counts what it sent, dropped and resent), the RTSP
service's clients, transcoders, HLS outputs, recordings, pulls. Hook calls are timed where they happen
(HookClient.on_call), into a histogram.

Counters of things that come and go (a viewer's packets, a transcoder's CPU seconds) are kept monotonic
by a Ledger: it remembers how much of each object's counters it has counted and holds on to the objects it
saw last until it has read them once more, so the totals only grow and nothing an object counted before
it went is lost. Objects are looked at once a second, so a viewer that comes and goes within that second
is the only thing that can be missed.

Other services plug in without changes here. Any attribute of the Server, or anything given to
`Metrics.register`, may implement, all optional:

    def metrics(self) -> Iterable[prometheus_client.core.Metric]   # its own families (name them streaming_*)
    def stream_counts(self) -> Mapping[str, int]   # live streams by kind, added to streaming_streams{kind}
    def viewer_counts(self) -> Mapping[str, int]   # viewers by protocol, added to streaming_viewers{protocol}

For example a SIP service would return {"sip": 3} from viewer_counts() and yield
GaugeMetricFamily("streaming_sip_registrations", ...) from metrics(). A source that raises is logged and
left out of that scrape; the rest of the scrape goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from media.sfu import WebRtcPublisher, WebRtcViewer

if TYPE_CHECKING:
    from media.reader import RtpReader

    from .server import Server

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0  # seconds between looks at the objects whose counters the ledgers keep
HOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_HLS_CLIENTS = 100_000  # clients remembered for streaming_viewers{protocol="hls"}

T = TypeVar("T")


class Ledger(Generic[T]):
    """Monotonic totals, per label, of counters kept by objects that come and go.

    `update(live, read)` is given the objects alive now with their label, and how to read their counters.
    Each object's progress since it was last read is added to its label's totals. The objects of the
    previous update are held until this one, so one that went since is read a last time; what was
    counted of it is remembered while it exists, so an object that comes back (an RTSP client's PLAY
    after PAUSE) is not counted twice."""

    def __init__(self, fields: int):
        self.fields = fields
        self.totals: dict[str, list[float]] = {}
        # id(obj) -> [obj, label, counted values]: the objects of the last update, held.
        self._held: dict[int, list[Any]] = {}
        self._gone: weakref.WeakKeyDictionary[T, Sequence[float]] = weakref.WeakKeyDictionary()

    def update(self, live: Iterable[tuple[T, str]], read: Callable[[T], Sequence[float]]) -> None:
        held, current = self._held, {}
        for obj, label in live:
            key = id(obj)
            entry = held.pop(key, None)
            if entry is None:
                entry = [obj, label, self._gone.pop(obj, None) or (0,) * self.fields]
            entry[1] = label
            self._add(entry, read(obj))
            current[key] = entry
        for entry in held.values():  # gone since the last update: read a last time, then let go
            self._add(entry, read(entry[0]))
            with contextlib.suppress(TypeError):  # an object that cannot be weakly referenced is forgotten
                self._gone[entry[0]] = entry[2]
        self._held = current

    def _add(self, entry: list[Any], values: Sequence[float]) -> None:
        totals = self.totals.get(entry[1])
        if totals is None:
            totals = self.totals[entry[1]] = [0.0] * self.fields
        before = entry[2]
        for i in range(self.fields):
            grown = values[i] - before[i]
            if grown > 0:
                totals[i] += grown
        entry[2] = values

    def total(self, label: str, field: int = 0) -> float:
        return self.totals.get(label, [0.0] * self.fields)[field]

    def labels(self, *always: str) -> list[str]:
        return sorted(set(always) | set(self.totals))


def _sink_counters(sink: Any) -> tuple[int, int, int, int]:
    out = sink.output
    return out.sent, out.bytes_sent, out.dropped, out.retransmitted


def _track_counters(track: Any) -> tuple[int, int, int]:
    return track.ingest.packets, track.ingest.bytes, track.keyframe_requests


def _transcoder_counters(transcoder: Any) -> tuple[float, int]:
    stats = transcoder.stats
    return stats.encode_seconds, stats.dropped_input + stats.dropped_late


class HlsClients:
    """Who fetched HLS lately: a viewer is a client address and stream that fetched a playlist or a
    segment within `window` seconds (players fetch every target duration). Two players behind one address
    count as one."""

    def __init__(self, window: float):
        self.window = window
        self._seen: dict[tuple[str, str], float] = {}

    def saw(self, remote: str, name: str, now: float) -> None:
        if len(self._seen) >= MAX_HLS_CLIENTS:
            self.count(now)  # drops the old ones
            if len(self._seen) >= MAX_HLS_CLIENTS:
                return
        self._seen[(remote, name)] = now

    def count(self, now: float) -> int:
        self._seen = {k: t for k, t in self._seen.items() if now - t <= self.window}
        return len(self._seen)


class Metrics:
    """The server's metrics: a registry of its own (several servers may live in one process, as in
    tests), the scrape-time collector, hook timings and the /metrics handler."""

    def __init__(self, server: Server):
        self.server = server
        self.registry = CollectorRegistry(auto_describe=False)
        self.sources: list[Any] = []
        self.sinks: Ledger[Any] = Ledger(4)  # by protocol: packets sent, bytes sent, dropped, resent
        self.tracks: Ledger[Any] = Ledger(3)  # by kind: packets in, bytes in, keyframe requests
        self.transcoder_work: Ledger[Any] = Ledger(2)  # CPU seconds, frames dropped
        self.pull_reconnects: Ledger[Any] = Ledger(1)
        self.hls_clients = HlsClients(max(10.0, 3 * float(server.config["hls.segment_duration"])))
        self.hook_seconds = Histogram("streaming_hook_duration_seconds",
                                      "Time from sending a hook to its answer (or failure), by method",
                                      ["method"], buckets=HOOK_BUCKETS, registry=self.registry)
        self.hook_calls = Counter("streaming_hook_calls", "Hook calls by method and outcome: ok, refused "
                                  "(an answer other than 200), error (no usable answer)",
                                  ["method", "outcome"], registry=self.registry)
        self.registry.register(_ServerCollector(self))
        ProcessCollector(registry=self.registry)
        server.hooks.on_call.append(self.hook_observed)
        self._sweeper: asyncio.Task[None] | None = None

    # -- wiring --------------------------------------------------------------------------------------

    def register(self, source: Any) -> None:
        """A service whose metrics()/stream_counts()/viewer_counts() join every scrape (module doc)."""
        if source not in self.sources:
            self.sources.append(source)

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    def hook_observed(self, method: str, seconds: float, outcome: str) -> None:
        self.hook_seconds.labels(method).observe(seconds)
        self.hook_calls.labels(method, outcome).inc()

    def watch_hls(self, app: web.Application) -> web.Application:
        """Count HLS viewers from the HLS port's successful requests (a middleware, before it starts)."""

        @web.middleware
        async def hls_clients(request: web.Request, handler: Any) -> web.StreamResponse:
            response: web.StreamResponse = await handler(request)
            if request.method == "GET" and response.status in (200, 206):
                name = request.path.lstrip("/").split("/", 1)[0]
                self.hls_clients.saw(request.remote or "", name, time.monotonic())
            return response

        app.middlewares.append(hls_clients)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        # The format the scraper asks for (Prometheus text, or OpenMetrics), made on the loop: collect()
        # reads objects the loop owns.
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})

    # -- reading the server ----------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - metrics must never take the server down
                log.exception("metrics: reading the counters failed")

    def readers(self) -> list[tuple[RtpReader, str]]:
        """Every RTP reader of the server with its protocol: WebRTC viewers and RTSP clients."""
        server = self.server
        found: list[tuple[RtpReader, str]] = [
            (ms.endpoint, "webrtc") for ms in server.streams.media_sessions()
            if not ms.published and isinstance(ms.endpoint, WebRtcViewer)]
        found += [(client, "rtsp") for conn in list(server.rtsp.connections) for client in conn.clients.values()]
        return found

    def sweep(self) -> None:
        server = self.server
        self.sinks.update(((sink, protocol) for reader, protocol in self.readers() for _t, sink in reader.sinks),
                          _sink_counters)
        streams = server.streams.registry.all() + [p.stream for p in server.pulls.all()]
        tracks = {id(t): t for s in streams for t in s.tracks}.values()
        self.tracks.update(((t, t.kind) for t in tracks), _track_counters)
        self.transcoder_work.update(((t, t.kind) for t in server.transcoders.transcoders()), _transcoder_counters)
        self.pull_reconnects.update(((p, "rtsp") for p in server.pulls.all()), lambda p: (p.stats.reconnects,))

    def all_sources(self) -> list[Any]:
        found = [v for k, v in vars(self.server).items() if not k.startswith("_") and v is not self
                 and any(callable(getattr(v, m, None)) for m in ("metrics", "stream_counts", "viewer_counts"))]
        return found + [s for s in self.sources if s not in found]

    def from_sources(self, method: str) -> Iterator[Any]:
        for source in self.all_sources():
            fn = getattr(source, method, None)
            if not callable(fn):
                continue
            try:
                yield fn()
            except Exception:  # noqa: BLE001 - one source's failure leaves the others' metrics
                log.exception("metrics: %s.%s() failed", type(source).__name__, method)


class _ServerCollector(Collector):
    def __init__(self, metrics: Metrics):
        self.m = metrics

    def collect(self) -> Iterable[Metric]:
        m = self.m
        server = m.server
        m.sweep()
        yield _gauge("streaming_info", "The node and its media core", [(
            {"node_id": server.config.node_id, "media_core": "python" if server.python_core else "native"}, 1)])
        yield _gauge("streaming_sessions", "Client sessions (WebSocket), connected or waiting for a keepAlive "
                     "client", [({}, len(server.sessions))])

        media = server.streams.media_sessions()
        streams = {"webrtc": sum(1 for ms in media if ms.published and isinstance(ms.endpoint, WebRtcPublisher)
                                 and ms.status == "PUBLISHING"),
                   "rtsp_pull": len(server.pulls)}
        viewers = {"webrtc": sum(1 for ms in media if not ms.published and isinstance(ms.endpoint, WebRtcViewer)
                                 and ms.status == "PLAYING"),
                   "rtsp": sum(1 for reader, protocol in m.readers() if protocol == "rtsp" and reader.attached),
                   "hls": m.hls_clients.count(time.monotonic())}
        for counts in m.from_sources("stream_counts"):
            for kind, n in dict(counts).items():
                streams[kind] = streams.get(kind, 0) + int(n)
        for counts in m.from_sources("viewer_counts"):
            for protocol, n in dict(counts).items():
                viewers[protocol] = viewers.get(protocol, 0) + int(n)
        yield _gauge("streaming_streams", "Live streams by kind (webrtc: WebRTC publishers; rtsp_pull: pulled "
                     "cameras)", [({"kind": k}, n) for k, n in sorted(streams.items())])
        yield _gauge("streaming_viewers", "Viewers by protocol (hls: client addresses and streams that fetched "
                     "lately)", [({"protocol": p}, n) for p, n in sorted(viewers.items())])

        protocols = m.sinks.labels("webrtc", "rtsp")
        for name, doc, field in (
                ("streaming_forwarded_packets", "RTP packets sent to viewers, by protocol", 0),
                ("streaming_forwarded_bytes", "Bytes of RTP sent to viewers (before SRTP), by protocol", 1),
                ("streaming_dropped_packets", "Packets not sent to a viewer: its socket was full, or it had no "
                 "route yet, by protocol", 2),
                ("streaming_retransmitted_packets", "Packets sent again to answer viewers' NACKs, by protocol", 3)):
            yield _counter(name, doc, [({"protocol": p}, m.sinks.total(p, field)) for p in protocols])
        kinds = m.tracks.labels("video", "audio")
        yield _counter("streaming_received_packets", "RTP packets taken from publishers and cameras, by media "
                       "kind", [({"kind": k}, m.tracks.total(k, 0)) for k in kinds])
        yield _counter("streaming_received_bytes", "Bytes of RTP taken from publishers and cameras, by media kind",
                       [({"kind": k}, m.tracks.total(k, 1)) for k in kinds])
        yield _counter("streaming_keyframe_requests", "Keyframe requests (PLI) sent to publishers and cameras",
                       [({}, m.tracks.total("video", 2))])

        hooks = server.hooks.stats
        yield _counter("streaming_hook_events_dropped", "Event hooks dropped because a backend's queue was full",
                       [({}, hooks.events_dropped)])

        yield _gauge("streaming_transcoders", "Running transcoders", [({}, server.transcoders.active())])
        yield _counter("streaming_transcoders_started", "Transcoders started", [({}, server.transcoders.created())])
        work = m.transcoder_work
        yield _counter("streaming_transcoder_cpu_seconds", "CPU time of transcoder threads, by media kind",
                       [({"kind": k}, work.total(k, 0)) for k in work.labels("video", "audio")])
        yield _counter("streaming_transcoder_dropped_frames", "Frames a transcoder dropped (queue full or late)",
                       [({"kind": k}, work.total(k, 1)) for k in work.labels("video", "audio")])

        yield _gauge("streaming_hls_outputs", "Streams with an HLS output", [({}, len(server.hls.feeds))])
        yield _counter("streaming_hls_requests", "Requests to the HLS port", [({}, server.hls.requests)])
        recording = server.recording
        yield _gauge("streaming_recordings", "Recordings in progress", [({}, len(recording.describe()))])
        yield _counter("streaming_recordings_started", "Recordings started", [({}, recording.started)])
        yield _counter("streaming_recordings_failed", "Recordings that failed", [({}, recording.failed)])
        yield _gauge("streaming_rtsp_pulls", "Cameras being pulled (playing or reconnecting)",
                     [({}, len(server.pulls))])
        yield _counter("streaming_rtsp_pull_reconnects", "Reconnects of pulled cameras",
                       [({}, m.pull_reconnects.total("rtsp"))])
        yield _gauge("streaming_rtsp_connections", "RTSP client connections", [({}, len(server.rtsp.connections))])

        for families in m.from_sources("metrics"):
            yield from families


def _labelled(family: GaugeMetricFamily | CounterMetricFamily, samples: list[tuple[Mapping[str, str], float]]
              ) -> None:
    for labels, value in samples:
        family.add_metric([labels[k] for k in sorted(labels)], value)


def _gauge(name: str, doc: str, samples: list[tuple[Mapping[str, str], float]]) -> GaugeMetricFamily:
    labels = sorted(samples[0][0]) if samples else []
    family = GaugeMetricFamily(name, doc, labels=labels)
    _labelled(family, samples)
    return family


def _counter(name: str, doc: str, samples: list[tuple[Mapping[str, str], float]]) -> CounterMetricFamily:
    labels = sorted(samples[0][0]) if samples else []
    family = CounterMetricFamily(name, doc, labels=labels)
    _labelled(family, samples)
    return family
