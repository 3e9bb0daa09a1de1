"""RTSP pull: a camera's rtsp:// URL published inside the server as a stream.

A client's playStream whose name is an rtsp:// URL, or REST /rest-api/rtsp/startup, makes the server
pull that URL: OPTIONS, DESCRIBE, SETUP per track (TCP interleaved by default, UDP as option, with the
URL's user and password for Basic or Digest), PLAY, then keep-alives. The camera's RTP goes into the
routing core like a WebRTC publisher's (PublishedTrack.on_rtp), so the stream plays over WebRTC, HLS and
RTSP, through the transcoder where a viewer needs it, and can be recorded.

One pull per URL, shared by all its viewers. A pull started by playStream stops when its last viewer
leaves (unless `rtsp.pull_keep`); one started over REST runs until /rest-api/rtsp/terminate. When the
camera drops (connection lost, no media for `rtsp.pull_timeout` seconds) the pull reconnects with
exponential backoff, up to `rtsp.pull_retry_max` seconds apart, and viewers stay: the routing core
splices the new source in (RtpRewriter keeps their sequence numbers and timestamps continuous).

The protocol (URLs, requests, responses, SDP, Transport, authentication) is media.rtsp_client, with no
I/O; this package moves the bytes:
- camera: one RTSP session with a camera (CameraConnection), media to callbacks;
- pull: one URL as one Stream (RtspPull): connect, hold, reconnect with backoff, RTCP;
- service: the server's pulls by URL (PullService), shared by viewers, started and stopped over REST;
- allow: which hosts may be pulled (rtsp.pull_allowed_hosts, against SSRF);
- settings, failures (the WebSDK's status strings, PullFailed), urls (is_rtsp_url, masked).
"""

from .failures import (
    CONNECT_FAILED,
    NO_COMMON_CODECS,
    NOT_ALLOWED,
    SHUTDOWN,
    STREAM_NOT_FOUND,
    TERMINATED,
    WRONG_FORMAT,
    PullFailed,
)
from .pull import RtspPull
from .service import PullService
from .settings import PullSettings
from .urls import is_rtsp_url, masked

__all__ = [
    "CONNECT_FAILED",
    "NO_COMMON_CODECS",
    "NOT_ALLOWED",
    "SHUTDOWN",
    "STREAM_NOT_FOUND",
    "TERMINATED",
    "WRONG_FORMAT",
    "PullFailed",
    "PullService",
    "PullSettings",
    "RtspPull",
    "is_rtsp_url",
    "masked",
]
