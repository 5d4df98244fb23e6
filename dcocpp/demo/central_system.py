"""A small central system for the demo, on dcocpp's own RPC in the server role.

It does what a CSMS must for a charger to charge and nothing more: it accepts every
BootNotification, answers Heartbeat, authorizes the tags of a fixed list (anything else is
`Invalid`), hands out transaction ids from 1, and records what the charger reports (statuses,
transactions, the latest meter values) so that the demo can show and summarise them. Every
payload is validated against the OCPP 1.6 schemas in both directions, as `RpcConnection` does by
default, so the demo is also a conformance check of the charger's messages.

It keeps everything in memory and serves any number of charge points (their records are kept
together; the demo runs one).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

import attrs
import trio
import trio.testing
from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.datatypes import IdTagInfo
from ocpp.v16.enums import Action, AuthorizationStatus, Reason, RegistrationStatus
from trio_websocket import WebSocketConnection

from dcocpp.clock import WallClock, ocpp_time
from dcocpp.ocpp import transport
from dcocpp.ocpp.messagelog import MessageLog
from dcocpp.ocpp.rpc import RpcConnection

__all__ = [
    "AuthorizationRecord",
    "CsmsEvent",
    "DemoCentralSystem",
    "StatusRecord",
    "TransactionRecord",
]

log = logging.getLogger(__name__)

_ENERGY_REGISTER = "Energy.Active.Import.Register"
_POWER = "Power.Active.Import"
# Units the meter may use, as a factor to Wh or W.
_SCALE = {"Wh": 1, "kWh": 1000, "W": 1, "kW": 1000}


def _now(clock: WallClock | None = None) -> str:
    now = datetime.now(UTC) if clock is None else clock.now()
    return ocpp_time(now, "seconds")


@attrs.define
class TransactionRecord:
    """One transaction as the central system knows it. Times are the charger's timestamps."""

    transaction_id: int
    charge_point_id: str
    connector_id: int
    id_tag: str
    meter_start: int  # Wh
    started_at: str
    status: AuthorizationStatus  # the idTagInfo given in StartTransaction.conf
    meter_stop: int | None = None
    stopped_at: str | None = None
    reason: str | None = None
    # The latest MeterValues of this transaction, in Wh and W.
    last_energy_wh: float | None = None
    last_power_w: float | None = None
    meter_value_messages: int = 0

    @property
    def active(self) -> bool:
        return self.meter_stop is None

    @property
    def energy_wh(self) -> int | None:
        """meterStop - meterStart, once stopped."""
        return None if self.meter_stop is None else self.meter_stop - self.meter_start


@attrs.frozen
class AuthorizationRecord:
    charge_point_id: str
    id_tag: str
    status: AuthorizationStatus


@attrs.frozen
class StatusRecord:
    status: str
    error_code: str
    timestamp: str | None
    info: str | None = None


@attrs.frozen
class CsmsEvent:
    """Something the central system was told, for a display: the action, the connector it
    concerns (None for the charge point as a whole) and one human readable line."""

    action: str
    connector_id: int | None
    text: str


