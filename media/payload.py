"""The video payload formats, read where they stand in a packet: the one source of these rules for the
modules that look into payloads (media/track.py: keyframe starts and parameter sets; media/depacketize.py:
frames). media/_native/payload.pxd is the same for their native twins, function for function.

RFC 7741 section 4 (VP8 payload descriptor), RFC 6386 section 9.1 (VP8 keyframe header), RFC 6184 section
5 (H.264: single NAL units, STAP-A, FU-A).

Every function looks at the payload data[pos:end] only and never raises: a payload cut short gives -1 or
False, and the caller decides what that means (an ordinary packet for the track, a broken frame for the
depacketizer). Nothing is copied except the parameter sets h264_keyframe_start returns.
"""

from __future__ import annotations

# H.264 NAL unit types, RFC 6184 section 5.2 and ITU-T H.264 table 7-1.
NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
NAL_STAP_A = 24
NAL_FU_A = 28
# Shortest parameter sets worth keeping: an SPS needs profile_idc, constraint flags and level_idc after
# its NAL header (they make profile-level-id); a PPS needs one byte of body.
MIN_SPS = 4
MIN_PPS = 2
# FU header bits, RFC 6184 section 5.8.
FU_START = 0x80
FU_END = 0x40

_NOTHING: tuple[bool, bytes | None, bytes | None] = (False, None, None)


# --- VP8 -------------------------------------------------------------------------------------------------


def vp8_starts_frame(first: int) -> bool:
    """Whether a payload descriptor whose first byte is `first` starts a frame: S=1 and PID=0."""
    return bool(first & 0x10) and not first & 0x07


def vp8_payload_start(data: bytes, pos: int, end: int) -> int:
    """Where the VP8 payload begins after the payload descriptor at data[pos] (pos < end), or -1 when the
    descriptor is cut short.

    RFC 7741 section 4.2: X|R|N|S|R|PID, then with X an I|L|T|K byte, with I a 7- or 15-bit PictureID (M
    bit), with L a TL0PICIDX byte, with T or K a TID|Y|KEYIDX byte; every field must be present. The
    payload may be empty (the result is then `end`).
    """
    first = data[pos]
    pos += 1
    if first & 0x80:
        if pos >= end:
            return -1
        extension = data[pos]
        pos += 1
        if extension & 0x80:
            if pos >= end:
                return -1
            pos += 2 if data[pos] & 0x80 else 1
        if extension & 0x40:
            pos += 1
        if extension & 0x30:
            pos += 1
        if pos > end:
            return -1
    return pos


def vp8_keyframe_header(data: bytes, pos: int, end: int) -> bool:
    """Whether the VP8 payload data[pos:end] begins with a whole keyframe header (RFC 6386 section 9.1):
    the P bit clear, 10 bytes, the start code 9d 01 2a at bytes 3..5."""
    return (pos + 10 <= end and not data[pos] & 0x01 and data[pos + 3] == 0x9D and data[pos + 4] == 0x01
            and data[pos + 5] == 0x2A)


def vp8_width(data: bytes, pos: int) -> int:
    """The width of a keyframe whose header (checked by vp8_keyframe_header) is at data[pos]: 14 bits,
    without the scale bits."""
    return (data[pos + 6] | data[pos + 7] << 8) & 0x3FFF


def vp8_height(data: bytes, pos: int) -> int:
    """The height, as vp8_width."""
    return (data[pos + 8] | data[pos + 9] << 8) & 0x3FFF


def vp8_keyframe_start(data: bytes, pos: int, end: int) -> bool:
    """Whether a VP8 payload (data[pos:end]) is the first packet of a keyframe: a descriptor that starts a
    frame, whole, followed by a whole keyframe header (RFC 7741 section 4.3)."""
    if pos >= end or not vp8_starts_frame(data[pos]):
        return False
    pos = vp8_payload_start(data, pos, end)
    return pos >= 0 and vp8_keyframe_header(data, pos, end)


# --- H.264 -----------------------------------------------------------------------------------------------


def h264_stap_a_unit(data: bytes, at: int, end: int) -> int:
    """The size of the STAP-A aggregation unit at data[at] (RFC 6184 section 5.7.1: a 16-bit size, then
    the NAL unit at data[at + 2]), or -1 when the size field or the NAL unit does not fit before `end` or
    the size is 0."""
    if at + 2 > end:
        return -1
    size = data[at] << 8 | data[at + 1]
    if size == 0 or at + 2 + size > end:
        return -1
    return size


def h264_parameter_set(nal_type: int, size: int) -> int:
    """NAL_SPS or NAL_PPS for a NAL unit of that type and size (header byte included) that is a
    parameter set worth keeping (MIN_SPS, MIN_PPS), else 0."""
    if nal_type == NAL_SPS and size >= MIN_SPS:
        return NAL_SPS
    if nal_type == NAL_PPS and size >= MIN_PPS:
        return NAL_PPS
    return 0


def h264_begins(nal_type: int, data: bytes, body: int, end: int) -> bool:
    """Whether a NAL unit of this type, whose body (after the NAL header) starts at data[body], starts an
    access unit: SEI, SPS, PPS, AUD, or a slice with first_mb_in_slice 0 (ue(v) '1')."""
    if 6 <= nal_type <= 9:
        return True
    if nal_type == 1 or nal_type == NAL_IDR:
        return body < end and bool(data[body] & 0x80)
    return False


def h264_keyframe_start(data: bytes, pos: int, end: int) -> tuple[bool, bytes | None, bytes | None]:
    """(starts an IDR picture, SPS, PPS) of one H.264 payload (data[pos:end]), RFC 6184 section 5.

    Single NAL units (types 1-23), STAP-A (24: every 16-bit length must fit and the NAL units must end
    exactly at the end of the payload, or the whole packet counts as malformed) and FU-A (28: the start
    bit and the original type in the FU header). Parameter sets are taken only unfragmented. Anything
    else, or anything malformed, is (False, None, None).
    """
    if pos >= end:
        return _NOTHING
    nal_type = data[pos] & 0x1F
    if nal_type == NAL_STAP_A:
        idr = False
        sps = pps = None
        pos += 1
        while pos < end:
            size = h264_stap_a_unit(data, pos, end)
            if size < 0:
                return _NOTHING
            pos += 2
            inner = data[pos] & 0x1F
            kept = h264_parameter_set(inner, size)
            if inner == NAL_IDR:
                idr = True
            elif kept == NAL_SPS:
                sps = data[pos : pos + size]
            elif kept == NAL_PPS:
                pps = data[pos : pos + size]
            pos += size
        return idr, sps, pps
    if nal_type == NAL_FU_A:
        if pos + 2 > end:
            return _NOTHING
        header = data[pos + 1]
        return bool(header & FU_START) and header & 0x1F == NAL_IDR, None, None
    if nal_type == NAL_IDR:
        return True, None, None
    kept = h264_parameter_set(nal_type, end - pos)
    if kept == NAL_SPS:
        return False, data[pos:end], None
    if kept == NAL_PPS:
        return False, None, data[pos:end]
    return _NOTHING
