"""Opening OCPP-J WebSockets: the charge point's client side and the central system's server.

Both sides insist on the `ocpp1.6` subprotocol and speak HTTP Basic auth (OCPP 1.6 security
profiles 1/2): the user is the charge point id, the password bytes (the AuthorizationKey's
decoded bytes, `authkey.password`), so the credentials are built and checked as bytes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http
import logging
import socket
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

from dcocpp.ocpp.errors import TransportError, UntrustedCertificate
from dcocpp.ocpp.wire import MAX_WEBSOCKET_MESSAGE_BYTES, SUBPROTOCOL

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


def security_profile(url: str, *, authorization_key: bool, client_certificate: bool) -> int:
    """The OCPP 1.6 security profile a connection made this way has: 3 = TLS with a client
    certificate, 2 = TLS with Basic auth, 1 = Basic auth without TLS, 0 = none of these (no
    credentials at all, or TLS without any)."""
    tls = urlsplit(url).scheme == "wss"
    if tls and client_certificate:
        return 3
    if authorization_key:
        return 2 if tls else 1
    return 0


def basic_auth_header(charge_point_id: str, password: bytes) -> tuple[bytes, bytes]:
    """The Authorization header of `charge_point_id` with `password`, whatever its bytes."""
    token = base64.b64encode(charge_point_id.encode() + b":" + password)
    return (b"Authorization", b"Basic " + token)


def parse_basic_auth(headers: list[tuple[bytes, bytes]]) -> tuple[str, bytes] | None:
    """(user, password bytes) from an Authorization: Basic header, or None. The user (the
    charge point id) is text; the password is not: it ends at the end, not at a NUL or at
    bytes that are no UTF-8."""
    for name, value in headers:
        if name.lower() != b"authorization":
            continue
        scheme, _, token = value.partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
            user_text = user.decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (user_text, password) if sep else None
    return None


async def _open_stream_default(host: str, port: int) -> trio.abc.Stream:
    return await trio.open_tcp_stream(host, port)


async def run_client(
    url: str,
    *,
    charge_point_id: str,
    password: bytes | None = None,
    ssl_context: ssl.SSLContext | None = None,
    open_stream: OpenStream = _open_stream_default,
    task_status: trio.TaskStatus[WebSocketConnection] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Connect to the central system and hand the open WebSocket to `task_status.started()`.

    Start it with `await nursery.start(run_client, ...)` inside the caller's deadline: the
    handshake (TCP, TLS, HTTP upgrade, subprotocol check) runs under that deadline and any
    failure of it raises `TransportError`, which says what failed in an operator's words
    (refused, host not found, the TLS problem, the HTTP status) but not the URL, which the
    caller knows. Afterwards the task keeps the WebSocket's reader
    alive until it is cancelled, then closes the connection politely (bounded by CLOSE_TIMEOUT).
    """
    target = urlsplit(endpoint_url(url, charge_point_id))
    tls = target.scheme == "wss"
    host = target.hostname or ""
    port = target.port or (443 if tls else 80)
    resource = target.path + (f"?{target.query}" if target.query else "")
    host_header = host if port in (80, 443) else f"{host}:{port}"
    headers = []
    if password:
        headers.append(basic_auth_header(charge_point_id, password))
    try:
        stream: trio.abc.Stream = await open_stream(host, port)
    except OSError as exc:
        raise TransportError(_connect_failure(host, port, exc)) from exc
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
                cause = exc.__cause__ or exc
                if isinstance(cause, ssl.SSLCertVerificationError):
                    raise UntrustedCertificate(_tls_failure(cause)) from exc
                event = _TLS_EVENTS.get(str(getattr(cause, "reason", "")))
                raise TransportError(_tls_failure(cause), security_event=event) from exc
        await _run_websocket(stream, tls, host_header, resource, headers, task_status)
    finally:
        # Whatever happened above, the socket is ours to close (a no-op when already closed).
        await trio.aclose_forcefully(stream)
    raise AssertionError("unreachable")


