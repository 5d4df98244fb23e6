"""Test doubles for the network and the central system.

`MemoryNetwork` gives the session an `open_stream` that connects, through in-memory streams, to
a `FakeCsms` built on dcocpp's own RPC in the server role. Everything stays inside trio, so
`autojump_clock` runs a 24 h heartbeat schedule in milliseconds without real sockets.
"""

from __future__ import annotations

import functools
import inspect
import ssl
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import trio
import trio.testing
from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, AuthorizationStatus, GenericStatus, RegistrationStatus
from trio_websocket import WebSocketConnection

from dcocpp.clock import WallClock
from dcocpp.concurrency import Pulse
from dcocpp.ocpp.errors import CallError
from dcocpp.ocpp.messagelog import MessageLog
from dcocpp.ocpp.rpc import RpcConnection
from dcocpp.ocpp.transport import Authenticate, serve_stream


def now_iso(clock: WallClock | None = None) -> str:
    now = datetime.now(UTC) if clock is None else clock.now()
    return now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@attrs.frozen
class _Answer:
    payload: dict[str, Any]
    error: str | None

    def give(self) -> dict[str, Any]:
        if self.error is not None:
            raise CallError(self.error, "scripted by the test")
        return self.payload


def _handles(action: Action) -> Callable[[Any], Any]:
    """`@on(action)` for a FakeCsms handler, whose answer `FakeCsms.answer` can script."""

    def decorate(handler: Callable[..., Any]) -> Any:
        @functools.wraps(handler)
        async def run(self: FakeCsms, **payload: Any) -> Any:
            scripted = self._scripted(action.value, payload)
            if scripted is not None:
                return scripted.give()
            result = handler(self, **payload)
            return await result if inspect.isawaitable(result) else result

        return on(action)(run)

    return decorate


