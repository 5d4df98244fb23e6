"""The local HTTP API: watch the charger and drive the simulator.

A small JSON API served by Starlette on Hypercorn's trio worker. The charger side is reached
only through `StationView`, which the station implements; this module knows nothing of
connectors, OCPP or hardware beyond that protocol.

Access: whoever reaches the API can plug guns and raise faults, so on an address that is not
loopback (127.0.0.0/8, ::1, `localhost`; 0.0.0.0 and :: are every interface) `serve_api`
refuses to run without a token (at least TOKEN_MIN_LENGTH printable ASCII characters). With a
token (required off loopback, enforced on loopback too when one is given) every request must
carry `Authorization: Bearer <token>`; anything else is answered 401 with `WWW-Authenticate:
Bearer` before routing, so it learns nothing. The command line takes the token from TOKEN_ENV
(preferred: argv is visible in `ps`) or `--api-token`.

Routes (JSON in and out; every error is `{"error": "<reason>"}`):

- `GET  /api/status`                          the charger's snapshot
- `POST /api/connectors/{id}/plug`            plug the gun into the simulated EV
- `POST /api/connectors/{id}/unplug`
- `POST /api/connectors/{id}/authorize`       `{"idTag": "..."}`: a tag at that gun's reader;
                                              answers what the charger decided (`authorization`)
- `POST /api/connectors/{id}/ev`              `{"suspended": true|false}`
- `POST /api/connectors/{id}/faults/{kind}`   `{"active": true|false}`, kind in FAULT_KINDS

A POST must say its body is JSON (`Content-Type: application/json`, even with no body): any
other is answered 415 before it does anything. On loopback without a token this is what keeps
a web page the operator happens to visit from driving the charger: a browser sends another
site's POST without asking first only as a "simple" request (form data, plain text or no
type), and one declared JSON needs a CORS preflight, which this API never grants.

A successful POST answers `{"ok": true, "connector": <that connector's snapshot entry>}`;
`authorize` adds `"authorization"` (see `StationView.present_id`). Unknown connector, fault kind
or route -> 404; a bad body, or an action that does not fit the connector's state (a tag the
gun's reader refuses) -> 422; wrong method -> 405. Beyond MAX_REQUESTS requests in progress
(an `authorize` may wait seconds for the central system) a request is answered 503 at once,
before anything else: a client that floods the API cannot pile up work in the charger.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import re
import socket
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import aclosing
from functools import partial
from typing import Any, Protocol, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.typing import ASGIFramework
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    SimpleUser,
)
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from dcocpp.api import console
from dcocpp.api.answers import Reject as _Reject
from dcocpp.api.answers import answering as _answering
from dcocpp.api.answers import error as _error
from dcocpp.api.contract import (
    FAULT_KINDS,
    ID_TAG_MAX_LENGTH,
    NEEDS_TOKEN,
    ApiError,
    format_address,
    is_loopback,
    token_problem,
)
from dcocpp.api.feed import Feed
from dcocpp.jsontypes import json_type, valid_text
from dcocpp.storage.oserrors import reason

log = logging.getLogger("dcocpp.api.server")
# Hypercorn's own messages ("Running on ...", connection errors). Quiet unless something is
# wrong: the console belongs to the operator, and serve_api logs the address itself.
server_log = logging.getLogger("dcocpp.api.server.server")

MAX_BODY_BYTES = 16 * 1024  # the bodies are a few dozen bytes
JSON_MEDIA_TYPE = "application/json"  # what every POST's Content-Type must say


class StationView(Protocol):
    """What the API needs from the charger (implemented by the station).

    Methods raise `KeyError` for an unknown connector and `ValueError` with a human readable
    message for an action that does not fit the connector's current state.
    """

    @property
    def feed(self) -> Feed:
        """The station's news for the console's event streams."""
        ...

    def link_counters(self) -> dict[str, Any]:
        """What went over the link to the central system (`ocpp.traffic.LinkTraffic.counters`):
        {"messages": [{"action", "direction", "type", "count"}], "roundTrip": {"buckets":
        [(upper bound s, cumulative count)], "sum", "count"}, "connections",
        "connectionFailures"}."""
        ...

    def configuration(self) -> list[dict[str, Any]]:
        """The configuration keys, [{"key", "value", "readonly"}]; write-only ones left out."""
        ...

    async def transactions(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` sessions of the history (see `dcocpp.station.history`)."""
        ...

    async def transaction_meter_values(self, session_id: int) -> dict[str, Any]:
        """A session of the history with its readings ("points"); KeyError: none such."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """Exactly the body of GET /api/status:

        {"chargePoint": {"id": str, "connected": bool, "registration": str,
                         "url": str,  # the central system's URL with the charge point id
                         "lastConnectionFailure": None | {
                             "url": str, "reason": str,  # refused, TLS, HTTP 404, ...
                             "at": str, "since": str,  # OCPP dateTime: latest, first
                             "attempts": int},  # failures since a connection last opened
                         "outbox": {"queued": int, "parked": int},
                         # the security profile and when the certificates expire (dates only)
                         "security": None | {"securityProfile": int,  # in use
                             "configuredProfile": int | None, "onTrial": bool,
                             "lastFallback": None | {"failed", "restored", "reason", "at"},
                             "chargePointCertificateValidTo": str | None,  # OCPP dateTime
                             "centralSystemRoots": int,  # CentralSystemRootCertificates
                             "centralSystemRootsValidTo": str | None},  # the earliest
                         # GetDiagnostics: Idle, Uploading, Uploaded or UploadFailed, and
                         # the upload in progress (or the last one) of this boot
                         "diagnostics": {"status": str, "upload": None | {
                             "file_name": str, "location": str,  # without credentials
                             "attempts": int, "attempt": int,  # attempt n of m
                             "bytes_done": int, "bytes_total": int | None,
                             "next_attempt_at": str | None,  # OCPP dateTime, between attempts
                             "error": str | None,  # the last attempt's failure
                             "refusal": str | None,  # what it meant: PermissionDenied, ...
                             "request_id": int | None}},  # GetLog's requestId
                         # GetLog: the same for the log upload of this boot
                         "logs": {"status": str, "upload": None | {...}},
                         # UpdateFirmware: the last FirmwareStatusNotification status told,
                         # the running firmware, the update under way (or the last one)
                         "firmware": {"status": str, "version": str, "update": None | {
                             "location": str,  # without credentials
                             "retrieveDate": str,
                             # scheduled, downloading, downloaded, installing, installed, ended
                             "phase": str,
                             "attempt": int, "attempts": int,
                             "bytesDone": int, "bytesTotal": int | None,
                             "percent": float | None,
                             "nextAttemptAt": str | None,  # its retrieveDate, or the retry's
                             "error": str | None, "fileName": str}},
                         "hardware": {str: int}},
         "connectors": [{"id": int, "status": str, "errorCode": str,
                         "transactionId": int | None, "idTag": str | None, "plugged": bool,
                         "relayClosed": bool, "energyWh": float, "powerW": float,
                         "currentA": float, "voltageV": float, "soc": float | None,
                         # every active fault, the most severe (the one reported) first
                         "faults": [{"kind": str,  # estop, earth, comm, meter, lock, relay
                                     "errorCode": str, "vendorErrorCode": str | None,
                                     "detail": str | None}]}]}
        """
        ...

    @property
    def connector_ids(self) -> Sequence[int]: ...

    async def plug(self, connector_id: int) -> None: ...

    async def unplug(self, connector_id: int) -> None: ...

    async def present_id(self, connector_id: int, id_tag: str) -> dict[str, Any]:
        """A tag presented at that gun's reader, answered with what the charger decided once it
        is known (bounded by the charger):

        {"idTag": str, "status": "Accepted" | "Invalid" | "Blocked" | "Expired" |
                                 "ConcurrentTx" | None (no decision in time),
         "source": str | None (who decided: "central system", "local list", ...),
         "taken": bool (the gun acted on it: a session for it, or the transaction stopped),
         "detail": str | None (what the gun did with it, or why not)}

        A tag the reader refuses (the gun takes no tag now, reserved for another tag, ...)
        is a ValueError saying why."""
        ...

    async def set_ev_suspended(self, connector_id: int, suspended: bool) -> None: ...

    async def set_fault(self, connector_id: int, kind: str, active: bool) -> None:
        """Raise or clear a simulated fault; kind is one of FAULT_KINDS."""
        ...


# --- the application -------------------------------------------------------------------------


# Requests in progress at once; more are answered 503 (see the module docstring).
MAX_REQUESTS = 16


def create_app(view: StationView, *, token: str | None = None) -> Starlette:
    """The ASGI application serving `view`; see the module docstring for the routes. With a
    `token`, every request must carry it as `Authorization: Bearer <token>`."""

    def connector_id(request: Request) -> int:
        raw = request.path_params["connector_id"]
        if not _DIGITS.fullmatch(raw) or int(raw) not in view.connector_ids:
            raise _Reject(404, f"unknown connector {raw!r}")
        return int(raw)

    def connector_entry(cid: int) -> dict[str, Any]:
        for entry in view.snapshot()["connectors"]:
            if entry["id"] == cid:
                return dict(entry)
        raise KeyError(cid)

    async def act(
        cid: int, action: Awaitable[Any], what: str, answer: str | None = None
    ) -> Response:
        """Run `action`; its result goes into the answer as `answer` when that is given."""
        try:
            result = await action
            entry = connector_entry(cid)
        except KeyError:
            raise _Reject(404, f"unknown connector '{cid}'") from None
        except ValueError as exc:
            raise _Reject(422, str(exc) or f"cannot {what} connector {cid} now") from None
        log.debug("API: %s connector %d", what, cid)
        body = {"ok": True, "connector": entry}
        if answer is not None:
            body[answer] = result
        return JSONResponse(body)

    async def status(request: Request) -> Response:
        return JSONResponse(view.snapshot())

    async def plug(request: Request) -> Response:
        cid = connector_id(request)
        await _json_object(request, {})
        return await act(cid, view.plug(cid), "plug")

    async def unplug(request: Request) -> Response:
        cid = connector_id(request)
        await _json_object(request, {})
        return await act(cid, view.unplug(cid), "unplug")

    async def authorize(request: Request) -> Response:
        cid = connector_id(request)
        body = await _json_object(request, {"idTag": str})
        id_tag = body["idTag"]
        if not 1 <= len(id_tag) <= ID_TAG_MAX_LENGTH:
            raise _Reject(
                422, f"idTag must be 1 to {ID_TAG_MAX_LENGTH} characters, got {len(id_tag)}"
            )
        return await act(cid, view.present_id(cid, id_tag), "authorize at", "authorization")

    async def ev(request: Request) -> Response:
        cid = connector_id(request)
        body = await _json_object(request, {"suspended": bool})
        suspended = body["suspended"]
        what = "suspend the EV at" if suspended else "resume the EV at"
        return await act(cid, view.set_ev_suspended(cid, suspended), what)

    async def fault(request: Request) -> Response:
        cid = connector_id(request)
        kind = request.path_params["kind"]
        if kind not in FAULT_KINDS:
            raise _Reject(404, f"unknown fault kind {kind!r} (one of: {', '.join(FAULT_KINDS)})")
        body = await _json_object(request, {"active": bool})
        active = body["active"]
        what = f"{'raise' if active else 'clear'} fault {kind} on"
        return await act(cid, view.set_fault(cid, kind, active), what)

    connector = "/api/connectors/{connector_id}"
    routes: list[BaseRoute] = [
        Route("/api/status", _answering(status), methods=["GET"]),
        Route(f"{connector}/plug", _answering(plug), methods=["POST"]),
        Route(f"{connector}/unplug", _answering(unplug), methods=["POST"]),
        Route(f"{connector}/authorize", _answering(authorize), methods=["POST"]),
        Route(f"{connector}/ev", _answering(ev), methods=["POST"]),
        Route(f"{connector}/faults/{{kind}}", _answering(fault), methods=["POST"]),
        *console.console_routes(view, token=token),
    ]
    # An event stream stays open as long as its page: it has its own limit (console).
    middleware = [Middleware(_AtMost, limit=MAX_REQUESTS, streams=frozenset({"/api/events"}))]
    if token is not None:
        middleware.append(
            Middleware(
                AuthenticationMiddleware, backend=_BearerToken(token), on_error=_unauthorized
            )
        )
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )


class _AtMost:
    """ASGI middleware: at most `limit` HTTP requests in progress; the next is answered 503."""

    def __init__(self, app: Any, *, limit: int, streams: frozenset[str] = frozenset()) -> None:
        self._app = app
        self._limit = limit
        self._streams = streams  # paths of long-lived streams, not counted
        self._running = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self._streams:
            await self._app(scope, receive, send)
            return
        if self._running >= self._limit:
            busy = _error(503, f"busy: {self._limit} requests in progress; try again")
            await busy(scope, receive, send)
            return
        self._running += 1
        try:
            await self._app(scope, receive, send)
        finally:
            self._running -= 1


class _BearerToken(AuthenticationBackend):
    """Lets through only requests with `Authorization: Bearer <the token>` (RFC 6750), or,
    from the console's page in a browser, the token's cookie (a POST with it only with the
    console's header, see `console.CONSOLE_HEADER`), or `GET /?token=<the token>` (the page
    then sets the cookie)."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser]:
        scheme, _, credentials = conn.headers.get("authorization", "").partition(" ")
        cookie = conn.cookies.get(console.COOKIE)
        if scheme.lower() == "bearer" and credentials.strip():
            given = credentials.strip()
        elif conn.url.path == "/" and "token" in conn.query_params:
            given = conn.query_params["token"]
        elif cookie:
            safe = conn.scope.get("method") in ("GET", "HEAD")
            if not safe and console.CONSOLE_HEADER.lower() not in conn.headers:
                raise AuthenticationError(
                    f"the API token's cookie is for the console's page (its requests carry"
                    f" {console.CONSOLE_HEADER}); other clients send Authorization: Bearer"
                )
            given = cookie
        else:
            raise AuthenticationError("missing API token: send Authorization: Bearer <token>")
        # Constant time: the answer's timing must not tell how much of a guess was right.
        if not hmac.compare_digest(given.encode(), self._token):
            raise AuthenticationError("wrong API token")
        return AuthCredentials(["api"]), SimpleUser("operator")


