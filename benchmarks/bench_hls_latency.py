"""Glass-to-glass latency estimate of HLS and LL-HLS: the official WebSDK publishes from headless Chromium
(fake camera) to the real server, and hls.js (npm) plays the stream's HLS in the same page.

    .venv/bin/python benchmarks/bench_hls_latency.py [--seconds 20] [--codec VP8|H264] [--joins 1] [--quick]

Rows, one after the other (the server transcodes for HLS and the machine may have 2 cores: never in
parallel), each on a fresh server (`python -m streaming serve` through tests/support/server.py: loopback,
--ice-address 127.0.0.1, free ports, a temporary data folder) and a fresh page of one headless Chromium:

- HLS: the server's defaults (MPEG-TS, 2 s segments); hls.js with its defaults.
- LL-HLS: `--hls-mode llhls` with its defaults (2 s segments of 0.5 s parts); hls.js `lowLatencyMode: true`.
- LL-HLS 1/0.3: as LL-HLS, with `--hls-segment-duration 1 --hls-part-duration 0.3`.

Per row, the server's demo page (opened as tests/test_websdk_streaming.py does) publishes with the WebSDK
(VP8 by default, which the server transcodes to H.264 for HLS; `--codec H264` is remuxed as it is; Opus ->
AAC either way) and waits for PUBLISHING and the local picture. Then hls.js (node_modules/hls.js/dist/
hls.min.js, injected as in tests/test_websdk_hls.py) plays `{hls}/{name}/{name}.m3u8` in a muted <video>.
Startup runs from `hls.loadSource()` (the viewer presses play; `video.play()` is called there and again
when the manifest is parsed) to the first video frame presented (requestVideoFrameCallback). The server's
HLS starts on demand (its default), so the first viewer's startup is a cold start: its first playlist
request starts the output (transcoders, a keyframe request) and waits for the first segment (LL-HLS: the
first part; hls.js, which needs a complete segment, retries such a playlist: levelEmptyError, not fatal).
Once currentTime has advanced 0.5 s past the first frame, the page samples every `--interval` (0.5 s)
for `--seconds`:

- PDT latency: `Date.now() - hls.playingDate`. hls.playingDate is the EXT-X-PROGRAM-DATE-TIME of the
  fragment playing plus the position in it. The server (media/hls.py) maps the stream's timeline to the
  wall clock read when the first frame reached the HLS output (after the transcoders), so the PDT of a
  moment is about when its frame reached the server's HLS output, and the difference estimates
  glass-to-glass minus what comes before: camera capture and browser encoding, the WebRTC hop to the
  server (on loopback, tens of ms) and, as far as the first frame took as long as the others, the
  transcoder. Browser and server read the same clock here, so there is no clock offset in it.
- hls.latency (hls.js's own: the playlist's live edge minus currentTime) and hls.targetLatency.
- Stalls: the video's 'waiting' events (count, and the time until 'playing').

hls.js does not speed up to catch up by default (maxLiveSyncPlaybackRate 1), so a viewer's latency is set
where it starts (LL-HLS: at an independent part, i.e. a keyframe) and only grows with stalls: the spread
within one viewer is small, and runs differ by where the viewer happened to start. `--joins N` plays N
viewers one after the other on the same publisher (each sampled for `--seconds`; the table adds a line
per viewer): the later ones join a running output with a filled playlist, as most viewers do.

Prints a table (per row: PDT latency p50/p95/min/max over all samples, p50 of hls.latency and of the
target, stalls, the first viewer's startup) and then one JSON line starting with {"bench": "hls_latency",
...} (per viewer details too: time to the manifest, playback rate, hls.js errors, the playlist at the
end). The default run takes about 1.5 minutes (each --joins more about 25 s per row); --quick (3 s of
samples) is for smoke tests. To keep every packet on loopback, run it in a network namespace with only
loopback: `unshare --net sh -c 'ip link set lo up && exec .venv/bin/python benchmarks/bench_hls_latency.py'`.
A row's server log with errors is kept (its path is printed); otherwise the temporary folders are deleted.
"""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # run as a script: the checkout's tests.support

