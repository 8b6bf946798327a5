"""A local HTTP stand-in for the part of Stripe's API that `sync`, `replay` and the resolver read.

Serves Stripe-shaped lists (newest first, `limit`, `starting_after`, `has_more`), retrieves,
the filters we use, and injected faults (429 with or without `Stripe-Should-Retry`, 500, 401,
slow answers, dropped connections) and a rate cap, so that the real `stripe` library can be
run against it over real HTTP. It records when each request arrived and with which
`Stripe-Context`. For the feed check it also serves webhook endpoints
(`/v1/webhook_endpoints`), event destinations (`/v2/core/event_destinations`, v2's list shape,
`webhook_endpoint.url` only with `include`) and events by `delivery_success`, and answers 403
as Stripe answers a restricted key without the permission. It is the only stand-in in the
suite: Stripe's servers are the one part out of our control and unreachable here.
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
    "webhook_endpoints": "webhook_endpoint",
    "event_destinations": "v2.core.event_destination",
}
V2_RESOURCES = {"core/event_destinations": "event_destinations"}
# The permission Stripe names in a restricted key's 403, by path.
PERMISSIONS = {
    "/v1/webhook_endpoints": "rak_webhook_read",
    "/v2/core/event_destinations": "rak_webhook_read",
    "/v1/events": "rak_event_read",
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
                    body = _fault_body(fault.status, path)
                    return fault.status, body, fault.headers, fault.delay_s
            return *self._resolve(path, query), {}, 0

    def _resolve(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        if path.startswith("/v2/"):
            return self._resolve_v2(path, query)
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

    def _resolve_v2(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        resource = V2_RESOURCES.get(path.removeprefix("/v2/").strip("/"))
        if resource is None:
            return 404, _error("invalid_request_error", f"Unrecognized request URL ({path})")
        included = {
            value for key, values in query.items() if key.startswith("include") for value in values
        }
        items = sorted(self.objects[resource].values(), key=lambda o: o["id"])
        data = []
        for item in items:
            shown = json.loads(json.dumps(item))
            endpoint = shown.get("webhook_endpoint")
            if endpoint is not None and "webhook_endpoint.url" not in included:
                endpoint["url"] = None  # Stripe returns it only when asked with `include`
            data.append(shown)
        # One page: v2 lists page by `next_page_url`, which the library follows.
        return 200, {"data": data, "next_page_url": None, "previous_page_url": None}

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


def _fault_body(status: int, path: str = "") -> dict[str, Any]:
    if status == 403:  # what Stripe answers a restricted key without the permission
        permission = next(
            (name for prefix, name in PERMISSIONS.items() if path.startswith(prefix)), "rak_read"
        )
        return _error(
            "invalid_request_error",
            f"The provided key 'rk_test_*****0000' does not have the required permissions for "
            f"this endpoint on account 'acct_standin'. Having the {permission} permission "
            "would allow this request to continue.",
        )
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


class _KeepAliveHandler(_Handler):
    protocol_version = "HTTP/1.1"  # a connection serves one request after another, as Stripe's


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stand_in: StripeStandIn


@contextmanager
def running_stand_in(*, keep_alive: bool = False) -> Iterator[StripeStandIn]:
    """The stand-in, serving on a free loopback port until the block ends.

    `keep_alive` keeps each connection open for the next request (HTTP/1.1), as Stripe's API
    does; by default every answer closes its connection.
    """
    server = _Server(("127.0.0.1", 0), _KeepAliveHandler if keep_alive else _Handler)
    server.stand_in = StripeStandIn(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.stand_in
    finally:
        server.shutdown()
        server.server_close()


def webhook_endpoint(
    endpoint_id: str,
    url: str,
    enabled_events: list[str],
    *,
    status: str = "enabled",
    api_version: str | None = "2026-10-28.endive",
) -> dict[str, Any]:
    """A webhook endpoint as `GET /v1/webhook_endpoints` lists it (stripe.WebhookEndpoint)."""
    return {
        "id": endpoint_id,
        "object": "webhook_endpoint",
        "api_version": api_version,
        "application": None,
        "created": 1_764_000_000,
        "description": None,
        "enabled_events": enabled_events,
        "livemode": False,
        "metadata": {},
        "status": status,
        "url": url,
    }


def event_destination(
    destination_id: str,
    url: str,
    enabled_events: list[str],
    *,
    payload: str = "thin",
    status: str = "enabled",
    disabled_reason: str | None = None,
    snapshot_api_version: str | None = None,
) -> dict[str, Any]:
    """An event destination as `GET /v2/core/event_destinations` lists it
    (stripe.v2.core.EventDestination), `webhook_endpoint.url` included."""
    return {
        "id": destination_id,
        "object": "v2.core.event_destination",
        "amazon_eventbridge": None,
        "azure_event_grid": None,
        "created": "2026-11-01T10:00:00.000Z",
        "description": "finance listener",
        "enabled_events": enabled_events,
        "event_payload": payload,
        "events_from": ["@self"],
        "livemode": False,
        "metadata": {},
        "name": "finance",
        "snapshot_api_version": snapshot_api_version if payload == "snapshot" else None,
        "status": status,
        "status_details": (
            {"disabled": {"reason": disabled_reason}} if disabled_reason is not None else None
        ),
        "type": "webhook_endpoint",
        "updated": "2026-11-01T10:00:00.000Z",
        "webhook_endpoint": {"signing_secret": None, "url": url},
    }
