"""Chaos: many charging sessions on both guns while the link to the central system is cut and
restored at random points and the central system answers some transaction messages with a
CALLERROR, late, or not at all. Afterwards the central system must hold every transaction
exactly once, StartTransaction before its MeterValues before its StopTransaction, the meter
values in time order, and no message lost or duplicated (dcocpp/ocpp/transactions.py is the
spec: at least once on the wire, in order, one in flight, parked after
TransactionMessageAttempts CALLERRORs and retried after the next reconnect; a parked
MeterValues, and those queued behind it, follow its transaction's StopTransaction instead of
holding it back).

The whole station runs in-process on the in-memory network and virtual time
(tests/station_harness.py); a seeded schedule decides, per seed:

- the sessions (`drive_gun`): plug, present a tag, charge some virtual minutes, stop with the
  same tag or by unplugging;
- the link (`cut_links`): dropped (the station reconnects at once), down for a while (refused),
  or frozen (the central system stops reading; the station finds out by ResponseTimeout);
- the central system's answer to each transaction message (`ChaosCsms.schedule`): some
  messages are refused with InternalError once or twice in a row (twice parks them, with
  TransactionMessageAttempts 2), some are answered late, some never (`silent`: not processed;
  `lost`: processed, then the link goes down before the answer).

`ChaosCsms` is idempotent as a real central system is: a StartTransaction it has seen gets the
same transactionId again, and a MeterValues or StopTransaction it already holds is not stored
twice. Its *store* is what billing would see; `attempts` is every transaction message that
arrived on the wire, with what was done with it.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from ocpp.routing import after, on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, AuthorizationStatus

from dcocpp.config import ChargerConfig
from dcocpp.ocpp.errors import CallError
from dcocpp.ocpp.transactions import LocalTransaction, TransactionOutbox
from dcocpp.storage.database import Database
from tests.csms import FakeCsms, MemoryNetwork
from tests.station_harness import Harness, charger_config, running_station

SEEDS = [1, 2, 3, 4, 5]
SESSIONS_PER_GUN = 12
GUNS = (1, 2)
RESPONSE_TIMEOUT = 10  # s (virtual): how long the station waits for an answer
# dcocpp's own keys are read-only (only the key file sets them): see `chaos_config`.
INTERNAL_KEYS = {
    "ResponseTimeout": RESPONSE_TIMEOUT,
    "RetryBackoffWaitMinimum": 1,
    "RetryBackoffWaitMaximum": 20,
}
KEYS = {
    "TransactionMessageAttempts": 2,  # two CALLERRORs in a row park a message
    "TransactionMessageRetryInterval": 5,
    "MeterValueSampleInterval": 30,
    "AllowOfflineTxForUnknownId": True,  # tags work while the central system is away
}
ENERGY = "Energy.Active.Import.Register"


def chaos_config(tmp_path: Path) -> ChargerConfig:
    """The shipped configuration with INTERNAL_KEYS in a copy of its OCPP key file."""
    config = charger_config(tmp_path)
    document = json.loads(config.ocpp_config_path.read_text(encoding="utf-8"))
    document["Internal"].update(INTERNAL_KEYS)
    key_file = tmp_path / "ocpp16-config.json"
    key_file.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return attrs.evolve(config, ocpp_config_path=key_file)


def canonical(value: Any) -> Any:
    """Plain JSON data (enums as their values) for comparing what was queued and received."""
    return json.loads(json.dumps(value))


def identity(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def start_key(payload: dict[str, Any]) -> str:
    """What makes a StartTransaction the same one to a central system."""
    return identity(
        [payload["connector_id"], payload["id_tag"], payload["meter_start"], payload["timestamp"]]
    )


def energy_of(meter_value: dict[str, Any]) -> int | None:
    for sample in meter_value["sampled_value"]:
        if sample.get("measurand") == ENERGY:
            return int(sample["value"])
    return None


# --- the central system ------------------------------------------------------------------------


@attrs.define
class Attempt:
    """One transaction message as it arrived on the wire, and what the central system did."""

    index: int
    time: float
    action: str
    key: str  # the message's whole content (with transactionId): equal keys = the same message
    mode: str  # result | slow | error | silent | lost
    connection: int
    processed: bool = False  # taken into the store (or found there already)
    answered: bool = False  # the CALLRESULT was written to the station's side of the link


class ChaosCsms(FakeCsms):
    """An idempotent central system that misbehaves on transaction messages by a seeded
    schedule while `chaos` is on (see the module docstring). Everything else is answered as
    FakeCsms does."""

    def __init__(self, rng: random.Random):
        super().__init__()
        self.rng = rng
        self.chaos = True
        self.network: MemoryNetwork | None = None
        self.nursery: trio.Nursery | None = None
        self.attempts: list[Attempt] = []
        self._latest: dict[tuple[str, str], Attempt] = {}
        self._errors_left: dict[tuple[str, str], int] = {}
        # The store: the transactionId of each StartTransaction it knows (by `start_key`),
        # and each message once, in the order it was first processed.
        self.transaction_ids: dict[str, int] = {}
        self.stored: list[tuple[str, int, dict[str, Any]]] = []
        self._stored_keys: set[str] = set()
        self.stops: dict[int, dict[str, Any]] = {}
        self.conflicts: list[str] = []
        # The messages (keys) refused twice in a row: parked by the station.
        self.parked: set[str] = set()

    # --- the schedule ---------------------------------------------------------------------

    def schedule(self, action: str, key: str) -> str:
        """How to treat this arrival. A message is refused 0, 1 or 2 times in a row when it
        first arrives (2 parks it); later arrivals may be answered late or not at all."""
        if not self.chaos:
            return "result"
        message = (action, key)
        if message not in self._errors_left:
            self._errors_left[message] = self.rng.choices([0, 1, 2], weights=[84, 9, 7])[0]
            if self._errors_left[message] == 2:
                self.parked.add(key)
        if self._errors_left[message] > 0:
            self._errors_left[message] -= 1
            return "error"
        draw = self.rng.random()
        if draw < 0.05:
            return "silent"
        if draw < 0.09:
            return "lost"
        if draw < 0.17:
            return "slow"
        return "result"

    async def _arrive(self, action: str, payload: dict[str, Any]) -> Attempt:
        """Record the arrival and misbehave as scheduled; returns once the message may be
        processed (and is then answered unless the mode is `lost`)."""
        key = identity(payload)
        attempt = Attempt(
            len(self.attempts),
            trio.current_time(),
            action,
            key,
            self.schedule(action, key),
            self.connections,
        )
        self.attempts.append(attempt)
        self._latest[(action, key)] = attempt
        self._record(action, payload)
        if attempt.mode == "error":
            raise CallError("InternalError", f"chaos refuses {action}")
        if attempt.mode == "silent":
            await trio.sleep_forever()
        if attempt.mode == "slow":
            await trio.sleep(self.rng.uniform(0.1, 0.5) * RESPONSE_TIMEOUT)
        return attempt

    async def _answer_or_lose(self, attempt: Attempt) -> None:
        attempt.processed = True
        if attempt.mode == "lost":
            # Processed, but the link goes down before the answer leaves.
            assert self.network is not None and self.nursery is not None
            self.nursery.start_soon(self.network.drop)
            await trio.sleep_forever()

    def _answered(self, action: str, payload: dict[str, Any]) -> None:
        """@after hook: the CALLRESULT was sent (the RPC runs it only then)."""
        attempt = self._latest.get((action, identity(payload)))
        if attempt is not None:
            attempt.answered = True

    def _store(self, action: str, transaction_id: int, payload: dict[str, Any]) -> None:
        key = identity(payload)
        if key in self._stored_keys:
            return  # a duplicate of what we hold: idempotent
        if action == "StopTransaction":
            if transaction_id in self.stops:
                self.conflicts.append(f"a second, different StopTransaction: {payload}")
                return
            self.stops[transaction_id] = payload
        self._stored_keys.add(key)
        self.stored.append((action, transaction_id, payload))

    # --- handlers -------------------------------------------------------------------------

    @on(Action.start_transaction)
    async def on_start_transaction(self, **payload: Any) -> Any:
        attempt = await self._arrive("StartTransaction", payload)
        key = start_key(payload)
        transaction_id = self.transaction_ids.get(key)
        if transaction_id is None:
            transaction_id = self.next_transaction_id
            self.next_transaction_id += 1
            self.transaction_ids[key] = transaction_id
            self.transactions[transaction_id] = payload
            self._store("StartTransaction", transaction_id, payload)
        await self._answer_or_lose(attempt)
        return call_result.StartTransaction(
            transaction_id=transaction_id, id_tag_info={"status": AuthorizationStatus.accepted}
        )

    @after(Action.start_transaction)
    def after_start_transaction(self, **payload: Any) -> None:
        self._answered("StartTransaction", payload)

    @on(Action.meter_values)
    async def on_meter_values(self, **payload: Any) -> Any:
        transaction_id = payload.get("transaction_id")
        if transaction_id is None:
            # Clock-aligned values between transactions: news, not billing.
            self._record("MeterValues", payload)
            return call_result.MeterValues()
        attempt = await self._arrive("MeterValues", payload)
        if transaction_id not in self.transactions:
            self.conflicts.append(f"MeterValues for unknown transaction {transaction_id}")
        self._store("MeterValues", transaction_id, payload)
        await self._answer_or_lose(attempt)
        return call_result.MeterValues()

    @after(Action.meter_values)
    def after_meter_values(self, **payload: Any) -> None:
        self._answered("MeterValues", payload)

    @on(Action.stop_transaction)
    async def on_stop_transaction(self, **payload: Any) -> Any:
        attempt = await self._arrive("StopTransaction", payload)
        transaction_id = payload["transaction_id"]
        if transaction_id not in self.transactions:
            self.conflicts.append(f"StopTransaction for unknown transaction {transaction_id}")
        self._store("StopTransaction", transaction_id, payload)
        await self._answer_or_lose(attempt)
        id_tag = payload.get("id_tag")
        return call_result.StopTransaction(
            id_tag_info=None if id_tag is None else {"status": AuthorizationStatus.accepted}
        )

    @after(Action.stop_transaction)
    def after_stop_transaction(self, **payload: Any) -> None:
        self._answered("StopTransaction", payload)


# --- what the station queued -------------------------------------------------------------------


@attrs.define
class Queued:
    """Every transaction message the station's outbox was given, by session (numbered in
    start order: the database reuses a local id once its transaction is delivered)."""

    starts: dict[int, dict[str, Any]] = attrs.field(factory=dict)
    meter_values: dict[int, list[dict[str, Any]]] = attrs.field(factory=dict)
    stops: dict[int, dict[str, Any]] = attrs.field(factory=dict)
    by_gun: dict[int, list[int]] = attrs.field(factory=dict)  # sessions in start order
    sessions: dict[LocalTransaction, int] = attrs.field(factory=dict)


def spy_on(outbox: TransactionOutbox, queued: Queued, monkeypatch: pytest.MonkeyPatch) -> None:
    start, meter_values, stop = outbox.start, outbox.meter_values, outbox.stop

    async def spy_start(
        connector_id: int, id_tag: str, meter_start: int, timestamp: str, **kw: Any
    ) -> LocalTransaction:
        tx = await start(connector_id, id_tag, meter_start, timestamp, **kw)
        session = queued.sessions[tx] = len(queued.sessions)
        queued.starts[session] = {
            "connector_id": connector_id,
            "id_tag": id_tag,
            "meter_start": meter_start,
            "timestamp": timestamp,
        }
        queued.meter_values[session] = []
        queued.by_gun.setdefault(connector_id, []).append(session)
        return tx

    async def spy_meter_values(tx: LocalTransaction, meter_value: list[dict[str, Any]]) -> None:
        await meter_values(tx, meter_value)
        queued.meter_values[queued.sessions[tx]].extend(canonical(meter_value))

    async def spy_stop(
        tx: LocalTransaction, meter_stop: int, timestamp: str, reason: str, id_tag: str | None
    ) -> None:
        await stop(tx, meter_stop, timestamp, reason, id_tag)
        payload: dict[str, Any] = {"meter_stop": meter_stop, "timestamp": timestamp}
        payload["reason"] = reason
        if id_tag is not None:
            payload["id_tag"] = id_tag
        if tx.transaction_data:
            payload["transaction_data"] = list(tx.transaction_data)
        queued.stops[queued.sessions[tx]] = canonical(payload)

    monkeypatch.setattr(outbox, "start", spy_start)
    monkeypatch.setattr(outbox, "meter_values", spy_meter_values)
    monkeypatch.setattr(outbox, "stop", spy_stop)


# --- the station's side: EVs and the link ------------------------------------------------------


async def drive_gun(h: Harness, gun: int, seed: int, rng: random.Random) -> None:
    """SESSIONS_PER_GUN sessions, one after the other: plug, tag, charge, stop."""
    task = h.connector(gun)
    for number in range(SESSIONS_PER_GUN):
        tag = f"S{seed}-G{gun}-{number:02d}"
        await h.station.plug(gun)
        await h.station.present_id(gun, tag)
        await h.wait_until(lambda: task.transaction is not None)
        await trio.sleep(rng.uniform(20, 600))
        if rng.random() < 0.5:
            await h.station.present_id(gun, tag)  # the same tag stops (reason Local)
            await h.wait_until(lambda: task.transaction is None)
            await trio.sleep(rng.uniform(0, 30))
        await h.station.unplug(gun)  # mid-transaction: reason EVDisconnected
        await h.wait_until(lambda: task.transaction is None and task.machine.status == "Available")
        await task.wait_settled()
        await trio.sleep(rng.uniform(0, 120))


@attrs.define
class Cuts:
    drops: int = 0
    outages: int = 0
    freezes: int = 0


async def cut_links(network: MemoryNetwork, rng: random.Random, cuts: Cuts) -> None:
    """Until cancelled: now and then drop the link, take the central system away for a
    while, or freeze the link."""
    while True:
        await trio.sleep(rng.expovariate(1 / 150))
        kind = rng.choices(["drop", "outage", "freeze"], weights=[4, 3, 2])[0]
        if kind == "drop":
            cuts.drops += 1
            await network.drop()
        elif kind == "outage":
            cuts.outages += 1
            network.down = True
            await network.drop()
            try:
                await trio.sleep(rng.uniform(10, 600))
            finally:
                network.down = False
        else:
            cuts.freezes += 1
            network.freeze()


async def flush(h: Harness) -> None:
    """Until the outbox is empty; parked messages are retried after a reconnect, so
    reconnect while only parked (and held) messages are left."""
    outbox = h.station.outbox
    assert outbox is not None
    with trio.fail_after(6 * 3600):
        while not outbox.empty:
            if outbox.parked:
                await h.network.drop()
            await trio.sleep(60)


# --- the test ----------------------------------------------------------------------------------


@pytest.fixture
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """The station database without fsync: a few thousand durable commits would cost seconds
    of real time, and this test is about order and delivery within one process, not about
    what survives a power cut (tests/test_crash_recovery.py is)."""
    open_database = Database.open

    def open_without_fsync(data_dir: Path, **options: Any) -> Database:
        db = open_database(data_dir, **options)
        db._db.execute("PRAGMA synchronous=OFF")
        return db

    monkeypatch.setattr(Database, "open", open_without_fsync)


def refusals_parked(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        1
        for r in caplog.records
        if r.name == "dcocpp.ocpp.transactions" and r.levelno == logging.ERROR and "parked" in r.msg
    )


@pytest.mark.parametrize("seed", SEEDS)
async def test_chaos_every_transaction_exactly_once_in_order(
    seed: int,
    autojump_clock: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    no_fsync: None,
) -> None:
    csms = ChaosCsms(random.Random(seed))
    queued = Queued()
    cuts = Cuts()
    async with running_station(chaos_config(tmp_path), csms, keys=KEYS) as h:
        assert h.station.store is not None
        assert h.station.store.get_int("ResponseTimeout") == RESPONSE_TIMEOUT
        csms.network, csms.nursery = h.network, h.nursery
        assert h.station.outbox is not None
        spy_on(h.station.outbox, queued, monkeypatch)
        await h.booted()
        async with trio.open_nursery() as chaos:
            chaos.start_soon(cut_links, h.network, random.Random(seed * 100 + 1), cuts)
            async with trio.open_nursery() as guns:
                for gun in GUNS:
                    guns.start_soon(drive_gun, h, gun, seed, random.Random(seed * 100 + 10 + gun))
            chaos.cancel_scope.cancel()
        # Calm: the link is back and every message is answered.
        h.network.down = False
        csms.chaos = False
        await h.network.drop()  # a frozen link is replaced at once
        await flush(h)

    context = summary(csms, queued, cuts, refusals_parked(caplog))
    check_store(csms, queued, context)
    check_wire(csms, context)
    check_energy(queued, context)
    # The schedule did what it is for (near certain with these rates; a seed that does not
    # is a poor seed, not a pass).
    modes = {a.mode for a in csms.attempts}
    assert {"error", "silent", "lost", "slow"} <= modes, context
    assert refusals_parked(caplog) > 0, context
    assert cuts.drops + cuts.outages + cuts.freezes > 0, context


def summary(csms: ChaosCsms, queued: Queued, cuts: Cuts, parked: int) -> str:
    modes: dict[str, int] = {}
    for attempt in csms.attempts:
        modes[attempt.mode] = modes.get(attempt.mode, 0) + 1
    meter_values = sum(map(len, queued.meter_values.values()))
    return (
        f"sessions {len(queued.starts)}, meter values {meter_values},"
        f" wire attempts {len(csms.attempts)} {modes}, parked {parked}, {cuts},"
        f" connections {csms.connections}"
    )


def check_store(csms: ChaosCsms, queued: Queued, context: str) -> None:
    """The central system's store holds exactly what the station queued, once."""
    assert csms.conflicts == [], context
    assert len(queued.starts) == SESSIONS_PER_GUN * len(GUNS), context
    assert len(queued.stops) == len(queued.starts), context
    # Every session exactly once: one transactionId per distinct StartTransaction.
    assert sorted(csms.transaction_ids) == sorted(map(start_key, queued.starts.values())), context
    expected: list[tuple[str, int, dict[str, Any]]] = []
    for session, start in queued.starts.items():
        transaction_id = csms.transaction_ids[start_key(start)]
        expected.append(("StartTransaction", transaction_id, start))
        for meter_value in queued.meter_values[session]:
            body = {"connector_id": start["connector_id"], "transaction_id": transaction_id}
            expected.append(("MeterValues", transaction_id, {**body, "meter_value": [meter_value]}))
        stop = {**queued.stops[session], "transaction_id": transaction_id}
        expected.append(("StopTransaction", transaction_id, stop))
    stored = [(a, t, canonical(p)) for a, t, p in csms.stored]
    by_transaction: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for action, transaction_id, payload in stored:
        by_transaction.setdefault(transaction_id, []).append((action, payload))
    wanted: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for action, transaction_id, payload in expected:
        wanted.setdefault(transaction_id, []).append((action, payload))
    # Per transaction, in the order the central system first took them: Start, the meter
    # values as queued (none lost, none twice), Stop (or a parked one and those behind it
    # after the Stop).
    stop_last = {
        transaction_id: stop_moved_last(entries, lambda e: identity(e[1]) in csms.parked)
        for transaction_id, entries in by_transaction.items()
    }
    assert stop_last == wanted, context
    assert len(stored) == len(expected), context
    for entries in by_transaction.values():
        stamps = [p["meter_value"][0]["timestamp"] for a, p in entries if a == "MeterValues"]
        assert stamps == sorted(stamps), context


