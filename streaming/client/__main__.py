"""`python -m streaming.client publish|play ...`: publish a test pattern (or a file) or play a stream,
then print a JSON summary on stdout. Exit status 0 when the stream ran as asked, 1 when it failed.

Once the stream is up (PUBLISHING or PLAYING) one line `ready {"status": ..., "mediaSessionId": ...}`
goes to stderr, for scripts that start a publisher and then want to play it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from .session import ClientError, Session
from .webrtc import VIDEO_CODECS, Player, Publisher, _WebRtcStream, use_ice_addresses


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streaming.client",
                                     description="Test client of the WebSDK protocol (WebRTC with aiortc).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--server", default="ws://127.0.0.1:8080", help="WebSocket URL (default: %(default)s)")
        sub.add_argument("--name", required=True, help="stream name")
        sub.add_argument("--app-key", default="defaultApp", help="application key (default: %(default)s)")
        sub.add_argument("--duration", type=float, default=None, metavar="S",
                         help="seconds to keep the stream up (default: until interrupted)")
        sub.add_argument("--timeout", type=float, default=20.0, metavar="S",
                         help="seconds to wait for the session and for the stream to start (default: %(default)s)")
        sub.add_argument("--ice-address", action="append", default=None, metavar="ADDR",
                         help="gather ICE candidates on this address (repeatable; default: every "
                         "non-loopback address); 127.0.0.1 on a loopback-only network")
        sub.add_argument("--custom", type=json.loads, default=None, metavar="JSON", help="the 'custom' object")
        sub.add_argument("-v", "--verbose", action="store_true", help="log to stderr")

    publish = commands.add_parser("publish", help="publish a test pattern and a tone, or a file")
    common(publish)
    publish.add_argument("--codec", type=str.upper, choices=VIDEO_CODECS, default=None,
                         help="offer only this video codec (default: aiortc's, VP8 first)")
    publish.add_argument("--file", default=None, help="send this file (H.264 video is sent as it is, looped)")
    publish.add_argument("--width", type=int, default=640)
    publish.add_argument("--height", type=int, default=480)
    publish.add_argument("--fps", type=float, default=30.0)
    publish.add_argument("--no-audio", action="store_true", help="video only")
    publish.add_argument("--no-video", action="store_true", help="audio only")
    publish.add_argument("--record", action="store_true", help="ask the server to record the stream")

    play = commands.add_parser("play", help="play a stream and count its frames")
    common(play)
    play.add_argument("--codec", type=str.upper, choices=VIDEO_CODECS, default=None,
                      help="accept only this video codec")
    play.add_argument("--decode", action="store_true",
                      help="look into decoded frames: sizes, and the test pattern's frame number")
    play.add_argument("--frames", type=int, default=None, metavar="N", help="stop once N video frames arrived")
    return parser


async def _until_stopped(stream: _WebRtcStream, duration: float | None, frames: int | None) -> None:
    """Keep the stream up for `duration`, until `frames` arrived (players), or until SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, interrupted.set)
    if frames is not None and isinstance(stream, Player):
        work = loop.create_task(stream.wait_frames(frames, float("inf") if duration is None else duration))
    else:
        work = loop.create_task(stream.hold(duration))
    stop = loop.create_task(interrupted.wait())
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, stop):
            task.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    if work.done() and not work.cancelled():
        failure = work.exception()
        if failure is not None:
            raise failure


async def _run(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    if args.ice_address:
        use_ice_addresses(args.ice_address)
    summary: dict[str, Any] = {"command": args.command, "server": args.server, "name": args.name}
    stream: Publisher | Player | None = None
    try:
        async with Session.connect(args.server, app_key=args.app_key, custom=args.custom,
                                   timeout=args.timeout) as session:
            summary["sessionId"] = session.session_id
            try:
                if args.command == "publish":
                    stream = Publisher(session, args.name, video=not args.no_video, audio=not args.no_audio,
                                       codec=args.codec, file=args.file, width=args.width, height=args.height,
                                       fps=args.fps, record=args.record, custom=args.custom)
                    frames = None
                else:
                    stream = Player(session, args.name, codec=args.codec, custom=args.custom,
                                    inspect=args.decode)
                    frames = args.frames
                session.media.append(stream)
                await stream.start(args.timeout)
                print("ready " + json.dumps({"status": stream.status, "name": stream.name,
                                             "mediaSessionId": stream.media_session_id}),
                      file=sys.stderr, flush=True)
                await _until_stopped(stream, args.duration, frames)
                code = 0
            except ClientError as exc:
                summary["error"] = str(exc)
                code = 1
            finally:
                if stream is not None:
                    summary.update(await stream.stats())
                    try:  # the final status is the server's answer to the stop, when it gives one
                        await stream.stop(wait=True, timeout=5.0)
                    except ClientError as exc:
                        summary["stopError"] = str(exc)
                    summary["status"] = stream.status
    except ClientError as exc:
        summary["error"] = str(exc)
        summary["status"] = "FAILED"
        code = 1
    return code, summary


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code, summary = asyncio.run(_run(args))
    except (ValueError, OSError) as exc:  # a bad option value or file the parser could not see (codec vs file, sizes)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