async def _run_websocket(
    stream: trio.abc.Stream,
    tls: bool,
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
                with trio.CancelScope() as upgrade:
                    watched = _UpgradeWatch(stream, upgrade, tls=tls)
                    try:
                        ws = await wrap_client_stream(
                            reader_nursery,
                            watched,  # type: ignore[arg-type]
                            host_header,
                            resource,
                            subprotocols=[SUBPROTOCOL],
                            extra_headers=headers,
                            max_message_size=MAX_WEBSOCKET_MESSAGE_BYTES,
                        )
                    except (
                        OSError,
                        trio.BrokenResourceError,
                        HandshakeError,
                        ConnectionClosed,
                    ) as exc:
                        raise TransportError(f"WebSocket handshake failed: {exc}") from exc
                    watched.upgraded()
                if watched.broken is not None:
                    raise TransportError(watched.broken)
                assert ws is not None
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
    except* (ConnectionRejected, TransportError) as group:
        # One TransportError, not a group: callers catch that. An HTTP answer says most.
        failures = _leaves(group)
        rejected = [e for e in failures if isinstance(e, ConnectionRejected)]
        if rejected:
            refused = rejected[0].status_code in (401, 403)
            event = "FailedToAuthenticateAtCentralSystem" if refused else None
            raise TransportError(_http_rejection(rejected[0]), security_event=event) from None
        raise failures[0] from None


class _UpgradeWatch(trio.abc.Stream):
    """The stream under the WebSocket, watched until the upgrade is answered: a connection
    that breaks before then cancels `upgrade` and says why in `broken`. trio-websocket's
    client handshake would wait for the answer forever (until our connect timeout), e.g. when
    a TLS 1.3 server refuses our client certificate, which it can only say after our side of
    the TLS handshake has completed."""

    def __init__(self, stream: trio.abc.Stream, upgrade: trio.CancelScope, *, tls: bool):
        self._stream = stream
        self._tls = tls
        self._upgrade: trio.CancelScope | None = upgrade
        self.broken: str | None = None

    def upgraded(self) -> None:
        self._upgrade = None

    def _break(self, why: str) -> None:
        if self._upgrade is not None and self.broken is None:
            self.broken = why
            self._upgrade.cancel()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self._stream.receive_some(max_bytes)
        except trio.BrokenResourceError as exc:
            self._break(_broken_connection(exc))
            raise
        if not data:
            why = "the central system closed the connection without answering the upgrade"
            if self._tls:
                # What a TLS 1.3 server does that dislikes the client certificate (or its
                # absence) and sends no alert.
                why += " (over TLS: does it require a client certificate?)"
            self._break(why)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self._stream.send_all(data)
        except trio.BrokenResourceError as exc:
            self._break(_broken_connection(exc))
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


# --- what went wrong, in an operator's words --------------------------------------------------

# OpenSSL's reason codes an operator cannot be expected to decode.
_TLS_HINTS = {
    "WRONG_VERSION_NUMBER": "the server does not speak TLS on this port (ws:// instead of wss://?)",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the central system requires a client certificate",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the central system refused the handshake "
    "(no client certificate, or no common cipher)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the central system refused our client certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the central system refused our client certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the central system does not trust the CA of our client certificate",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common (TLS 1.2 or newer is required)",
    "UNSUPPORTED_PROTOCOL": "no TLS version in common (TLS 1.2 or newer is required)",
    "UNEXPECTED_EOF_WHILE_READING": "the central system hung up during the TLS handshake "
    "(is that port TLS at all, i.e. wss:// where it serves ws://? does it require a client "
    "certificate?)",
}


# OpenSSL's reasons that are security events (the whitepaper's names).
_TLS_EVENTS = {
    "TLSV1_ALERT_PROTOCOL_VERSION": "InvalidTLSVersion",
    "UNSUPPORTED_PROTOCOL": "InvalidTLSVersion",
    "NO_SHARED_CIPHER": "InvalidTLSCipherSuite",
    "NO_CIPHERS_AVAILABLE": "InvalidTLSCipherSuite",
}


def _connect_failure(host: str, port: int, exc: OSError) -> str:
    """Why the TCP connection failed: trio says "all attempts to connect ... failed" and
    keeps the reason of each attempt in its cause."""
    where = f"cannot connect to {host}:{port}"
    if isinstance(exc, socket.gaierror):
        return f"{where}: host name not found ({exc.strerror})"
    causes = [e for e in _leaves(exc.__cause__ or exc) if isinstance(e, OSError)] or [exc]
    cause = causes[0]
    if isinstance(cause, ConnectionRefusedError):
        return f"{where}: connection refused (nothing accepts connections on port {port})"
    if isinstance(cause, TimeoutError):
        return f"{where}: no answer (timed out)"
    return f"{where}: {(cause.strerror or str(cause)).lower()}"


def _tls_failure(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            "TLS handshake failed: the central system's certificate is not trusted: "
            f"{exc.verify_message} (CERTIFICATE_VERIFY_FAILED; is its CA in the CA bundle?)"
        )
    reason = getattr(exc, "reason", None)
    hint = _TLS_HINTS.get(reason) if isinstance(reason, str) else None
    if hint is not None:
        return f"TLS handshake failed: {hint} ({reason})"
    return f"TLS handshake failed: {exc}"


def _broken_connection(exc: trio.BrokenResourceError) -> str:
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLError):
        return _tls_failure(cause)
    return f"the connection broke before the WebSocket upgrade was answered: {cause or exc}"


def _http_rejection(rejected: ConnectionRejected) -> str:
    status = rejected.status_code
    try:
        phrase = f" {http.HTTPStatus(status).phrase}"
    except ValueError:
        phrase = ""
    text = f"the central system refused the WebSocket upgrade: HTTP {status}{phrase}"
    if status in (401, 403):
        return f"{text} (wrong or missing AuthorizationKey?)"
    if status == 404:
        return f"{text} (wrong URL path, or a charge point id it does not know?)"
    return text


def _leaves(error: BaseException) -> list[BaseException]:
    """Every exception in a (possibly nested) group, in order; [error] for a plain one."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


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

# (charge point id, password bytes or None without Basic auth) -> let it in?
Authenticate = Callable[[str, bytes | None], bool]
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
