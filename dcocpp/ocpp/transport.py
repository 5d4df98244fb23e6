"""Opening OCPP-J WebSockets: the charge point's client side and the central system's server.

Both sides insist on the `ocpp1.6` subprotocol and speak HTTP Basic auth
(`ChargePointId:AuthorizationKey`, OCPP 1.6 security profile 1/2).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import NoReturn
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)

from dcocpp.ocpp.errors import TransportError
from dcocpp.ocpp.wire import SUBPROTOCOL

log = logging.getLogger(__name__)

OpenStream = Callable[[str, int], Awaitable[trio.abc.Stream]]
# How long a polite close handshake may take before the socket is just dropped.
CLOSE_TIMEOUT = 2.0


def endpoint_url(base: str, charge_point_id: str) -> str:
    """The CSMS URL with the charge point id appended as one path segment (OCPP-J 3.1.1),
    whether or not the configured URL ends in '/'."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/") + "/" + quote(charge_point_id, safe="")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def basic_auth_header(charge_point_id: str, authorization_key: str) -> tuple[bytes, bytes]:
    token = base64.b64encode(f"{charge_point_id}:{authorization_key}".encode()).decode("ascii")
    return (b"Authorization", f"Basic {token}".encode("ascii"))


def parse_basic_auth(headers: list[tuple[bytes, bytes]]) -> tuple[str, str] | None:
    """(user, password) from an Authorization: Basic header, or None."""
    for name, value in headers:
        if name.lower() != b"authorization":
            continue
        scheme, _, token = value.decode("latin-1").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (user, password) if sep else None
    return None


async def _open_stream_default(host: str, port: int) -> trio.abc.Stream:
    return await trio.open_tcp_stream(host, port)


