"""The SDP a server answers DESCRIBE with (RFC 2326 appendix C): one media section per track."""

from __future__ import annotations

import base64
from dataclasses import dataclass


@dataclass
class SdpTrack:
    kind: str  # "video" | "audio"
    codec: str  # "H264", "VP8", "opus"
    payload_type: int
    clock_rate: int
    channels: int = 1
    sps: bytes | None = None
    pps: bytes | None = None
    profile_level_id: str | None = None  # from the publisher's SDP, when no SPS is known
    packetization_mode: int = 1


def build_sdp(name: str, tracks: list[SdpTrack], session_id: int, address: str = "0.0.0.0") -> str:
    family, any_address = ("IP6", "::") if ":" in address else ("IP4", "0.0.0.0")
    lines = ["v=0", f"o=- {session_id} 1 IN {family} {address}", f"s={name}", f"c=IN {family} {any_address}",
             "t=0 0", "a=control:*", "a=range:npt=now-"]
    for index, track in enumerate(tracks):
        pt = track.payload_type
        lines.append(f"m={track.kind} 0 RTP/AVP {pt}")
        if track.codec.lower() == "opus":
            lines.append(f"a=rtpmap:{pt} opus/{track.clock_rate}/2")
            lines.append(f"a=fmtp:{pt} sprop-stereo=0")
        else:
            lines.append(f"a=rtpmap:{pt} {track.codec}/{track.clock_rate}")
        if track.codec.upper() == "H264":
            fmtp = [f"packetization-mode={track.packetization_mode}"]
            if track.sps is not None and len(track.sps) >= 4:
                fmtp.append("profile-level-id=" + track.sps[1:4].hex().upper())
            elif track.profile_level_id:
                fmtp.append(f"profile-level-id={track.profile_level_id}")
            if track.sps is not None and track.pps is not None:
                sets = b",".join(base64.b64encode(s) for s in (track.sps, track.pps)).decode()
                fmtp.append(f"sprop-parameter-sets={sets}")
            lines.append(f"a=fmtp:{pt} " + ";".join(fmtp))
        lines.append(f"a=control:trackID={index}")
    return "\r\n".join(lines) + "\r\n"
