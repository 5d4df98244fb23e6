"""The operator's console on the local API: the page, its live events, the metrics and the
session history.

- `GET /`                         the page (static/index.html, console.js, console.css and the
                                  vendored uPlot, all package data: it works offline)
- `GET /static/...`               its assets
- `GET /api/events`               server-sent events: `snapshot` (the body of GET /api/status)
                                  at once, then on every status change and, while anything
                                  measured changes, at most every MEASUREMENT_INTERVAL;
                                  `frames` (the OCPP message log: the last ones first, then
                                  each as it is written, with how many a slow client lost);
                                  `configuration` at once and when a key changes;
                                  `trend` at once: the last hour of each gun's measurements
- `GET /api/configuration`        the configuration keys (write-only ones left out)
- `GET /api/transactions`         the session history, newest first (`?limit=`, default
                                  DEFAULT_LIMIT); CSV with `?format=csv` or `Accept: text/csv`
- `GET /api/transactions/{id}/meter-values`   one session with its readings as points
- `GET /metrics`                  Prometheus' text format, or OpenMetrics when asked for
                                  (`dcocpp.api.metrics`)

An event stream never holds the station back: the station only sets flags and appends to each
stream's bounded buffer (`dcocpp.api.feed`); the stream does the rest in its own task.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from importlib.resources import files
from typing import Any, Protocol

import trio
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from dcocpp.api.answers import Reject, answering
from dcocpp.api.feed import TREND_INTERVAL, Feed
from dcocpp.api.metrics import registry_for
from dcocpp.storage.database import StorageError

log = logging.getLogger(__name__)

# The cookie the page's `?token=` is kept in (HttpOnly: the page's script never sees it).
COOKIE = "dcocpp_api_token"
# The header the page sends with its POSTs: a request that carries the cookie must carry it
# too, and no other site can make a browser add it (it needs a CORS preflight the API never
# answers), so a page elsewhere cannot drive the charger with the operator's cookie.
CONSOLE_HEADER = "X-Dcocpp-Console"
MEASUREMENT_INTERVAL = 0.5  # seconds between two measurement updates, at most
KEEPALIVE = 15.0  # a comment line this often keeps proxies from closing a quiet stream
MAX_EVENT_STREAMS = 8  # open at once; one more is answered 503
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
CSV_FIELDS = (
    "id",
    "transactionId",
    "connectorId",
    "idTag",
    "startedAt",
    "stoppedAt",
    "reason",
    "meterStartWh",
    "meterStopWh",
    "energyWh",
    "durationS",
    "peakKw",
    "averageKw",
)


class ConsoleView(Protocol):
    """What the console needs of the station (part of the API's `StationView`)."""

    @property
    def feed(self) -> Feed: ...

    def snapshot(self) -> dict[str, Any]: ...

    def link_counters(self) -> dict[str, Any]: ...

    def configuration(self) -> list[dict[str, Any]]: ...

    async def transactions(self, limit: int) -> list[dict[str, Any]]: ...

    async def transaction_meter_values(self, session_id: int) -> dict[str, Any]: ...


def console_routes(view: ConsoleView, *, token: str | None) -> list[BaseRoute]:
    """The console's routes (see the module docstring). With a `token`, `GET /?token=...`
    (checked by the API's authentication before it gets here) sets the token's cookie and
    sends the browser on to `/`, so the token leaves the address bar."""
    page_html = (files(__package__) / "static" / "index.html").read_text("utf-8")
    registry = registry_for(view)

    async def page(request: Request) -> Response:
        if token is not None and "token" in request.query_params:
            moved = RedirectResponse("/", status_code=303)
            moved.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
            return moved
        return HTMLResponse(page_html, headers={"Cache-Control": "no-store"})

    async def events(request: Request) -> Response:
        if view.feed.streams >= MAX_EVENT_STREAMS:
            raise Reject(503, f"busy: {MAX_EVENT_STREAMS} event streams open; try again")
        return StreamingResponse(
            _events(view),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def metrics(request: Request) -> Response:
        # The format the scraper asks for (Prometheus' text format, or OpenMetrics).
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), headers={"Content-Type": content_type})

    async def configuration(request: Request) -> Response:
        return JSONResponse(view.configuration())

    async def transactions(request: Request) -> Response:
        limit = _limit(request)
        wants_csv = request.query_params.get("format") == "csv" or (
            "format" not in request.query_params and "text/csv" in request.headers.get("accept", "")
        )
        if request.query_params.get("format") not in (None, "csv", "json"):
            raise Reject(422, "format must be json or csv")
        try:
            rows = await view.transactions(limit)
        except (StorageError, ValueError) as exc:
            raise Reject(503, str(exc)) from None
        if wants_csv:
            return Response(
                _csv(rows),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="transactions.csv"'},
            )
        return JSONResponse(rows)

    async def meter_values(request: Request) -> Response:
        raw = request.path_params["session_id"]
        if not raw.isdigit() or len(raw) > 18:
            raise Reject(404, f"no transaction {raw!r} in the history")
        try:
            return JSONResponse(await view.transaction_meter_values(int(raw)))
        except KeyError:
            raise Reject(404, f"no transaction {raw} in the history") from None
        except (StorageError, ValueError) as exc:
            raise Reject(503, str(exc)) from None

    static = StaticFiles(packages=[(__package__, "static")])
    return [
        Route("/", answering(page), methods=["GET"]),
        Route("/api/events", answering(events), methods=["GET"]),
        Route("/api/configuration", answering(configuration), methods=["GET"]),
        Route("/api/transactions", answering(transactions), methods=["GET"]),
        Route(
            "/api/transactions/{session_id}/meter-values",
            answering(meter_values),
            methods=["GET"],
        ),
        Route("/metrics", answering(metrics), methods=["GET"]),
        Mount("/static", static, name="static"),
    ]


