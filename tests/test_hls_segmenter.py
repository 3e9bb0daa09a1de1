"""The HLS segmenter (media/hls.py) on real media: H.264 + AAC encoded by PyAV, muxed by FFmpeg, files on disk,
read back with ffprobe. No HTTP: the playlist and file API the HTTP layer uses."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from media.encoded import EncodedFrame
from media.hls import HlsClosed, HlsOutput, HlsSettings, PlaylistNotReady, PlaylistTimeout
from tests.support.hls_media import feed, make_frames, shifted

FAST = 8.0  # times real time, for tests that do not measure latency


def probe(path: Path) -> dict:
    """ffprobe's view of a file: streams, and packets in file order."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_streams", "-show_packets",
         "-show_entries", "packet=stream_index,pts_time,flags:stream=index,codec_name,codec_type,width,height",
         str(path)],
        capture_output=True, text=True, timeout=30, check=True)
    return json.loads(result.stdout)


def decode_errors(path: Path) -> str:
    """What FFmpeg complains about while decoding the whole file."""
    result = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, text=True, timeout=30)
    return result.stderr if result.returncode == 0 else f"exit {result.returncode}: {result.stderr}"


def stream_kinds(info: dict) -> dict[str, dict]:
    return {stream["codec_type"]: stream for stream in info["streams"]}


def video_packets(info: dict) -> list[dict]:
    video = stream_kinds(info)["video"]["index"]
    return [packet for packet in info["packets"] if packet["stream_index"] == video]


def span(info: dict, kind: str) -> float:
    """Seconds from the first to past the last packet of that kind (packets are evenly spaced here)."""
    index = stream_kinds(info)[kind]["index"]
    times = sorted(float(p["pts_time"]) for p in info["packets"] if p["stream_index"] == index)
    return times[-1] - times[0] + (times[-1] - times[0]) / (len(times) - 1)


class Playlist:
    """Just enough of an m3u8 parser to check ours."""

    def __init__(self, text: str):
        self.text = text
        self.lines = text.splitlines()
        self.tags: dict[str, str] = {}
        self.segments: list[dict] = []  # uri, duration, date, parts
        self.parts: list[dict] = []  # every EXT-X-PART, with attributes
        pending: dict = {"parts": []}
        for line in self.lines:
            if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
                pending["date"] = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp()
            elif line.startswith("#EXTINF:"):
                pending["duration"] = float(line.split(":", 1)[1].rstrip(","))
            elif line.startswith("#EXT-X-PART:"):
                part = self.attributes(line)
                pending["parts"].append(part)
                self.parts.append(part)
            elif line.startswith("#") and ":" in line:
                tag, value = line.split(":", 1)
                self.tags.setdefault(tag, value)
            elif line.startswith("#"):
                self.tags.setdefault(line, "")
            elif line:
                pending["uri"] = line
                self.segments.append(pending)
                pending = {"parts": []}

    @staticmethod
    def attributes(line: str) -> dict[str, str]:
        out = {}
        for item in line.split(":", 1)[1].split(","):
            key, value = item.split("=", 1)
            out[key] = value.strip('"')
        return out

    @property
    def media_sequence(self) -> int:
        return int(self.tags["#EXT-X-MEDIA-SEQUENCE"])


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def hinted(out: HlsOutput) -> tuple[int, int]:
    """(msn, part) of the part the preload hint names (partM.N.m4s), as a player would ask for it."""
    hint = out.preload_hint()
    assert hint is not None and hint.startswith("part") and hint.endswith(".m4s")
    msn, part = hint[4:-4].split(".")
    return int(msn), int(part)


async def finish(out: HlsOutput) -> Playlist:
    """end() and the final playlist (with EXT-X-ENDLIST)."""
    out.end()
    deadline = time.monotonic() + 20
    while True:
        text = await out.playlist(timeout=10)
        if "#EXT-X-ENDLIST" in text:
            return Playlist(text)
        assert time.monotonic() < deadline
        await out.playlist(out.segments, timeout=10)


@pytest.fixture
def outputs(tmp_path: Path):
    made: list[HlsOutput] = []

    def make(settings: HlsSettings, name: str = "cam1") -> HlsOutput:
        out = HlsOutput(name, tmp_path / name, settings)
        made.append(out)
        return out

    yield make
    for out in made:
        out.close()


# ---------------------------------------------------------------------------------------------------------
# MPEG-TS


