"""AMF0 (Action Message Format 0), the encoding of RTMP commands and metadata: values to bytes and back.

Decoded: numbers (float), booleans, strings and long strings (str, UTF-8, undecodable bytes replaced),
objects and ECMA arrays (dict), strict arrays (list), null and undefined (None), dates (float ms).
Encoded: float/int, bool, str, None, dict (as an object), list (as a strict array).

Input from the network is bounded: nesting depth, items per container, string length (the message
holding it is bounded already). Anything malformed or truncated raises Amf0Error with where and why.
"""

from __future__ import annotations

import struct
from typing import Any

NUMBER, BOOLEAN, STRING, OBJECT, NULL, UNDEFINED, REFERENCE, ECMA_ARRAY, OBJECT_END, STRICT_ARRAY, DATE, \
    LONG_STRING = 0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12
MAX_DEPTH = 16
MAX_ITEMS = 4096


class Amf0Error(ValueError):
    pass


def decode_all(data: bytes) -> list[Any]:
    """Every value in `data`, in order (a command: name, transaction id, then its arguments)."""
    values = []
    offset = 0
    view = memoryview(data)
    while offset < len(view):
        value, offset = _decode(view, offset, 0)
        values.append(value)
    return values


def decode(data: bytes, offset: int = 0) -> tuple[Any, int]:
    """One value at `offset`; returns it and the offset after it."""
    return _decode(memoryview(data), offset, 0)


def _need(view: memoryview, offset: int, count: int, what: str) -> None:
    if offset + count > len(view):
        raise Amf0Error(f"AMF0 {what} at byte {offset} is cut short ({len(view) - offset} of {count} bytes)")


def _string(view: memoryview, offset: int, size_bytes: int) -> tuple[str, int]:
    _need(view, offset, size_bytes, "string length")
    length = int.from_bytes(view[offset:offset + size_bytes], "big")
    offset += size_bytes
    _need(view, offset, length, "string")
    return bytes(view[offset:offset + length]).decode("utf-8", "replace"), offset + length


def _properties(view: memoryview, offset: int, depth: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    for _ in range(MAX_ITEMS + 1):
        _need(view, offset, 3, "property")
        if view[offset] == 0 and view[offset + 1] == 0 and view[offset + 2] == OBJECT_END:
            return out, offset + 3
        key, offset = _string(view, offset, 2)
        value, offset = _decode(view, offset, depth + 1)
        out[key] = value
    raise Amf0Error(f"AMF0 object with more than {MAX_ITEMS} properties")


def _decode(view: memoryview, offset: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise Amf0Error(f"AMF0 values nested deeper than {MAX_DEPTH}")
    _need(view, offset, 1, "type marker")
    marker = view[offset]
    offset += 1
    if marker == NUMBER:
        _need(view, offset, 8, "number")
        return struct.unpack_from(">d", view, offset)[0], offset + 8
    if marker == BOOLEAN:
        _need(view, offset, 1, "boolean")
        return view[offset] != 0, offset + 1
    if marker == STRING:
        return _string(view, offset, 2)
    if marker == LONG_STRING:
        return _string(view, offset, 4)
    if marker in (NULL, UNDEFINED):
        return None, offset
    if marker == OBJECT:
        return _properties(view, offset, depth)
    if marker == ECMA_ARRAY:
        _need(view, offset, 4, "array count")
        return _properties(view, offset + 4, depth)  # the count is a hint; the end marker ends it
    if marker == STRICT_ARRAY:
        _need(view, offset, 4, "array count")
        count = int.from_bytes(view[offset:offset + 4], "big")
        if count > MAX_ITEMS:
            raise Amf0Error(f"AMF0 strict array of {count} items (at most {MAX_ITEMS})")
        offset += 4
        items = []
        for _ in range(count):
            item, offset = _decode(view, offset, depth + 1)
            items.append(item)
        return items, offset
    if marker == DATE:
        _need(view, offset, 10, "date")
        return struct.unpack_from(">d", view, offset)[0], offset + 10
    raise Amf0Error(f"AMF0 type marker {marker} at byte {offset - 1} is not supported")


def encode(*values: Any) -> bytes:
    """The values one after another (a command: name, transaction id, arguments)."""
    out = bytearray()
    for value in values:
        _encode(out, value)
    return bytes(out)


def _encode_key(out: bytearray, key: str) -> None:
    raw = key.encode()
    out += struct.pack(">H", len(raw)) + raw


def _encode(out: bytearray, value: Any) -> None:
    if value is None:
        out.append(NULL)
    elif isinstance(value, bool):
        out += bytes((BOOLEAN, 1 if value else 0))
    elif isinstance(value, int | float):
        out.append(NUMBER)
        out += struct.pack(">d", float(value))
    elif isinstance(value, str):
        raw = value.encode()
        if len(raw) > 0xFFFF:
            out.append(LONG_STRING)
            out += struct.pack(">I", len(raw)) + raw
        else:
            out.append(STRING)
            out += struct.pack(">H", len(raw)) + raw
    elif isinstance(value, dict):
        out.append(OBJECT)
        for key, item in value.items():
            _encode_key(out, str(key))
            _encode(out, item)
        out += b"\x00\x00\x09"
    elif isinstance(value, list | tuple):
        out.append(STRICT_ARRAY)
        out += struct.pack(">I", len(value))
        for item in value:
            _encode(out, item)
    else:
        raise TypeError(f"AMF0 cannot encode {type(value).__name__}")
