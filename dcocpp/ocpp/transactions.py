"""Transaction messages to the central system: StartTransaction, transaction MeterValues,
StopTransaction (and SecurityEventNotification, Diagnostics-, (Signed)Firmware- and
LogStatusNotification),
persisted, sent in order, one in flight, each until it is answered.

Every message is written to the station database (`OutboxStore`) before the state it
describes is acknowledged to anyone, and deleted only when its CALLRESULT arrives, so neither a
lost connection nor a power cut loses it. A transaction exists locally from its start
(`LocalTransaction`, with a local id); the central system's transactionId is stored when
StartTransaction.conf brings it, and the messages queued behind that StartTransaction get it
at send time: a transaction started offline never produces a message with a wrong or negative
id, even across a reboot in between.

Order and retries. Messages go out in the order they were queued, one in flight, only while
registration is Accepted. A lost connection or a missing answer resends the same message on the
next connection (OCPP-J cannot tell whether an unanswered CALL arrived: the central system sees
it at least once, never out of order). A CALLERROR (or an invalid answer) is retried after
TransactionMessageRetryInterval x attempt, up to TransactionMessageAttempts; then the message is
*parked*, logged as an error, and retried after the next reconnect. A message waiting for its
retry, or parked, holds back the later messages of its own transaction (their order matters)
but not those of other transactions, which a single poisoned message must not stop being
billed: it waits aside, and the sender goes on with the others. One exception: a parked
MeterValues does not hold back its transaction's StopTransaction, which bills and ends the
session for the central system; it would wait for the next reconnect, which may be days away.
The stop goes ahead of it (logged), and the parked MeterValues (with the later ones behind it)
follows after the next reconnect; its transaction, whose transactionId it needs, is forgotten
only with its last message. A refused message of no transaction (SecurityEventNotification,
DiagnosticsStatusNotification, LogStatusNotification) holds back nothing.

Our own bugs. A message that fails our own schema check before it is sent
(`UnsendablePayload`), or a stored one that cannot even be built, was never seen by the central
system, and retrying it cannot help: it is logged as an error with its payload and repaired or
dropped at once, never retried or parked.
A StopTransaction loses the transactionData that makes it invalid (the samples that fail on
their own first, then all of it) and keeps meterStop, timestamp and reason, which bill; a
MeterValues loses its samples that fail. A message that cannot be repaired is dropped; a
dropped StartTransaction takes its transaction's later messages with it (they would need the
transactionId only it could bring).

Read back. What the database gives back at boot may hold garbage (a bit flip, a hand edit;
dcocpp/storage.py drops the rows it cannot attribute). A transaction must still be billed: a
StartTransaction or StopTransaction whose payload cannot be read, or sent even repaired, is
rebuilt from its transaction (a StopTransaction at its last persisted reading, reason Other),
and one lost altogether is queued anew (a StartTransaction, ahead of its transaction's other
messages) or made again (a StopTransaction). Any other message that cannot be read is dropped.
Each of these is one ERROR line.

Power loss. `recover()` runs at every boot: a transaction the database still holds as running
was cut off (the process died or the power went) and is stopped with reason PowerLoss. It is
never resumed: after a restart the PLC has opened the relay (its RelayControl watchdog) and the
EV has ended its session. Its meterStop is the highest of: the meter register the hardware
kept through the cut (a PLC's meter does; the station hands it over, None where there is
none), the last reading persisted for it (`record_meter`, every 10 s while it ran), and the
readings of the stop samples it carries; so the register bills the energy that flowed after
the last checkpoint, and a register that reads lower (a replaced or reset meter) never takes
anything off the bill. A register above the checkpoint by more than the gun can have delivered
since (the station says how much) is a meter that jumped meanwhile, and is not billed. Its
timestamp is that checkpoint's time, the last moment the charger saw it running: the cut came
at most one checkpoint interval later, whereas the boot can be hours later (after a power
cut), which a tariff by the minute would bill.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio
from ocpp.messages import MessageType
from ocpp.v16 import call
from ocpp.v16.enums import Measurand, Reason, UnitOfMeasure, ValueFormat

from dcocpp.concurrency import Pulse
from dcocpp.ocpp import wire
from dcocpp.ocpp.errors import CallError, ConnectionLost, InvalidPayload, UnsendablePayload
from dcocpp.ocpp.session import ChargePointSession, ResponseTimeout

log = logging.getLogger(__name__)

Confirmed = Callable[[int, dict[str, Any]], Awaitable[None]]

# Messages whose payload gets the central system's transactionId at send time.
_NEEDS_TRANSACTION_ID = {"MeterValues", "StopTransaction"}
_OF_A_TRANSACTION = {"StartTransaction", *_NEEDS_TRANSACTION_ID}
# Those a transaction can tell again when what was stored cannot be read back: they bill.
_REBUILT = {"StartTransaction", "StopTransaction"}
_CALLS: dict[str, Callable[..., Any]] = {
    "StartTransaction": call.StartTransaction,
    "MeterValues": call.MeterValues,
    "StopTransaction": call.StopTransaction,
    "SecurityEventNotification": call.SecurityEventNotification,
    "DiagnosticsStatusNotification": call.DiagnosticsStatusNotification,
    "LogStatusNotification": call.LogStatusNotification,
    "FirmwareStatusNotification": call.FirmwareStatusNotification,
    "SignedFirmwareStatusNotification": call.SignedFirmwareStatusNotification,
}
# A central system without the security extension answers these; it will not change its mind.
_UNSUPPORTED = {"NotImplemented", "NotSupported"}
_WH_PER_UNIT = {UnitOfMeasure.wh: 1, UnitOfMeasure.kwh: 1000}
# Where a message carries its MeterValue samples (what `_repaired` may take away).
_SAMPLES = {"StopTransaction": "transaction_data", "MeterValues": "meter_value"}


class OutboxStore(Protocol):
    """What the outbox needs from the station database (`asyncdb.AsyncDatabase` provides it:
    each call returns once it is on disk, in the order the calls were made)."""

    # Rows with the columns of the `transactions` / `outbox` tables as attributes (the
    # storage layer's TransactionRow / QueuedMessage), messages in queue order.
    async def transactions(self) -> list[Any]: ...

    async def queued_messages(self) -> list[Any]: ...

    async def begin_transaction(
        self, fields: Mapping[str, Any], start_payload: Mapping[str, Any], id_tag: str
    ) -> tuple[int, int]: ...

    async def queue_message(
        self,
        action: str,
        local_id: int | None,
        payload: Mapping[str, Any],
        id_tag: str | None = None,
        *,
        stops: bool = False,
    ) -> int: ...

    async def record_meter(self, local_id: int, energy_wh: int, at: str) -> None: ...

    async def transaction_data(self) -> dict[int, list[dict[str, Any]]]: ...

    async def add_transaction_data(
        self, local_id: int, sample: Mapping[str, Any], energy_wh: int, at: str
    ) -> None: ...

    async def message_delivered(
        self, seq: int, *, finished: int | None = None, confirmed: tuple[int, int] | None = None
    ) -> None: ...

    async def message_failed(self, seq: int, attempts: int, parked: bool) -> None: ...

    async def unpark_messages(self) -> None: ...

    async def firmware_step(
        self,
        plan: Any,
        messages: Sequence[tuple[str, Mapping[str, Any]]] = (),
        *,
        version: str | None = None,
    ) -> list[int]: ...

    async def upload_step(
        self, kind: str, running: Any, action: str, payload: Mapping[str, Any]
    ) -> int: ...


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
    # Its StopTransaction is queued or delivered: the transaction ends with its last message.
    stopped: bool = False


@attrs.define
class _Message:
    seq: int
    action: str
    local_id: int | None
    payload: dict[str, Any]
    id_tag: str | None  # whose idTagInfo the answer carries (for the authorization cache)
    attempts: int = 0
    parked: bool = False
    # A refused message waits for its retry aside (trio time), holding back only the later
    # messages of its own transaction.
    retry_at: float = float("-inf")
    # When it joined the queue of this boot (trio time): the console shows the oldest's age.
    queued_at: float = attrs.field(factory=trio.current_time)


def _power_loss_meter_stop(
    checkpoint: int, register: int | None, samples: list[dict[str, Any]]
) -> tuple[int, str]:
    """The meterStop of a cut-off transaction (see the module docstring) and its source, for
    the log; of equal readings the checkpoint, the fallback, is named."""
    candidates = [(checkpoint, "the last persisted reading")]
    sampled = [wh for wh in map(_register_wh, samples) if wh is not None]
    if sampled:
        candidates.append((max(sampled), "a stop sample it carries"))
    if register is not None:
        candidates.append((register, "the meter's register"))
    return max(candidates, key=lambda candidate: candidate[0])


def _message(stored: Any, payload: dict[str, Any]) -> _Message:
    """The `_Message` of a stored one (the storage layer's `QueuedMessage`), with `payload`."""
    return _Message(
        stored.seq,
        stored.action,
        stored.local_id,
        payload,
        stored.id_tag,
        stored.attempts,
        stored.parked,
    )


def _sendable(action: str, payload: Mapping[str, Any] | None) -> bool:
    """Whether `payload`, or what `_repaired` makes of it, passes our schema check."""
    while payload is not None:
        probe = {**payload, "transaction_id": 0} if action in _NEEDS_TRANSACTION_ID else payload
        try:
            wire.validate(MessageType.Call, action, wire.to_camel(probe))
        except CallError:
            payload = _repaired(action, payload)
        else:
            return True
    return False


def _rebuilt(action: str, row: Any, id_tag: str | None) -> tuple[dict[str, Any], str]:
    """The payload of a StartTransaction or StopTransaction whose own cannot be read back,
    from its transaction's row, and how it was rebuilt (for the log)."""
    if action == "StartTransaction":
        payload: dict[str, Any] = {
            "connector_id": row.connector_id,
            "id_tag": row.id_tag,
            "meter_start": row.meter_start,
            "timestamp": row.started_at,
        }
        if row.reservation_id is not None:
            payload["reservation_id"] = row.reservation_id
        return payload, ""
    payload = {
        "meter_stop": row.last_meter_wh,
        "timestamp": row.last_meter_at,
        "reason": Reason.other,
    }
    if id_tag is not None:
        payload["id_tag"] = id_tag
    how = (
        f", at its last persisted reading {row.last_meter_wh} Wh at {row.last_meter_at}"
        " (reason Other: its own is lost)"
    )
    return payload, how


def _register_wh(sample: Mapping[str, Any]) -> int | None:
    """The highest Energy.Active.Import.Register reading (Wh) in a MeterValue sample, None
    without one. OCPP 1.6's defaults apply: a value without measurand is that register, one
    without unit is in Wh, one without format is Raw (SignedData is no number)."""
    register = Measurand.energy_active_import_register
    readings = []
    values = sample.get("sampled_value", ())
    # A sample read back from the database may hold anything (see dcocpp/storage/columns.py).
    for value in values if isinstance(values, list) else ():
        unit = value.get("unit", UnitOfMeasure.wh) if isinstance(value, dict) else None
        scale = _WH_PER_UNIT.get(unit) if isinstance(unit, str) else None
        if scale is None or value.get("measurand", register) != register:
            continue
        if value.get("format", ValueFormat.raw) != ValueFormat.raw:
            continue
        try:
            reading = float(value["value"]) * scale
        except (KeyError, TypeError, ValueError, OverflowError):
            continue
        if math.isfinite(reading):
            readings.append(round(reading))
    return max(readings, default=None)


class TransactionOutbox:
    """Runs as a service (`run`); connectors enqueue with the coroutines below, which return
    once the message is on disk (in the store's worker thread, off the event loop): the
    caller acts on it only then. `recover()` first, once per boot. Raises the store's errors
    (StorageError) from the enqueueing methods, and from `run` for the writes it makes.

    Messages are queued in the order of their seq, which the database assigns in the order
    the writes were asked for, whichever task resumes first after its write."""

    def __init__(self, session: ChargePointSession, store: OutboxStore):
        self.session = session
        self._store = store
        self._queue: list[_Message] = []
        self._transactions: dict[int, LocalTransaction] = {}  # by local id, until stopped+sent
        self._wake = Pulse()
        self._loaded = False

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def empty(self) -> bool:
        return not self._queue

    @property
    def parked(self) -> int:
        return sum(1 for m in self._queue if m.parked)

    def oldest_age(self) -> float | None:
        """Seconds the oldest queued message has waited (since this boot loaded it); None:
        the queue is empty."""
        if not self._queue:
            return None
        return trio.current_time() - min(m.queued_at for m in self._queue)

    # --- boot -----------------------------------------------------------------------------

    async def recover(
        self,
        now: str,
        registers: Mapping[int, int | None] | None = None,
        max_rise: Mapping[int, float] | None = None,
    ) -> list[LocalTransaction]:
        """Load what the database holds; stop every transaction that was still running with
        reason PowerLoss, at the highest of its gun's meter register in `registers`
        (connector id -> Wh, None or absent: the hardware keeps none), its last persisted
        reading and the readings of the samples it carries, timestamped at that persisted
        reading (see the module docstring). A register above the persisted reading by more
        than `max_rise` (connector id -> Wh: what the gun can deliver between two persisted
        readings and the cut) is not billed. Returns those transactions."""
        rows = await self._store.transactions()
        await self._load_queue(rows)
        # A stopped transaction keeps its row while messages of it are left: its
        # StopTransaction went ahead of a parked MeterValues and was delivered.
        waiting = {m.local_id for m in self._queue}
        cut_off = []
        samples = await self._store.transaction_data()
        for row in rows:
            tx = LocalTransaction(
                row.local_id,
                row.connector_id,
                row.id_tag,
                row.meter_start,
                row.started_at,
                row.reservation_id,
                row.transaction_id,
                transaction_data=samples.get(row.local_id, []),
            )
            tx.stopped = bool(row.stopped)
            self._transactions[tx.local_id] = tx
            if row.stopped and row.local_id not in waiting:
                # Nothing of it is left, not even its StopTransaction, which was dropped as it
                # could not be read back (see the storage layer): the central system must
                # still hear that it ended.
                log.error(
                    "transaction %d was stopped, but its StopTransaction is lost: stopping it"
                    " again at its last persisted reading %d Wh at %s (reason Other)",
                    row.local_id,
                    row.last_meter_wh,
                    row.last_meter_at,
                )
                await self.stop(tx, row.last_meter_wh, row.last_meter_at, Reason.other, None)
            elif not row.stopped:
                register = (registers or {}).get(row.connector_id)
                rise = (max_rise or {}).get(row.connector_id)
                kept = "none kept" if register is None else f"{register} Wh"
                if (
                    register is not None
                    and rise is not None
                    and register > row.last_meter_wh + rise
                ):
                    kept += ", more than the gun can have delivered since: not billed"
                    register = None  # a meter that jumped meanwhile
                meter_stop, source = _power_loss_meter_stop(
                    row.last_meter_wh, register, tx.transaction_data
                )
                log.warning(
                    "transaction %s on connector %d (%s) was cut off by a power loss or crash:"
                    " stopping it at %d Wh from %s (meter register %s; last persisted reading"
                    " %d Wh at %s)",
                    row.transaction_id if row.transaction_id is not None else "(offline)",
                    row.connector_id,
                    row.id_tag,
                    meter_stop,
                    source,
                    kept,
                    row.last_meter_wh,
                    row.last_meter_at,
                )
                await self.stop(tx, meter_stop, row.last_meter_at, Reason.power_loss, None)
                cut_off.append(tx)
        self._loaded = True
        self._pulse()
        if self._queue:
            log.info(
                "%d transaction message(s) waiting from before (%d parked)",
                len(self._queue),
                self.parked,
            )
        return cut_off

    async def _load_queue(self, rows: list[Any]) -> None:
        """The queue as the database holds it, each message checked (`_read_back`). A
        transaction whose transactionId is not known and whose StartTransaction is lost
        (dropped as it could not be read back) has it queued anew, rebuilt from its `rows`
        entry: only it can bring the id its other messages need. A transaction's
        StartTransaction goes ahead of its other messages (that one comes last by seq)."""
        by_id = {row.local_id: row for row in rows}
        queue = []
        for stored in await self._store.queued_messages():
            message = await self._read_back(stored, by_id.get(stored.local_id))
            if message is not None:
                queue.append(message)
        starts: dict[int | None, _Message] = {}
        for message in queue:
            if message.action == "StartTransaction":
                starts.setdefault(message.local_id, message)
        for row in rows:
            if row.transaction_id is None and row.local_id not in starts:
                payload, _ = _rebuilt("StartTransaction", row, None)
                seq = await self._store.queue_message(
                    "StartTransaction", row.local_id, payload, row.id_tag
                )
                log.error(
                    "transaction %d has no transactionId and its StartTransaction is lost:"
                    " queued anew, rebuilt from the transaction",
                    row.local_id,
                )
                message = _Message(seq, "StartTransaction", row.local_id, payload, row.id_tag)
                starts[row.local_id] = message
                queue.append(message)
        # Messages queued from now on come after all of these, whatever their order.
        self._queue = []
        waiting = dict(starts)
        for message in queue:
            start = waiting.pop(message.local_id, None)  # at its transaction's first message
            if start is not None:
                self._queue.append(start)
            if message is not starts.get(message.local_id):
                self._queue.append(message)

    async def _read_back(self, stored: Any, row: Any) -> _Message | None:
        """A queued message as the database gave it back (`row`: its transaction's, None
        for none): as it is, or, for a StartTransaction or StopTransaction whose payload
        cannot be read or sent even repaired (`_repaired`), rebuilt from its transaction,
        which must be billed; else dropped (None) with an ERROR line, as a message that can
        never be sent."""
        name = f"{stored.action} #{stored.seq}" + (
            f" of transaction {stored.local_id}" if stored.local_id is not None else ""
        )
        problem = stored.unreadable
        if row is None and stored.action in _OF_A_TRANSACTION:
            problem = "belongs to no transaction"
        elif stored.action not in _REBUILT:
            if problem is None:  # the sender repairs or drops what fails the schema
                return _message(stored, stored.payload)
            problem = f"cannot be read ({problem})"
        elif problem is None and _sendable(stored.action, stored.payload):
            return _message(stored, stored.payload)
        else:
            payload, how = _rebuilt(stored.action, row, stored.id_tag)
            log.error(
                "%s cannot be read (%s): rebuilt from its transaction%s",
                name,
                problem or f"fails the OCPP schema: {stored.payload}",
                how,
            )
            return _message(stored, payload)
        log.error("%s %s: dropped", name, problem)
        await self._store.message_delivered(stored.seq)
        return None

    # --- enqueueing -----------------------------------------------------------------------

    async def start(
        self,
        connector_id: int,
        id_tag: str,
        meter_start: int,
        timestamp: str,
        *,
        reservation_id: int | None = None,
        on_confirmed: Confirmed | None = None,
    ) -> LocalTransaction:
        payload: dict[str, Any] = {
            "connector_id": connector_id,
            "id_tag": id_tag,
            "meter_start": meter_start,
            "timestamp": timestamp,
        }
        if reservation_id is not None:
            payload["reservation_id"] = reservation_id
        fields = {
            "connector_id": connector_id,
            "id_tag": id_tag,
            "meter_start": meter_start,
            "started_at": timestamp,
            "reservation_id": reservation_id,
            "last_meter_wh": meter_start,
            "last_meter_at": timestamp,
        }
        local_id, seq = await self._store.begin_transaction(fields, payload, id_tag)
        tx = LocalTransaction(
            local_id,
            connector_id,
            id_tag,
            meter_start,
            timestamp,
            reservation_id,
            on_confirmed=on_confirmed,
        )
        self._transactions[local_id] = tx
        self._append(_Message(seq, "StartTransaction", local_id, payload, id_tag))
        return tx

    async def meter_values(self, tx: LocalTransaction, meter_value: list[dict[str, Any]]) -> None:
        payload = {"connector_id": tx.connector_id, "meter_value": meter_value}
        seq = await self._store.queue_message("MeterValues", tx.local_id, payload)
        self._append(_Message(seq, "MeterValues", tx.local_id, payload, None))

    def holds_meter_values(self, tx: LocalTransaction, context: str) -> bool:
        """Whether a MeterValues of `tx` with samples of `context` only is still queued (not
        answered yet)."""
        return any(
            message.action == "MeterValues"
            and message.local_id == tx.local_id
            and all(
                value.get("context") == context
                for sample in message.payload["meter_value"]
                for value in sample.get("sampled_value", ())
            )
            for message in self._queue
        )

    async def add_transaction_data(
        self, tx: LocalTransaction, sample: dict[str, Any], energy_wh: int, timestamp: str
    ) -> None:
        """A StopTxnSampledData / StopTxnAlignedData sample for the transaction's
        StopTransaction, taken at meter reading `energy_wh` at `timestamp`; persisted with
        that reading (as `record_meter`), so that a PowerLoss stop after a power cut carries
        the sample and bills at least up to it."""
        await self._store.add_transaction_data(tx.local_id, sample, energy_wh, timestamp)
        tx.transaction_data.append(sample)

    async def record_meter(self, tx: LocalTransaction, energy_wh: int, timestamp: str) -> None:
        """The transaction's latest meter reading: what a PowerLoss stop would bill."""
        await self._store.record_meter(tx.local_id, energy_wh, timestamp)

    async def stop(
        self,
        tx: LocalTransaction,
        meter_stop: int,
        timestamp: str,
        reason: str,
        id_tag: str | None,
    ) -> None:
        payload: dict[str, Any] = {
            "meter_stop": meter_stop,
            "timestamp": timestamp,
            "reason": reason,
        }
        if id_tag is not None:
            payload["id_tag"] = id_tag
        # OCPP 1.6 has no MeterValue without a sampled value (the schema lets one through);
        # an older version stored such samples.
        samples = [sample for sample in tx.transaction_data if sample.get("sampled_value")]
        if samples:
            payload["transaction_data"] = samples
        seq = await self._store.queue_message(
            "StopTransaction", tx.local_id, payload, id_tag, stops=True
        )
        tx.stopped = True
        self._append(_Message(seq, "StopTransaction", tx.local_id, payload, id_tag))

    async def security_event(self, kind: str, timestamp: str, tech_info: str | None = None) -> None:
        """SecurityEventNotification (OCPP 1.6 security whitepaper): queued like the others."""
        # tech_info always given: the package's dataclass has no default for it (None is
        # left out on the wire).
        payload = {"type": kind, "timestamp": timestamp, "tech_info": tech_info}
        await self._queue_of_no_transaction("SecurityEventNotification", payload)

    async def upload_status(
        self, kind: str, running: Any, action: str, payload: dict[str, Any]
    ) -> None:
        """An upload's status message (DiagnosticsStatusNotification, LogStatusNotification)
        in the same database write as the upload of `kind` it tells of (the storage layer's
        row; None: the upload ended): one left at boot was cut off, and is told so once."""
        seq = await self._store.upload_step(kind, running, action, payload)
        self._append(_Message(seq, action, None, payload, None))

    async def _queue_of_no_transaction(self, action: str, payload: dict[str, Any]) -> None:
        seq = await self._store.queue_message(action, None, payload)
        self._append(_Message(seq, action, None, payload, None))

    async def firmware_step(
        self,
        plan: Any,
        statuses: Sequence[str] = (),
        *,
        request_id: int | None = None,
        version: str | None = None,
        security_event: tuple[str, str, str | None] | None = None,
    ) -> None:
        """The firmware update's plan (the storage layer's row; None: deleted) written in the
        same database write as the status notifications that tell its change
        (SignedFirmwareStatusNotification with `request_id` for a signed update, else
        FirmwareStatusNotification), a SecurityEventNotification (type, timestamp, techInfo)
        and the installed `version`: a restart at any point neither loses nor repeats a step."""
        messages: list[tuple[str, dict[str, Any]]] = []
        for status in statuses:
            if request_id is None:
                messages.append(("FirmwareStatusNotification", {"status": status}))
            else:
                payload = {"status": status, "request_id": request_id}
                messages.append(("SignedFirmwareStatusNotification", payload))
        if security_event is not None:
            kind, timestamp, tech_info = security_event
            payload = {"type": kind, "timestamp": timestamp, "tech_info": tech_info}
            messages.append(("SecurityEventNotification", payload))
        seqs = await self._store.firmware_step(plan, messages, version=version)
        for seq, (action, payload) in zip(seqs, messages, strict=True):
            self._append(_Message(seq, action, None, payload, None))

    def _append(self, message: _Message) -> None:
        # In seq order: two writes resume their tasks in either order.
        bisect.insort(self._queue, message, key=lambda m: m.seq)
        self._pulse()

    def _done(self, message: _Message) -> None:
        """The message was answered or dropped, and the database says so."""
        self._queue.remove(message)
        self._pulse()

    def _pulse(self) -> None:
        """Wake everyone waiting for a change of the queue (the sender, wait_empty)."""
        self._wake.fire()

    async def wait_empty(self) -> None:
        """Until nothing but parked messages is left (used before a reset): a transaction
        message waiting for its retry counts, a refused SecurityEventNotification does not."""
        while any(self._awaited()):
            await self._wake.wait()

    # --- sending --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send until cancelled; parked messages are retried after every new Accepted
        connection. `recover()` must have run."""
        if not self._loaded:
            raise RuntimeError("TransactionOutbox.recover() must run before run()")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._unpark_after_reconnects)
            task_status.started()
            while True:
                message = self._next()
                if message is None:
                    with trio.move_on_at(self._next_retry()):
                        await self._wake.wait()
                    continue
                await self._send(message)

    def _next(self) -> _Message | None:
        """The first message that may go now: not parked, not waiting for its retry, and
        not behind such a message of its own transaction."""
        now = trio.current_time()
        return next((m for m in self._awaited() if m.retry_at <= now), None)

    def _awaited(self) -> Iterator[_Message]:
        """The messages still to be sent, in order, that are neither parked nor behind a
        message of their own transaction that is parked or waiting for its retry (but a
        StopTransaction behind parked MeterValues only, see the module docstring); of those
        outside any transaction, only the ones not waiting for their retry."""
        # Transactions held back, by local id (never None): True while only parked
        # MeterValues hold it back, which its StopTransaction passes.
        held: dict[int | None, bool] = {}
        now = trio.current_time()
        for message in self._queue:
            local_id = message.local_id
            passes = message.action == "StopTransaction" and held.get(local_id) is True
            if local_id in held and not passes:
                continue
            if message.parked or message.retry_at > now:
                if local_id is not None:
                    passable = message.parked and message.action == "MeterValues"
                    held[local_id] = held.get(local_id, True) and passable
                    if not message.parked:
                        yield message  # its retry is still to come
                continue
            yield message

    def _next_retry(self) -> float:
        """When the earliest refused message waiting aside may be retried (inf: none)."""
        now = trio.current_time()
        waiting = (m.retry_at for m in self._queue if not m.parked and m.retry_at > now)
        return min(waiting, default=float("inf"))

    async def _unpark_after_reconnects(self) -> None:
        connection = self.session.connection_number
        while True:
            await self.session.wait_until_accepted(after_connection=connection)
            connection = self.session.connection_number
            if self.parked:
                log.info("retrying %d parked message(s) on the new connection", self.parked)
                for message in self._queue:
                    message.parked, message.attempts = False, 0
                    message.retry_at = float("-inf")
                self._pulse()
                # In line right after the change above, as every write is (see `_refused`).
                await self._store.unpark_messages()

    async def _send(self, message: _Message) -> None:
        """Send the message; once it is done with (answered, or dropped) it leaves the queue,
        else it stays to be tried again."""
        session = self.session
        payload = dict(message.payload)
        tx = self._transactions.get(message.local_id) if message.local_id is not None else None
        if message.action in _NEEDS_TRANSACTION_ID:
            if tx is None or tx.transaction_id is None:
                log.error(
                    "%s #%d dropped: %s, so it has no transactionId; payload %s",
                    message.action,
                    message.seq,
                    # A transaction is kept until its last message leaves (`_finishes`):
                    # only a database that lost it (or never held it) has none.
                    f"its transaction (local id {message.local_id}) is not in the database"
                    if tx is None
                    # Its StartTransaction is neither ahead of it nor holding it back (see
                    # `_awaited`), and never brought an id: it was dropped (`_unsendable`).
                    else "the StartTransaction of its transaction could not be sent",
                    message.payload,
                )
                await self._drop(message, tx)
                return
            payload["transaction_id"] = tx.transaction_id
        try:
            request = _CALLS[message.action](**payload)
        except (KeyError, TypeError) as exc:  # a stored payload no version of ours built
            await trio.lowlevel.checkpoint()  # many such must not spin
            await self._unsendable(message, tx, "cannot be built", repr(exc))
            return
        connection = session.connection_number
        try:
            result = await session.call(request)
        except UnsendablePayload as exc:
            await trio.lowlevel.checkpoint()  # refused before any I/O: many must not spin
            why = "fails our own OCPP schema check"
            await self._unsendable(message, tx, why, str(exc.error))
            return
        except (ConnectionLost, ResponseTimeout) as exc:
            log.info("%s not delivered (%s); resending after reconnect", message.action, exc)
            if isinstance(exc, ResponseTimeout):
                session.reconnect(f"no answer to {message.action}")  # a stuck link, not a no
            await session.wait_until_accepted(after_connection=connection)
            return
        except (CallError, InvalidPayload) as exc:
            if (
                message.action == "SecurityEventNotification"
                and isinstance(exc, CallError)
                and exc.code in _UNSUPPORTED
            ):
                log.info("the central system does not take SecurityEventNotification (%s)", exc)
                await self._store.message_delivered(message.seq)
                self._done(message)
                return
            await self._refused(message, exc)
            return
        confirmed = None
        if message.action == "StartTransaction":
            assert tx is not None
            confirmed = (tx.local_id, result.transaction_id)
        finished = self._finishes(message, tx)
        # The transactionId and the delivery in one write: a power cut cannot leave a
        # delivered StartTransaction without its id (it would be sent again).
        await self._store.message_delivered(message.seq, finished=finished, confirmed=confirmed)
        self._done(message)  # memory follows the disk before anything else may run
        if finished is not None:
            self._transactions.pop(finished, None)
        elif message.action == "StopTransaction" and tx is not None:
            self._log_stopped_ahead(message, tx)
        if confirmed is not None:
            assert tx is not None
            tx.transaction_id = result.transaction_id
            if tx.on_confirmed is not None:
                await tx.on_confirmed(result.transaction_id, result.id_tag_info)
        info = getattr(result, "id_tag_info", None)
        if info and message.id_tag:
            await session.remember_authorization(message.id_tag, info)

    async def _unsendable(
        self, message: _Message, tx: LocalTransaction | None, why: str, detail: str
    ) -> None:
        """We cannot build the message or our own schema check refuses it (see the module
        docstring): repair it (it is sent again at once), or drop it. Never retried as it
        is."""
        repaired = _repaired(message.action, message.payload)
        log.error(
            "%s #%d %s, a bug of this charger (%s); %s. Payload: %s",
            message.action,
            message.seq,
            why,
            detail,
            "sending it repaired" if repaired is not None else "dropping it",
            message.payload,
        )
        if repaired is not None:
            # In memory only: after a restart the same repair is made (and logged) again.
            message.payload = repaired
            return
        await self._drop(message, tx)

    async def _drop(self, message: _Message, tx: LocalTransaction | None) -> None:
        """Forget a message that can never be sent; it ends its transaction as a delivered
        one would."""
        finished = self._finishes(message, tx)
        await self._store.message_delivered(message.seq, finished=finished)
        self._done(message)
        if finished is not None:
            self._transactions.pop(finished, None)

    def _finishes(self, message: _Message, tx: LocalTransaction | None) -> int | None:
        """The local id of the transaction that ends when `message` leaves the queue: a
        stopped one of which no other message is left (a StopTransaction that went ahead of
        a parked MeterValues leaves its transaction for that one's transactionId)."""
        if tx is None or not tx.stopped:
            return None
        if any(m is not message and m.local_id == tx.local_id for m in self._queue):
            return None
        return tx.local_id

    def _log_stopped_ahead(self, stop: _Message, tx: LocalTransaction) -> None:
        """Say which messages of its transaction a delivered StopTransaction went ahead of:
        parked MeterValues and those queued behind them (`_awaited`)."""
        behind = [m for m in self._queue if m.local_id == tx.local_id]
        log.warning(
            "StopTransaction #%d of transaction %s delivered ahead of its MeterValues %s:"
            " %s after the next reconnect",
            stop.seq,
            tx.transaction_id,
            ", ".join(f"#{m.seq}" + (" (parked)" if m.parked else "") for m in behind),
            "they follow" if len(behind) > 1 else "it follows",
        )

    async def _refused(self, message: _Message, exc: Exception) -> None:
        store = self.session.store
        message.attempts += 1
        limit = max(1, store.get_int("TransactionMessageAttempts"))
        if message.attempts >= limit:
            message.parked = True
            self._pulse()
            await self._store.message_failed(message.seq, message.attempts, True)
            log.error(
                "%s #%d refused %d times (%s): parked; it is retried after the next reconnect,"
                " and the later %s of its transaction wait for it%s",
                message.action,
                message.seq,
                message.attempts,
                exc,
                "MeterValues" if message.action == "MeterValues" else "messages",
                " (its StopTransaction does not)" if message.action == "MeterValues" else "",
            )
            return
        retry = store.get_int("TransactionMessageRetryInterval") * message.attempts
        log.warning(
            "%s refused (%s); attempt %d of %d in %d s",
            message.action,
            exc,
            message.attempts + 1,
            limit,
            retry,
        )
        # Aside, not in line: waiting in the sender would hold back every other
        # transaction's messages, and a reset's StopTransactions, for
        # TransactionMessageRetryInterval x attempt (`_awaited` holds back its own).
        message.retry_at = trio.current_time() + retry
        self._pulse()
        await self._store.message_failed(message.seq, message.attempts, False)


def _repaired(action: str, payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """A smaller payload to try after `payload` failed our own schema check, None when
    nothing is left to take away: each call takes away more, so repairing ends. First the
    samples (transactionData, meterValue) that fail on their own; then a StopTransaction's
    transactionData, then its idTag, keeping what bills (meterStop, timestamp, reason)."""
    field = _SAMPLES.get(action)
    samples = payload.get(field) if field is not None else None
    if field is not None and isinstance(samples, list) and samples:  # stored: may be anything
        valid = [sample for sample in samples if _valid_alone(action, payload, field, sample)]
        if valid and len(valid) < len(samples):
            return {**payload, field: valid}
    if action == "StopTransaction":
        for optional in ("transaction_data", "id_tag"):
            if optional in payload:
                return {key: value for key, value in payload.items() if key != optional}
    return None


def _valid_alone(action: str, payload: Mapping[str, Any], field: str, sample: Any) -> bool:
    """Whether `payload` with `sample` as its only sample passes our schema check."""
    probe = {**payload, field: [sample], "transaction_id": 0}
    try:
        wire.validate(MessageType.Call, action, wire.to_camel(probe))
    except CallError:
        return False
    return True