async def test_ts_playlist_and_segments(outputs) -> None:
    out = outputs(HlsSettings(segment_duration=1.0))
    await feed(out.push, make_frames(4.0, keyframe_interval=15), FAST)
    playlist = await finish(out)

    assert playlist.lines[0] == "#EXTM3U"
    assert playlist.tags["#EXT-X-VERSION"] == "3"
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in playlist.tags
    assert playlist.media_sequence == 0
    assert playlist.lines[-1] == "#EXT-X-ENDLIST"
    assert [s["uri"] for s in playlist.segments] == [f"segment{n}.ts" for n in range(4)]
    durations = [s["duration"] for s in playlist.segments]
    assert durations == pytest.approx([1.0] * 4, abs=0.002)
    assert int(playlist.tags["#EXT-X-TARGETDURATION"]) == max(1, math.floor(max(durations) + 0.5))  # RFC 8216 4.3.3.1
    assert all("date" in s for s in playlist.segments)
    assert out.segments == 4 and out.dropped == 0 and out.errors == 0

    for n, segment in enumerate(playlist.segments):
        path = out.file(segment["uri"])
        assert path is not None and path.parent == out.directory
        info = probe(path)
        kinds = stream_kinds(info)
        assert kinds["video"]["codec_name"] == "h264"
        assert (kinds["video"]["width"], kinds["video"]["height"]) == (320, 240)
        assert kinds["audio"]["codec_name"] == "aac"
        packets = video_packets(info)
        assert packets[0]["flags"].startswith("K"), f"segment {n} does not start with a keyframe"
        assert float(packets[0]["pts_time"]) == pytest.approx(n * 1.0, abs=0.001)  # the stream's timeline
        assert span(info, "video") == pytest.approx(segment["duration"], abs=0.002)
        assert span(info, "audio") == pytest.approx(segment["duration"], abs=0.05)
        assert decode_errors(path) == ""


async def test_ts_cuts_at_the_first_keyframe_past_the_target(outputs) -> None:
    out = outputs(HlsSettings(segment_duration=1.0))
    await feed(out.push, make_frames(4.5, keyframe_interval=21, audio=False), FAST)  # a keyframe every 0.7 s
    playlist = await finish(out)
    durations = [s["duration"] for s in playlist.segments]
    assert durations[:-1] == pytest.approx([1.4] * (len(durations) - 1), abs=0.002)
    assert int(playlist.tags["#EXT-X-TARGETDURATION"]) == 1  # 1.4 s rounds to 1 (RFC 8216 4.3.3.1)
    for segment in playlist.segments:
        assert video_packets(probe(out.file(segment["uri"])))[0]["flags"].startswith("K")


async def test_sliding_window_advances_and_deletes_old_segments(outputs) -> None:
    out = outputs(HlsSettings(segment_duration=0.5, window=3, grace=1))
    frames = make_frames(4.0, keyframe_interval=15)
    await feed(out.push, frames + shifted(frames, 4.0), FAST)
    await wait_until(lambda: out.segments >= 14)
    playlist = Playlist(out.playlist_now() or "")
    assert len(playlist.segments) == 3
    first = playlist.media_sequence
    assert first == out.segments - 3
    assert [s["uri"] for s in playlist.segments] == [f"segment{n}.ts" for n in range(first, first + 3)]

    # one segment of grace past the window stays on disk and served; older ones are gone
    assert out.file(f"segment{first - 1}.ts") is not None
    await wait_until(lambda: not (out.directory / f"segment{first - 3}.ts").exists())
    on_disk = {p.name for p in out.directory.iterdir()}
    assert on_disk <= {f"segment{n}.ts" for n in range(first - 2, first + 4)}, on_disk
    assert "segment0.ts" not in on_disk
    assert out.file("segment0.ts") is None


async def test_program_date_time_follows_the_durations(outputs) -> None:
    out = outputs(HlsSettings(segment_duration=1.0))
    first_push = time.time()
    await feed(out.push, make_frames(4.0, keyframe_interval=15), FAST)
    playlist = await finish(out)
    dates = [s["date"] for s in playlist.segments]
    assert dates[0] == pytest.approx(first_push, abs=0.2)  # the first frame's wall clock
    for segment, following in zip(playlist.segments, playlist.segments[1:], strict=False):
        assert following["date"] - segment["date"] == pytest.approx(segment["duration"], abs=0.002)


