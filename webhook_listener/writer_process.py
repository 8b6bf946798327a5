"""The writer process the listener starts: parses and stores verified deliveries in batches.

`python -m webhook_listener.writer_process FD LEVEL`, FD being its end of a socket pair (the
frames are in `writer.py`). It takes whatever deliveries have arrived, up to MAX_BATCH, in
order, stores them in one transaction (`finance_core.feed.ingest.ingest_batch`), answers each,
and exits once the listener closes its end or dies.
"""

import logging
import signal
import socket
import sys
from collections import deque

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from finance_core.feed.ingest import Delivery, ingest_batch
from finance_core.log_text import loggable
from finance_core.store.db import make_engine
from webhook_listener.parsing import Rejected, parse_event
from webhook_listener.writer import (
    REQUEST,
    SETUP_ID,
    Code,
    decode_received_at,
    encode_reply,
)

log = logging.getLogger("webhook_listener.writer")
MAX_BATCH = 64
RECEIVE_BYTES = 1 << 20
Frame = tuple[int, int, bytes]  # request id, received at (µs since the epoch), body


def main() -> int:
    channel_fd, level = int(sys.argv[1]), sys.argv[2]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Ctrl-C, and a service manager's SIGTERM, reach the whole process group: the listener
    # answers what it has taken in, then ends the writer (EOF on the socket; a kill if stuck).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    frames = FrameReader(socket.socket(fileno=channel_fd))
    setup = frames.batch(1)
    if not setup or setup[0][0] != SETUP_ID:
        return 0  # the listener went away before saying where to write
    engine = make_engine(setup[0][2].decode())
    try:
        while (batch := frames.batch(MAX_BATCH)) is not None:
            frames.send(store(engine, batch))
    except ConnectionError:
        log.warning("the listener went away; its unanswered deliveries will be redelivered")
    finally:
        engine.dispose()
    return 0


class FrameReader:
    """Request frames off the socket, in order, as many at a time as have arrived."""

    def __init__(self, channel: socket.socket) -> None:
        self._channel = channel
        self._buffer = bytearray()
        self._frames: deque[Frame] = deque()

    def batch(self, limit: int) -> list[Frame] | None:
        """Up to `limit` frames, waiting for the first; None once the listener closed its end."""
        while not self._frames:
            if not self._receive(block=True):
                return None
        if len(self._frames) < limit:
            self._receive(block=False)
        return [self._frames.popleft() for _ in range(min(limit, len(self._frames)))]

    def send(self, data: bytes) -> None:
        self._channel.sendall(data)

    def _receive(self, *, block: bool) -> bool:
        """Read what has arrived (waiting for something if `block`); False at the end."""
        try:
            data = self._channel.recv(RECEIVE_BYTES, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        if not data:
            return False
        buffer = self._buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= REQUEST.size:
            request_id, micros, length = REQUEST.unpack_from(buffer, offset)
            end = offset + REQUEST.size + length
            if end > len(buffer):
                break
            self._frames.append((request_id, micros, bytes(buffer[offset + REQUEST.size : end])))
            offset = end
        del buffer[:offset]
        return True


def store(engine: Engine, batch: list[Frame]) -> bytes:
    """Parse and store a batch of verified deliveries; the reply frames, in the same order."""
    replies: list[bytes] = []
    deliveries: list[tuple[int, Delivery]] = []
    for request_id, micros, body in batch:
        text = body.decode()  # UTF-8, checked by the listener
        received_at = decode_received_at(micros)
        try:
            event = parse_event(text, received_at)
        except Rejected as rejection:
            replies.append(
                encode_reply(request_id, Code.REJECTED, rejection.reason, str(rejection))
            )
            continue
        except Exception:  # a bug met by this body alone: it gets a 500, the batch goes on
            log.exception("unexpected error while reading one delivery")
            replies.append(encode_reply(request_id, Code.INTERNAL_ERROR, ""))
            continue
        deliveries.append((request_id, Delivery(event, received_at, text)))
    if not deliveries:
        return b"".join(replies)
    ids = [request_id for request_id, _ in deliveries]
    events = [delivery.event.id for _, delivery in deliveries]
    try:
        results = ingest_batch(engine=engine, deliveries=[d for _, d in deliveries])
    except SQLAlchemyError:  # unreachable, busy or refusing: Stripe retries on the 503
        log.exception(
            "database error while storing %d events: %s", len(events), [loggable(e) for e in events]
        )
        code = Code.DATABASE_UNAVAILABLE
        replies.extend(encode_reply(i, code, event) for i, event in zip(ids, events, strict=True))
    except Exception:  # a bug: answered 500, and Stripe retries
        log.exception(
            "unexpected error while storing %d events: %s",
            len(events),
            [loggable(e) for e in events],
        )
        code = Code.INTERNAL_ERROR
        replies.extend(encode_reply(i, code, event) for i, event in zip(ids, events, strict=True))
    else:
        replies.extend(
            encode_reply(i, Code.OUTCOMES.index(r.outcome), r.event_id, r.error)
            for i, r in zip(ids, results, strict=True)
        )
    return b"".join(replies)


if __name__ == "__main__":
    sys.exit(main())
