"""RFC 4733 telephone-event (DTMF in RTP): the packets we send and the events we receive. No I/O: time
comes in as `now`, packets go out as (payload, marker, timestamp) for the caller to put in RTP.

Sending (section 2.5.1): one event per digit, every packet of it with the event's start timestamp; the
first has the marker bit; each update carries the duration so far (timestamp units); the end packet
(E bit, full duration) is sent three times (2.5.1.4). Digits follow one another with a pause between.

Receiving (section 2.5.2): an event is its timestamp; it is reported once, at its first end packet, or,
if every end packet was lost, when the next event starts. Retransmitted end packets and updates of an
event already reported are ignored. Event codes 0-15 are the DTMF digits (section 3.2); others (flash,
tones) are counted and ignored.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

DIGITS = "0123456789*#ABCD"
EVENT_CODE = {digit: code for code, digit in enumerate(DIGITS)}
VOLUME = 10  # dBm0 below the reference (section 2.5.2.2); a usual level
INTERVAL = 0.02  # seconds between packets of an event
PAUSE = 0.06  # seconds between two digits
END_PACKETS = 3
MIN_DURATION_MS = 40
MAX_DURATION_MS = 5000
_PAYLOAD = struct.Struct("!BBH")


def normalize(digits: str) -> str:
    """Digits to send, upper-cased; ValueError names the first character that is not a DTMF digit."""
    if not isinstance(digits, str) or not digits:
        raise ValueError("no DTMF digits to send")
    if len(digits) > 64:
        raise ValueError("at most 64 DTMF digits at once")
    out = digits.upper()
    for char in out:
        if char not in EVENT_CODE:
            raise ValueError(f"{char[:1]!r} is not a DTMF digit (0-9, *, #, A-D)")
    return out


def payload(code: int, end: bool, duration: int, volume: int = VOLUME) -> bytes:
    return _PAYLOAD.pack(code, (0x80 if end else 0) | (volume & 0x3F), min(duration, 0xFFFF))


@dataclass(frozen=True)
class EventPacket:
    payload: bytes
    marker: bool
    timestamp: int  # the event's start, in clock ticks of the sender's timeline
    started: float  # `now` when the event began (for the RTP rewriter's timeline)


class DtmfSender:
    """Digits queued by `send`, turned into packets by `due(now)` (call it every INTERVAL or so)."""

    def __init__(self, clock_rate: int = 8000):
        self.clock_rate = clock_rate
        self._queue: deque[tuple[str, int]] = deque()  # (digit, duration in ticks)
        self._digit: str | None = None
        self._duration = 0
        self._started = 0.0
        self._timestamp = 0
        self._next_at = 0.0
        self._sent_updates = 0
        self._ends_left = 0
        self._not_before = 0.0  # the pause after a digit
        self.events_sent = 0
        self.packets_sent = 0

    @property
    def active(self) -> bool:
        """An event is being sent or waits: audio to the peer is held back meanwhile."""
        return self._digit is not None or bool(self._queue)

    def send(self, digits: str, duration_ms: int) -> None:
        digits = normalize(digits)
        if not MIN_DURATION_MS <= duration_ms <= MAX_DURATION_MS:
            raise ValueError(f"DTMF duration must be {MIN_DURATION_MS}..{MAX_DURATION_MS} ms, not {duration_ms}")
        ticks = duration_ms * self.clock_rate // 1000
        if ticks > 0xFFFF:  # one event's duration field; longer events would need segments (2.5.1.3)
            raise ValueError(f"DTMF duration must be at most {0xFFFF * 1000 // self.clock_rate} ms "
                             f"at a {self.clock_rate} Hz event clock, not {duration_ms}")
        self._queue.extend((digit, ticks) for digit in digits)

    def due(self, now: float) -> list[EventPacket]:
        out: list[EventPacket] = []
        if self._digit is None:
            if not self._queue or now < self._not_before:
                return out
            self._digit, self._duration = self._queue.popleft()
            self._started = self._next_at = now
            self._timestamp = round(now * self.clock_rate) & 0xFFFFFFFF
            self._sent_updates = 0
            self._ends_left = END_PACKETS
            self.events_sent += 1
        code = EVENT_CODE[self._digit]
        step = round(INTERVAL * self.clock_rate)
        while self._digit is not None and now >= self._next_at:
            elapsed = (self._sent_updates + 1) * step
            if elapsed < self._duration:
                out.append(self._packet(code, False, elapsed, self._sent_updates == 0))
                self._sent_updates += 1
            else:
                out.append(self._packet(code, True, self._duration, self._sent_updates == 0
                                        and self._ends_left == END_PACKETS))
                self._ends_left -= 1
                if self._ends_left == 0:
                    self._digit = None
                    self._not_before = now + PAUSE
            self._next_at += INTERVAL
        return out

    def _packet(self, code: int, end: bool, duration: int, marker: bool) -> EventPacket:
        self.packets_sent += 1
        return EventPacket(payload(code, end, duration), marker, self._timestamp, self._started)


class DtmfReceiver:
    """Feed it every telephone-event payload with its RTP timestamp; it returns the digit to report,
    once per event."""

    def __init__(self) -> None:
        self._reported: deque[int] = deque(maxlen=16)  # timestamps of events reported
        self._open: tuple[int, str] | None = None  # (timestamp, digit) started, not reported
        self.junk = 0  # payloads too short
        self.ignored = 0  # events that are not digits

    def push(self, data: bytes, timestamp: int) -> list[str]:
        if len(data) < 4:
            self.junk += 1
            return []
        code, flags, _duration = _PAYLOAD.unpack_from(data, 0)
        if code >= len(DIGITS):
            self.ignored += 1
            return []
        out: list[str] = []
        if timestamp in self._reported:
            return out
        digit = DIGITS[code]
        if self._open is not None and self._open[0] != timestamp:
            out.append(self._open[1])  # its end packets were lost
            self._reported.append(self._open[0])
            self._open = None
        if flags & 0x80:
            out.append(digit)
            self._reported.append(timestamp)
            self._open = None
        else:
            self._open = (timestamp, digit)
        return out