def stop_moved_last(entries: list[Any], parked: Any) -> list[Any]:
    """`entries` (`(action, ...)` of one transaction, in order) with its StopTransaction
    moved to the end if only MeterValues came after it and one of the transaction's
    MeterValues is `parked`: a parked MeterValues, and those queued behind it, do not hold
    back their transaction's stop. Anything else after the stop is left where it is, for the
    caller's check to find."""
    stops = [i for i, entry in enumerate(entries) if entry[0] == "StopTransaction"]
    if len(stops) != 1:
        return entries
    after = entries[stops[0] + 1 :]
    if all(e[0] == "MeterValues" for e in after) and any(
        e[0] == "MeterValues" and parked(e) for e in entries
    ):
        return [*entries[: stops[0]], *after, entries[stops[0]]]
    return entries


def check_wire(csms: ChaosCsms, context: str) -> None:
    """What arrived on the wire: per transaction Start before MeterValues before Stop by
    first arrival (but a parked MeterValues and those behind it may follow the Stop), and a
    message arrives again only after an attempt that was not answered."""
    first: dict[str, Attempt] = {}
    duplicates = 0
    previous: dict[str, Attempt] = {}
    for attempt in csms.attempts:
        before = previous.get(attempt.key)
        if before is not None:
            duplicates += 1
            assert not before.answered, f"{attempt} resent after {before} was answered; {context}"
        else:
            first[attempt.key] = attempt
        previous[attempt.key] = attempt
    # Every message was answered in the end (that is what emptied the outbox).
    assert all(a.answered for a in previous.values()), context
    order: dict[int, list[tuple[str, str]]] = {}
    stamps: dict[int, list[str]] = {}
    for attempt in first.values():
        payload = json.loads(attempt.key)
        if attempt.action == "StartTransaction":
            transaction_id = csms.transaction_ids[start_key(payload)]
        else:
            transaction_id = payload["transaction_id"]
        order.setdefault(transaction_id, []).append((attempt.action, attempt.key))
        if attempt.action == "MeterValues":
            stamps.setdefault(transaction_id, []).append(payload["meter_value"][0]["timestamp"])
    for transaction_id, arrivals in order.items():
        arrivals = stop_moved_last(arrivals, lambda arrival: arrival[1] in csms.parked)
        actions = [action for action, _ in arrivals]
        assert actions[0] == "StartTransaction", (transaction_id, actions, context)
        assert actions[-1] == "StopTransaction", (transaction_id, actions, context)
        assert set(actions[1:-1]) <= {"MeterValues"}, (transaction_id, actions, context)
    for transaction_id, times in stamps.items():
        assert times == sorted(times), (transaction_id, times, context)
    assert duplicates > 0, context  # the chaos made the station resend