from tests.support.browser import Browser, start_chromium  # noqa: E402
from tests.support.server import REPO, ServerProcess  # noqa: E402

# The WebSDK page harness of the streaming tests, imported at run time: mypy would otherwise check those test
# modules too (they are outside its configured files and not clean), not just this benchmark.
StreamingPage: Any = importlib.import_module("tests.test_websdk_streaming").StreamingPage

HLS_JS = REPO / "node_modules/hls.js/dist/hls.min.js"
STREAM = "latency1"

# (label, server flags, hls.js lowLatencyMode)
ROWS: list[tuple[str, list[str], bool]] = [
    ("HLS", ["--hls-mode", "hls"], False),
    ("LL-HLS", ["--hls-mode", "llhls"], True),
    ("LL-HLS 1/0.3", ["--hls-mode", "llhls", "--hls-segment-duration", "1", "--hls-part-duration", "0.3"], True),
]
SEGMENTS = {"HLS": "2 s", "LL-HLS": "2 s / 0.5 s", "LL-HLS 1/0.3": "1 s / 0.3 s"}

# Starts hls.js on `url` and records, in window.__lat, the startup and every stall from then on.
PLAYER = r"""
var url = arguments[0], lowLatency = arguments[1];
var video = document.createElement("video");
video.id = "hls-video"; video.muted = true; video.autoplay = true; video.playsInline = true;
document.body.appendChild(video);
var s = window.__lat = {errors: [], fatal: null, started: null, manifest: null, firstFrame: null,
                        firstMediaTime: null, stalls: [], waitingSince: null};
var config = lowLatency ? {lowLatencyMode: true} : {};
var hls = window.__hlsPlayer = new Hls(config);
hls.on(Hls.Events.ERROR, function (event, data) {
    if (s.errors.length < 50) {
        s.errors.push(data.type + ":" + data.details + (data.fatal ? " (fatal)" : "") + " at " +
                      Math.round(performance.now() - s.started) + " ms");
    }
    if (data.fatal) { s.fatal = data.details; }
});
hls.on(Hls.Events.MANIFEST_PARSED, function () {
    if (s.manifest === null) { s.manifest = performance.now(); }
    video.play().catch(function (e) { s.errors.push("play:" + e); });
});
video.addEventListener("waiting", function () {
    if (s.firstFrame !== null && s.waitingSince === null) { s.waitingSince = performance.now(); }
});
video.addEventListener("playing", function () {
    if (s.waitingSince !== null) {
        s.stalls.push({at: s.waitingSince, ms: performance.now() - s.waitingSince});
        s.waitingSince = null;
    }
});
function firstFrame(now, meta) {
    s.firstFrame = now;
    s.firstMediaTime = meta ? meta.mediaTime : video.currentTime;
}
if (video.requestVideoFrameCallback) {
    video.requestVideoFrameCallback(firstFrame);
} else {
    video.addEventListener("playing", function () { if (s.firstFrame === null) { firstFrame(performance.now()); } });
}
s.started = performance.now();
hls.loadSource(url);
hls.attachMedia(video);
video.play().catch(function () {});  // the viewer's play(): before the manifest it may be refused, retried above
return true;
"""

STOP_PLAYER = r"""
if (window.__hlsPlayer) { window.__hlsPlayer.destroy(); window.__hlsPlayer = null; }
var old = document.getElementById("hls-video");
if (old) { old.pause(); old.remove(); }
return true;
"""

PROGRESS = r"""
var v = document.getElementById("hls-video"), s = window.__lat;
return {t: v.currentTime, w: v.videoWidth, h: v.videoHeight, fatal: s.fatal, errors: s.errors,
        firstFrame: s.firstFrame, firstMediaTime: s.firstMediaTime};
"""

