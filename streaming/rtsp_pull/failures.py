"""Why a pull fails or stops: the status info strings the WebSDK knows, and the exception that carries one."""

from __future__ import annotations

# Status info strings of the WebSDK (constants.js STREAM_STATUS_INFO).
WRONG_FORMAT = "Rtsp has wrong format"
CONNECT_FAILED = "Failed to connect to rtsp stream"
STREAM_NOT_FOUND = "Rtsp stream not found"
NO_COMMON_CODECS = "No common codecs"
NOT_ALLOWED = "Rtsp host is not allowed"  # rtsp.pull_allowed_hosts (not a WebSDK string)
TERMINATED = "Stopped by rest /terminate"
SHUTDOWN = "RtspAgent shutdown"


class PullFailed(Exception):
    def __init__(self, info: str, detail: str):
        super().__init__(f"{info}: {detail}")
        self.info = info  # what the client sees
        self.detail = detail  # why, for the log and the REST API