def check_energy(queued: Queued, context: str) -> None:
    """Each StopTransaction bills the last reading: meterStop is the Transaction.End sample,
    not below any meter value; a gun's next session starts where the last one stopped."""
    for gun, sessions in queued.by_gun.items():
        last_stop: int | None = None
        for session in sessions:
            start, stop = queued.starts[session], queued.stops[session]
            readings = [energy_of(mv) for mv in queued.meter_values[session]]
            assert None not in readings, context
            energies = [r for r in readings if r is not None]
            assert stop["meter_stop"] >= start["meter_start"], (gun, start, stop, context)
            assert energies == sorted(energies), (gun, energies, context)
            assert all(start["meter_start"] <= e <= stop["meter_stop"] for e in energies), context
            end = stop["transaction_data"][-1]
            assert end["sampled_value"][0]["context"] == "Transaction.End", end
            assert energy_of(end) == stop["meter_stop"], (gun, stop, context)
            if last_stop is not None:
                assert start["meter_start"] == last_stop, (gun, start, last_stop, context)
            last_stop = stop["meter_stop"]


# --- races the schedule above steers around ------------------------------------------------------
# The chaos schedule answers every StartTransaction Accepted and leaves time between a gun's
# sessions; these two tests pin what happens when it does not (both were bugs once).


