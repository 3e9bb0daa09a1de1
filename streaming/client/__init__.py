"""A test client of the WebSDK protocol: a session over WebSocket, publishing and playing with aiortc.

    async with Session.connect("ws://127.0.0.1:8080") as session:
        publisher = await session.publish("cam1", codec="H264")
        player = await session.play("cam1")
        await player.wait_frames(30, timeout=10)
        print(await player.stats())

`python -m streaming.client publish|play ...` is the same from a shell.
"""

from .session import (
    ClientError,
    ConnectionRefused,
    Session,
    SessionClosed,
    StreamFailed,
    StreamSignal,
    WaitTimeout,
)
from .webrtc import Player, Publisher, use_ice_addresses

__all__ = [
    "ClientError", "ConnectionRefused", "Player", "Publisher", "Session", "SessionClosed", "StreamFailed",
    "StreamSignal", "WaitTimeout", "use_ice_addresses",
]
