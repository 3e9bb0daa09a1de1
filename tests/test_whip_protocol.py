"""The WHIP/WHEP HTTP rules without I/O (streaming/whip_protocol.py): trickle fragments, bearer tokens,
If-Match, media types, failure statuses; and the fragment parser fuzzed (it only ever raises ValueError)."""

from __future__ import annotations

import random

import pytest

from streaming.streams import NAME_IN_USE, NO_COMMON_CODECS, NOT_FOUND, TRANSCODING_DISABLED
from streaming.whip_protocol import (
    MAX_FRAGMENT,
    bearer_token,
    etag_matches,
    failure_status,
    media_type,
    offer_ufrag,
    parse_fragment,
)

FRAGMENT = (
    "a=ice-ufrag:EsAw\r\n"
    "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "a=mid:0\r\n"
    "a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n"
    "a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0 ufrag EsAw network-id 2\r\n"
    "a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0 ufrag EsAw\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
    "a=mid:1\r\n"
    "a=candidate:2 1 UDP 1694498815 203.0.113.7 50000 typ srflx raddr 192.0.2.1 rport 61764\r\n"
    "a=end-of-candidates\r\n"
)


def test_a_trickle_fragment_of_rfc_8840() -> None:
    fragment = parse_fragment(FRAGMENT)
    assert (fragment.ufrag, fragment.pwd) == ("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1")
    assert [mid for mid, _line in fragment.candidates] == ["0", "0", "0", "1"]
    assert fragment.candidates[0][1].startswith("candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host")
    assert fragment.candidates[3][1].endswith("raddr 192.0.2.1 rport 61764")
    assert fragment.end_of_candidates


def test_an_ice_restart_fragment_has_credentials_and_no_candidates() -> None:
    fragment = parse_fragment("a=ice-ufrag:new\na=ice-pwd:newpassword\n")
    assert (fragment.ufrag, fragment.candidates, fragment.end_of_candidates) == ("new", [], False)


@pytest.mark.parametrize("text, message", [
    ("hello\r\n", "not an SDP line"),
    ("a=candidate:1 1 udp\r\n", "not a valid candidate"),
    ("a=candidate:1 1 udp 1 192.0.2.1 x typ host\r\n", "not a valid candidate"),
    ("a=ice-ufrag:x\r\n" + "a=x:" + "y" * MAX_FRAGMENT, "larger than"),
])
def test_bad_fragments_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_fragment(text)


def test_the_fragment_parser_only_raises_value_error_on_garbage() -> None:
    rng = random.Random(9725)
    pieces = FRAGMENT.split("\r\n")
    for _ in range(3000):
        lines = [rng.choice(pieces) for _ in range(rng.randint(0, 12))]
        text = "\r\n".join(lines)
        if rng.random() < 0.5 and text:
            at = rng.randrange(len(text))
            text = text[:at] + rng.choice(["\x00", "=", " ", "\n", "a=", "typ", "\u00e9", ":"]) + text[at + 1:]
        try:
            fragment = parse_fragment(text)
        except ValueError:
            continue
        for _mid, line in fragment.candidates:
            assert line.startswith("candidate:") and " typ " in line


@pytest.mark.parametrize("header, token", [
    (None, None), ("", None), ("Bearer abc.DEF-123_~+/=", "abc.DEF-123_~+/="), ("bearer  xyz ", "xyz"),
])
def test_bearer_tokens(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", ["Basic dXNlcjpwdw==", "Bearer", "Bearer a b", "Bearer " + "x" * 5000,
                                    "Bearer \u00e9t\u00e9", "Token abc"])
def test_unusable_authorization_headers(header: str) -> None:
    with pytest.raises(ValueError, match="Authorization"):
        bearer_token(header)


def test_if_match() -> None:
    etag = '"abc"'
    assert etag_matches(None, etag) and etag_matches("*", etag) and etag_matches('"abc"', etag)
    assert etag_matches('"x", "abc"', etag)
    assert not etag_matches('"x"', etag) and not etag_matches("abc", etag)


def test_media_types() -> None:
    assert media_type("application/SDP; charset=utf-8") == "application/sdp"
    assert media_type(None) == "" and media_type("") == ""


def test_offer_ufrag() -> None:
    assert offer_ufrag("v=0\r\nm=audio 9 x 0\r\na=ice-ufrag:Ab12\r\na=ice-ufrag:other\r\n") == "Ab12"
    assert offer_ufrag("v=0\r\n") is None


@pytest.mark.parametrize("info, status", [
    (NAME_IN_USE, 409), (NOT_FOUND, 404), (NO_COMMON_CODECS, 422), (TRANSCODING_DISABLED, 422),
    ("Bad SDP: SDP offers no media", 400), ("Invalid stream name: use ...", 400),
    ("Restricted access", 403), ("Token rejected by the shop", 403),
])
def test_failure_statuses(info: str, status: int) -> None:
    assert failure_status(info) == status
