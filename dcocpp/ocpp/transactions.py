"""Transaction messages to the central system: StartTransaction, transaction MeterValues and
StopTransaction, sent strictly in order, one in flight, each until it is answered.

A transaction exists locally from the moment it starts (`LocalTransaction`); the central
system's transactionId is filled in when StartTransaction.conf arrives, and the messages queued
behind it are built at send time, so they carry that id. While the central system cannot be
reached nothing is lost: the queue waits for the next Accepted registration and resends.

This queue lives in memory; the offline issue moves it into the station database.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
from ocpp.v16 import call

from dcocpp.ocpp.errors import CallError, ConnectionLost, InvalidPayload
from dcocpp.ocpp.session import ChargePointSession, ResponseTimeout

log = logging.getLogger(__name__)

Confirmed = Callable[[int, dict[str, Any]], Awaitable[None]]


@attrs.define(eq=False)
class LocalTransaction:
    """A transaction as the charge point knows it; `transaction_id` is the CSMS's, once known."""

    local_id: int
    connector_id: int
    id_tag: str
    meter_start: int
    started_at: str
    reservation_id: int | None = None
    transaction_id: int | None = None
    # StopTxnSampledData / StopTxnAlignedData samples, sent as StopTransaction.transactionData.
    transaction_data: list[dict[str, Any]] = attrs.field(factory=list)
    on_confirmed: Confirmed | None = None


@attrs.define
class _Message:
    action: str
    build: Callable[[], Any]  # the v16 call dataclass, built when sent
    transaction: LocalTransaction
    id_tag: str | None  # whose idTagInfo the answer carries (for the authorization cache)
    attempts: int = 0


class TransactionOutbox:
    """Runs as a service (`run`); connectors enqueue without waiting."""

    def __init__(self, session: ChargePointSession):
        self.session = session
        self._queue: deque[_Message] = deque()
        self._wake = trio.Event()
        self._next_local_id = 1

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def empty(self) -> bool:
        return not self._queue

    def start(
        self,
        connector_id: int,
        id_tag: str,
        meter_start: int,
        timestamp: str,
        *,
        reservation_id: int | None = None,
        on_confirmed: Confirmed | None = None,
    ) -> LocalTransaction:
        tx = LocalTransaction(
            self._next_local_id,
            connector_id,
            id_tag,
            meter_start,
            timestamp,
            reservation_id,
            on_confirmed=on_confirmed,
        )
        self._next_local_id += 1
        self._push(
            _Message(
                "StartTransaction",
                lambda: call.StartTransaction(
                    connector_id=connector_id,
                    id_tag=id_tag,
                    meter_start=meter_start,
                    timestamp=timestamp,
                    reservation_id=reservation_id,
                ),
                tx,
                id_tag,
            )
        )
        return tx

    def meter_values(self, tx: LocalTransaction, meter_value: list[dict[str, Any]]) -> None:
        self._push(
            _Message(
                "MeterValues",
                lambda: call.MeterValues(
                    connector_id=tx.connector_id,
                    transaction_id=tx.transaction_id,
                    meter_value=meter_value,
                ),
                tx,
                None,
            )
        )

    def stop(
        self,
        tx: LocalTransaction,
        meter_stop: int,
        timestamp: str,
        reason: str,
        id_tag: str | None,
    ) -> None:
        self._push(
            _Message(
                "StopTransaction",
                lambda: call.StopTransaction(
                    meter_stop=meter_stop,
                    timestamp=timestamp,
                    transaction_id=tx.transaction_id,
                    reason=reason,
                    id_tag=id_tag,
                    transaction_data=tx.transaction_data or None,
                ),
                tx,
                id_tag,
            )
        )

    def _push(self, message: _Message) -> None:
        self._queue.append(message)
        self._wake.set()

    async def wait_empty(self) -> None:
        """Until every queued message was answered (used before a reset)."""
        while self._queue:
            await self._wake.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if not self._queue:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            message = self._queue[0]
            delivered = await self._send(message)
            if delivered:
                self._queue.popleft()
                self._wake.set()  # wait_empty() callers re-check
                self._wake = trio.Event() if self._queue else self._wake

    async def _send(self, message: _Message) -> bool:
        """True when the message is done with (answered, or refused for good)."""
        session = self.session
        tx = message.transaction
        if message.action != "StartTransaction" and tx.transaction_id is None:
            # Its StartTransaction is ahead in the queue, so this cannot happen unless that one
            # was refused for good: the central system has no id to file this under.
            log.error(
                "dropping %s of a transaction the central system never accepted", message.action
            )
            return True
        connection = session.connection_number
        try:
            result = await session.call(message.build())
        except (ConnectionLost, ResponseTimeout) as exc:
            # OCPP-J cannot tell whether a timed-out CALL arrived: resend it on the next
            # connection (the central system sees it at least once, never out of order).
            log.info("%s not delivered (%s); resending after reconnect", message.action, exc)
            if isinstance(exc, ResponseTimeout):
                session.reconnect(f"no answer to {message.action}")  # a stuck link, not a no
            await session.wait_until_accepted(after_connection=connection)
            return False
        except (CallError, InvalidPayload) as exc:
            message.attempts += 1
            limit = max(1, session.store.get_int("TransactionMessageAttempts"))
            if message.attempts >= limit:
                log.error("%s refused %d times, giving up: %s", message.action, limit, exc)
                return True
            retry = session.store.get_int("TransactionMessageRetryInterval") * message.attempts
            log.warning(
                "%s refused (%s); attempt %d of %d in %d s",
                message.action,
                exc,
                message.attempts + 1,
                limit,
                retry,
            )
            await trio.sleep(retry)
            return False
        if message.action == "StartTransaction":
            tx.transaction_id = result.transaction_id
            if tx.on_confirmed is not None:
                await tx.on_confirmed(result.transaction_id, result.id_tag_info)
        info = getattr(result, "id_tag_info", None)
        if info and message.id_tag:
            session.remember_authorization(message.id_tag, info)
        return True