async def test_end_and_close(outputs) -> None:
    out = outputs(HlsSettings(segment_duration=1.0))
    await feed(out.push, make_frames(2.5, keyframe_interval=15), FAST)
    playlist = await finish(out)
    assert out.ended
    assert playlist.segments[-1]["duration"] == pytest.approx(0.5, abs=0.04)  # the rest, flushed
    assert "#EXT-X-ENDLIST" in (await out.playlist(99, timeout=1))  # msn is ignored after the end
    out.push(make_frames(2.5, keyframe_interval=15)[0])  # ignored
    assert out.segments == 3

    directory = out.directory
    names = [s["uri"] for s in playlist.segments]
    assert all((directory / name).exists() for name in names)
    out.close()
    assert not directory.exists()
    assert out.file(names[0]) is None and out.playlist_now() is None
    with pytest.raises(HlsClosed):
        await out.playlist()
    out.close()  # idempotent


async def test_file_returns_only_files_it_made_and_holds(outputs) -> None:
    out = outputs(HlsSettings(segment_duration=0.5, window=2, grace=0))
    await feed(out.push, make_frames(3.0, keyframe_interval=15), FAST)
    await wait_until(lambda: out.segments >= 4)
    playlist = Playlist(out.playlist_now() or "")
    listed = playlist.segments[-1]["uri"]
    path = out.file(listed)
    assert path is not None and path.is_file()
    for name in ["", "..", "../x", f"../{out.directory.name}/{listed}", f"./{listed}", str(path), "/etc/passwd",
                 "segment999.ts", out.playlist_name, "init.mp4", listed.upper()]:
        assert out.file(name) is None, name
    assert out.file("segment0.ts") is None  # left the window, deleted
    assert out.content_type(listed) == "video/mp2t"
    assert out.content_type(out.playlist_name) == "application/vnd.apple.mpegurl"


# ---------------------------------------------------------------------------------------------------------
# Low-latency HLS (fMP4)


async def test_ll_init_parts_and_segments(outputs, tmp_path: Path) -> None:
    settings = HlsSettings(low_latency=True, segment_duration=1.0, part_duration=0.25)
    out = outputs(settings)
    await feed(out.push, make_frames(3.0, keyframe_interval=15), FAST)
    await wait_until(lambda: out.segments >= 2)
    playlist = Playlist(out.playlist_now() or "")

    assert playlist.tags["#EXT-X-VERSION"] == "9"
    assert playlist.tags["#EXT-X-MAP"] == 'URI="init.mp4"'
    assert playlist.tags["#EXT-X-PART-INF"] == "PART-TARGET=0.250"
    control = Playlist.attributes(f"X:{playlist.tags['#EXT-X-SERVER-CONTROL']}")
    assert control["CAN-BLOCK-RELOAD"] == "YES"
    assert float(control["PART-HOLD-BACK"]) >= 3 * 0.25
    hint = Playlist.attributes(f"X:{playlist.tags['#EXT-X-PRELOAD-HINT']}")
    assert hint["TYPE"] == "PART" and hint["URI"] == out.preload_hint()
    assert out.file(hint["URI"]) is None  # not made yet

    complete = [s for s in playlist.segments]
    assert len(complete) >= 2
    for segment in complete:
        parts = segment["parts"]
        durations = [float(p["DURATION"]) for p in parts]
        # 7 frames (8 would be more than 0.25 s), the keyframe in mid-segment does not cut a short part
        assert durations == pytest.approx([7 / 30] * 4 + [2 / 30], abs=0.002)
        assert sum(durations) == pytest.approx(segment["duration"], abs=0.002)
        assert parts[0].get("INDEPENDENT") == "YES"  # segments start on keyframes
        assert [p.get("INDEPENDENT") for p in parts[1:]] == [None] * 4
        # the segment's file is its parts one after the other
        joined = b"".join(out.file(p["URI"]).read_bytes() for p in parts)
        assert out.file(segment["uri"]).read_bytes() == joined

    init = out.file("init.mp4")
    assert init is not None and out.content_type("init.mp4") == "video/mp4"
    for n, segment in enumerate(complete):
        media = tmp_path / f"check{n}.mp4"
        media.write_bytes(init.read_bytes() + out.file(segment["uri"]).read_bytes())
        info = probe(media)
        kinds = stream_kinds(info)
        assert kinds["video"]["codec_name"] == "h264" and kinds["audio"]["codec_name"] == "aac"
        assert (kinds["video"]["width"], kinds["video"]["height"]) == (320, 240)
        packets = video_packets(info)
        assert packets[0]["flags"].startswith("K")
        assert float(packets[0]["pts_time"]) == pytest.approx(n * 1.0, abs=0.001)  # tfdt on the timeline
        assert len(packets) == 30
        assert decode_errors(media) == ""
    # a single part is playable after the init segment too
    part = tmp_path / "part.mp4"
    part.write_bytes(init.read_bytes() + out.file(complete[-1]["parts"][1]["URI"]).read_bytes())
    assert len(video_packets(probe(part))) == 7


