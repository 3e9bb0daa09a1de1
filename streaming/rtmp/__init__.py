"""RTMP in and out.

In: an RTMP ingest port (`rtmp.port`, 1935) where ffmpeg, OBS and other encoders publish
`rtmp://host:1935/{app}/{stream key}`: the stream key is the stream's name, the backend of `rtmp.app_key`
decides through publishStream, and the stream plays over WebRTC, HLS and RTSP and is recorded like a
WebRTC publisher's (service: the listener; publisher: one connection). The protocol is media.rtmp,
without I/O; the media goes in through media.rtmp_ingest.

Out: pushes of a stream to an RTMP server (push: publishStream's `rtmpUrl`, /rest-api/push/...).
"""

from .service import RtmpService
from .settings import RtmpSettings

__all__ = ["RtmpService", "RtmpSettings"]