def _unauthorized(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    client = format_address(*conn.client) if conn.client else "unknown client"
    log.info("API: refused a request for %s from %s: %s", conn.url.path, client, exc)
    challenge = {"WWW-Authenticate": 'Bearer realm="dcocpp"'}
    if conn.url.path == "/" and "text/html" in conn.headers.get("accept", ""):
        # A browser opening the console: a form that asks for the token (GET /?token=...).
        return HTMLResponse(_LOGIN.format(reason=html.escape(str(exc))), 401, challenge)
    return _error(401, str(exc), challenge)


_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dcocpp console: API token</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 4em auto">
<h1>dcocpp console</h1><p>This API needs its token ({reason}).</p>
<form method="get" action="/"><label>API token <input name="token" type="password"
autocomplete="current-password" required autofocus></label> <button>Open</button></form>
</body></html>
"""


_DIGITS = re.compile(r"[0-9]{1,9}")


_HTTP_REASONS = {404: "no such route", 405: "method not allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method, body too large) as JSON."""
    assert isinstance(exc, HTTPException)
    reason = _HTTP_REASONS.get(exc.status_code, exc.detail)
    if exc.status_code in (404, 405):
        reason = f"{reason}: {request.method} {request.url.path}"
    return _error(exc.status_code, reason, exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Starlette re-raises after answering, so the server logs the traceback.
    return _error(500, f"internal error: {type(exc).__name__}")


_TYPE_NAMES = {str: "a string", bool: "true or false"}


async def _json_object(request: Request, fields: Mapping[str, type]) -> dict[str, Any]:
    """The request body as a JSON object with exactly `fields` (name -> type).

    The body must be declared JSON (415 otherwise, see the module docstring). An empty body
    counts as `{}` (`curl -X POST -H 'Content-Type: application/json' .../plug`). The types
    are checked exactly: `true` is not a string and `1` is not a bool.
    """
    declared = request.headers.get("content-type")
    if declared is None or _media_type(declared) != JSON_MEDIA_TYPE:
        raise _Reject(
            415,
            f"send the body as JSON (Content-Type: {JSON_MEDIA_TYPE}),"
            f" got {'no Content-Type' if declared is None else repr(declared[:60])}",
        )
    raw = await _body(request)
    if not raw.strip():
        body: Any = {}
    else:
        try:
            body = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise _Reject(422, f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _Reject(422, f"body must be a JSON object, got {json_type(body)}")
    if not valid_text(body):
        # A lone surrogate (\ud800): no tag, no message and no database can carry it.
        raise _Reject(422, "body has text that is not valid Unicode")
    extra = sorted(set(body) - set(fields))
    if extra:
        raise _Reject(422, f"unexpected field(s): {', '.join(extra)}")
    for name, kind in fields.items():
        if name not in body:
            raise _Reject(422, f"missing field: {name}")
        if type(body[name]) is not kind:
            raise _Reject(422, f"{name} must be {_TYPE_NAMES[kind]}, got {json_type(body[name])}")
    return body


def _media_type(content_type: str) -> str:
    """`application/json; charset=utf-8` -> `application/json`."""
    return content_type.partition(";")[0].strip().lower()


async def _body(request: Request) -> bytes:
    """The request body, refused with 413 beyond MAX_BODY_BYTES (before reading it all)."""
    too_large = _Reject(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async with aclosing(request.stream()) as chunks:
        async for chunk in chunks:
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise too_large
    return bytes(body)


# --- serving ---------------------------------------------------------------------------------


def _hypercorn_config(listening: socket.socket) -> HypercornConfig:
    config = HypercornConfig()
    # Hypercorn takes over the socket we bound (and closes it when it stops).
    config.bind = [f"fd://{listening.detach()}"]
    config.accesslog = None
    if server_log.level == logging.NOTSET:
        # Only warnings and errors reach the console; an operator's logging setup may lower it.
        server_log.setLevel(logging.WARNING)
    config.errorlog = server_log
    config.include_server_header = False
    config.graceful_timeout = 1.0
    return config


async def _bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not yet listening), or ApiError saying why not."""
    where = format_address(host, port)
    try:
        infos = await trio.socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise ApiError(where, reason(exc)) from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ApiError(where, reason(exc)) from exc
    return sock


async def serve_api(
    view: StationView,
    host: str,
    port: int,
    *,
    token: str | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API on host:port until cancelled.

    Without a `token` only on a loopback address (else `ApiError`); with one, every request
    must carry it (see the module docstring).
    Binds the socket itself (so that a busy or bad address is a plain `ApiError`, not an error
    deep in Hypercorn's nurseries), then runs Hypercorn's trio worker on it.
    `task_status.started()` gets `(host, bound_port)` once the socket listens, so port 0 binds
    an ephemeral port. Cancelling the caller's scope stops the server and closes the socket and
    its connections. A failing request is answered with 500 and logged; it does not escape.
    """
    where = format_address(host, port)
    if token is None and not is_loopback(host):
        raise ApiError(where, NEEDS_TOKEN)
    if token is not None and (problem := token_problem(token)) is not None:
        raise ApiError(where, f"the token {problem}")
    app = create_app(view, token=token)
    listening = await _bind(host, port)
    bound_port: int = listening.getsockname()[1]
    config = _hypercorn_config(listening)
    async with trio.open_nursery() as nursery:
        # Hypercorn reports ["http://127.0.0.1:54321"] once it listens; we know the port.
        # Starlette's ASGI types are looser than Hypercorn's; the app is a plain ASGI 3 app.
        asgi_app = cast(ASGIFramework, app)
        await nursery.start(partial(hypercorn_serve, asgi_app, config))
        nursery.start_soon(console.record_trend, view)
        log.info("local API on http://%s", format_address(host, bound_port))
        task_status.started((host, bound_port))