async def test_ll_blocking_reload_returns_when_the_part_appears(outputs) -> None:
    out = outputs(HlsSettings(low_latency=True, segment_duration=1.0, part_duration=0.25))
    frames = make_frames(4.0, keyframe_interval=15)
    pusher = asyncio.create_task(feed(out.push, frames, speed=1.0))
    try:
        assert await out.wait_ready(timeout=5)
        for _ in range(4):
            msn, part = hinted(out)
            hint = out.preload_hint()
            asked = asyncio.get_running_loop().time()
            text = await out.playlist(msn, part, timeout=3)
            answered = asyncio.get_running_loop().time()
            assert f'URI="{hint}"' in text.split("#EXT-X-PRELOAD-HINT")[0]  # listed now, no longer the hint
            listed = next(d for d in reversed(out.ready_delays) if d.kind == "part" and (d.msn, d.part) == (msn, part))
            assert listed.listed >= asked - 0.001
            assert answered - listed.listed < 0.1  # woken by the listing itself, not by polling
            assert answered - asked < 3 * 0.25  # it was the next part: about one part duration away
            assert out.file(hint) is not None
    finally:
        pusher.cancel()


async def test_ll_blocking_reload_refuses_requests_too_far_ahead(outputs) -> None:
    out = outputs(HlsSettings(low_latency=True, segment_duration=1.0, part_duration=0.5))
    await feed(out.push, make_frames(2.2, keyframe_interval=15), FAST)
    await wait_until(lambda: out.segments >= 2)
    last = out.segments - 1
    with pytest.raises(PlaylistNotReady):
        await out.playlist(last + 3, timeout=1)  # more than two segments ahead
    with pytest.raises(PlaylistNotReady):
        await out.playlist(last + 1, 7, timeout=1)  # beyond the Advance Part Limit (3 s of 0.5 s parts)
    with pytest.raises(PlaylistTimeout):
        await out.playlist(last + 1, 5, timeout=0.1)  # six parts ahead: within the limit, so it waits
    with pytest.raises(PlaylistNotReady):
        await out.playlist(None, 1, timeout=1)  # a part without msn
    assert "#EXT-X-PART" in await out.playlist(last, 0, timeout=1)  # already there: no wait
    # a part index past a segment's last means part 0 of the next segment
    with pytest.raises(PlaylistTimeout):
        await out.playlist(hinted(out)[0] - 1, 9, timeout=0.2)


async def test_ll_preload_hinted_part_can_be_waited_for(outputs) -> None:
    out = outputs(HlsSettings(low_latency=True, segment_duration=1.0, part_duration=0.25))
    pusher = asyncio.create_task(feed(out.push, make_frames(3.0, keyframe_interval=15), speed=2.0))
    try:
        assert await out.wait_ready(timeout=5)
        hint = out.preload_hint()
        assert hint is not None and out.file(hint) is None
        path = await out.wait_file(hint, timeout=2)
        assert path is not None and path.stat().st_size > 0
        started = time.monotonic()
        assert await out.wait_file("part999.0.m4s", timeout=1) is None
        assert time.monotonic() - started < 0.1  # not hinted: no wait
    finally:
        pusher.cancel()


# ---------------------------------------------------------------------------------------------------------
# Streams with one kind of track


@pytest.mark.parametrize("low_latency", [False, True])
async def test_video_only(outputs, tmp_path: Path, low_latency: bool) -> None:
    out = outputs(HlsSettings(low_latency=low_latency, segment_duration=1.0))
    await feed(out.push, make_frames(3.0, audio=False, keyframe_interval=15), FAST)
    playlist = await finish(out)
    assert [s["duration"] for s in playlist.segments] == pytest.approx([1.0] * 3, abs=0.002)
    path = out.file(playlist.segments[1]["uri"])
    if low_latency:
        path = tmp_path / "joined.mp4"
        path.write_bytes(out.file("init.mp4").read_bytes() + out.file(playlist.segments[1]["uri"]).read_bytes())
    assert [s["codec_type"] for s in probe(path)["streams"]] == ["video"]


