"""The listener's writer: a child process that parses and stores deliveries in batches.

The event loop reads, verifies the signature and answers; the writer process parses and
stores. In one process the two took turns on the GIL, so the database work (idempotency,
ordering, projections) never ran beside the HTTP work on the second core. The writer takes
whatever has queued up and commits it together (group commit), on SQLite, which has one
writer at a time, and on PostgreSQL alike, where several writers deadlock on shared rows and
were slower. A delivery is acknowledged only after its batch has committed.

The two talk over a socket pair in frames; `writer_process` is the other end. Should the
writer die, the deliveries waiting on it are answered 503 (Stripe retries them) and a new
writer is started.
"""

import asyncio
import itertools
import logging
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from finance_core.feed.events import Outcome
from webhook_listener.parsing import Rejected
from webhook_listener.supervisor import (
    STOP_TIMEOUT_S,
    GaveUp,
    Supervisor,
    end_process,
    stop_this_process,
)

log = logging.getLogger("webhook_listener")

# To the writer: request id, received at (µs since the epoch), body length; then the body.
REQUEST = struct.Struct("!QqI")
# From the writer: request id, reply code, lengths of two texts; then the texts.
REPLY = struct.Struct("!QBHI")
# The first request tells the writer its database URL.
SETUP_ID = 0


class Code:
    """Reply codes: an outcome (by its place in Outcome), or why there is none."""

    OUTCOMES = tuple(Outcome)
    DATABASE_UNAVAILABLE = len(OUTCOMES)  # texts: event id, ""
    INTERNAL_ERROR = DATABASE_UNAVAILABLE + 1  # texts: event id or "", ""
    REJECTED = INTERNAL_ERROR + 1  # texts: reason, message (not JSON, not an event)


@dataclass(frozen=True, slots=True)
class Stored:
    """What the writer did with a delivery."""

    outcome: Outcome
    event_id: str
    error: str | None


class WriterUnavailable(Exception):
    """The delivery was not stored: the database is unreachable or busy, or the writer died."""

    def __init__(self, message: str, event_id: str | None = None) -> None:
        super().__init__(message)
        self.event_id = event_id


class WriterError(Exception):
    """The writer hit an unexpected error on the delivery's batch (a bug, logged there)."""

    def __init__(self, event_id: str | None) -> None:
        super().__init__("unexpected error in the writer")
        self.event_id = event_id


def encode_request(request_id: int, received_at: datetime, body: bytes) -> bytes:
    micros = round(received_at.timestamp() * 1_000_000)
    return REQUEST.pack(request_id, micros, len(body)) + body


def decode_received_at(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


def encode_reply(request_id: int, code: int, first: str = "", second: str | None = None) -> bytes:
    one, two = first.encode(), (second or "").encode()
    return REPLY.pack(request_id, code, len(one), len(two)) + one + two


class BatchWriter:
    """Hands verified deliveries to the writer process and waits for its replies."""

    def __init__(
        self,
        database_url: str,
        *,
        log_level: int = logging.INFO,
        on_give_up: Callable[[GaveUp], None] = stop_this_process,
    ) -> None:
        self._supervisor = Supervisor("writer process", on_give_up=on_give_up)
        self._database_url = database_url
        self._log_level = log_level
        self._ids = itertools.count(SETUP_ID + 1)
        self._pending: dict[int, asyncio.Future[Stored]] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._stream: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        """The writer process's id (None before start)."""
        return self._process.pid if self._process else None

    @property
    def started(self) -> bool:
        """Whether a writer process was started (the store is open)."""
        return self._process is not None

    @property
    def running(self) -> bool:
        """Whether deliveries can be handed over now (false while a dead writer is replaced)."""
        return self._stream is not None and not self._stream.is_closing()

    async def start(self) -> None:
        """Start the writer process; deliveries may be handed over at once."""
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "webhook_listener.writer_process",
                    str(theirs.fileno()),
                    logging.getLevelName(self._log_level),
                ],
                pass_fds=[theirs.fileno()],
            )
        reader, self._stream = await asyncio.open_connection(sock=ours)
        # The URL may hold a password: it goes over the socket, never on a command line.
        setup = encode_request(SETUP_ID, datetime.now(UTC), self._database_url.encode())
        self._stream.write(setup)
        self._reader_task = asyncio.create_task(self._read_replies(reader, self._process))
        self._supervisor.started()

    async def stop(self) -> None:
        """Let the writer store and answer what it was given, then end it."""
        self._stopping = True
        if self._stream is not None and not self._stream.is_closing():
            self._stream.write_eof()  # the writer finishes, answers, and exits
        if self._reader_task is not None:
            await asyncio.wait([self._reader_task], timeout=STOP_TIMEOUT_S)
        if self._stream is not None:
            self._stream.close()
        if self._process is not None:
            await asyncio.to_thread(end_process, self._process, "writer process")

    async def store(self, received_at: datetime, body: bytes) -> Stored:
        """Parse and store one verified delivery; returns once it is committed.

        Raises Rejected for a body that is not a Stripe event, WriterUnavailable when it
        could not be stored now, WriterError on a bug.
        """
        stream = self._stream
        if stream is None or stream.is_closing():
            if self._process is None:  # not started: the database did not answer yet
                raise WriterUnavailable("the store is not open yet")
            raise WriterUnavailable("the writer is restarting")
        request_id = next(self._ids)
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            stream.write(encode_request(request_id, received_at, body))
            await stream.drain()
            return await future
        except ConnectionError:  # the writer died while this was being handed over
            raise WriterUnavailable("the writer process ended") from None
        finally:
            self._pending.pop(request_id, None)

    async def _read_replies(
        self, reader: asyncio.StreamReader, process: subprocess.Popen[bytes]
    ) -> None:
        try:
            while True:
                request_id, code, first, second = REPLY.unpack(await reader.readexactly(REPLY.size))
                texts = await reader.readexactly(first + second)
                future = self._pending.get(request_id)
                if future is not None and not future.done():
                    _settle(future, code, texts[:first].decode(), texts[first:].decode())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the writer ended
        # In one step, so that no delivery is handed over in between and left waiting.
        self._fail_pending("the writer process ended")
        if self._stream is not None:
            self._stream.close()
        if self._stopping:
            return
        await asyncio.to_thread(end_process, process, "writer process")
        await self._supervisor.restart(
            self._start_unless_stopping, f"exit code {process.returncode}"
        )

    async def _start_unless_stopping(self) -> None:
        if not self._stopping:
            await self.start()

    def _fail_pending(self, message: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WriterUnavailable(message))


def _settle(future: "asyncio.Future[Stored]", code: int, first: str, second: str) -> None:
    if code < Code.DATABASE_UNAVAILABLE:
        future.set_result(Stored(Code.OUTCOMES[code], first, second or None))
    elif code == Code.DATABASE_UNAVAILABLE:
        future.set_exception(WriterUnavailable("the database is unavailable", first or None))
    elif code == Code.REJECTED:
        future.set_exception(Rejected(first, second))
    else:
        future.set_exception(WriterError(first or None))
