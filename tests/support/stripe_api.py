"""A local HTTP stand-in for the part of Stripe's API that `sync`, `replay` and the resolver read.

Serves Stripe-shaped lists (newest first, `limit`, `starting_after`, `has_more`), retrieves,
the filters we use, and injected faults (429 with or without `Stripe-Should-Retry`, 500, 401,
slow answers, dropped connections) and a rate cap, so that the real `stripe` library can be
run against it over real HTTP. It records when each request arrived and with which
`Stripe-Context`. It is the only stand-in in the suite: Stripe's servers are the one part
out of our control and unreachable here.
"""

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_KEY = "rk_test_standin0000000000000000"
RESOURCES = {
    "products": "product",
    "prices": "price",
    "subscriptions": "subscription",
    "invoices": "invoice",
    "plans": "plan",
    "events": "event",
}


@dataclass
class Fault:
    """Answer the next `times` requests whose path starts with `path` with `status`.

    Status 0 drops the connection without an answer; `delay_s` answers late.
    """

    path: str
    status: int
    times: int
    after_pages: int = 0  # let this many matching requests through first
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Request:
    """One request as the stand-in saw it."""

    at: float  # time.monotonic() on arrival
    path: str
    stripe_context: str | None


@dataclass
class StripeStandIn:
    objects: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {name: {} for name in RESOURCES}
    )
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    log: list[Request] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Above this many requests in the last second, answer 429 as Stripe's limiter does.
    max_rps: int | None = None
    _recent: deque[float] = field(default_factory=deque)

    def put(self, resource: str, obj: dict[str, Any]) -> None:
        """Add or replace an object; lists return them newest `created` first."""
        with self.lock:
            self.objects[resource][obj["id"]] = obj

    def remove(self, resource: str, object_id: str) -> None:
        with self.lock:
            self.objects[resource].pop(object_id, None)

    def fail(
        self,
        path: str,
        status: int,
        times: int = 1,
        after_pages: int = 0,
        *,
        headers: dict[str, str] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        with self.lock:
            self.faults.append(Fault(path, status, times, after_pages, headers or {}, delay_s))

    def pages_requested(self, resource: str) -> list[dict[str, list[str]]]:
        return [query for path, query in self.requests if path == f"/v1/{resource}"]

    def retrieves(self, resource: str) -> list[str]:
        """The ids of single `resource` objects asked for, in order."""
        prefix = f"/v1/{resource}/"
        return [path[len(prefix) :] for path, _ in self.requests if path.startswith(prefix)]

    def most_requests_in_a_second(self) -> int:
        """The most requests that arrived within any one second (a sliding window)."""
        with self.lock:
            times = sorted(request.at for request in self.log)
        most, start = 0, 0
        for end, moment in enumerate(times):
            while moment - times[start] >= 1.0:
                start += 1
            most = max(most, end - start + 1)
        return most

    # --- serving ---------------------------------------------------------------------

    def answer(
        self,
        path: str,
        query: dict[str, list[str]],
        auth: str | None,
        stripe_context: str | None = None,
    ) -> tuple[int, Any, dict[str, str], float]:
        """Status, body, extra headers and how long to wait before answering."""
        arrived = time.monotonic()
        with self.lock:
            self.requests.append((path, query))
            self.log.append(Request(arrived, path, stripe_context))
            if auth != f"Bearer {API_KEY}":
                return 401, _error("invalid_request_error", "Invalid API Key provided"), {}, 0
            if self.max_rps is not None:
                while self._recent and arrived - self._recent[0] >= 1.0:
                    self._recent.popleft()
                if len(self._recent) >= self.max_rps:
                    return 429, _fault_body(429), {}, 0
                self._recent.append(arrived)
            for fault in self.faults:
                if path.startswith(fault.path) and fault.times > 0:
                    if fault.after_pages > 0:
                        fault.after_pages -= 1
                        break
                    fault.times -= 1
                    if fault.status == 200:  # slow, but answered
                        return *self._resolve(path, query), {}, fault.delay_s
                    return fault.status, _fault_body(fault.status), fault.headers, fault.delay_s
            return *self._resolve(path, query), {}, 0

    def _resolve(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != "v1" or parts[1] not in RESOURCES:
            return 404, _error("invalid_request_error", f"Unrecognized request URL ({path})")
        resource = parts[1]
        if len(parts) == 3:
            obj = self.objects[resource].get(parts[2])
            if obj is None:
                return 404, _error(
                    "invalid_request_error", f"No such {RESOURCES[resource]}: '{parts[2]}'"
                )
            return 200, obj
        return 200, self._list(resource, query)

    def _list(self, resource: str, query: dict[str, list[str]]) -> dict[str, Any]:
        one = {key: values[-1] for key, values in query.items()}
        items = sorted(
            self.objects[resource].values(),
            key=lambda o: (o.get("created", 0), o["id"]),
            reverse=True,
        )
        status = one.get("status")
        if status and status != "all":
            items = [o for o in items if o.get("status") == status]
        elif resource == "subscriptions" and status is None:
            items = [o for o in items if o.get("status") != "canceled"]  # as Stripe does
        if "delivery_success" in one:
            wanted = one["delivery_success"] == "true"
            items = [o for o in items if o.get("_delivery_success", True) == wanted]
        if "created[gte]" in one:
            items = [o for o in items if o.get("created", 0) >= int(one["created[gte]"])]
        if "starting_after" in one:
            ids = [o["id"] for o in items]
            items = items[ids.index(one["starting_after"]) + 1 :]
        limit = int(one.get("limit", 10))
        page = [{k: v for k, v in o.items() if not k.startswith("_")} for o in items[:limit]]
        return {
            "object": "list",
            "url": f"/v1/{resource}",
            "has_more": len(items) > limit,
            "data": page,
        }


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


def _fault_body(status: int) -> dict[str, Any]:
    if status == 429:
        return _error("invalid_request_error", "Too many requests made to the API too quickly")
    if status == 401:
        return _error("invalid_request_error", "Invalid API Key provided")
    return _error("api_error", "Something went wrong on Stripe's end")


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        status, body, headers, delay_s = self.server.stand_in.answer(
            parts.path,
            parse_qs(parts.query),
            self.headers.get("Authorization"),
            self.headers.get("Stripe-Context"),
        )
        if delay_s:
            time.sleep(delay_s)
        if status == 0:  # a dropped connection: no answer at all
            self.close_connection = True
            self.connection.close()
            return
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stand_in: StripeStandIn


@contextmanager
def running_stand_in() -> Iterator[StripeStandIn]:
    """The stand-in, serving on a free loopback port until the block ends."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.stand_in = StripeStandIn(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.stand_in
    finally:
        server.shutdown()
        server.server_close()