class DemoCentralSystem:
    """Accepts boot, authorizes `accepted_tags`, records transactions.

    `run()` serves charge points on TCP; `memory_network()` connects them in memory instead.
    `observer`, when given, is called (synchronously, from the handler) with a `CsmsEvent` for
    every CALL the charge point makes.
    """

    def __init__(
        self,
        accepted_tags: Collection[str],
        heartbeat_interval: int = 60,
        *,
        observer: Callable[[CsmsEvent], None] | None = None,
        clock: WallClock | None = None,
    ):
        self.accepted_tags = frozenset(accepted_tags)
        self.clock = clock  # its time (None: the system's), which the charger follows
        self.heartbeat_interval = heartbeat_interval
        self.observer = observer
        self.transactions: list[TransactionRecord] = []
        self.authorizations: list[AuthorizationRecord] = []
        # The latest status per connector (0 is the charge point), and every one in order.
        self.statuses: dict[int, StatusRecord] = {}
        self.status_history: list[tuple[int, str]] = []
        self.boots: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.charge_point_id: str | None = None
        self.connected = False
        self._transaction_ids = itertools.count(1)
        self._changed = trio.Event()

    # --- serving ----------------------------------------------------------------------------

    async def run(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Serve charge points on host:port until cancelled; `task_status` gets the bound port
        (port 0 picks a free one). Charge points connect to `ws://host:port/<anything>/<id>`."""
        await transport.serve(self.handle_connection, host, port, task_status=task_status)

    def memory_network(self, nursery: trio.Nursery) -> transport.OpenStream:
        """An `open_stream` for the charge point that reaches this central system through
        in-memory streams, served in `nursery`: no sockets, so it runs on a virtual clock."""

        async def open_stream(host: str, port: int) -> trio.abc.Stream:
            client, server = trio.testing.memory_stream_pair()
            nursery.start_soon(transport.serve_stream, server, self.handle_connection)
            return client

        return open_stream

    async def handle_connection(self, charge_point_id: str, ws: WebSocketConnection) -> None:
        """Serve one charge point's WebSocket until it closes."""
        self.charge_point_id = charge_point_id
        self.connected = True
        self._notify()
        log.info("charge point %s connected", charge_point_id)
        rpc = RpcConnection(ws, self, message_log=MessageLog(f"cp:{charge_point_id}"))
        try:
            await rpc.run()
        finally:
            self.connected = False
            self._notify()

    # --- observation ------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Until `predicate()` holds; it is checked after every message the CSMS handled."""
        while not predicate():
            await self._changed.wait()

    def transaction(self, transaction_id: int) -> TransactionRecord | None:
        for record in self.transactions:
            if record.transaction_id == transaction_id:
                return record
        return None

    def authorization_status(self, id_tag: str) -> AuthorizationStatus:
        if id_tag in self.accepted_tags:
            return AuthorizationStatus.accepted
        return AuthorizationStatus.invalid

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _event(self, action: str, connector_id: int | None, text: str) -> None:
        self._notify()
        if self.observer is not None:
            self.observer(CsmsEvent(action, connector_id, text))

    # --- handlers ---------------------------------------------------------------------------

    @on(Action.boot_notification)
    def on_boot_notification(self, **payload: Any) -> call_result.BootNotification:
        self.boots.append(payload)
        self._event(
            "BootNotification",
            None,
            f"BootNotification from {payload['charge_point_vendor']} "
            f"{payload['charge_point_model']} -> Accepted",
        )
        return call_result.BootNotification(
            current_time=_now(self.clock),
            interval=self.heartbeat_interval,
            status=RegistrationStatus.accepted,
        )

    @on(Action.heartbeat)
    def on_heartbeat(self) -> call_result.Heartbeat:
        self.heartbeats += 1
        self._notify()
        return call_result.Heartbeat(current_time=_now(self.clock))

    @on(Action.status_notification)
    def on_status_notification(
        self,
        connector_id: int,
        error_code: str,
        status: str,
        timestamp: str | None = None,
        info: str | None = None,
        **_: Any,
    ) -> call_result.StatusNotification:
        self.statuses[connector_id] = StatusRecord(status, error_code, timestamp, info)
        self.status_history.append((connector_id, status))
        text = f"StatusNotification connector {connector_id}: {status}"
        if error_code != "NoError":
            text += f" ({error_code}{f', {info}' if info else ''})"
        self._event("StatusNotification", connector_id, text)
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str) -> call_result.Authorize:
        status = self.authorization_status(id_tag)
        self.authorizations.append(AuthorizationRecord(self.charge_point_id or "", id_tag, status))
        self._event("Authorize", None, f"Authorize {id_tag} -> {status.value}")
        return call_result.Authorize(id_tag_info=IdTagInfo(status=status))

    @on(Action.start_transaction)
    def on_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: Any
    ) -> call_result.StartTransaction:
        status = self.authorization_status(id_tag)
        record = TransactionRecord(
            transaction_id=next(self._transaction_ids),
            charge_point_id=self.charge_point_id or "",
            connector_id=connector_id,
            id_tag=id_tag,
            meter_start=meter_start,
            started_at=timestamp,
            status=status,
        )
        self.transactions.append(record)
        self._event(
            "StartTransaction",
            connector_id,
            f"StartTransaction connector {connector_id}, {id_tag}, meterStart {meter_start} Wh "
            f"-> transaction {record.transaction_id} ({status.value})",
        )
        return call_result.StartTransaction(
            transaction_id=record.transaction_id, id_tag_info=IdTagInfo(status=status)
        )

    @on(Action.meter_values)
    def on_meter_values(
        self,
        connector_id: int,
        meter_value: list[dict[str, Any]],
        transaction_id: int | None = None,
    ) -> call_result.MeterValues:
        record = self.transaction(transaction_id) if transaction_id is not None else None
        if record is not None:
            record.meter_value_messages += 1
            for value in meter_value:
                for sample in value.get("sampled_value", []):
                    self._take_sample(record, sample)
        self._notify()
        return call_result.MeterValues()

    @staticmethod
    def _take_sample(record: TransactionRecord, sample: dict[str, Any]) -> None:
        measurand = sample.get("measurand", _ENERGY_REGISTER)  # the OCPP default
        if measurand not in (_ENERGY_REGISTER, _POWER):
            return
        try:
            number = Decimal(sample["value"])
        except (InvalidOperation, KeyError):
            return  # not a number: a real CSMS would flag the meter; the demo ignores it
        unit = sample.get("unit", "Wh")
        scaled = float(number * _SCALE.get(unit, 1))
        if measurand == _ENERGY_REGISTER:
            record.last_energy_wh = scaled
        else:
            record.last_power_w = scaled

    @on(Action.stop_transaction)
    def on_stop_transaction(
        self,
        meter_stop: int,
        timestamp: str,
        transaction_id: int,
        reason: str | None = None,
        id_tag: str | None = None,
        **_: Any,
    ) -> call_result.StopTransaction:
        reason = reason or Reason.local.value  # an absent reason means Local (OCPP 1.6 7.42)
        record = self.transaction(transaction_id)
        if record is None or not record.active:
            # Answered all the same: the charger must be able to empty its queue.
            log.warning("StopTransaction for unknown or stopped transaction %s", transaction_id)
            self._event(
                "StopTransaction", None, f"StopTransaction for unknown transaction {transaction_id}"
            )
        else:
            record.meter_stop = meter_stop
            record.stopped_at = timestamp
            record.reason = reason
            self._event(
                "StopTransaction",
                record.connector_id,
                f"StopTransaction {transaction_id} ({reason}), meterStop {meter_stop} Wh: "
                f"{record.energy_wh} Wh delivered",
            )
        if id_tag is None:
            return call_result.StopTransaction()
        return call_result.StopTransaction(
            id_tag_info=IdTagInfo(status=self.authorization_status(id_tag))
        )
