"""A TCP proxy in front of a test's redis-server that delays the replies to scripts."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from scripts.processes import free_port


class ScriptReplyDelay:
    """A TCP proxy in front of Redis that holds the reply to every EVAL/EVALSHA for ``delay``
    seconds once :meth:`arm` is called: the script runs in Redis at once, its answer comes late.

    That is a Redis (or network) that applied a write but whose reply the client gave up on,
    which no signal to redis-server can produce: a paused or frozen Redis runs nothing, and
    drops the command of a client that disconnects meanwhile.
    """

    def __init__(self, target_port: int, delay: float):
        self.target_port = target_port
        self.delay = delay
        self.port = free_port()
        self.armed = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> ScriptReplyDelay:
        self._thread.start()
        serve = asyncio.start_server(self._connection, "127.0.0.1", self.port)
        asyncio.run_coroutine_threadsafe(serve, self._loop).result(10)
        return self

    def arm(self) -> None:
        self.armed.set()

    async def _connection(self, client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        scripts = asyncio.Queue()  # one entry per request chunk: hold its reply?

        async def upstream() -> None:
            while data := await client_reader.read(65536):
                scripts.put_nowait(self.armed.is_set() and b"EVAL" in data[:64].upper())
                server_writer.write(data)
                await server_writer.drain()
            server_writer.close()

        async def downstream() -> None:
            while data := await server_reader.read(65536):
                hold = False
                while not scripts.empty():
                    hold = scripts.get_nowait() or hold
                if hold:
                    await asyncio.sleep(self.delay)
                client_writer.write(data)
                await client_writer.drain()
            client_writer.close()

        with contextlib.suppress(OSError):
            await asyncio.gather(upstream(), downstream())

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
