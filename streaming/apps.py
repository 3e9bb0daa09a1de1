"""The applications registry: appKey -> name, backend REST URL, optional signing secret, enabled REST methods.

Stored in SQLite under the data folder (WAL mode), so the CLI can change applications while the server
runs and the server sees the change on the next session. Reads are small indexed queries; they run on
the event loop thread because they take microseconds on a local file.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_APP_KEY = "defaultApp"
DEFAULT_APP_NAME = "defaultApp"
ECHO_BACKEND_PATH = "/apps/EchoApp"

# The hook methods the server knows. An application calls only those enabled for it.
REST_METHODS: tuple[str, ...] = (
    "connect",
    "ConnectionStatusEvent",
    "publishStream",
    "unPublishStream",
    "playStream",
    "stopStream",
    "playHLS",
    "playRTSP",
    "StreamStatusEvent",
    "StreamKeepAliveEvent",
    "sendStreamEvent",
    "StreamEvent",
    "sendData",
    "OnDataEvent",
    "DataStatusEvent",
    "sendBugReport",
    "BugReportStatusEvent",
    "snapshot",
    "RecordingStatusEvent",
    "call",
    "CallStatusEvent",
    "ErrorEvent",
    "sessionDebug",
    "SessionDebugStatusEvent",
    # the SIP gateway (streaming/sip_service.py)
    "answer", "hangup", "hold", "unhold", "transfer", "sendDTMF", "sendMessage", "sendIMDN", "subscribe",
    "sendXcapRequest", "OnCallEvent", "OnMessageEvent", "RegistrationStatusEvent", "TransferStatusEvent",
    "MessageStatusEvent", "SubscriptionStatusEvent", "XcapStatusEvent", "DTMFEvent",
)

_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    app_key TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    secret TEXT
);
CREATE TABLE IF NOT EXISTS app_methods (
    app_key TEXT NOT NULL REFERENCES apps(app_key) ON DELETE CASCADE,
    method TEXT NOT NULL,
    PRIMARY KEY (app_key, method)
);
"""


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class App:
    app_key: str
    name: str
    url: str
    secret: str | None = None
    methods: frozenset[str] = field(default_factory=frozenset)

    def calls(self, method: str) -> bool:
        return method in self.methods


def validate_key(key: str, what: str = "appKey") -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise RegistryError(f"{what} must be 1..64 characters of letters, digits, '_', '.', '-'")
    return key


def validate_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistryError(f"backend URL must be http:// or https:// with a host (got {url!r})")
    return url.rstrip("/")


def validate_methods(methods: Iterable[str]) -> list[str]:
    out = []
    for method in methods:
        if method not in REST_METHODS:
            raise RegistryError(f"unknown REST method {method!r}; known: {', '.join(REST_METHODS)}")
        out.append(method)
    return out


class AppRegistry:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot open the applications database {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def ensure_default(self, rest_url: str) -> None:
        """Create defaultApp, served by the embedded echo backend at rest_url, unless it exists."""
        if self.get(DEFAULT_APP_KEY) is None:
            self.add(DEFAULT_APP_NAME, DEFAULT_APP_KEY, rest_url.rstrip("/") + ECHO_BACKEND_PATH)

    def get(self, app_key: str) -> App | None:
        row = self._db.execute("SELECT app_key, name, url, secret FROM apps WHERE app_key = ?",
                               (app_key,)).fetchone()
        if row is None:
            return None
        methods = frozenset(m for (m,) in self._db.execute(
            "SELECT method FROM app_methods WHERE app_key = ?", (app_key,)))
        return App(row[0], row[1], row[2], row[3], methods)

    def list(self) -> list[App]:
        keys = [k for (k,) in self._db.execute("SELECT app_key FROM apps ORDER BY name")]
        return [app for app in (self.get(k) for k in keys) if app is not None]

    def add(self, name: str, app_key: str, url: str, secret: str | None = None,
            methods: Iterable[str] | None = None) -> App:
        validate_key(name, "application name")
        validate_key(app_key)
        url = validate_url(url)
        chosen = validate_methods(REST_METHODS if methods is None else methods)
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute("INSERT INTO apps (app_key, name, url, secret) VALUES (?, ?, ?, ?)",
                                 (app_key, name, url, secret))
                self._db.executemany("INSERT INTO app_methods (app_key, method) VALUES (?, ?)",
                                     [(app_key, m) for m in chosen])
        except sqlite3.IntegrityError:
            raise RegistryError(f"an application with key {app_key!r} or name {name!r} exists") from None
        app = self.get(app_key)
        assert app is not None
        return app

    def update(self, app_key: str, *, name: str | None = None, url: str | None = None,
               secret: str | None = None, clear_secret: bool = False) -> App:
        app = self._require(app_key)
        new_name = validate_key(name, "application name") if name is not None else app.name
        new_url = validate_url(url) if url is not None else app.url
        new_secret = None if clear_secret else (secret if secret is not None else app.secret)
        try:
            self._db.execute("UPDATE apps SET name = ?, url = ?, secret = ? WHERE app_key = ?",
                             (new_name, new_url, new_secret, app_key))
        except sqlite3.IntegrityError:
            raise RegistryError(f"an application named {new_name!r} exists") from None
        return self._require(app_key)

    def remove(self, app_key: str) -> None:
        self._require(app_key)
        self._db.execute("DELETE FROM apps WHERE app_key = ?", (app_key,))

    def add_methods(self, app_key: str, methods: Iterable[str]) -> App:
        self._require(app_key)
        chosen = validate_methods(methods)
        self._db.executemany("INSERT OR IGNORE INTO app_methods (app_key, method) VALUES (?, ?)",
                             [(app_key, m) for m in chosen])
        return self._require(app_key)

    def remove_methods(self, app_key: str, methods: Iterable[str]) -> App:
        self._require(app_key)
        chosen = validate_methods(methods)
        self._db.executemany("DELETE FROM app_methods WHERE app_key = ? AND method = ?",
                             [(app_key, m) for m in chosen])
        return self._require(app_key)

    def _require(self, app_key: str) -> App:
        app = self.get(app_key)
        if app is None:
            raise RegistryError(f"no application with key {app_key!r}")
        return app
