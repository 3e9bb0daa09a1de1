"""Prometheus families of the SIP gateway and the RTMP ingest, read at scrape time from the counters
those services keep for `/health` (streaming/metrics.py's plug-in protocol: `metrics()` and
`stream_counts()`). Nothing here runs per packet or per SIP message."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from .rtmp import RtmpService
    from .sip_service import SipService

# What the SIP stack counts of the messages it gets (sip/endpoint.py), as the `outcome` label.
SIP_OUTCOMES = ("received", "malformed", "rejected", "throttled", "stray")


class SipMetrics:
    def __init__(self, sip: SipService):
        self.sip = sip

    def metrics(self) -> Iterator[Metric]:
        described = self.sip.describe()
        yield GaugeMetricFamily("streaming_sip_sessions", "Client sessions that are SIP phones",
                                value=described["sessions"])
        yield GaugeMetricFamily("streaming_sip_registrations", "SIP phones registered with their registrar",
                                value=described["registered"])
        yield GaugeMetricFamily("streaming_sip_calls", "SIP calls in progress", value=described["calls"])
        messages = CounterMetricFamily(
            "streaming_sip_messages", "SIP messages received (outcome=received), and those answered without "
            "reaching a phone: malformed (400), rejected (4xx/5xx), throttled (503), stray (dropped)",
            labels=["outcome"])
        for outcome in SIP_OUTCOMES:
            messages.add_metric([outcome], described.get(outcome, 0))
        yield messages


class RtmpMetrics:
    def __init__(self, rtmp: RtmpService):
        self.rtmp = rtmp

    def stream_counts(self) -> Mapping[str, int]:
        return {"rtmp": self.rtmp.snapshot()["publishing"]}

    def metrics(self) -> Iterator[Metric]:
        snapshot = self.rtmp.snapshot()
        yield GaugeMetricFamily("streaming_rtmp_connections", "RTMP connections (handshaking or publishing)",
                                value=snapshot["connections"])
        yield CounterMetricFamily("streaming_rtmp_published", "RTMP publishers that started a stream",
                                  value=snapshot["published"])
        frames = CounterMetricFamily("streaming_rtmp_ingested_frames", "Frames RTMP publishers sent us",
                                     labels=["kind"])
        frames.add_metric(["video"], snapshot["videoFrames"])
        frames.add_metric(["audio"], snapshot["audioFrames"])
        yield frames
        yield CounterMetricFamily("streaming_rtmp_ingested_bytes", "Media bytes RTMP publishers sent us",
                                  value=snapshot["bytes"])