async def record_trend(view: ConsoleView) -> None:
    """Sample the guns' measurements into the feed's trend every TREND_INTERVAL, until
    cancelled (runs beside the API's server). A snapshot that fails is logged and the
    sampling goes on: the plots must not take the charger down."""
    while True:
        try:
            view.feed.sample(view.snapshot(), time.time())
        except Exception:
            log.exception("console: the guns' measurements not sampled for the plots")
        await trio.sleep(TREND_INTERVAL)


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise Reject(422, f"limit must be a whole number from 1 to {MAX_LIMIT}, got {raw!r}")
    return int(raw)


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _event(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _events(view: ConsoleView) -> AsyncIterator[str]:
    """One client's event stream (see the module docstring); ends when the client goes."""
    with view.feed.stream() as stream:
        # Taken before the first yield: every later frame is in the stream's buffer, once.
        frames = view.feed.history()
        trend = view.feed.trend()
        shown = view.snapshot()
        keys = view.configuration()
        yield "retry: 2000\n\n"  # how soon the browser reconnects after a break
        yield _event("snapshot", shown)
        yield _event("configuration", keys)
        yield _event("frames", {"frames": frames, "dropped": 0})
        yield _event("trend", trend)
        next_look = trio.current_time() + MEASUREMENT_INTERVAL
        quiet_since = trio.current_time()
        while True:
            with trio.move_on_at(next_look):
                await stream.wait()
            sent = False
            frames, dropped = stream.take_frames()
            if frames or dropped:
                yield _event("frames", {"frames": frames, "dropped": dropped})
                sent = True
            now = trio.current_time()
            due = now >= next_look
            if stream.take_changed() or due:
                snapshot = view.snapshot()
                if snapshot != shown:
                    shown = snapshot
                    yield _event("snapshot", snapshot)
                    sent = True
            if due:
                next_look = now + MEASUREMENT_INTERVAL
                latest = view.configuration()
                if latest != keys:
                    keys = latest
                    yield _event("configuration", keys)
                    sent = True
            if sent:
                quiet_since = now
            elif now - quiet_since >= KEEPALIVE:
                quiet_since = now
                yield ": keepalive\n\n"
