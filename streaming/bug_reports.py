"""Bug reports (`submitBugReport`): the client's report is saved as a JSON file in the reports folder with
the session's context (its connection details and its streams), after the backend's sendBugReport hook
(a direct invocation) lets it; the backend then gets BugReportStatusEvent with the file name.

A report of `type: "no_media"` also starts a short capture of the session's RTP and RTCP
(streaming/capture.py), saved beside the report as a pcap file of the same name; the report's
`capture` field names it (or says why there is none).

The file name is made here (time, session, a counter), never taken from the client; a session may save
MAX_PER_SESSION reports.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .capture import CaptureBusy, SessionCaptures
from .hooks import CONTEXT_FIELDS, HookClient
from .protocol import ProtocolError
from .session import Session

if TYPE_CHECKING:
    from .streams import MediaSession

log = logging.getLogger(__name__)

MAX_PER_SESSION = 20


class BugReports:
    """`hooks`: the backend (sendBugReport); `media_sessions`: the server's streams, of which a report
    carries its session's; `node_id` and `media_core`: what a report says of the server."""

    def __init__(self, hooks: HookClient, media_sessions: Callable[[], list[MediaSession]], node_id: str,
                 media_core: str, folder: Path, captures: SessionCaptures | None = None):
        self.hooks = hooks
        self._media_sessions = media_sessions
        self.node_id = node_id
        self.media_core = media_core
        self.folder = folder
        self.captures = captures
        self.saved = 0
        self._counter = itertools.count(1)
        self._per_session: dict[str, int] = {}

    def handlers(self) -> dict[str, Any]:
        return {"submitBugReport": self.on_submit}

    async def on_submit(self, session: Session, obj: dict[str, Any]) -> None:
        count = self._per_session.get(session.id, 0)
        if count >= MAX_PER_SESSION:
            raise ProtocolError(f"Bug report not saved: a session may submit {MAX_PER_SESSION} reports",
                                "submitBugReport")
        body = {**obj, **session.context}
        result = await self.hooks.call(session.app, "sendBugReport", body,
                                       session.rest_config.for_method("sendBugReport"))
        if not result.allowed:
            raise ProtocolError(f"Bug report refused: {result.reason or 'Restricted access'}", "submitBugReport")
        self._per_session[session.id] = count + 1
        if count == 0:
            session.close_callbacks.append(self._forget)
        now = datetime.datetime.now(datetime.UTC)
        name = f"bug-report-{now:%Y%m%d-%H%M%S}-{session.id[:8]}-{next(self._counter)}.json"
        document = {
            "receivedAt": now.isoformat(timespec="milliseconds"),
            "report": {k: v for k, v in result.data.items() if k not in CONTEXT_FIELDS},
            "session": session.describe(),
            "streams": [ms.status_object() for ms in self._media_sessions() if ms.session is session],
            "server": {"nodeId": self.node_id, "mediaCore": self.media_core},
        }
        if result.data.get("type") == "no_media" and self.captures is not None:
            document["capture"] = self._start_capture(session, name.removesuffix(".json") + ".pcap")
        try:
            await asyncio.to_thread(self._write, self.folder / name, document)
        except OSError as exc:
            log.error("bug report of session %s not saved: %s", session.id, exc)
            session.report("BugReportStatusEvent", {"status": "FAILED", "info": f"Not saved: {exc.strerror}"})
            raise ProtocolError("Bug report could not be saved", "submitBugReport") from None
        self.saved += 1
        log.info("bug report of session %s saved as %s", session.id, name)
        session.report("BugReportStatusEvent", {"status": "SAVED", "filename": name})

    def _start_capture(self, session: Session, pcap_name: str) -> dict[str, Any]:
        assert self.captures is not None
        seconds = self.captures.seconds
        try:
            self.captures.start(session, self.folder / pcap_name, seconds)
        except CaptureBusy as exc:
            log.warning("no capture for the bug report of session %s: %s", session.id, exc)
            return {"file": None, "info": str(exc)}
        return {"file": pcap_name, "seconds": seconds, "maxBytes": self.captures.max_bytes}

    @staticmethod
    def _write(path: Path, document: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(document, indent=1, ensure_ascii=False, default=str).encode()
        # Exclusive create: a name is never reused, and nothing else is ever overwritten.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)

    async def _forget(self, session: Session, reason: str) -> None:
        self._per_session.pop(session.id, None)
