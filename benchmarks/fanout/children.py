"""Worker processes of the fan-out benchmarks, driven over a pipe: the driver's side (Child, call_all)
and the worker's command loop (serve). A command is {"op": name, "args": {...}}; the worker answers
each with a dict, or {"error", "trace"} when its `op_<name>` raised."""

from __future__ import annotations

import asyncio
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any


class BenchError(RuntimeError):
    pass


class Child:
    """A process driven over a pipe: send a command, wait (bounded) for its answer."""

    def __init__(self, ctx: Any, name: str, target: Any, *args: Any):
        self.name = name
        self.conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(theirs, *args), name=name, daemon=True)
        self.proc.start()
        theirs.close()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def send(self, op: str, **args: Any) -> None:
        self.conn.send({"op": op, "args": args})

    def answer(self, timeout: float, what: str) -> dict[str, Any]:
        if not self.conn.poll(timeout):
            raise BenchError(f"{self.name}: no answer to {what} within {timeout:g} s")
        reply: dict[str, Any] = self.conn.recv()
        if "error" in reply:
            raise BenchError(f"{self.name}: {what} failed: {reply['error']}\n{reply.get('trace', '')}")
        return reply

    def call(self, op: str, limit: float, **args: Any) -> dict[str, Any]:
        self.send(op, **args)
        return self.answer(limit, op)

    def stop(self) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send({"op": "exit"})
            except OSError:
                pass
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.conn.close()


def call_all(children: list[Child], op: str, timeout: float, args: list[dict[str, Any]] | None = None
             ) -> list[dict[str, Any]]:
    """The same command to several children at once; their answers in order."""
    for i, child in enumerate(children):
        child.send(op, **(args[i] if args else {}))
    deadline = time.monotonic() + timeout
    return [child.answer(max(0.0, deadline - time.monotonic()), op) for child in children]


async def serve(conn: Connection, worker: Any) -> None:
    """The worker's side: run `worker.op_<op>(**args)` for each command until "exit" or the pipe
    closes, answer each, then `worker.op_close()`."""
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def readable() -> None:
        try:
            while conn.poll():
                commands.put_nowait(conn.recv())
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            commands.put_nowait(None)

    loop.add_reader(conn.fileno(), readable)
    try:
        while True:
            command = await commands.get()
            if command is None or command["op"] == "exit":
                break
            try:
                reply = await getattr(worker, "op_" + command["op"])(**command.get("args", {}))
            except Exception as exc:  # reported to the driver, which decides
                reply = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
            conn.send(reply)
    finally:
        await worker.op_close()
