"""What one client may hold of the listener: header size, time to send a request, connections.

uvicorn's httptools protocol buffers headers without a bound and waits for them for ever: four
requests with a 64 MB `Stripe-Signature` header took a listener from 102 to 766 MB, and a
client that sends its headers slowly held a connection open indefinitely. This protocol keeps
uvicorn's parser and request cycle and adds the bounds (SPEC 18): past `MAX_HEADER_BYTES` a
request is answered 431 and its connection closed; a request whose headers, or whose body,
do not arrive in time is answered 408 and closed. The number of connections is bounded by
uvicorn's own `limit_concurrency` (503 past it).
"""

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 1000


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded headers and request times."""

    header_timeout_s = HEADER_TIMEOUT_S
    body_timeout_s = BODY_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_headers = True
        self._header_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_headers:
            if self._deadline is None:  # a keep-alive connection's next request begins
                self._set_deadline(self.header_timeout_s)
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES and not self._headers_fit(data):
                self._refuse(431, "Request Header Fields Too Large")
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._set_deadline(self.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._expect_headers()
        self._cancel_deadline()  # started again by the next request's first bytes
        super().on_message_complete()

    def _headers_fit(self, data: bytes) -> bool:
        """Whether the headers end within the limit though this chunk carries body past it."""
        end = data.find(b"\r\n\r\n")
        return end >= 0 and self._header_bytes - len(data) + end + 4 <= MAX_HEADER_BYTES

    def _expect_headers(self) -> None:
        self._reading_headers = True
        self._header_bytes = 0
        self._set_deadline(self.header_timeout_s)

    def _set_deadline(self, seconds: float) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.cycle is not None and self.cycle.response_started:
            return  # answering already: the app's own time, not the client's
        if not self._reading_headers or self._header_bytes:
            self._refuse(408, "Request Timeout")
        else:
            self.transport.close()  # an idle connection that never began a request

    def _refuse(self, status: int, reason: str) -> None:
        """Answer `status` and close, without reading more of what the client sends."""
        self._cancel_deadline()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's receive() says http.disconnect
            self.cycle.message_event.set()
        body = reason.encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        if not self.transport.is_closing():
            self.transport.write(head + body)
            self.transport.close()


def bounded_protocol(
    *, header_timeout_s: float = HEADER_TIMEOUT_S, body_timeout_s: float = BODY_TIMEOUT_S
) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http` setting, with these timeouts."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s},
    )
