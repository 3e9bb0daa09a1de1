"""What the configuration says about pulling cameras (the `rtsp.pull_*` settings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .allow import HostPolicy


@dataclass(frozen=True)
class PullSettings:
    tcp: bool = True  # interleaved in the control connection, else UDP
    keep: bool = False  # a pull started by a viewer runs on after its last viewer left
    timeout: float = 10.0  # no media for this long: reconnect
    retry_max: float = 30.0  # the longest wait between reconnect attempts
    connect_timeout: float = 10.0  # connect to playing, else the attempt failed
    max_pulls: int = 100
    allowed_hosts: HostPolicy = HostPolicy()  # empty: every host

    @classmethod
    def from_config(cls, config: Any) -> PullSettings:
        """From a streaming.config.Config (anything that maps setting names to checked values)."""
        return cls(tcp=config["rtsp.pull_transport"] == "tcp", keep=bool(config["rtsp.pull_keep"]),
                   timeout=float(config["rtsp.pull_timeout"]), retry_max=float(config["rtsp.pull_retry_max"]),
                   connect_timeout=float(config["rtsp.pull_connect_timeout"]),
                   max_pulls=int(config["rtsp.pull_max"]),
                   allowed_hosts=HostPolicy.parse(config["rtsp.pull_allowed_hosts"]))
