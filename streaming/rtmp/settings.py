"""What the configuration says about RTMP (the `rtmp.*` settings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RtmpSettings:
    enabled: bool = True
    port: int = 1935
    app_key: str = "defaultApp"  # whose backend gets publishStream for RTMP publishers
    timeout: float = 10.0  # seconds of silence (or of an unfinished handshake) before a connection is dropped
    max_message_bytes: int = 8 * 1024 * 1024
    push_prefix: str = "rtmp_"

    @classmethod
    def from_config(cls, config: Any) -> RtmpSettings:
        return cls(enabled=bool(config["rtmp.enabled"]), port=int(config["rtmp.port"]),
                   app_key=str(config["rtmp.app_key"]), timeout=float(config["rtmp.timeout"]),
                   max_message_bytes=int(config["rtmp.max_message_bytes"]),
                   push_prefix=str(config["rtmp.push_prefix"]))
