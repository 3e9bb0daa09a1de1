"""The VP8 and H.264 payload readers (media.payload) on their own: descriptor layouts, payloads cut short
at every byte, STAP-A units that do not fit. Their native twin (media/_native/payload.pxd) is inlined into
track and depacketize, whose parity tests cover it."""

from __future__ import annotations

import pytest

from media.payload import (
    NAL_PPS,
    NAL_SPS,
    h264_begins,
    h264_keyframe_start,
    h264_parameter_set,
    h264_stap_a_unit,
    vp8_height,
    vp8_keyframe_header,
    vp8_keyframe_start,
    vp8_payload_start,
    vp8_starts_frame,
    vp8_width,
)

# A VP8 keyframe header (RFC 6386 section 9.1): frame tag with P=0, start code, 640x480 with scale bits set.
KEY_HEADER = bytes([0x50, 0x42, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x42, 0xE0, 0xC1])
SPS = bytes([0x67, 0x42, 0xC0, 0x1F, 0xDA])
PPS = bytes([0x68, 0xCE])
IDR = bytes([0x65, 0x88, 0x84])


@pytest.mark.parametrize(
    ("descriptor", "length"),
    [
        (b"\x10", 1),  # no extension
        (b"\x90\x00", 2),  # X, nothing in it
        (b"\x90\x80\x05", 3),  # 7-bit PictureID
        (b"\x90\x80\x81\x05", 4),  # 15-bit PictureID
        (b"\x90\xe0\x81\x05\x07\x20", 6),  # PictureID, TL0PICIDX, TID
        (b"\x90\x10\x01", 3),  # KEYIDX alone
    ],
)
def test_vp8_descriptor_layouts(descriptor: bytes, length: int) -> None:
    data = b"\xff" + descriptor + KEY_HEADER
    end = len(data)
    assert vp8_payload_start(data, 1, end) == 1 + length
    assert vp8_starts_frame(data[1])
    assert vp8_keyframe_start(data, 1, end)
    for cut in range(2, 1 + length):  # the descriptor cut short: -1 or a start beyond the cut
        assert vp8_payload_start(data, 1, cut) == -1
        assert not vp8_keyframe_start(data, 1, cut)
    for cut in range(1 + length, end):  # the keyframe header cut short
        assert not vp8_keyframe_start(data, 1, cut)


def test_vp8_frame_start_and_keyframe_header() -> None:
    assert not vp8_starts_frame(0x00)  # S=0
    assert not vp8_starts_frame(0x11)  # PID=1
    assert not vp8_keyframe_start(b"\x00" + KEY_HEADER, 0, 11)
    assert not vp8_keyframe_start(b"", 0, 0)
    assert vp8_keyframe_header(KEY_HEADER, 0, 10)
    assert not vp8_keyframe_header(KEY_HEADER, 0, 9)
    assert not vp8_keyframe_header(bytes([0x51]) + KEY_HEADER[1:], 0, 10)  # P=1: an interframe
    assert not vp8_keyframe_header(KEY_HEADER[:3] + b"\x9d\x01\x2b" + KEY_HEADER[6:], 0, 10)
    assert (vp8_width(KEY_HEADER, 0), vp8_height(KEY_HEADER, 0)) == (640, 480)


def test_stap_a_units_must_fit() -> None:
    stap = b"\x00\x05" + SPS + b"\x00\x02" + PPS
    assert h264_stap_a_unit(stap, 0, len(stap)) == 5
    assert h264_stap_a_unit(stap, 7, len(stap)) == 2
    assert h264_stap_a_unit(stap, 7, len(stap) - 1) == -1  # the unit does not fit
    assert h264_stap_a_unit(stap, 7, 8) == -1  # nor does the size field
    assert h264_stap_a_unit(b"\x00\x00\x65", 0, 3) == -1  # size 0


def test_parameter_sets_and_access_unit_starts() -> None:
    assert h264_parameter_set(7, 4) == NAL_SPS
    assert h264_parameter_set(7, 3) == 0
    assert h264_parameter_set(8, 2) == NAL_PPS
    assert h264_parameter_set(8, 1) == 0
    assert h264_parameter_set(5, 100) == 0
    assert h264_begins(9, b"", 0, 0)  # an access unit delimiter, with no body at all
    assert h264_begins(5, IDR, 1, 3)  # first_mb_in_slice 0
    assert not h264_begins(1, b"\x41\x08", 1, 2)  # a later slice
    assert not h264_begins(5, IDR, 1, 1)  # no body
    assert not h264_begins(28, IDR, 1, 3)


def test_h264_keyframe_start() -> None:
    stap = b"\x18\x00\x05" + SPS + b"\x00\x02" + PPS + b"\x00\x03" + IDR
    assert h264_keyframe_start(stap, 0, len(stap)) == (True, SPS, PPS)
    assert h264_keyframe_start(stap, 0, len(stap) - 1) == (False, None, None)  # lengths do not add up
    assert h264_keyframe_start(SPS, 0, 5) == (False, SPS, None)
    assert h264_keyframe_start(SPS, 0, 3) == (False, None, None)  # too short to keep
    assert h264_keyframe_start(IDR, 0, 3) == (True, None, None)
    assert h264_keyframe_start(b"\x7c\x85\x00", 0, 3) == (True, None, None)  # FU-A start of an IDR
    assert h264_keyframe_start(b"\x7c\x05\x00", 0, 3) == (False, None, None)  # a later fragment
    assert h264_keyframe_start(b"\x7c", 0, 1) == (False, None, None)
    assert h264_keyframe_start(b"", 0, 0) == (False, None, None)
