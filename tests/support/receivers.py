"""Real local ends for alert channels: an HTTP receiver for Apprise's json://, an SMTP server
(aiosmtpd) for mailto://, and a socket that accepts and never answers."""

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.support.postgres import free_port
from tests.support.waiting import NotWithin, wait_until

SMTP_USER, SMTP_PASSWORD = "alerts", "smtp-pass-0b6f2c9d41"


@dataclass
class JsonReceiver:
    """What Apprise posted (path, headers, JSON body), answering with `statuses` in turn."""

    port: int
    statuses: list[int] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "hooks/finance", credentials: str = "") -> str:
        at = f"{credentials}@" if credentials else ""
        return f"json://{at}127.0.0.1:{self.port}/{path}"

    def messages(self) -> list[str]:
        """Title and message of each post that was answered 2xx."""
        with self.lock:
            return [f"{p['body']['title']}\n{p['body']['message']}" for p in self.posts if p["ok"]]

    def wait_for(self, count: int, timeout: float = 30) -> list[str]:
        return wait_for(lambda: self.messages(), count, timeout)


class _JsonHandler(BaseHTTPRequestHandler):
    server: "_JsonServer"

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with receiver.lock:
            status = receiver.statuses.pop(0) if receiver.statuses else 200
            receiver.posts.append(
                {"path": self.path, "headers": dict(self.headers), "body": body, "ok": status < 300}
            )
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _JsonServer(ThreadingHTTPServer):
    daemon_threads = True
    receiver: JsonReceiver


@contextmanager
def json_receiver(statuses: list[int] | None = None) -> Iterator[JsonReceiver]:
    """An HTTP server on a free loopback port until the block ends."""
    server = _JsonServer(("127.0.0.1", 0), _JsonHandler)
    server.receiver = JsonReceiver(server.server_address[1], list(statuses or []))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class SmtpReceiver:
    """The mails an aiosmtpd server took, after a login with SMTP_USER and SMTP_PASSWORD."""

    port: int
    mails: list[str] = field(default_factory=list)

    def url(self) -> str:
        return (
            f"mailto://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{self.port}"
            "?from=alerts@example.com&to=finance-oncall@example.com&mode=insecure"
        )

    def wait_for(self, count: int, timeout: float = 30) -> list[str]:
        return wait_for(lambda: list(self.mails), count, timeout)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(envelope.content.decode("utf-8", "replace"))
        return "250 Message accepted"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = data.login == SMTP_USER.encode() and data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok)


@contextmanager
def smtp_receiver() -> Iterator[SmtpReceiver]:
    """An SMTP server with AUTH (no TLS: loopback only) until the block ends."""
    receiver = SmtpReceiver(free_port())
    controller = Controller(
        receiver,
        hostname="127.0.0.1",
        port=receiver.port,
        authenticator=_authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()


@dataclass
class HangingChannel:
    """A port that accepts connections and never answers them."""

    port: int
    accepted: int = 0

    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/never"


@contextmanager
def hanging_channel() -> Iterator[HangingChannel]:
    listener = socket.create_server(("127.0.0.1", 0))
    channel = HangingChannel(listener.getsockname()[1])
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(connection)  # kept open, never read or answered
            channel.accepted += 1

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield channel
    finally:
        stopping.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        listener.close()


def wait_for(read: Callable[[], list[str]], count: int, timeout: float) -> list[str]:
    """`read()` once it holds at least `count` items; what it holds at the timeout otherwise."""
    try:
        return wait_until(lambda: items if len(items := read()) >= count else None, timeout=timeout)
    except NotWithin:
        return read()