@pytest.mark.parametrize("low_latency", [False, True])
async def test_audio_only_is_detected(outputs, tmp_path: Path, low_latency: bool) -> None:
    out = outputs(HlsSettings(low_latency=low_latency, segment_duration=1.0, detect_seconds=0.5))
    await feed(out.push, make_frames(3.5, video=False), FAST)
    playlist = await finish(out)
    durations = [s["duration"] for s in playlist.segments]
    assert len(durations) >= 3
    assert all(0.9 <= d <= 1.0 for d in durations[:-1]), durations  # cut on time, never past the target
    assert sum(durations) == pytest.approx(3.5, abs=0.05)  # nothing lost while detecting
    uri = playlist.segments[1]["uri"]
    path = out.file(uri)
    if low_latency:
        path = tmp_path / "joined.mp4"
        path.write_bytes(out.file("init.mp4").read_bytes() + out.file(uri).read_bytes())
        assert all(p.get("INDEPENDENT") == "YES" for p in playlist.parts)
    info = probe(path)
    assert [s["codec_name"] for s in info["streams"]] == ["aac"]
    assert span(info, "audio") == pytest.approx(playlist.segments[1]["duration"], abs=0.03)


async def test_audio_waits_for_video_when_told_there_is_video(outputs) -> None:
    out = outputs(HlsSettings(segment_duration=1.0, video=True, detect_seconds=0.2))
    audio = make_frames(2.0, video=False)
    await feed(out.push, audio, FAST)
    assert out.segments == 0 and not await out.wait_ready(timeout=0.2)
    video = shifted(make_frames(2.0, keyframe_interval=15), 2.0)
    await feed(out.push, video, FAST)
    playlist = await finish(out)
    kinds = stream_kinds(probe(out.file(playlist.segments[0]["uri"])))
    assert set(kinds) == {"video", "audio"}  # audio joined once the video started


# ---------------------------------------------------------------------------------------------------------
# Bad input and overload


