"""Which implementation of the per-packet core this process runs, and a loud failure when the native
build is missing.

The native modules live in media/_native/ and each has a readable Python twin in media/ with the same
API. The server refuses to start on the twin unless asked to explicitly (`--python-core`), so a broken
build is never discovered as a slow server in production.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

NATIVE_MODULES = ("rtp", "rtcp", "track", "depacketize", "fanout")


class NativeCoreMissing(RuntimeError):
    pass


def _load_native(name: str) -> ModuleType:
    return importlib.import_module(f"media._native.{name}")


def native_error() -> str | None:
    """None when every native module imports, else the reason the first one does not."""
    for name in NATIVE_MODULES:
        try:
            _load_native(name)
        except ImportError as exc:
            return f"media._native.{name}: {exc}"
    return None


def require_native() -> None:
    err = native_error()
    if err is not None:
        raise NativeCoreMissing(
            f"the native media core is not built ({err}); run scripts/setup.sh, "
            "or start with --python-core to run the slow Python twin on purpose"
        )


def rtp_module(python_core: bool = False) -> ModuleType:
    """The RTP module (parse, RtpRewriter) to use: native unless python_core is set."""
    if python_core:
        return importlib.import_module("media.rtp")
    return _load_native("rtp")


def rtcp_module(python_core: bool = False) -> ModuleType:
    """The RTCP module (parse, SSRC rewrite, reports and feedback built) to use: native unless python_core
    is set."""
    if python_core:
        return importlib.import_module("media.rtcp")
    return _load_native("rtcp")


def track_module(python_core: bool = False) -> ModuleType:
    """The per-track ingest module (IngestTrack) to use: native unless python_core is set."""
    if python_core:
        return importlib.import_module("media.track")
    return _load_native("track")


def depacketize_module(python_core: bool = False) -> ModuleType:
    """The RTP-to-frames module (Depacketizer) to use: native unless python_core is set."""
    if python_core:
        return importlib.import_module("media.depacketize")
    return _load_native("depacketize")


def fanout_module(python_core: bool = False) -> ModuleType:
    """The per-subscriber send path (Fanout, Output) to use: native unless python_core is set."""
    if python_core:
        return importlib.import_module("media.fanout")
    return _load_native("fanout")


def is_twin(module: ModuleType) -> bool:
    """Whether a core module is a Python twin (media/x.py) rather than native (media/_native/x)."""
    return not module.__name__.startswith("media._native.")


def describe(python_core: bool = False) -> str:
    if python_core:
        return "Python twins (" + ", ".join(f"media/{n}.py" for n in NATIVE_MODULES) + \
            "): slow path, chosen with --python-core"
    folder = os.path.dirname(_load_native(NATIVE_MODULES[0]).__file__ or "")
    names = ", ".join(os.path.basename(_load_native(n).__file__ or n) for n in NATIVE_MODULES)
    return f"native Cython ({names} in {folder})"