class FakeCsms:
    """A scriptable central system. `calls` holds (trio time, action, snake_case payload) of
    every CALL the charge point made; `rpc` is the current connection for CSMS-initiated calls.

    Id tags: `id_tags` maps a tag to the status the central system gives it (default
    Accepted) in Authorize, StartTransaction and StopTransaction; `parent_id_tags` maps a tag
    to its parentIdTag; `start_statuses` overrides `id_tags` for StartTransaction only (a tag
    that became invalid after it was authorized). Transaction ids count up from 1;
    `transactions` maps each id to its StartTransaction payload.

    Misbehaving on purpose (transaction messages, SecurityEventNotification): `refuse` answers
    the next CALLs of an action with a CALLERROR (each recorded in `refused`, not in `calls`);
    `hold` keeps the answers to an action back until `release` (the held CALLs are in
    `waiting` meanwhile). SecurityEventNotification is answered NotImplemented (and recorded in
    `refused`) unless `security_events` is set. Any action: `answer` scripts the next answers
    (any payload, any error code; recorded in `scripted`); with `validate=False` neither the
    CALLs the test sends nor the answers are held to the schema (a central system that sends
    what it likes).

    Its time (currentTime in BootNotification.conf and Heartbeat.conf) is `clock`'s; without
    one, the station harness gives it the station's wall clock (`use_clock`), the system's
    time otherwise.
    """

    def __init__(
        self,
        *,
        boot_statuses: list[RegistrationStatus] | None = None,
        interval: int = 300,
        authenticate: Authenticate | None = None,
        id_tags: Mapping[str, str] | None = None,
        parent_id_tags: Mapping[str, str] | None = None,
        start_statuses: Mapping[str, str] | None = None,
        security_events: bool = False,
        validate: bool = True,
        clock: WallClock | None = None,
    ):
        self.validate = validate
        self.clock = clock
        self._own_clock = clock is not None
        self.boot_statuses = list(boot_statuses or [RegistrationStatus.accepted])
        self.interval = interval
        self.authenticate = authenticate
        self.calls: list[tuple[float, str, dict[str, Any]]] = []
        self.rpc: RpcConnection | None = None
        self.cp_id: str | None = None
        self.connections = 0
        self._changed = Pulse()
        self.next_transaction_id = 1
        self.id_tags: dict[str, str] = dict(id_tags or {})
        self.parent_id_tags: dict[str, str] = dict(parent_id_tags or {})
        self.start_statuses: dict[str, str] = dict(start_statuses or {})
        self.transactions: dict[int, dict[str, Any]] = {}
        self.security_events = security_events
        # (trio time, action, payload) of every CALL answered with a CALLERROR on purpose.
        self.refused: list[tuple[float, str, dict[str, Any]]] = []
        # (trio time, action, payload) of the CALLs held back by `hold` right now, and of
        # every CALL that was ever held (answered later, or never: its connection died).
        self.waiting: list[tuple[float, str, dict[str, Any]]] = []
        self.held: list[tuple[float, str, dict[str, Any]]] = []
        self._refusals: list[_Refusal] = []
        self._gates: dict[str, trio.Event] = {}
        # (trio time, action, payload) of every CALL given a scripted answer (`answer`).
        self.scripted: list[tuple[float, str, dict[str, Any]]] = []
        self._answers: dict[str, list[_Answer]] = {}

    def use_clock(self, clock: WallClock) -> None:
        """Tell time by `clock` unless the central system was given its own."""
        if not self._own_clock:
            self.clock = clock

    # --- misbehaving -------------------------------------------------------------------------

    def refuse(
        self,
        action: str,
        times: int = 1,
        *,
        code: str = "InternalError",
        when: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """Answer the next `times` CALLs of `action` (those `when` accepts) with a CALLERROR
        `code`; a later `refuse` of the same action adds to the earlier ones."""
        self._refusals.append(_Refusal(action, times, code, when))

    def answer(
        self,
        action: str,
        payload: dict[str, Any] | None = None,
        *,
        error: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` CALLs of `action` with `payload` (camelCase, sent as it is:
        with `validate=False` even when the schema forbids it) or, with `error`, a CALLERROR
        of that code (any string). Queued after the answers scripted before."""
        self._answers.setdefault(action, []).extend([_Answer(payload or {}, error)] * times)

    def _scripted(self, action: str, payload: dict[str, Any]) -> _Answer | None:
        queue = self._answers.get(action)
        if not queue:
            return None
        self.scripted.append((trio.current_time(), action, payload))
        self._notify()
        return queue.pop(0)

    def hold(self, action: str) -> None:
        """Keep the answers to `action` back (the CALLs arrive, wait in `waiting`) until
        `release(action)`."""
        self._gates.setdefault(action, trio.Event())

    def release(self, action: str) -> None:
        gate = self._gates.pop(action, None)
        if gate is not None:
            gate.set()

    def arrival_times(self, action: str) -> list[float]:
        """Arrival times of every CALL of `action`, answered or refused, in order."""
        return sorted(t for t, a, _ in self.calls + self.refused if a == action)

    async def _gate(self, action: str, payload: dict[str, Any]) -> None:
        """Hold the CALL while `action` is held; raise the CALLERROR of a matching refusal."""
        gate = self._gates.get(action)
        if gate is not None:
            entry = (trio.current_time(), action, payload)
            self.waiting.append(entry)
            self.held.append(entry)
            self._notify()
            try:
                await gate.wait()
            finally:
                self.waiting.remove(entry)
        for refusal in self._refusals:
            if refusal.action == action and (refusal.when is None or refusal.when(payload)):
                refusal.times -= 1
                if refusal.times <= 0:
                    self._refusals.remove(refusal)
                self.refused.append((trio.current_time(), action, payload))
                self._notify()
                raise CallError(refusal.code, f"{action} refused by the test")

    # --- id tags -----------------------------------------------------------------------------

    def set_id_tag(
        self,
        id_tag: str,
        status: str = AuthorizationStatus.accepted,
        parent_id_tag: str | None = None,
    ) -> None:
        """How the central system answers for `id_tag` from now on."""
        self.id_tags[id_tag] = status
        if parent_id_tag is None:
            self.parent_id_tags.pop(id_tag, None)
        else:
            self.parent_id_tags[id_tag] = parent_id_tag

    def id_tag_info(self, id_tag: str, status: str | None = None) -> dict[str, Any]:
        """The idTagInfo (snake_case) the central system gives `id_tag`."""
        info: dict[str, Any] = {
            "status": status or self.id_tags.get(id_tag, AuthorizationStatus.accepted)
        }
        parent = self.parent_id_tags.get(id_tag)
        if parent is not None:
            info["parent_id_tag"] = parent
        return info

    def authorize_count(self, id_tag: str | None = None) -> int:
        """How many Authorize.req arrived (for `id_tag`, or for any tag)."""
        return sum(1 for p in self.received("Authorize") if id_tag in (None, p["id_tag"]))

    # --- observation -------------------------------------------------------------------------

    def received(self, action: str, since: int = 0) -> list[dict[str, Any]]:
        """Payloads of `action`, among the calls from index `since` on (see `mark`)."""
        return [payload for _, a, payload in self.calls[since:] if a == action]

    def mark(self) -> int:
        """A position in `calls`, for `received(action, since=...)`."""
        return len(self.calls)

    def index_of(
        self, action: str, predicate: Callable[[dict[str, Any]], bool] | None = None
    ) -> int:
        """Index in `calls` of the first `action` matching `predicate`; ValueError if none."""
        for index, (_, a, payload) in enumerate(self.calls):
            if a == action and (predicate is None or predicate(payload)):
                return index
        raise ValueError(f"no {action} matching the predicate was received")

    def times(self, action: str) -> list[float]:
        return [t for t, a, _ in self.calls if a == action]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def wait_for_calls(self, action: str, count: int = 1) -> list[dict[str, Any]]:
        await self.wait_for(lambda: len(self.received(action)) >= count)
        return self.received(action)

    async def wait_connected(self, count: int = 1) -> RpcConnection:
        await self.wait_for(lambda: self.connections >= count and self.rpc is not None)
        assert self.rpc is not None
        return self.rpc

    def _record(self, action: str, payload: dict[str, Any]) -> None:
        self.calls.append((trio.current_time(), action, payload))
        self._notify()

    def _notify(self) -> None:
        self._changed.fire()

    async def serve(self, charge_point_id: str, ws: WebSocketConnection) -> None:
        self.cp_id = charge_point_id
        rpc = RpcConnection(
            ws, self, message_log=MessageLog(f"cp:{charge_point_id}"), validate=self.validate
        )
        self.rpc = rpc
        self.connections += 1
        self._notify()
        try:
            await rpc.run()
        finally:
            if self.rpc is rpc:
                self.rpc = None
            self._notify()

    # --- handlers ----------------------------------------------------------------------------

    @_handles(Action.boot_notification)
    def on_boot(self, **payload: Any) -> Any:
        self._record("BootNotification", payload)
        status = self.boot_statuses.pop(0) if len(self.boot_statuses) > 1 else self.boot_statuses[0]
        return call_result.BootNotification(
            current_time=now_iso(self.clock), interval=self.interval, status=status
        )

    @_handles(Action.heartbeat)
    def on_heartbeat(self, **payload: Any) -> Any:
        self._record("Heartbeat", payload)
        return call_result.Heartbeat(current_time=now_iso(self.clock))

    @_handles(Action.status_notification)
    def on_status(self, **payload: Any) -> Any:
        self._record("StatusNotification", payload)
        return call_result.StatusNotification()

    @_handles(Action.diagnostics_status_notification)
    def on_diagnostics_status(self, **payload: Any) -> Any:
        self._record("DiagnosticsStatusNotification", payload)
        return call_result.DiagnosticsStatusNotification()

    @_handles(Action.log_status_notification)
    def on_log_status(self, **payload: Any) -> Any:
        self._record("LogStatusNotification", payload)
        return call_result.LogStatusNotification()

    @_handles(Action.firmware_status_notification)
    def on_firmware_status(self, **payload: Any) -> Any:
        self._record("FirmwareStatusNotification", payload)
        return call_result.FirmwareStatusNotification()

    @_handles(Action.authorize)
    def on_authorize(self, id_tag: str, **payload: Any) -> Any:
        self._record("Authorize", {"id_tag": id_tag, **payload})
        return call_result.Authorize(id_tag_info=self.id_tag_info(id_tag))

    @_handles(Action.start_transaction)
    async def on_start_transaction(self, **payload: Any) -> Any:
        await self._gate("StartTransaction", payload)
        transaction_id = self.next_transaction_id
        self.next_transaction_id += 1
        self.transactions[transaction_id] = payload
        self._record("StartTransaction", payload)
        id_tag = payload["id_tag"]
        return call_result.StartTransaction(
            transaction_id=transaction_id,
            id_tag_info=self.id_tag_info(id_tag, self.start_statuses.get(id_tag)),
        )

    @_handles(Action.stop_transaction)
    async def on_stop_transaction(self, **payload: Any) -> Any:
        await self._gate("StopTransaction", payload)
        self._record("StopTransaction", payload)
        id_tag = payload.get("id_tag")
        return call_result.StopTransaction(
            id_tag_info=None if id_tag is None else self.id_tag_info(id_tag)
        )

    @_handles(Action.meter_values)
    async def on_meter_values(self, **payload: Any) -> Any:
        await self._gate("MeterValues", payload)
        self._record("MeterValues", payload)
        return call_result.MeterValues()

    @_handles(Action.sign_certificate)
    def on_sign_certificate(self, **payload: Any) -> Any:
        self._record("SignCertificate", payload)
        return call_result.SignCertificate(status=GenericStatus.accepted)

    @_handles(Action.security_event_notification)
    async def on_security_event(self, **payload: Any) -> Any:
        if not self.security_events:
            # What a central system without the security extension answers.
            self.refused.append((trio.current_time(), "SecurityEventNotification", payload))
            self._notify()
            raise CallError("NotImplemented", "SecurityEventNotification is not implemented")
        await self._gate("SecurityEventNotification", payload)
        self._record("SecurityEventNotification", payload)
        return call_result.SecurityEventNotification()


@attrs.define(eq=False)
class _Refusal:
    action: str
    times: int
    code: str
    when: Callable[[dict[str, Any]], bool] | None


class MemoryNetwork:
    """Connects `open_stream` callers to `csms` over in-memory streams.

    `down = True` refuses new connections (like a CSMS that is not running); `hang_up = True`
    accepts them and closes each at once, before the WebSocket upgrade; `drop()` closes
    the current connections abruptly; `freeze()` makes the CSMS side stop reading and answering
    (a dead link that TCP has not noticed). With `ssl_context` the central system speaks TLS
    (wss://) on its side of each link, with that context. `ports` holds the port of every
    connection attempt (80: ws://, 443: wss://), `client_certificates` the DER of the client
    certificate each TLS link presented (None: none)."""

    def __init__(
        self, csms: FakeCsms, nursery: trio.Nursery, ssl_context: ssl.SSLContext | None = None
    ):
        self.csms = csms
        self._nursery = nursery
        self.ssl_context = ssl_context
        # Why each TLS handshake the central system's side saw fail, in order.
        self.tls_failures: list[str] = []
        self.down = False
        self.hang_up = False
        self.attempts: list[float] = []
        self.ports: list[int] = []
        self.client_certificates: list[bytes | None] = []
        self._links: list[tuple[trio.CancelScope, trio.abc.Stream]] = []

    async def open_stream(self, host: str, port: int) -> trio.abc.Stream:
        self.attempts.append(trio.current_time())
        self.ports.append(port)
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        if self.hang_up:
            # A TCP FIN: what the charge point sends goes nowhere, what it reads is the end.
            closed = trio.testing.MemoryReceiveStream()
            closed.put_eof()
            return trio.StapledStream(trio.testing.MemorySendStream(), closed)
        client, server = trio.testing.memory_stream_pair()
        scope = trio.CancelScope()
        self._links.append((scope, server))
        self._nursery.start_soon(self._serve_link, scope, server)
        return client

    async def _serve_link(self, scope: trio.CancelScope, stream: trio.abc.Stream) -> None:
        with scope:
            if self.ssl_context is not None:
                tls = trio.SSLStream(stream, self.ssl_context, server_side=True)
                try:
                    await tls.do_handshake()
                except trio.BrokenResourceError as exc:
                    self.tls_failures.append(str(exc.__cause__ or exc))
                    await trio.aclose_forcefully(stream)
                    return
                self.client_certificates.append(tls.getpeercert(binary_form=True))
                stream = tls
            await serve_stream(stream, self.csms.serve, authenticate=self.csms.authenticate)

    async def drop(self) -> None:
        for scope, stream in self._links:
            scope.cancel()
            await stream.aclose()
        self._links.clear()

    def freeze(self) -> None:
        for scope, _ in self._links:
            scope.cancel()
