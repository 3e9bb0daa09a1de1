"""Matching a server's copies to the packets it received when it rewrites sequence numbers and timestamps
per viewer (Janus: each viewer's copies count from where that viewer started), for the sniffer.

Each outgoing SSRC has constant offsets (sequence number, timestamp) from the source's numbers, as long as
the source keeps its SSRC. They are learnt from the first copies of that SSRC, once they carry ANCHOR_TIMESTAMPS
distinct timestamps (a few audio packets, two video frame boundaries, sampled or not): every source
packet of the same payload type that arrived shortly before the first copy is a candidate; a candidate
holds if each of those copies then maps to a source packet with the same timestamp that arrived before it.
Video frames (several packets, one timestamp) rule out all but the right one as soon as the copies span a
frame boundary; for audio (one packet per timestamp step) the candidate with the latest arrival wins, which
is right as long as the server forwards within one packet interval (20 ms).
"""

from __future__ import annotations

import collections

ANCHOR_TIMESTAMPS = 4  # distinct timestamps among the copies of one SSRC that decide its offsets
CANDIDATE_NS = 200_000_000  # how far back a first copy's original may have arrived
KEEP_NS = 5_000_000_000  # forget source packets this old
Key = tuple[int, int]  # (payload type, sequence number)


class OffsetMatcher:
    def __init__(self) -> None:
        self.arrived: dict[Key, tuple[int, int]] = {}  # -> (timestamp, arrival ns)
        self.order: collections.deque[tuple[int, Key]] = collections.deque()
        self.offsets: dict[int, tuple[int, int]] = {}  # outgoing SSRC -> (seq offset, ts offset)
        self.pending: dict[int, list[tuple[int, int, int, int]]] = {}  # SSRC -> [(pt, seq, ts, ns)]
        self.unanchored = 0  # copies of SSRCs whose offsets could not be learnt

    def source(self, pt: int, seq: int, ts: int, stamp: int) -> None:
        key = (pt, seq)
        self.arrived[key] = (ts, stamp)
        self.order.append((stamp, key))
        while self.order and self.order[0][0] < stamp - KEEP_NS:
            old_stamp, old = self.order.popleft()
            if self.arrived.get(old, (0, -1))[1] == old_stamp:
                del self.arrived[old]

    def copy(self, ssrc: int, pt: int, seq: int, ts: int, stamp: int) -> list[tuple[int, int]]:
        """A copy leaving the server: [(its departure ns, its original's arrival ns)] for the copies whose
        original is now known (none until the SSRC's offsets are learnt, then all pending at once)."""
        offsets = self.offsets.get(ssrc)
        if offsets is not None:
            found = self._original(pt, seq, ts, offsets)
            return [(stamp, found)] if found is not None and found <= stamp else []
        pending = self.pending.setdefault(ssrc, [])
        pending.append((pt, seq, ts, stamp))
        if len(pending) < ANCHOR_TIMESTAMPS or len({c[2] for c in pending}) < ANCHOR_TIMESTAMPS:
            return []
        del self.pending[ssrc]
        learnt = self._learn(pending)
        if learnt is None:
            self.unanchored += len(pending)
            return []
        self.offsets[ssrc] = learnt
        matched = [(s, self._original(p, q, t, learnt)) for p, q, t, s in pending]
        return [(s, a) for s, a in matched if a is not None and a <= s]

    def _original(self, pt: int, seq: int, ts: int, offsets: tuple[int, int]) -> int | None:
        """The arrival of the source packet this copy was made from, if it is the one we have."""
        entry = self.arrived.get((pt, (seq - offsets[0]) & 0xFFFF))
        if entry is None or entry[0] != (ts - offsets[1]) & 0xFFFFFFFF:
            return None
        return entry[1]

    def _learn(self, copies: list[tuple[int, int, int, int]]) -> tuple[int, int] | None:
        pt, seq, ts, stamp = copies[0]
        candidates = sorted(((a_stamp, key[1], a_ts) for key, (a_ts, a_stamp) in self.arrived.items()
                             if key[0] == pt and stamp - CANDIDATE_NS <= a_stamp <= stamp), reverse=True)
        for _a_stamp, a_seq, a_ts in candidates:  # the latest arrival first
            offsets = ((seq - a_seq) & 0xFFFF, (ts - a_ts) & 0xFFFFFFFF)
            if all((a := self._original(p, q, t, offsets)) is not None and a <= s for p, q, t, s in copies):
                return offsets
        return None