async def run_client(
    url: str,
    *,
    charge_point_id: str,
    authorization_key: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    open_stream: OpenStream = _open_stream_default,
    task_status: trio.TaskStatus[WebSocketConnection] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Connect to the central system and hand the open WebSocket to `task_status.started()`.

    Start it with `await nursery.start(run_client, ...)` inside the caller's deadline: the
    handshake (TCP, TLS, HTTP upgrade, subprotocol check) runs under that deadline and any
    failure of it raises `TransportError`. Afterwards the task keeps the WebSocket's reader
    alive until it is cancelled, then closes the connection politely (bounded by CLOSE_TIMEOUT).
    """
    target = urlsplit(endpoint_url(url, charge_point_id))
    tls = target.scheme == "wss"
    host = target.hostname or ""
    port = target.port or (443 if tls else 80)
    resource = target.path + (f"?{target.query}" if target.query else "")
    host_header = host if port in (80, 443) else f"{host}:{port}"
    headers = []
    if authorization_key:
        headers.append(basic_auth_header(charge_point_id, authorization_key))
    try:
        stream: trio.abc.Stream = await open_stream(host, port)
    except OSError as exc:
        raise TransportError(f"cannot connect to {url}: {exc}") from exc
    try:
        if tls:
            # Handshake TLS before the WebSocket: a certificate that fails verification then
            # fails at once instead of hanging in the HTTP upgrade.
            stream = trio.SSLStream(
                stream,
                ssl_context or ssl.create_default_context(),
                server_hostname=host,
                https_compatible=True,
            )
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError as exc:
                raise TransportError(
                    f"TLS handshake with {url} failed: {exc.__cause__ or exc}"
                ) from exc
        await _run_websocket(stream, url, host_header, resource, headers, task_status)
    finally:
        # Whatever happened above, the socket is ours to close (a no-op when already closed).
        await trio.aclose_forcefully(stream)
    raise AssertionError("unreachable")


async def _run_websocket(
    stream: trio.abc.Stream,
    url: str,
    host_header: str,
    resource: str,
    headers: list[tuple[bytes, bytes]],
    task_status: trio.TaskStatus[WebSocketConnection],
) -> None:
    try:
        async with trio.open_nursery() as nursery:
            # The WebSocket's reader runs where our caller's cancellation cannot reach it, so
            # that a polite close can still read the peer's close frame; we end it ourselves.
            reader_nursery, reader_scope = await nursery.start(_shielded_nursery)
            ws: WebSocketConnection | None = None
            try:
                try:
                    ws = await wrap_client_stream(
                        reader_nursery,
                        stream,  # type: ignore[arg-type]
                        host_header,
                        resource,
                        subprotocols=[SUBPROTOCOL],
                        extra_headers=headers,
                    )
                except (OSError, trio.BrokenResourceError, HandshakeError, ConnectionClosed) as exc:
                    raise TransportError(f"WebSocket handshake with {url} failed: {exc}") from exc
                if ws.subprotocol != SUBPROTOCOL:
                    raise TransportError(
                        f"the central system did not accept subprotocol {SUBPROTOCOL} "
                        f"(it answered {ws.subprotocol!r})"
                    )
                task_status.started(ws)
                await trio.sleep_forever()
            finally:
                if ws is not None:
                    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                        await ws.aclose()
                reader_scope.cancel()
    except* ConnectionRejected as group:
        status = getattr(_leaf(group), "status_code", "?")
        raise TransportError(f"the central system rejected the connection: HTTP {status}") from None
    except* TransportError as group:
        # Unwrapped: callers catch TransportError, not a group holding one.
        raise _leaf(group) from None


def _leaf(group: BaseException) -> BaseException:
    """The first exception in a (possibly nested) group."""
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


async def _shielded_nursery(
    *, task_status: trio.TaskStatus[tuple[trio.Nursery, trio.CancelScope]]
) -> None:
    # A caller already cancelled must not get a shielded task it can never end.
    await trio.lowlevel.checkpoint_if_cancelled()
    with trio.CancelScope(shield=True) as scope:
        async with trio.open_nursery() as nursery:
            task_status.started((nursery, scope))
            await trio.sleep_forever()


# --- central system side -----------------------------------------------------------------------

Authenticate = Callable[[str, str | None], bool]
ConnectionHandler = Callable[[str, WebSocketConnection], Awaitable[None]]


async def accept_charge_point(
    request: WebSocketRequest, authenticate: Authenticate | None = None
) -> tuple[str, WebSocketConnection] | None:
    """Accept a charge point's upgrade request: ocpp1.6 subprotocol, optional Basic auth.

    Returns (charge point id, WebSocket) or None when the request was rejected."""
    charge_point_id = unquote(request.path.split("?")[0].rstrip("/").rsplit("/", 1)[-1])
    if SUBPROTOCOL not in request.proposed_subprotocols:
        log.warning("rejecting %r: no %s subprotocol offered", charge_point_id, SUBPROTOCOL)
        await request.reject(400, body=b"ocpp1.6 subprotocol required")
        return None
    if authenticate is not None:
        credentials = parse_basic_auth(request.headers)
        password = None
        if credentials is not None and credentials[0] == charge_point_id:
            password = credentials[1]
        if not authenticate(charge_point_id, password):
            log.warning("rejecting %r: authentication failed", charge_point_id)
            await request.reject(401, extra_headers=[(b"WWW-Authenticate", b'Basic realm="ocpp"')])
            return None
    ws = await request.accept(subprotocol=SUBPROTOCOL)
    return charge_point_id, ws


async def serve_stream(
    stream: trio.abc.Stream, handler: ConnectionHandler, *, authenticate: Authenticate | None = None
) -> None:
    """Serve one charge point on an already open stream: the in-memory networks of the demo
    and the tests use it to run without sockets (and so on a virtual clock)."""
    async with trio.open_nursery() as nursery:
        request = await wrap_server_stream(nursery, stream)
        accepted = await accept_charge_point(request, authenticate)
        if accepted is not None:
            with contextlib.suppress(ConnectionClosed):
                await handler(*accepted)
        nursery.cancel_scope.cancel()


async def serve(
    handler: ConnectionHandler,
    host: str,
    port: int,
    *,
    authenticate: Authenticate | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve charge points on host:port (0 = any free port, reported by `task_status`).

    Each accepted connection runs `handler(charge_point_id, ws)` in its own task; the
    connection is closed when the handler returns."""

    async def on_request(request: WebSocketRequest) -> None:
        accepted = await accept_charge_point(request, authenticate)
        if accepted is None:
            return
        # A charge point that goes away is the normal end of a connection, not a server error.
        with contextlib.suppress(ConnectionClosed):
            await handler(*accepted)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, on_request, host, port, ssl_context)
        task_status.started(server.port)
        await trio.sleep_forever()
    raise AssertionError("unreachable")