# Samples every `interval` ms for `duration` ms, then calls back with the samples and the stalls meanwhile.
SAMPLER = r"""
var interval = arguments[0], duration = arguments[1], done = arguments[arguments.length - 1];
var hls = window.__hlsPlayer, v = document.getElementById("hls-video"), s = window.__lat;
var samples = [], begin = performance.now(), stallsBefore = s.stalls.length;
var timer = setInterval(function () {
    var date = hls.playingDate;
    samples.push({pdt: date ? Date.now() - date.getTime() : null, latency: hls.latency,
                  target: hls.targetLatency, t: v.currentTime, rate: v.playbackRate});
    if (performance.now() - begin >= duration) {
        clearInterval(timer);
        var stalls = s.stalls.slice(stallsBefore);
        if (s.waitingSince !== null) { stalls.push({at: s.waitingSince, ms: performance.now() - s.waitingSince}); }
        done({samples: samples, stalls: stalls, errors: s.errors, fatal: s.fatal, wall: performance.now() - begin});
    }
}, interval);
"""


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def playlist_summary(text: str) -> dict[str, Any]:
    """What the server listed when the sampling ended: target duration, segment and part durations."""
    tags: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("#EXT") and ":" in line:
            name, value = line.split(":", 1)
            tags.setdefault(name, []).append(value)
    parts = [p for p in tags.get("#EXT-X-PART", [])]
    return {
        "target_duration": int(tags["#EXT-X-TARGETDURATION"][0]) if "#EXT-X-TARGETDURATION" in tags else None,
        "segments_s": [round(float(v.split(",")[0]), 3) for v in tags.get("#EXTINF", [])],
        "parts": len(parts),
        "independent_parts": sum("INDEPENDENT=YES" in p for p in parts),
        "server_control": tags.get("#EXT-X-SERVER-CONTROL", [None])[0],
    }


def server_problems(log: str) -> list[str]:
    """Lines of the server log that say something went wrong."""
    return [line for line in log.splitlines() if any(word in line for word in ("ERROR", "Traceback", "CRITICAL"))]


def publish(browser: Browser, server: ServerProcess, codec: str) -> dict[str, int]:
    """Open the demo page, publish with the WebSDK until PUBLISHING and a local picture, load hls.js."""
    page = StreamingPage(browser, server).open()
    page.connect("pub")
    page.publish("pub", "cam", STREAM, codec=codec)
    page.wait("cam", "PUBLISHING")

    def camera() -> dict[str, int] | None:
        video: dict[str, int] | None = page.video("cam")
        return video if video and video["width"] > 0 else None

    sent = browser.wait_until(camera, 15, "the local camera")
    assert sent is not None  # wait_until returns only a truthy value
    browser.js(HLS_JS.read_text() + "\n;window.Hls = Hls; return true;")
    return sent


def join(browser: Browser, server: ServerProcess, low_latency: bool, seconds: float,
         interval: float) -> dict[str, Any]:
    """One viewer: start hls.js, wait for its first frame and for currentTime to advance, then sample."""
    browser.js(STOP_PLAYER)
    browser.js(PLAYER, f"{server.urls['hls']}/{STREAM}/{STREAM}.m3u8", low_latency)

    def progress() -> dict[str, Any]:
        state: dict[str, Any] = browser.js(PROGRESS)
        if state["fatal"] is not None:
            raise RuntimeError(f"hls.js fatal error: {state}\n{browser.describe()}")
        return state

    def first_frame() -> dict[str, Any] | None:
        state = progress()
        return state if state["firstFrame"] is not None and state["w"] > 0 else None

    first = browser.wait_until(first_frame, 60, "hls.js: the first frame")
    assert first is not None
    browser.wait_until(lambda: progress()["t"] >= first["firstMediaTime"] + 0.5 or None, 20, "currentTime advancing")
    timing = browser.js("var s = window.__lat; return {startup: s.firstFrame - s.started, "
                        "manifest: s.manifest === null ? null : s.manifest - s.started};")

    result: dict[str, Any] = browser.js_async(SAMPLER, int(interval * 1000), int(seconds * 1000),
                                              timeout=seconds + 30)
    with urllib.request.urlopen(f"{server.urls['hls']}/{STREAM}/{STREAM}.m3u8", timeout=10) as answer:
        playlist = answer.read().decode()
    samples = result["samples"]
    advanced = samples[-1]["t"] - samples[0]["t"] if samples else 0.0
    return {
        "pdt_ms": [round(s["pdt"]) for s in samples if s["pdt"] is not None],
        "hls_latency_ms": [round(s["latency"] * 1000) for s in samples if isinstance(s["latency"], (int, float))],
        "target_latency_ms": [round(s["target"] * 1000) for s in samples if isinstance(s["target"], (int, float))],
        "samples": len(samples),
        "stalls": len(result["stalls"]),
        "stalled_ms": round(sum(s["ms"] for s in result["stalls"])),
        "startup_ms": round(timing["startup"]),
        "manifest_ms": round(timing["manifest"]) if timing["manifest"] is not None else None,
        "played_s_per_wall_s": round(advanced / max(1e-6, result["wall"] / 1000 - interval), 3),
        "playback_rates": sorted({s["rate"] for s in samples}),
        "hls_js_errors": result["errors"],
        "playlist_at_end": playlist_summary(playlist),
    }