@pytest.mark.parametrize("low_latency", [False, True])
async def test_garbage_frames_do_not_stop_the_output(outputs, tmp_path: Path, low_latency: bool) -> None:
    out = outputs(HlsSettings(low_latency=low_latency, segment_duration=1.0))
    frames = make_frames(4.0, keyframe_interval=15)
    middle = len(frames) // 2
    pts = frames[middle].pts
    garbage = [EncodedFrame("H264", b"", pts * 90000 // 90000, 90000, False),
               EncodedFrame("H264", bytes(range(256)) * 4, pts, 90000, False),
               EncodedFrame("AAC", b"", frames[middle].pts * 48000 // 90000, 48000, channels=2),
               EncodedFrame("AAC", b"\xff\xf1garbage", frames[middle].pts * 48000 // 90000, 48000, channels=2),
               EncodedFrame("VP8", b"\x00" * 10, pts, 90000)]
    await feed(out.push, frames[:middle] + garbage + frames[middle:], FAST)
    playlist = await finish(out)
    assert out.ignored == 1  # VP8 has no place in these segments
    if not low_latency:
        assert out.errors >= 1  # FFmpeg refused the empty AAC frame, and the output went on
    assert len(playlist.segments) == 4
    last = out.file(playlist.segments[-1]["uri"])
    if low_latency:
        joined = tmp_path / "joined.mp4"
        joined.write_bytes(out.file("init.mp4").read_bytes() + last.read_bytes())
        last = joined
    assert set(stream_kinds(probe(last))) == {"video", "audio"}


async def test_a_full_queue_drops_and_counts_then_recovers(outputs) -> None:
    out = outputs(HlsSettings(segment_duration=0.5, queue_frames=8))
    frames = make_frames(4.0, keyframe_interval=15)
    for frame in frames:  # a burst with no pause: the worker cannot keep up
        out.push(frame)
    assert out.dropped > 0
    assert out.queued <= 8
    await feed(out.push, shifted(frames, 4.0), FAST)  # then a live pace again
    playlist = await finish(out)
    assert out.segments >= 8
    # a dropped video frame makes video wait for the next keyframe: what is listed still decodes cleanly
    for segment in playlist.segments:
        path = out.file(segment["uri"])
        assert video_packets(probe(path))[0]["flags"].startswith("K")
        assert decode_errors(path) == ""


async def test_waiting_for_a_playlist_times_out(outputs) -> None:
    out = outputs(HlsSettings(segment_duration=1.0))
    assert out.playlist_now() is None
    assert not await out.wait_ready(timeout=0.1)
    with pytest.raises(PlaylistTimeout):
        await out.playlist(timeout=0.1)
    frames = make_frames(2.0, keyframe_interval=15)
    await feed(out.push, frames, FAST)
    await wait_until(lambda: out.segments >= 1)
    started = time.monotonic()
    with pytest.raises(PlaylistTimeout):
        await out.playlist(out.segments + 1, timeout=0.2)  # the publisher went quiet
    assert time.monotonic() - started == pytest.approx(0.2, abs=0.1)


async def test_end_before_any_media(outputs) -> None:
    out = outputs(HlsSettings())
    out.end()
    with pytest.raises(HlsClosed):
        await out.playlist(timeout=1)
    assert not await out.wait_ready(timeout=1)


async def test_ready_delays_are_recorded(outputs) -> None:
    out = outputs(HlsSettings(low_latency=True, segment_duration=1.0, part_duration=0.5))
    await feed(out.push, make_frames(2.5, keyframe_interval=15), FAST)
    await finish(out)
    kinds = [d.kind for d in out.ready_delays]
    assert kinds.count("segment") == out.segments == 3 and kinds.count("part") == out.parts == 5
    assert all(0 <= d.seconds < 1.0 for d in out.ready_delays)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        HlsSettings(segment_duration=0)
    with pytest.raises(ValueError):
        HlsSettings(low_latency=True, segment_duration=1.0, part_duration=2.0)
    with pytest.raises(ValueError):
        HlsSettings(window=0)


async def test_keyframes_are_asked_for_when_a_segment_reaches_its_target(outputs) -> None:
    out = outputs(HlsSettings(segment_duration=1.0))
    frames = make_frames(4.4, audio=False, keyframe_interval=45)  # a keyframe every 1.5 s
    asked_at: list[float] = []
    current: list[EncodedFrame] = []
    out.on_keyframe_needed = lambda: asked_at.append(current[-1].seconds)

    def push(frame: EncodedFrame) -> None:
        current.append(frame)
        out.push(frame)

    await feed(push, frames[1:], FAST)  # starting on a P-frame: the output asks for a keyframe to begin
    # before the start: at the first P-frame and a second later; then once per segment, when it has
    # lasted the target duration and no keyframe came
    assert asked_at == pytest.approx([1 / 30, 31 / 30, 2.5, 4.0], abs=0.001)
    playlist = await finish(out)
    assert [s["duration"] for s in playlist.segments] == pytest.approx([1.5, 1.4], abs=0.002)  # cut at 3.0 s


@pytest.mark.parametrize("low_latency", [False, True])
async def test_frames_without_size_or_audio_config(outputs, tmp_path: Path, low_latency: bool) -> None:
    """As a WebRTC track gives them: no picture size on H.264 frames (learnt by decoding the first keyframe),
    no AudioSpecificConfig on AAC frames (made for AAC-LC from the rate and channels)."""
    out = outputs(HlsSettings(low_latency=low_latency, segment_duration=1.0))
    bare = [EncodedFrame(f.codec, f.data, f.pts, f.clock_rate, f.keyframe, channels=f.channels)
            for f in make_frames(2.0, keyframe_interval=15)]
    await feed(out.push, bare, FAST)
    playlist = await finish(out)
    path = out.file(playlist.segments[0]["uri"])
    if low_latency:
        joined = tmp_path / "joined.mp4"
        joined.write_bytes(out.file("init.mp4").read_bytes() + path.read_bytes())
        path = joined
    kinds = stream_kinds(probe(path))
    assert (kinds["video"]["width"], kinds["video"]["height"]) == (320, 240)
    assert kinds["audio"]["codec_name"] == "aac"
    assert decode_errors(path) == ""  # the audio decodes cleanly with that config


async def test_short_audio_only_stream_is_flushed_at_the_end(outputs) -> None:
    out = outputs(HlsSettings(segment_duration=1.0, detect_seconds=1.0))
    await feed(out.push, make_frames(0.6, video=False), FAST)  # ends before audio-only was detected
    playlist = await finish(out)
    assert [s["duration"] for s in playlist.segments] == pytest.approx([0.6], abs=0.03)
