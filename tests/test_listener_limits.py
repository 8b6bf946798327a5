"""What one client may hold of a running listener (SPEC 18): header size, the time to send a
request, and a 413 that reaches the client instead of a connection reset."""

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import stripe_factory as sf
from tests.support.servers import ListenerProcess
from webhook_listener.http_limits import MAX_HEADER_BYTES

pytestmark = pytest.mark.slow
HEADER_TIMEOUT_S, BODY_TIMEOUT_S = 1.0, 2.0


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ListenerProcess]:
    path = tmp_path_factory.mktemp("limits") / "finance.db"
    process = ListenerProcess(
        f"sqlite:///{path}",
        "--header-timeout",
        str(HEADER_TIMEOUT_S),
        "--body-timeout",
        str(BODY_TIMEOUT_S),
        "--jobs",
        "none",
    ).start()
    yield process
    process.stop()


def connect(listener: ListenerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", listener.port), timeout=30)


def answer_and_close(conn: socket.socket) -> tuple[bytes, float]:
    """Everything the listener sends until it closes, and how long that took."""
    started, received = time.monotonic(), b""
    while chunk := conn.recv(65536):
        received += chunk
    return received, time.monotonic() - started


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_huge_headers_get_431_and_do_not_grow_the_listener(listener: ListenerProcess) -> None:
    assert listener.process is not None
    before = rss_kib(listener.process.pid)
    for _ in range(4):
        with connect(listener) as conn:
            conn.sendall(b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nStripe-Signature: ")
            sent = 0
            try:
                while sent < 64 * 1024 * 1024:
                    conn.sendall(b"t" * 65536)
                    sent += 65536
            except (BrokenPipeError, ConnectionResetError):
                pass  # the listener stopped reading: what we want
            try:
                received, _ = answer_and_close(conn)
            except ConnectionResetError:
                received = b""
            assert sent < 64 * 1024 * 1024, "the listener read a 64 MB header"
            if received:
                assert received.startswith(b"HTTP/1.1 431 ")
    assert rss_kib(listener.process.pid) - before < 32 * 1024


def test_headers_just_under_the_bound_are_taken(listener: ListenerProcess) -> None:
    body, headers = sf.signed(sf.event("product.created", sf.product("prod_lim", "Limits")))
    headers["X-Padding"] = "p" * (MAX_HEADER_BYTES - 2048)
    response = httpx.post(f"{listener.url}/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200, response.text


def test_a_client_that_sends_headers_slowly_is_cut_off(listener: ListenerProcess) -> None:
    with connect(listener) as conn:
        conn.sendall(b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\n")
        received, waited = answer_and_close(conn)
    assert received.startswith(b"HTTP/1.1 408 ")
    assert HEADER_TIMEOUT_S * 0.9 <= waited < HEADER_TIMEOUT_S + 10


def test_a_client_that_sends_its_body_slowly_is_cut_off(listener: ListenerProcess) -> None:
    with connect(listener) as conn:
        conn.sendall(
            b'POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"id":'
        )
        received, waited = answer_and_close(conn)
    assert b" 408 " in received.split(b"\r\n", 1)[0] or received == b""
    assert waited < BODY_TIMEOUT_S + 10


def test_a_body_over_the_limit_gets_its_413(listener: ListenerProcess) -> None:
    body = b"{" + b" " * (1024 * 1024 + 1024) + b"}"
    with httpx.Client(timeout=30) as client:
        for _ in range(8):
            response = client.post(
                f"{listener.url}/webhooks/stripe",
                content=body,
                headers={"Stripe-Signature": sf.signature_header(body)},
            )
            assert response.status_code == 413
            assert response.json()["error"] == "body_too_large"


def test_ordinary_deliveries_keep_alive_across_requests(listener: ListenerProcess) -> None:
    with httpx.Client(timeout=30) as client:
        for n in range(3):
            body, headers = sf.signed(sf.event("product.created", sf.product(f"prod_ka{n}", "K")))
            response = client.post(f"{listener.url}/webhooks/stripe", content=body, headers=headers)
            assert response.status_code == 200
            time.sleep(0)  # same connection: httpx keeps it alive
