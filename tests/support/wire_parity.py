"""What the twin-against-native tests of the wire formats (test_rtp*.py, test_rtcp*.py) compare: any result
or exception in one plain, comparable form, and the committed corpus of good and bad packets
(tests/fixtures/rtp/, RTP and RTCP side by side, each file saying its kind)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

FIXTURES = Path(__file__).parent.parent / "fixtures" / "rtp"


def norm(value: Any) -> Any:
    """A plain, comparable form of any result, so twin and native objects can be compared."""
    if isinstance(value, bytes | bytearray | memoryview):
        return ("bytes", bytes(value))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(norm(item) for item in value))
    fields = getattr(type(value), "__match_args__", None)
    if fields is not None:
        derived = ("packet_type", "count", "ssrc", "cname", "lost", "extension_length")
        extra = tuple((name, norm(getattr(value, name))) for name in derived if hasattr(value, name))
        return (type(value).__name__, tuple((name, norm(getattr(value, name))) for name in fields), extra)
    return value


def outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    try:
        return ("ok", norm(fn(*args, **kwargs)))
    except Exception as exc:  # noqa: BLE001 - the exception is the result being compared
        return ("raise", type(exc).__name__, str(exc))


def iter_outcome(mod: ModuleType, data: bytes) -> tuple[Any, ...]:
    """What iter_rtcp yields before it stops or raises, and how it ends."""
    got = []
    try:
        for packet in mod.iter_rtcp(data):
            got.append(norm(packet))
    except Exception as exc:  # noqa: BLE001
        return (tuple(got), type(exc).__name__, str(exc))
    return (tuple(got), "ok")


def rewrite_outcome(fn: Any, data: bytes, *args: Any) -> tuple[Any, bytes]:
    """The outcome of an in-place rewrite of a copy of data, and the bytes it left."""
    buf = bytearray(data)
    return outcome(fn, buf, *args), bytes(buf)


def same_outcome(modules: Sequence[ModuleType], name: str, *args: Any) -> tuple[Any, ...]:
    """The outcome of modules' `name` on args, asserted to be the same for each."""
    results = [outcome(getattr(mod, name), *args) for mod in modules]
    assert all(result == results[0] for result in results), (name, args, results)
    return results[0]


def same_rewrite(modules: Sequence[ModuleType], name: str, data: bytes, *args: Any) -> None:
    """The same outcome and bytes left for each module's in-place rewrite, and a refused packet untouched."""
    results = [rewrite_outcome(getattr(mod, name), data, *args) for mod in modules]
    assert all(result == results[0] for result in results)
    if results[0][0][0] == "raise":
        assert results[0][1] == data


def load(path: Path) -> tuple[str, str, bytes]:
    """A corpus file: (kind "rtp" or "rtcp", expected outcome "ok" or "Error: message", its bytes)."""
    kind = expect = ""
    hexed = []
    for line in path.read_text().splitlines():
        if line.startswith("# kind:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("# expect:"):
            expect = line.split(":", 1)[1].strip()
        elif not line.startswith("#"):
            hexed.append(line)
    return kind, expect, bytes.fromhex("".join(hexed))


GOOD = sorted((FIXTURES / "good").glob("*.hex"))
BAD = sorted((FIXTURES / "bad").glob("*.hex"))
CORPUS = [load(path)[2] for path in sorted(FIXTURES.glob("*/*.hex"))]


def of_kind(paths: list[Path], kind: str) -> list[Path]:
    return [path for path in paths if load(path)[0] == kind]


def corpus_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"