def summary(pdt: list[int], latency: list[int], target: list[int], samples: int) -> dict[str, Any]:
    return {
        "samples": samples,
        "pdt_null": samples - len(pdt),
        "pdt_p50_ms": round(percentile(pdt, 0.5)) if pdt else None,
        "pdt_p95_ms": round(percentile(pdt, 0.95)) if pdt else None,
        "pdt_min_ms": min(pdt) if pdt else None,
        "pdt_max_ms": max(pdt) if pdt else None,
        "hls_latency_p50_ms": round(percentile(latency, 0.5)) if latency else None,
        "target_latency_p50_ms": round(percentile(target, 0.5)) if target else None,
    }


def run_row(driver: Any, label: str, flags: list[str], low_latency: bool, codec: str, seconds: float,
            interval: float, joins: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-hls-latency-"))
    # Free ports for HLS and RTSP too (tests/support/server.py asks only for WebSocket and REST): another
    # server on this machine may hold the defaults. An unknown STREAMING_* variable is ignored.
    server = ServerProcess(folder / "server", [*flags, "--hls-port", "0"], env={"STREAMING_RTSP_PORT": "0"})
    browser = Browser(driver)
    keep = True
    try:
        server.start()
        sent = publish(browser, server, codec)
        viewers = [join(browser, server, low_latency, seconds, interval) for _ in range(joins)]
        browser.reset()  # leaves the page: the WebSDK session closes, the publisher stops
        server.stop()
        problems = server_problems(server.log())
        keep = bool(problems)
        if keep:
            print(f"{label}: the server log has {len(problems)} problem lines: {server.log_path}", file=sys.stderr)
        pdt = [v for viewer in viewers for v in viewer["pdt_ms"]]
        latency = [v for viewer in viewers for v in viewer["hls_latency_ms"]]
        target = [v for viewer in viewers for v in viewer["target_latency_ms"]]
        for viewer in viewers:
            viewer.update(summary(viewer.pop("pdt_ms"), viewer.pop("hls_latency_ms"), viewer.pop("target_latency_ms"),
                                  viewer["samples"]))
        return {
            "picture": f"{sent['width']}x{sent['height']}",
            **summary(pdt, latency, target, sum(v["samples"] for v in viewers)),
            "stalls": sum(v["stalls"] for v in viewers),
            "stalled_ms": sum(v["stalled_ms"] for v in viewers),
            "startup_ms": viewers[0]["startup_ms"],  # the first viewer: a cold, on-demand start
            "warm_startup_ms": [v["startup_ms"] for v in viewers[1:]],
            "joins": viewers,
            "server_log_problems": problems[:20],
        }
    except BaseException:
        print(f"{label}: failed; server log kept at {server.log_path}", file=sys.stderr)
        raise
    finally:
        try:
            browser.reset()
        finally:
            server.stop()
            if not keep:
                shutil.rmtree(folder, ignore_errors=True)


def table_line(name: str, segments: str, row: dict[str, Any]) -> str:
    def cell(key: str, width: int) -> str:
        value = row[key]
        return f"{'-' if value is None else value:>{width}}"

    return (f"{name:<14} {segments:<12} {cell('pdt_p50_ms', 7)} {cell('pdt_p95_ms', 6)} {cell('pdt_min_ms', 6)} "
            f"{cell('pdt_max_ms', 6)}  {cell('hls_latency_p50_ms', 11)} {cell('target_latency_p50_ms', 6)}  "
            f"{cell('stalls', 6)}  {cell('startup_ms', 7)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of samples per viewer")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--codec", choices=("VP8", "H264"), default="VP8", help="what the WebSDK publishes")
    parser.add_argument("--joins", type=int, default=1,
                        help="viewers per row, one after the other on the same publisher (the first starts cold)")
    parser.add_argument("--quick", action="store_true", help="short runs, for smoke tests")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 3.0
    if args.joins < 1:
        parser.error("--joins must be at least 1")
    if not HLS_JS.is_file():
        print(f"{HLS_JS} is missing: scripts/setup.sh --test installs it (npm)", file=sys.stderr)
        return 2

    began = time.monotonic()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    driver = start_chromium(profile)
    rows: dict[str, dict[str, Any]] = {}
    try:
        chromium = driver.capabilities.get("browserVersion", "?")
        for label, flags, low_latency in ROWS:
            rows[label] = run_row(driver, label, flags, low_latency, args.codec, args.seconds, args.interval,
                                  args.joins)
    finally:
        try:
            driver.quit()
        finally:
            shutil.rmtree(profile, ignore_errors=True)
    total = time.monotonic() - began
    hls_js_version = json.loads((HLS_JS.parent.parent / "package.json").read_text())["version"]

    print(f"HLS glass-to-glass estimate: WebSDK {args.codec} publisher -> server -> hls.js {hls_js_version}, "
          f"headless Chromium; {args.joins} viewer(s) per row, {args.seconds:g} s of samples each, every "
          f"{args.interval:g} s")
    print(f"{'mode':<14} {'seg / part':<12} {'PDT p50':>7} {'p95':>6} {'min':>6} {'max':>6}  {'hls.latency':>11}"
          f" {'target':>6}  {'stalls':>6}  {'startup':>7}")
    for label, row in rows.items():
        print(table_line(label, SEGMENTS[label], row))
        if args.joins > 1:
            for number, viewer in enumerate(row["joins"], 1):
                print(table_line(f"  viewer {number}", "", viewer))
    print("(milliseconds; PDT = Date.now() - hls.playingDate; hls.latency, target: p50 of hls.js's own; stalls: "
          "'waiting' events while sampling; startup: loadSource -> first frame, of the first viewer: a cold "
          "on-demand start)")
    for label, row in rows.items():
        notes = []
        if row["pdt_null"]:
            notes.append(f"hls.playingDate null in {row['pdt_null']}/{row['samples']} samples")
        errors = [error for viewer in row["joins"] for error in viewer["hls_js_errors"]]
        if errors:
            notes.append(f"hls.js errors: {', '.join(errors[:6])}")
        if row["server_log_problems"]:
            notes.append(f"{len(row['server_log_problems'])} server log problem lines")
        if notes:
            print(f"{label}: {'; '.join(notes)}")
    print(json.dumps({
        "bench": "hls_latency",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "chromium": chromium,
        "hls_js": hls_js_version,
        "codec": args.codec,
        "seconds": args.seconds,
        "interval_s": args.interval,
        "joins": args.joins,
        "run_s": round(total, 1),
        "rows": {label: {"server_flags": flags, "low_latency_mode": low_latency, **rows[label]}
                 for label, flags, low_latency in ROWS},
        "statistics": "PDT latency percentiles (nearest rank) over the samples of each row (all its viewers); "
                      "glass-to-glass minus camera/encode/WebRTC legs to the server's HLS output",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
