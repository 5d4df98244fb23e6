"""Test doubles for the network and the central system.

`MemoryNetwork` gives the session an `open_stream` that connects, through in-memory streams, to
a `FakeCsms` built on dcocpp's own RPC in the server role. Everything stays inside trio, so
`autojump_clock` runs a 24 h heartbeat schedule in milliseconds without real sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import trio
import trio.testing
from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, AuthorizationStatus, RegistrationStatus
from trio_websocket import WebSocketConnection, wrap_server_stream

from dcocpp.ocpp.messagelog import MessageLog
from dcocpp.ocpp.rpc import RpcConnection
from dcocpp.ocpp.transport import Authenticate, accept_charge_point


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class FakeCsms:
    """A scriptable central system. `calls` holds (trio time, action, snake_case payload) of
    every CALL the charge point made; `rpc` is the current connection for CSMS-initiated calls.
    """

    def __init__(
        self,
        *,
        boot_statuses: list[RegistrationStatus] | None = None,
        interval: int = 300,
        authenticate: Authenticate | None = None,
    ):
        self.boot_statuses = list(boot_statuses or [RegistrationStatus.accepted])
        self.interval = interval
        self.authenticate = authenticate
        self.calls: list[tuple[float, str, dict[str, Any]]] = []
        self.rpc: RpcConnection | None = None
        self.cp_id: str | None = None
        self.connections = 0
        self._changed = trio.Event()
        self.next_transaction_id = 1

    # --- observation -------------------------------------------------------------------------

    def received(self, action: str) -> list[dict[str, Any]]:
        return [payload for _, a, payload in self.calls if a == action]

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
        self._changed.set()
        self._changed = trio.Event()

    async def serve(self, charge_point_id: str, ws: WebSocketConnection) -> None:
        self.cp_id = charge_point_id
        rpc = RpcConnection(ws, self, message_log=MessageLog(f"cp:{charge_point_id}"))
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

    @on(Action.boot_notification)
    def on_boot(self, **payload: Any) -> Any:
        self._record("BootNotification", payload)
        status = self.boot_statuses.pop(0) if len(self.boot_statuses) > 1 else self.boot_statuses[0]
        return call_result.BootNotification(
            current_time=now_iso(), interval=self.interval, status=status
        )

    @on(Action.heartbeat)
    def on_heartbeat(self, **payload: Any) -> Any:
        self._record("Heartbeat", payload)
        return call_result.Heartbeat(current_time=now_iso())

    @on(Action.status_notification)
    def on_status(self, **payload: Any) -> Any:
        self._record("StatusNotification", payload)
        return call_result.StatusNotification()

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status(self, **payload: Any) -> Any:
        self._record("DiagnosticsStatusNotification", payload)
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    def on_firmware_status(self, **payload: Any) -> Any:
        self._record("FirmwareStatusNotification", payload)
        return call_result.FirmwareStatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str, **payload: Any) -> Any:
        self._record("Authorize", {"id_tag": id_tag, **payload})
        return call_result.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})


class MemoryNetwork:
    """Connects `open_stream` callers to `csms` over in-memory streams.

    `down = True` refuses new connections (like a CSMS that is not running); `drop()` closes
    the current connections abruptly; `freeze()` makes the CSMS side stop reading and answering
    (a dead link that TCP has not noticed)."""

    def __init__(self, csms: FakeCsms, nursery: trio.Nursery):
        self.csms = csms
        self._nursery = nursery
        self.down = False
        self.attempts: list[float] = []
        self._links: list[tuple[trio.CancelScope, trio.abc.Stream]] = []

    async def open_stream(self, host: str, port: int) -> trio.abc.Stream:
        self.attempts.append(trio.current_time())
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        client, server = trio.testing.memory_stream_pair()
        scope = trio.CancelScope()
        self._links.append((scope, server))
        self._nursery.start_soon(self._serve_link, scope, server)
        return client

    async def _serve_link(self, scope: trio.CancelScope, stream: trio.abc.Stream) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                request = await wrap_server_stream(nursery, stream)
                accepted = await accept_charge_point(request, self.csms.authenticate)
                if accepted is not None:
                    await self.csms.serve(*accepted)
                nursery.cancel_scope.cancel()

    async def drop(self) -> None:
        for scope, stream in self._links:
            scope.cancel()
            await stream.aclose()
        self._links.clear()

    def freeze(self) -> None:
        for scope, _ in self._links:
            scope.cancel()