async def test_late_start_confirmation_does_not_touch_the_next_transaction(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """A transaction started and stopped while offline is confirmed only later, when the gun
    may already run the next one. Its StartTransaction.conf (here: the tag was blocked
    meanwhile) concerns it alone; the running transaction of another tag must go on."""
    csms = FakeCsms(start_statuses={"OLD-TAG": AuthorizationStatus.blocked})
    async with running_station(charger_config(tmp_path), csms, keys=KEYS) as h:
        await h.booted()
        task = h.connector(1)
        h.network.down = True
        await h.network.drop()
        await h.station.plug(1)
        await h.station.present_id(1, "OLD-TAG")  # offline: AllowOfflineTxForUnknownId
        await h.wait_machine_status(1, "Charging")
        await trio.sleep(120)
        await h.station.present_id(1, "OLD-TAG")
        await h.station.unplug(1)
        await h.wait_machine_status(1, "Available")
        await task.wait_settled()
        await h.station.plug(1)
        await h.station.present_id(1, "NEW-TAG")
        await h.wait_machine_status(1, "Charging")
        running = task.transaction
        assert running is not None and running.id_tag == "NEW-TAG"
        h.network.down = False  # now OLD-TAG's StartTransaction is answered: Blocked
        await h.wait_until(lambda: running.transaction_id is not None)
        await trio.sleep(60)
        assert [p["reason"] for p in h.csms.received("StopTransaction")] == ["Local"]
        assert task.transaction is running
        assert task.machine.status == "Charging"


async def test_next_session_at_once_starts_where_the_last_one_stopped(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """A driver who stops, unplugs, plugs in again and presents a tag at once (or a second
    EV right behind the first): the new transaction must start at the old one's meterStop,
    and its StartTransaction must follow the old StopTransaction."""
    async with running_station(charger_config(tmp_path), FakeCsms(), keys=KEYS) as h:
        await h.booted()
        await h.start_charging(1, "FIRST")
        await trio.sleep(120)
        await h.station.present_id(1, "FIRST")
        await h.station.unplug(1)
        await h.station.plug(1)
        await h.station.present_id(1, "SECOND")
        await h.wait_calls("StopTransaction")
        await h.wait_calls("StartTransaction", 2)
        (stop,) = h.csms.received("StopTransaction")
        second = h.csms.received("StartTransaction")[1]
        assert second["meter_start"] == stop["meter_stop"]
        assert h.csms.index_of("StopTransaction") < h.csms.index_of(
            "StartTransaction", lambda p: p["id_tag"] == "SECOND"
        )
