"""The records folder: file names from the configured template, files created without following links or
replacing anything, and listing and reading that never leave the folder.

Names: the template (`record.template`, default `{streamName}-{mediaSessionId}`) is checked once, when
the configuration is read: only known fields, no format specs, and literal text from the same safe
characters the names are made of. Each field's value is reduced to those characters (anything else
becomes `_`), a leading `.` or `-` becomes `_`, and the container's extension is added. So a name is
one plain path component whatever a client sends as its stream name or mediaSessionId.

Files: created with O_CREAT | O_EXCL | O_NOFOLLOW relative to the folder's descriptor, so an existing
file or a symlink planted in the folder is never written through; the name then gets `-1`, `-2`, ...
Reading: a requested name must look like one of ours (the same characters, a known extension, no
leading dot) and is opened with O_NOFOLLOW relative to the folder, and must be a regular file. Listing
shows regular files with a known extension only.
"""

from __future__ import annotations

import os
import re
import stat
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

DEFAULT_TEMPLATE = "{streamName}-{mediaSessionId}"
TEMPLATE_FIELDS = {
    "streamName": "the stream's name",
    "mediaSessionId": "the publisher's mediaSessionId",
    "sessionId": "the publisher's session id",
    "appKey": "the publisher's application key",
    "nodeId": "this server's node id",
    "startTime": "start time, milliseconds since 1970",
    "date": "start time, UTC, as YYYYMMDD-HHMMSS",
}
EXTENSIONS = {".mp4": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska"}
MAX_STEM = 200  # characters before the extension (and a `-N` suffix): well inside NAME_MAX
_SAFE = "A-Za-z0-9_\\-.@~+="
_UNSAFE_RE = re.compile(f"[^{_SAFE}]")
_LITERAL_RE = re.compile(f"^[{_SAFE}]*$")
_RECORD_NAME_RE = re.compile(f"^[A-Za-z0-9_@~+=][{_SAFE}]{{0,{MAX_STEM + 16}}}$")
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class TemplateError(ValueError):
    pass


class RecordNotFound(LookupError):
    """No record of that name (or a name that is not one of ours): the same answer either way."""


@dataclass(frozen=True)
class NameTemplate:
    text: str

    @classmethod
    def parse(cls, text: str) -> NameTemplate:
        """Check a template; TemplateError says what is wrong with it."""
        if not isinstance(text, str) or not text.strip():
            raise TemplateError("must be a non-empty template like {streamName}-{mediaSessionId}")
        if len(text) > 256:
            raise TemplateError("must be at most 256 characters")
        fields = 0
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise TemplateError(f"is not a valid template ({exc}); use {{field}} and {{{{ }}}} for braces") from None
        for literal, field, spec, conversion in parsed:
            if not _LITERAL_RE.match(literal):
                raise TemplateError("may only hold letters, digits, _-.@~+= besides {fields} "
                                    "(no slashes, spaces or control characters)")
            if field is None:
                continue
            if field not in TEMPLATE_FIELDS:
                raise TemplateError(f"has an unknown field {{{field}}}; known: "
                                    + ", ".join("{" + name + "}" for name in TEMPLATE_FIELDS))
            if spec or conversion:
                raise TemplateError(f"field {{{field}}} may not have a format spec or conversion")
            fields += 1
        if text.startswith((".", "-")):
            raise TemplateError("may not start with '.' or '-'")
        if fields == 0:
            raise TemplateError("needs at least one field, e.g. {mediaSessionId}, or every record gets one name")
        return cls(text)

    def render(self, values: Mapping[str, object]) -> str:
        """The stem of a record's file name (no extension): one safe path component."""
        safe = {name: _UNSAFE_RE.sub("_", str(values.get(name, ""))) for name in TEMPLATE_FIELDS}
        stem = self.text.format_map(safe)[:MAX_STEM]
        if not stem or stem.startswith((".", "-")):
            stem = "_" + stem[1:] if stem else "record"
        return stem


def template_values(stream_name: str, media_session_id: str, session_id: str, app_key: str, node_id: str,
                    started: float | None = None) -> dict[str, object]:
    started = time.time() if started is None else started
    return {
        "streamName": stream_name, "mediaSessionId": media_session_id, "sessionId": session_id,
        "appKey": app_key, "nodeId": node_id, "startTime": int(started * 1000),
        "date": datetime.fromtimestamp(started, UTC).strftime("%Y%m%d-%H%M%S"),
    }


@dataclass(frozen=True, slots=True)
class RecordFile:
    name: str
    size: int
    modified: float  # seconds since 1970


def is_record_name(name: object) -> bool:
    return (isinstance(name, str) and _RECORD_NAME_RE.match(name) is not None
            and os.path.splitext(name)[1] in EXTENSIONS)


class RecordsFolder:
    """The folder records go to. Plain blocking file system calls: small and local."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def ensure(self) -> str | None:
        """Create the folder if needed; None when it is there, else why it cannot be used."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"Records folder {self.path} cannot be created: {exc.strerror or exc}"
        return None

    def _dir(self) -> int:
        return os.open(self.path, _OPEN_DIR)

    def create(self, stem: str, extension: str) -> tuple[str, BinaryIO]:
        """A new, empty file `stem + extension` (or `stem-N + extension` when that name is taken), opened
        for writing unbuffered. Raises OSError when the folder cannot take it."""
        if extension not in EXTENSIONS:
            raise ValueError(f"unknown record extension {extension!r}")
        if not is_record_name(stem + extension):
            raise ValueError(f"{stem!r} is not a record name")
        self.ensure()
        folder = self._dir()
        try:
            for attempt in range(1000):
                name = f"{stem}{extension}" if attempt == 0 else f"{stem}-{attempt}{extension}"
                try:
                    fd = os.open(name, _CREATE, 0o644, dir_fd=folder)
                except FileExistsError:
                    continue
                return name, open(fd, "w+b", buffering=0)  # noqa: SIM115 (the recorder closes it)
            raise FileExistsError(f"no free name for {stem}{extension} in {self.path}")
        finally:
            os.close(folder)

    def remove(self, name: str) -> None:
        """Delete one of our files (an empty reservation nobody used)."""
        if not is_record_name(name):
            return
        try:
            folder = self._dir()
        except OSError:
            return
        try:
            os.unlink(name, dir_fd=folder)
        except OSError:
            pass
        finally:
            os.close(folder)

    def list(self) -> list[RecordFile]:
        """Regular files with a record extension, oldest first; symlinks and anything else are left out."""
        out = []
        try:
            entries = list(os.scandir(self.path))
        except OSError:
            return []
        for entry in entries:
            if not is_record_name(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                out.append(RecordFile(entry.name, info.st_size, info.st_mtime))
        out.sort(key=lambda r: (r.modified, r.name))
        return out

    def open(self, name: object) -> tuple[int, os.stat_result]:
        """A read-only descriptor of the record `name` and its stat; RecordNotFound for anything that is
        not a regular file of ours in this folder (unknown, hostile, a symlink, a folder)."""
        if not is_record_name(name):
            raise RecordNotFound(str(name)[:100])
        assert isinstance(name, str)
        try:
            folder = self._dir()
        except OSError:
            raise RecordNotFound(name) from None
        try:
            fd = os.open(name, _READ | os.O_NONBLOCK, dir_fd=folder)
        except OSError:
            raise RecordNotFound(name) from None
        finally:
            os.close(folder)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise RecordNotFound(name)
        return fd, info


def content_type(name: str) -> str:
    return EXTENSIONS.get(os.path.splitext(name)[1], "application/octet-stream")
