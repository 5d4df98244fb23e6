"""The transaction message outbox (dcocpp/ocpp/transactions.py) against a real `Database` in
tmp_path and a real `ChargePointSession` talking to the fake central system over the in-memory
network, on virtual time. A "reboot" is a new outbox over the database opened again: only what
is on disk survives it.

What the module docstring promises, one test each: persisted before anyone is told; in order,
one in flight, deleted only on its CALLRESULT; nothing lost or duplicated by a reboot; offline
transactions get the central system's transactionId at send time (also across a reboot);
CALLERROR retries after TransactionMessageRetryInterval x attempt, parking after
TransactionMessageAttempts, holding back only the parked message's own transaction, resent
after the next reconnect; PowerLoss recovery at the last persisted meter reading.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from ocpp.v16 import call
from ocpp.v16.enums import (
    AvailabilityStatus,
    ChargePointStatus,
    RegistrationStatus,
    RemoteStartStopStatus,
    ResetStatus,
    ResetType,
    UnlockStatus,
)

from dcocpp.ocpp.control import ConnectorStatus
from dcocpp.ocpp.registration import Registration
from dcocpp.ocpp.services import Identity
from dcocpp.ocpp.session import ChargePointSession
from dcocpp.ocpp.transactions import LocalTransaction, TransactionOutbox
from dcocpp.station.station import RESET_FLUSH_TIMEOUT, load_configuration_store
from dcocpp.storage.database import Database, TransactionRow
from tests.csms import FakeCsms, MemoryNetwork
from tests.loop_database import on_loop
from tests.station_harness import CSMS_URL, charger_config, preset_keys, running_station

T0 = "2026-11-23T23:50:00.000Z"
T1 = "2026-11-23T23:51:00.000Z"
T2 = "2026-11-23T23:52:00.000Z"
T3 = "2026-11-23T23:53:00.000Z"
BOOT = "2026-11-24T00:10:00.000Z"
LIMIT = 3600.0  # virtual seconds any single wait may take before the test fails


def sample(energy_wh: int, timestamp: str) -> list[dict[str, Any]]:
    """A MeterValues.meterValue list with one energy register sample (snake_case)."""
    return [
        {
            "timestamp": timestamp,
            "sampled_value": [
                {
                    "value": str(energy_wh),
                    "context": "Sample.Periodic",
                    "measurand": "Energy.Active.Import.Register",
                    "unit": "Wh",
                }
            ],
        }
    ]


class Control:
    """The charger behind the session: two idle connectors, nothing else to do."""

    @property
    def connector_ids(self) -> Sequence[int]:
        return [1, 2]

    def statuses(self) -> list[ConnectorStatus]:
        return [ConnectorStatus(i, ChargePointStatus.available, timestamp=T0) for i in (0, 1, 2)]

    async def change_availability(self, connector_id: int, operative: bool) -> AvailabilityStatus:
        return AvailabilityStatus.rejected

    def reset_allowed(self, kind: ResetType) -> ResetStatus:
        return ResetStatus.rejected

    async def perform_reset(self, kind: ResetType) -> None:
        raise AssertionError("no reset in these tests")

    async def remote_start(self, connector_id: int | None, id_tag: str) -> RemoteStartStopStatus:
        return RemoteStartStopStatus.rejected

    async def remote_stop(self, transaction_id: int) -> RemoteStartStopStatus:
        return RemoteStartStopStatus.rejected

    async def unlock(self, connector_id: int) -> UnlockStatus:
        return UnlockStatus.not_supported

    async def trigger_meter_values(self, connector_id: int | None) -> None:
        return None


@attrs.define
class Rig:
    """A session connected (or trying to connect) to `csms`, and the outbox of this "boot"."""

    csms: FakeCsms
    network: MemoryNetwork
    session: ChargePointSession
    data_dir: Path
    nursery: trio.Nursery
    db: Database
    outbox: TransactionOutbox
    recovered: list[LocalTransaction]
    # The running outbox's cancel scope, and the event set when it has ended.
    _outbox_run: tuple[trio.CancelScope, trio.Event] = attrs.field(
        factory=lambda: (trio.CancelScope(), trio.Event())
    )

    def queued(self) -> list[tuple[str, int | None, dict[str, Any]]]:
        """The outbox as the database holds it: (action, local id, payload), in order."""
        return [(m.action, m.local_id, m.payload) for m in self.db.queued_messages()]

    def flow(self, *actions: str, since: int = 0) -> list[tuple[str, dict[str, Any]]]:
        """(action, payload) of the transaction messages the CSMS accepted, in order."""
        wanted = set(actions or ("StartTransaction", "MeterValues", "StopTransaction"))
        return [(a, p) for _, a, p in self.csms.calls[since:] if a in wanted]

    async def until(self, predicate: Any, limit: float = LIMIT) -> None:
        with trio.fail_after(limit):
            await self.csms.wait_for(predicate)

    async def offline(self) -> None:
        """The central system becomes unreachable; the current connection dies."""
        self.network.down = True
        await self.network.drop()
        with trio.fail_after(LIMIT):
            # The session offers no event for it; poll (virtual time, costs nothing).
            while self.session.connected:  # noqa: ASYNC110
                await trio.sleep(0.01)

    async def online(self) -> None:
        """The central system is reachable again; until the session is Accepted on it."""
        connection = self.session.connection_number
        self.network.down = False
        with trio.fail_after(LIMIT):
            await self.session.wait_until_accepted(after_connection=connection)

    async def reconnect(self) -> None:
        """The connection drops and comes back at once; returns once the outbox has seen
        the new connection (its parked messages are back in line)."""
        connection = self.session.connection_number
        parked = self.outbox.parked
        await self.network.drop()
        with trio.fail_after(LIMIT):
            await self.session.wait_until_accepted(after_connection=connection)
            # The outbox hears of it in its own task; it offers no event for that.
            while parked and self.outbox.parked == parked:  # noqa: ASYNC110
                await trio.sleep(0.001)

    async def reboot(
        self,
        now: str = BOOT,
        registers: dict[int, int | None] | None = None,
        max_rise: dict[int, int] | None = None,
    ) -> None:
        """The process dies and starts again: the outbox and its database connection go, a
        new outbox recovers from the database file (with the meter `registers` the hardware
        kept, by connector, believed up to `max_rise` Wh above the last persisted reading)."""
        scope, ended = self._outbox_run
        scope.cancel()
        await ended.wait()  # its last database write is done
        self.db.close()
        self.db = Database.open(self.data_dir)
        self.outbox = TransactionOutbox(self.session, on_loop(self.db))
        self.recovered = await self.outbox.recover(now, registers, max_rise)
        self._outbox_run = await self.nursery.start(_run_outbox, self.outbox)


async def _run_outbox(outbox: TransactionOutbox, *, task_status: Any) -> None:
    """Runs `outbox`; `started` gives its cancel scope and an event set once it ended."""
    ended = trio.Event()
    try:
        with trio.CancelScope() as scope:
            task_status.started((scope, ended))
            await outbox.run()
    finally:
        ended.set()


@asynccontextmanager
async def outbox_rig(
    tmp_path: Path,
    csms: FakeCsms | None = None,
    *,
    online: bool = True,
    keys: dict[str, Any] | None = None,
) -> AsyncIterator[Rig]:
    """A session and an outbox over a database in tmp_path; `online=False` starts with the
    central system unreachable."""
    csms = csms or FakeCsms()
    config = charger_config(tmp_path)
    preset_keys(config, WebSocketPingInterval=0, **(keys or {}))
    store = load_configuration_store(config)
    rig: Rig | None = None
    try:
        async with trio.open_nursery() as nursery:
            network = MemoryNetwork(csms, nursery)
            network.down = not online
            session = ChargePointSession(
                Identity("CP-OUTBOX", "dcocpp", "test", "0.1.0"),
                CSMS_URL,
                store,
                Control(),
                open_stream=network.open_stream,
            )
            db = Database.open(config.data_dir)
            outbox = TransactionOutbox(session, on_loop(db))
            recovered = await outbox.recover(T0)
            rig = Rig(csms, network, session, config.data_dir, nursery, db, outbox, recovered)
            rig._outbox_run = await nursery.start(_run_outbox, outbox)
            await nursery.start(session.run)
            if online:
                with trio.fail_after(LIMIT):
                    await session.wait_until_accepted()
            yield rig
            # Cancelling while the session starts a WebSocket hangs (see station_harness).
            for _ in range(30_000):
                if session.state != Registration.CONNECTING:
                    break
                await trio.sleep(0.001)
            nursery.cancel_scope.cancel()
    finally:
        if rig is not None:
            rig.db.close()  # after the outbox has ended


def start_payload(
    connector_id: int, id_tag: str, meter_start: int, timestamp: str
) -> dict[str, Any]:
    return {
        "connector_id": connector_id,
        "id_tag": id_tag,
        "meter_start": meter_start,
        "timestamp": timestamp,
    }


# --- persisted first, in order, one in flight --------------------------------------------------


async def test_every_message_is_on_disk_when_the_enqueueing_call_returns(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with outbox_rig(tmp_path, online=False) as rig:
        tx = await rig.outbox.start(1, "TAG-1", 1_000_000, T0)
        # start() has returned: the database holds the StartTransaction and the
        # transaction, committed (a second connection to the file sees them).
        other = Database.open(rig.data_dir)
        try:
            assert [(m.action, m.local_id, m.payload) for m in other.queued_messages()] == [
                ("StartTransaction", tx.local_id, start_payload(1, "TAG-1", 1_000_000, T0))
            ]
            assert other.transactions() == [
                TransactionRow(tx.local_id, 1, "TAG-1", 1_000_000, T0, None, None, 1_000_000, T0, 0)
            ]
            await rig.outbox.meter_values(tx, sample(1_000_100, T1))
            await rig.outbox.record_meter(tx, 1_000_150, T1)
            await rig.outbox.stop(tx, 1_000_200, T2, "Local", "TAG-1")
            assert [(m.action, m.local_id, m.payload) for m in other.queued_messages()][1:] == [
                (
                    "MeterValues",
                    tx.local_id,
                    {"connector_id": 1, "meter_value": sample(1_000_100, T1)},
                ),
                (
                    "StopTransaction",
                    tx.local_id,
                    {
                        "meter_stop": 1_000_200,
                        "timestamp": T2,
                        "reason": "Local",
                        "id_tag": "TAG-1",
                    },
                ),
            ]
            (row,) = other.transactions()
            assert (row.transaction_id, row.last_meter_wh, row.last_meter_at, row.stopped) == (
                None,
                1_000_150,
                T1,
                True,
            )
        finally:
            other.close()
        assert len(rig.outbox) == 3
        assert rig.csms.calls == []


async def test_in_order_one_in_flight_deleted_only_on_its_callresult(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms()
    csms.next_transaction_id = 41
    async with outbox_rig(tmp_path, csms) as rig:
        csms.hold("StartTransaction")
        tx = await rig.outbox.start(1, "TAG-2", 1_000_000, T0)
        await rig.outbox.meter_values(tx, sample(1_000_100, T1))
        await rig.outbox.meter_values(tx, sample(1_000_200, T2))
        await rig.outbox.stop(tx, 1_000_300, T3, "Local", "TAG-2")
        await rig.until(lambda: bool(csms.waiting))
        await trio.sleep(20)  # unanswered, within ResponseTimeout (30 s)
        # The StartTransaction is in flight and nothing behind it went out; all still on disk.
        assert [a for _, a, _ in csms.waiting] == ["StartTransaction"]
        assert rig.flow() == []
        assert [a for a, _, _ in rig.queued()] == [
            "StartTransaction",
            "MeterValues",
            "MeterValues",
            "StopTransaction",
        ]
        assert rig.db.transactions()[0].transaction_id is None
        csms.hold("MeterValues")
        csms.release("StartTransaction")
        await rig.until(lambda: [a for _, a, _ in csms.waiting] == ["MeterValues"])
        # Answered: deleted, and the transactionId stored with the deletion.
        assert [a for a, _, _ in rig.queued()] == ["MeterValues", "MeterValues", "StopTransaction"]
        assert rig.db.transactions()[0].transaction_id == 41
        await trio.sleep(20)
        assert len(csms.held) == 2 and rig.flow("MeterValues", "StopTransaction") == []
        csms.release("MeterValues")
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.queued() == [] and rig.db.transactions() == []
        assert rig.outbox.empty
    assert rig.flow() == [
        ("StartTransaction", start_payload(1, "TAG-2", 1_000_000, T0)),
        (
            "MeterValues",
            {"connector_id": 1, "transaction_id": 41, "meter_value": sample(1_000_100, T1)},
        ),
        (
            "MeterValues",
            {"connector_id": 1, "transaction_id": 41, "meter_value": sample(1_000_200, T2)},
        ),
        (
            "StopTransaction",
            {
                "transaction_id": 41,
                "meter_stop": 1_000_300,
                "timestamp": T3,
                "reason": "Local",
                "id_tag": "TAG-2",
            },
        ),
    ]


async def test_an_unanswered_message_stays_and_is_resent_on_the_next_connection(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms()
    async with outbox_rig(tmp_path, csms) as rig:  # ResponseTimeout: the default 30 s
        csms.hold("StartTransaction")
        await rig.outbox.start(1, "TAG-3", 1_000_000, T0)
        await rig.outbox.security_event("StartupOfTheDevice", T0)  # behind it, not a transaction's
        await rig.until(lambda: len(csms.held) == 2)  # sent again on a new connection
        first, second = (t for t, _, _ in csms.held)
        assert [a for _, a, _ in csms.held] == ["StartTransaction", "StartTransaction"]
        assert csms.connections == 2
        # No answer within ResponseTimeout: the link is treated as stuck and replaced.
        # ResponseTimeout, then the first reconnect's backoff (jittered, at most 1 s).
        assert 30 < second - first <= 31 + 1e-6
        assert [a for a, _, _ in rig.queued()] == ["StartTransaction", "SecurityEventNotification"]
        csms.release("StartTransaction")
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.queued() == []
    # The first CALL's connection died with it: the central system answered only one.
    assert rig.flow() == [("StartTransaction", start_payload(1, "TAG-3", 1_000_000, T0))]
    assert [a for _, a, _ in csms.refused] == ["SecurityEventNotification"]


async def test_nothing_goes_until_registration_is_accepted(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms(boot_statuses=[RegistrationStatus.pending, RegistrationStatus.accepted])
    csms.interval = 60
    async with outbox_rig(tmp_path, csms, online=False) as rig:
        await rig.outbox.start(1, "TAG-PEND", 1_000_000, T0)
        await rig.online()  # Pending for 60 s first, on the same connection
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
    boots = csms.times("BootNotification")
    assert len(boots) == 2 and boots[1] - boots[0] == pytest.approx(60, abs=1e-6)
    (start_at,) = csms.times("StartTransaction")
    assert start_at >= boots[1]
    assert [a for t, a, _ in csms.calls if t < boots[1]] == ["BootNotification"]


# --- reboots and offline transactions ---------------------------------------------------------


async def test_a_reboot_loses_nothing_and_duplicates_nothing(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with outbox_rig(tmp_path, online=False) as rig:
        a = await rig.outbox.start(1, "TAG-A", 1_000_000, T0)
        await rig.outbox.meter_values(a, sample(1_000_100, T1))
        await rig.outbox.stop(a, 1_000_200, T2, "Local", "TAG-A")
        b = await rig.outbox.start(2, "TAG-B", 1_100_000, T1)
        await rig.outbox.meter_values(b, sample(1_100_050, T2))
        await rig.outbox.record_meter(b, 1_100_070, T3)
        before = rig.queued()
        await rig.reboot()
        # B was still running: stopped (PowerLoss) at its last persisted reading.
        assert [(tx.local_id, tx.connector_id) for tx in rig.recovered] == [(b.local_id, 2)]
        power_loss = {"meter_stop": 1_100_070, "timestamp": T3, "reason": "PowerLoss"}
        assert rig.queued() == [*before, ("StopTransaction", b.local_id, power_loss)]
        await rig.reboot()  # again before anything was delivered: nothing stopped twice
        assert rig.recovered == []
        assert rig.queued() == [*before, ("StopTransaction", b.local_id, power_loss)]
        assert len(rig.outbox) == 6
        await rig.online()
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.queued() == [] and rig.db.transactions() == []
    assert rig.flow() == [
        ("StartTransaction", start_payload(1, "TAG-A", 1_000_000, T0)),
        (
            "MeterValues",
            {"connector_id": 1, "transaction_id": 1, "meter_value": sample(1_000_100, T1)},
        ),
        (
            "StopTransaction",
            {
                "transaction_id": 1,
                "meter_stop": 1_000_200,
                "timestamp": T2,
                "reason": "Local",
                "id_tag": "TAG-A",
            },
        ),
        ("StartTransaction", start_payload(2, "TAG-B", 1_100_000, T1)),
        (
            "MeterValues",
            {"connector_id": 2, "transaction_id": 2, "meter_value": sample(1_100_050, T2)},
        ),
        ("StopTransaction", {"transaction_id": 2, **power_loss}),
    ]


async def test_offline_transaction_gets_the_csms_transaction_id_at_send_time(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms()
    csms.next_transaction_id = 4711
    confirmed: list[tuple[int, dict[str, Any]]] = []

    async def on_confirmed(transaction_id: int, id_tag_info: dict[str, Any]) -> None:
        confirmed.append((transaction_id, id_tag_info))

    async with outbox_rig(tmp_path, csms, online=False) as rig:
        tx = await rig.outbox.start(1, "TAG-OFF", 1_000_000, T0, on_confirmed=on_confirmed)
        await rig.outbox.meter_values(tx, sample(1_000_100, T1))
        await rig.outbox.meter_values(tx, sample(1_000_200, T2))
        await rig.outbox.stop(tx, 1_000_300, T3, "EVDisconnected", None)
        await trio.sleep(600)
        assert csms.connections == 0 and len(rig.outbox) == 4 and tx.transaction_id is None
        await rig.online()
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.queued() == [] and rig.db.transactions() == []
    assert confirmed == [(4711, {"status": "Accepted"})]
    assert tx.transaction_id == 4711
    assert rig.flow() == [
        ("StartTransaction", start_payload(1, "TAG-OFF", 1_000_000, T0)),
        (
            "MeterValues",
            {"connector_id": 1, "transaction_id": 4711, "meter_value": sample(1_000_100, T1)},
        ),
        (
            "MeterValues",
            {"connector_id": 1, "transaction_id": 4711, "meter_value": sample(1_000_200, T2)},
        ),
        (
            "StopTransaction",
            {
                "transaction_id": 4711,
                "meter_stop": 1_000_300,
                "timestamp": T3,
                "reason": "EVDisconnected",
            },
        ),
    ]


async def test_reboot_between_start_conf_and_stop_takes_the_id_from_the_database(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms()
    csms.next_transaction_id = 77
    async with outbox_rig(tmp_path, csms) as rig:
        tx = await rig.outbox.start(1, "TAG-R", 1_000_000, T0)
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.db.transactions()[0].transaction_id == 77
        await rig.offline()
        await rig.outbox.meter_values(tx, sample(1_000_100, T1))
        await rig.outbox.stop(tx, 1_000_200, T2, "Local", "TAG-R")
        await rig.reboot()
        assert rig.recovered == []  # it was stopped, not cut off
        await rig.online()
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.queued() == [] and rig.db.transactions() == []
    assert rig.flow("MeterValues", "StopTransaction") == [
        (
            "MeterValues",
            {"connector_id": 1, "transaction_id": 77, "meter_value": sample(1_000_100, T1)},
        ),
        (
            "StopTransaction",
            {
                "transaction_id": 77,
                "meter_stop": 1_000_200,
                "timestamp": T2,
                "reason": "Local",
                "id_tag": "TAG-R",
            },
        ),
    ]
    assert len(csms.received("StartTransaction")) == 1


async def test_reboot_with_an_unconfirmed_offline_transaction_stops_it_with_the_later_id(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms()
    csms.next_transaction_id = 9
    async with outbox_rig(tmp_path, csms, online=False) as rig:
        tx = await rig.outbox.start(2, "TAG-U", 1_100_000, T0)
        await rig.outbox.meter_values(tx, sample(1_100_300, T1))
        await rig.outbox.record_meter(tx, 1_100_400, T2)
        await rig.reboot()
        await rig.online()
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
    assert rig.flow() == [
        ("StartTransaction", start_payload(2, "TAG-U", 1_100_000, T0)),
        (
            "MeterValues",
            {"connector_id": 2, "transaction_id": 9, "meter_value": sample(1_100_300, T1)},
        ),
        (
            "StopTransaction",
            {"transaction_id": 9, "meter_stop": 1_100_400, "timestamp": T2, "reason": "PowerLoss"},
        ),
    ]


# --- refusals ---------------------------------------------------------------------------------


async def test_callerror_is_retried_after_interval_times_attempt_then_parked(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dcocpp.ocpp.transactions")
    keys = {"TransactionMessageAttempts": 3, "TransactionMessageRetryInterval": 20}
    csms = FakeCsms()
    async with outbox_rig(tmp_path, csms, keys=keys) as rig:
        a = await rig.outbox.start(1, "TAG-A", 1_000_000, T0)
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        csms.refuse("MeterValues", 3, when=lambda p: p["transaction_id"] == 1)
        await rig.outbox.meter_values(a, sample(1_000_100, T1))
        await rig.outbox.stop(a, 1_000_200, T2, "Local", "TAG-A")
        b = await rig.outbox.start(2, "TAG-B", 1_100_000, T1)
        await rig.outbox.meter_values(b, sample(1_100_100, T2))
        await rig.outbox.stop(b, 1_100_200, T3, "Local", "TAG-B")
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()  # returns with A's parked message (and what it holds)
        tries = [t for t, action, _ in csms.refused if action == "MeterValues"]  # A's
        assert [t - tries[0] for t in tries] == pytest.approx([0, 20, 20 + 40], abs=1e-6)
        # B's messages did not wait for A's retries: they went right after A's first refusal.
        start_b = csms.times("StartTransaction")[1]
        assert start_b == pytest.approx(tries[0], abs=1e-6)
        stops = csms.times("StopTransaction")
        # B's stop at once; A's waited for the retries of its MeterValues, not beyond: a
        # parked MeterValues holds back no StopTransaction.
        assert stops == pytest.approx([tries[0], tries[2]], abs=1e-6)
        assert rig.outbox.parked == 1 and len(rig.outbox) == 1
        (parked,) = rig.db.queued_messages()
        assert (parked.action, parked.attempts, parked.parked) == ("MeterValues", 3, True)
        # Parked: no timer retries it on this connection.
        await trio.sleep(3600)
        assert len(csms.refused) == 3 and len(rig.flow("MeterValues")) == 1
        await rig.reconnect()
        await rig.until(lambda: len(rig.flow("MeterValues")) == 2)
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.queued() == [] and rig.outbox.parked == 0 and rig.db.transactions() == []
    assert [(a, p.get("transaction_id")) for a, p in rig.flow()] == [
        ("StartTransaction", None),
        ("StartTransaction", None),
        ("MeterValues", 2),
        ("StopTransaction", 2),
        ("StopTransaction", 1),
        ("MeterValues", 1),
    ]
    assert rig.flow()[4][1] == {
        "transaction_id": 1,
        "meter_stop": 1_000_200,
        "timestamp": T2,
        "reason": "Local",
        "id_tag": "TAG-A",
    }
    assert rig.flow()[5][1] == {
        "connector_id": 1,
        "transaction_id": 1,
        "meter_value": sample(1_000_100, T1),
    }
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "MeterValues" in errors[0] and "refused 3 times" in errors[0]


async def test_a_parked_start_holds_its_transaction_and_stays_parked_across_a_reboot(
    autojump_clock: Any, tmp_path: Path
) -> None:
    keys = {"TransactionMessageAttempts": 2, "TransactionMessageRetryInterval": 15}
    csms = FakeCsms()
    csms.refuse(
        "StartTransaction", 2, code="FormationViolation", when=lambda p: p["id_tag"] == "TAG-P"
    )
    async with outbox_rig(tmp_path, csms, keys=keys) as rig:
        p = await rig.outbox.start(1, "TAG-P", 1_000_000, T0)
        await rig.outbox.stop(p, 1_000_500, T1, "Local", "TAG-P")
        q = await rig.outbox.start(2, "TAG-Q", 1_100_000, T0)
        await rig.outbox.stop(q, 1_100_500, T1, "Local", "TAG-Q")
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        tries = csms.arrival_times("StartTransaction")
        # P, then Q at once (not behind P's retry), then P again
        assert [t - tries[0] for t in tries] == pytest.approx([0, 0, 15], abs=1e-6)
        await rig.reboot()
        assert rig.outbox.parked == 1
        assert [(m.action, m.parked) for m in rig.db.queued_messages()] == [
            ("StartTransaction", True),
            ("StopTransaction", False),
        ]
        await trio.sleep(600)
        assert len(rig.flow()) == 2  # Q's Start and Stop; P's wait for a new connection
        await rig.reconnect()
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.queued() == []
    assert rig.flow() == [
        ("StartTransaction", start_payload(2, "TAG-Q", 1_100_000, T0)),
        (
            "StopTransaction",
            {
                "transaction_id": 1,
                "meter_stop": 1_100_500,
                "timestamp": T1,
                "reason": "Local",
                "id_tag": "TAG-Q",
            },
        ),
        ("StartTransaction", start_payload(1, "TAG-P", 1_000_000, T0)),
        (
            "StopTransaction",
            {
                "transaction_id": 2,
                "meter_stop": 1_000_500,
                "timestamp": T1,
                "reason": "Local",
                "id_tag": "TAG-P",
            },
        ),
    ]


async def test_a_message_waiting_for_its_retry_delays_no_other_transaction_after_a_reconnect(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """A message the central system keeps refusing is retried aside: after the reconnect that
    unparks it, its retries (30 s, then 60 s) hold back its own StopTransaction, never the
    messages of another transaction (before, every reconnect stalled all of them 90 s)."""
    keys = {"TransactionMessageAttempts": 3, "TransactionMessageRetryInterval": 30}
    csms = FakeCsms()
    async with outbox_rig(tmp_path, csms, keys=keys) as rig:
        a = await rig.outbox.start(1, "TAG-A", 1_000_000, T0)
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        csms.refuse("MeterValues", 1000, when=lambda p: p["transaction_id"] == 1)
        await rig.outbox.meter_values(a, sample(1_000_100, T1))
        await rig.outbox.stop(a, 1_000_200, T2, "Local", "TAG-A")
        await rig.until(lambda: rig.outbox.parked == 1)
        # A's StopTransaction goes at once: a parked MeterValues does not hold it back.
        parked_at = trio.current_time()
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()  # answered: only the parked message is left
        assert rig.csms.times("StopTransaction") == pytest.approx([parked_at], abs=1e-6)
        await rig.reconnect()
        retried_at = trio.current_time()
        b = await rig.outbox.start(2, "TAG-B", 1_100_000, T2)
        await rig.outbox.meter_values(b, sample(1_100_100, T2))
        await rig.outbox.stop(b, 1_100_200, T3, "Local", "TAG-B")
        await rig.until(lambda: len(rig.flow("StopTransaction")) == 2)
        # B went at once, while A's MeterValues waits for its retry.
        assert trio.current_time() - retried_at == pytest.approx(0, abs=0.01)
        assert [(a, p.get("transaction_id")) for a, p in rig.flow()[1:]] == [
            ("StopTransaction", 1),
            ("StartTransaction", None),
            ("MeterValues", 2),
            ("StopTransaction", 2),
        ]
        await rig.until(lambda: len(csms.refused) == 6)
        retries = [t - retried_at for t, _, _ in csms.refused[3:]]
        assert retries == pytest.approx([0, 30, 30 + 60], abs=0.01)  # unparked at reconnect
        await trio.sleep(1)
        assert rig.outbox.parked == 1
        assert [m.action for m in rig.db.queued_messages()] == ["MeterValues"]


async def test_a_parked_meter_values_does_not_hold_back_its_transactions_stop(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A MeterValues the central system keeps refusing is parked; its transaction's
    StopTransaction, which bills, goes at once all the same (logged). The parked one, and the
    MeterValues behind it, follow in their order after the next reconnect, with the
    transactionId: the transaction is kept for them, across a reboot too, and forgotten with
    the last of them."""
    caplog.set_level(logging.INFO, logger="dcocpp.ocpp.transactions")
    keys = {"TransactionMessageAttempts": 2, "TransactionMessageRetryInterval": 10}
    csms = FakeCsms()
    async with outbox_rig(tmp_path, csms, keys=keys) as rig:
        tx = await rig.outbox.start(1, "TAG-A", 1_000_000, T0)
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        csms.refuse("MeterValues", 2)
        await rig.outbox.meter_values(tx, sample(1_000_100, T1))
        await rig.outbox.meter_values(tx, sample(1_000_150, T2))  # held behind the first
        await rig.until(lambda: rig.outbox.parked == 1)
        stopped_at = trio.current_time()
        await rig.outbox.stop(tx, 1_000_200, T3, "Local", "TAG-A")
        await rig.until(lambda: len(rig.flow("StopTransaction")) == 1)
        assert trio.current_time() == pytest.approx(stopped_at, abs=1e-6)
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()  # the stop counted; the parked ones do not
        assert [(m.action, m.parked) for m in rig.db.queued_messages()] == [
            ("MeterValues", True),
            ("MeterValues", False),
        ]
        assert [t.transaction_id for t in rig.db.transactions()] == [1]
        await rig.reboot()
        await rig.reconnect()
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.queued() == [] and rig.db.transactions() == [] and rig.outbox.parked == 0
    assert [(a, p["transaction_id"], p.get("meter_value")) for a, p in rig.flow()[1:]] == [
        ("StopTransaction", 1, None),
        ("MeterValues", 1, sample(1_000_100, T1)),
        ("MeterValues", 1, sample(1_000_150, T2)),
    ]
    logged = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name == "dcocpp.ocpp.transactions"
    ]
    assert [level for level, _ in logged] == ["WARNING", "ERROR", "WARNING"]
    assert logged[1][1].startswith("MeterValues #2 refused 2 times (InternalError: MeterValues")
    assert logged[1][1].endswith(
        ": parked; it is retried after the next reconnect, and the later MeterValues of its"
        " transaction wait for it (its StopTransaction does not)"
    )
    assert logged[2][1] == (
        "StopTransaction #4 of transaction 1 delivered ahead of its MeterValues #2 (parked),"
        " #3: they follow after the next reconnect"
    )


async def test_a_stop_that_fails_our_own_schema_check_is_sent_at_once_without_the_bad_data(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop sample our own schema check refuses (a sampled value without its value) makes
    our StopTransaction invalid: that is the charger's bug, not a refusal. It is logged as an
    error with the payload and sent at once without that sample; meterStop, timestamp and
    reason bill as they are. Nothing is retried or parked. A sample without any sampled
    value (what an older version stored) is not sent at all: OCPP has no such sample."""
    caplog.set_level(logging.INFO, logger="dcocpp.ocpp.transactions")
    keys = {"TransactionMessageAttempts": 3, "TransactionMessageRetryInterval": 30}
    csms = FakeCsms()
    async with outbox_rig(tmp_path, csms, keys=keys) as rig:
        tx = await rig.outbox.start(1, "TAG-R", 1_000_000, T0)
        begin = sample(1_000_000, T0)[0]
        await rig.outbox.add_transaction_data(tx, begin, 1_000_000, T0)
        await rig.outbox.add_transaction_data(
            tx, {"timestamp": T1, "sampled_value": []}, 1_000_100, T1
        )
        broken = {"timestamp": T1, "sampled_value": [{"measurand": "SoC", "unit": "Percent"}]}
        await rig.outbox.add_transaction_data(tx, broken, 1_000_100, T1)
        await rig.outbox.stop(tx, 1_000_200, T2, "Local", "TAG-R")
        queued_at = trio.current_time()
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert trio.current_time() == pytest.approx(queued_at, abs=1e-6)
        assert rig.queued() == [] and rig.db.transactions() == [] and rig.outbox.parked == 0
    assert csms.refused == []
    assert rig.flow("StopTransaction") == [
        (
            "StopTransaction",
            {
                "transaction_id": 1,
                "meter_stop": 1_000_200,
                "timestamp": T2,
                "reason": "Local",
                "id_tag": "TAG-R",
                "transaction_data": [begin],
            },
        )
    ]
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "StopTransaction" in error and "our own OCPP schema check" in error
    assert "sending it repaired" in error and "'meter_stop': 1000200" in error
    assert not any("refused" in r.getMessage() for r in caplog.records)


async def test_meter_values_that_fail_our_own_schema_check_are_dropped_not_parked(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A MeterValues without any sampled value cannot be sent: it is dropped at once (an
    error with its payload), and its transaction's StopTransaction goes right after it."""
    keys = {"TransactionMessageAttempts": 3, "TransactionMessageRetryInterval": 30}
    csms = FakeCsms()
    async with outbox_rig(tmp_path, csms, keys=keys) as rig:
        tx = await rig.outbox.start(1, "TAG-M", 1_000_000, T0)
        await rig.outbox.meter_values(tx, [{"timestamp": T1, "sampled_value": []}])
        empty = {"timestamp": T1, "sampled_value": []}
        await rig.outbox.meter_values(tx, [empty, *sample(1_000_100, T1)])
        await rig.outbox.stop(tx, 1_000_200, T2, "Local", "TAG-M")
        queued_at = trio.current_time()
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert trio.current_time() == pytest.approx(queued_at, abs=1e-6)
        assert rig.queued() == [] and rig.outbox.parked == 0
    assert csms.refused == []
    assert [(a, p.get("meter_value")) for a, p in rig.flow()] == [
        ("StartTransaction", None),
        ("MeterValues", sample(1_000_100, T1)),  # repaired: the sample that has values
        ("StopTransaction", None),
    ]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and all("our own OCPP schema check" in e for e in errors)
    assert "dropping it" in errors[0] and "sending it repaired" in errors[1]


async def test_a_start_that_fails_our_own_schema_check_is_dropped_with_its_transaction(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A StartTransaction we cannot send (an idTag longer than OCPP's 20 characters) will
    never bring a transactionId: it is dropped, and so are its transaction's later messages,
    each logged with its payload; another transaction goes on."""
    csms = FakeCsms()
    async with outbox_rig(tmp_path, csms) as rig:
        bad = await rig.outbox.start(1, "T" * 21, 1_000_000, T0)
        await rig.outbox.meter_values(bad, sample(1_000_100, T1))
        await rig.outbox.stop(bad, 1_000_200, T2, "Local", None)
        good = await rig.outbox.start(2, "TAG-G", 1_100_000, T0)
        await rig.outbox.stop(good, 1_100_200, T2, "Local", "TAG-G")
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.queued() == [] and rig.db.transactions() == [] and rig.outbox.parked == 0
    assert [(a, p.get("id_tag")) for a, p in rig.flow()] == [
        ("StartTransaction", "TAG-G"),
        ("StopTransaction", "TAG-G"),
    ]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    actions = [e.split(" ")[0] for e in errors]
    assert actions == ["StartTransaction", "MeterValues", "StopTransaction"]
    assert "T" * 21 in errors[0]
    assert errors[2].startswith(
        "StopTransaction #3 dropped: the StartTransaction of its transaction could not be sent,"
        " so it has no transactionId"
    )


async def test_a_stored_message_that_cannot_be_built_is_dropped_and_the_rest_goes(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A queued row no version of ours wrote (an action we do not send, a payload our
    dataclasses do not take) ends neither the outbox nor the station: it is dropped, loudly."""
    csms = FakeCsms()
    async with outbox_rig(tmp_path, csms, online=False) as rig:
        rig.db.queue_message("DataTransfer", None, {"vendor_id": "x"})
        rig.db.queue_message("SecurityEventNotification", None, {"kind": "StartupOfTheDevice"})
        await rig.reboot()
        tx = await rig.outbox.start(1, "TAG-OK", 1_000_000, T0)
        await rig.outbox.stop(tx, 1_000_100, T1, "Local", "TAG-OK")
        await rig.online()
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.queued() == []
    assert [a for a, _ in rig.flow()] == ["StartTransaction", "StopTransaction"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert [e.split(" ")[0] for e in errors] == ["DataTransfer", "SecurityEventNotification"]
    assert all("cannot be built, a bug of this charger" in e for e in errors)


async def test_answers_with_unknown_properties_are_taken_once_and_nothing_is_resent(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A StartTransaction.conf and a StopTransaction.conf with a property OCPP 1.6 does not
    know (at the top and inside idTagInfo) are used without it: the transactionId is taken,
    nothing is refused, retried or sent twice."""
    caplog.set_level(logging.INFO, logger="dcocpp.ocpp.transactions")
    keys = {"TransactionMessageAttempts": 3, "TransactionMessageRetryInterval": 30}
    csms = FakeCsms(validate=False)
    csms.answer(
        "StartTransaction",
        {"transactionId": 5, "idTagInfo": {"status": "Accepted", "x": 1}, "foo": 1},
    )
    csms.answer("StopTransaction", {"idTagInfo": {"status": "Accepted"}, "foo": 1})
    async with outbox_rig(tmp_path, csms, keys=keys) as rig:
        tx = await rig.outbox.start(1, "TAG-X", 1_000_000, T0)
        await rig.outbox.meter_values(tx, sample(1_000_100, T1))
        await rig.outbox.stop(tx, 1_000_200, T2, "Local", "TAG-X")
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        await trio.sleep(3600)  # no retry comes
        assert tx.transaction_id == 5
        assert rig.queued() == [] and rig.db.transactions() == [] and rig.outbox.parked == 0
        assert rig.session.auth_cache.lookup("TAG-X") == {"status": "Accepted"}
    assert [(a, p.get("transaction_id")) for _, a, p in csms.scripted] == [
        ("StartTransaction", None),
        ("StopTransaction", 5),
    ]
    assert [(a, p["transaction_id"]) for a, p in rig.flow()] == [("MeterValues", 5)]
    assert csms.refused == []
    assert not [r for r in caplog.records if r.name == "dcocpp.ocpp.transactions"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "StartTransaction.conf has properties OCPP 1.6 does not know, used without them:"
        " idTagInfo/x, foo",
        "StopTransaction.conf has properties OCPP 1.6 does not know, used without them: foo",
    ]


async def test_a_message_whose_transaction_is_not_in_the_database_does_not_blame_its_start(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A queued StopTransaction whose transaction the database does not hold (its
    StartTransaction went long ago) cannot get a transactionId: it is dropped, and the log
    does not say that its StartTransaction could not be sent."""
    csms = FakeCsms()
    async with outbox_rig(tmp_path, csms, online=False) as rig:
        stop = {"meter_stop": 1_000_200, "timestamp": T1, "reason": "Local"}
        rig.db.queue_message("StopTransaction", 42, stop)
        await rig.reboot()
        await rig.online()
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.queued() == []
    assert rig.flow() == []
    assert "could not be sent" not in caplog.text
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    # Dropped as the database reads it back (a row naming no stored transaction).
    assert len(errors) == 1
    assert "outbox row seq 1 cannot be read: local_id 42 names no stored transaction" in errors[0]


async def test_stop_answered_with_an_invalid_id_tag_counts_as_delivered(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms()
    async with outbox_rig(tmp_path, csms) as rig:
        tx = await rig.outbox.start(1, "TAG-INV", 1_000_000, T0)
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        csms.set_id_tag("TAG-INV", "Invalid")  # e.g. blocked while charging
        await rig.outbox.stop(tx, 1_000_900, T1, "Local", "TAG-INV")
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        await trio.sleep(600)
        assert rig.queued() == [] and rig.db.transactions() == [] and rig.outbox.parked == 0
        # The answer's idTagInfo is remembered (the authorization cache).
        assert rig.session.auth_cache.lookup("TAG-INV") == {"status": "Invalid"}
    assert len(rig.flow("StopTransaction")) == 1 and csms.refused == []


async def test_security_event_answered_not_implemented_is_dropped_not_parked(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dcocpp.ocpp.transactions")
    csms = FakeCsms()  # without the security extension
    async with outbox_rig(tmp_path, csms) as rig:
        await rig.outbox.security_event("StartupOfTheDevice", T0)
        await rig.outbox.start(1, "TAG-S", 1_000_000, T1)
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.outbox.empty and rig.outbox.parked == 0 and rig.queued() == []
        await rig.reconnect()
        await trio.sleep(60)
    assert [(a, p) for _, a, p in csms.refused] == [
        ("SecurityEventNotification", {"type": "StartupOfTheDevice", "timestamp": T0})
    ]
    assert rig.flow() == [("StartTransaction", start_payload(1, "TAG-S", 1_000_000, T1))]
    assert any(
        r.levelno == logging.INFO and "does not take SecurityEventNotification" in r.getMessage()
        for r in caplog.records
    )
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


async def test_security_event_delivered_when_the_csms_takes_it(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms(security_events=True)
    async with outbox_rig(tmp_path, csms) as rig:
        await rig.outbox.security_event("ResetOrReboot", T2, "Soft reset by the CSMS")
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.queued() == []
    assert csms.received("SecurityEventNotification") == [
        {"type": "ResetOrReboot", "timestamp": T2, "tech_info": "Soft reset by the CSMS"}
    ]


async def test_refused_security_event_is_retried_aside_without_holding_transactions(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """Another CALLERROR than NotImplemented/NotSupported: retried and parked like any
    message, but it belongs to no transaction, so no transaction waits for its retries."""
    keys = {"TransactionMessageAttempts": 3, "TransactionMessageRetryInterval": 20}
    csms = FakeCsms(security_events=True)
    csms.refuse("SecurityEventNotification", 3, code="FormationViolation")
    async with outbox_rig(tmp_path, csms, keys=keys) as rig:
        queued_at = trio.current_time()
        await rig.outbox.security_event("StartupOfTheDevice", T0)
        tx = await rig.outbox.start(1, "TAG-SE", 1_000_000, T0)
        await rig.outbox.stop(tx, 1_000_100, T1, "Local", "TAG-SE")
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()  # the transaction's messages; the event waits aside
        assert trio.current_time() == pytest.approx(queued_at, abs=1e-6)
        assert [a for a, _, _ in rig.queued()] == ["SecurityEventNotification"]
        await rig.until(lambda: len(csms.refused) == 3)
        await trio.sleep(600)
        assert rig.outbox.parked == 1 and len(csms.refused) == 3
        (parked,) = rig.db.queued_messages()
        assert (parked.attempts, parked.parked) == (3, True)
        await rig.reconnect()
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.queued() == []
    tries = csms.arrival_times("SecurityEventNotification")
    assert [t - tries[0] for t in tries[:3]] == pytest.approx([0, 20, 20 + 40], abs=1e-6)
    assert tries[0] == pytest.approx(queued_at, abs=1e-6)
    assert csms.times("StartTransaction") == pytest.approx([queued_at], abs=1e-6)
    assert csms.times("StopTransaction") == pytest.approx([queued_at], abs=1e-6)
    assert csms.received("SecurityEventNotification") == [
        {"type": "StartupOfTheDevice", "timestamp": T0}
    ]


async def test_wait_empty_waits_for_deliverable_messages_only(
    autojump_clock: Any, tmp_path: Path
) -> None:
    keys = {"TransactionMessageAttempts": 1}
    csms = FakeCsms()
    async with outbox_rig(tmp_path, csms, online=False, keys=keys) as rig:
        with trio.fail_after(1):
            await rig.outbox.wait_empty()  # nothing queued
        tx = await rig.outbox.start(1, "TAG-W", 1_000_000, T0)
        with trio.move_on_after(600) as scope:
            await rig.outbox.wait_empty()
        assert scope.cancelled_caught  # offline: the StartTransaction is still to go
        csms.refuse("MeterValues", 1)
        await rig.outbox.meter_values(tx, sample(1_000_100, T1))
        await rig.outbox.stop(tx, 1_000_200, T2, "Local", "TAG-W")
        await rig.online()
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        # Only the parked MeterValues is left: the StopTransaction went ahead of it (a reset
        # waits for it).
        assert [(m.action, m.parked) for m in rig.db.queued_messages()] == [("MeterValues", True)]
        assert rig.outbox.parked == 1 and len(rig.outbox) == 1
        assert [a for a, _ in rig.flow()] == ["StartTransaction", "StopTransaction"]


# --- power loss -------------------------------------------------------------------------------


async def test_power_loss_recovery_stops_at_the_last_persisted_reading(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms()
    csms.next_transaction_id = 31
    async with outbox_rig(tmp_path, csms) as rig:
        running = await rig.outbox.start(1, "TAG-PL", 1_000_000, T0)
        never_read = await rig.outbox.start(2, "TAG-NR", 1_100_000, T1)
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        await rig.outbox.record_meter(running, 1_000_400, T1)
        await rig.outbox.record_meter(running, 1_000_900, T2)  # the last one before the cut
        await rig.reboot(BOOT)
        assert sorted((tx.local_id, tx.transaction_id) for tx in rig.recovered) == [
            (running.local_id, 31),
            (never_read.local_id, 32),
        ]
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.queued() == [] and rig.db.transactions() == []
    assert rig.flow("StopTransaction") == [
        (
            "StopTransaction",
            {"transaction_id": 31, "meter_stop": 1_000_900, "timestamp": T2, "reason": "PowerLoss"},
        ),
        # Never read after its start: stopped at its start, at the start's time.
        (
            "StopTransaction",
            {"transaction_id": 32, "meter_stop": 1_100_000, "timestamp": T1, "reason": "PowerLoss"},
        ),
    ]


async def test_power_loss_stop_carries_the_stop_samples_taken_before_the_cut(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """StopTxnSampledData samples are persisted as they are taken: the PowerLoss stop after a
    power cut sends them as transactionData, and a stop queued normally takes them off the
    database (its payload carries them)."""
    begin = {
        "timestamp": T0,
        "sampled_value": [{"value": "1000000", "context": "Transaction.Begin"}],
    }
    periodic = {
        "timestamp": T1,
        "sampled_value": [{"value": "1000400", "context": "Sample.Periodic"}],
    }
    csms = FakeCsms()
    csms.next_transaction_id = 41
    async with outbox_rig(tmp_path, csms) as rig:
        cut = await rig.outbox.start(1, "TAG-CUT", 1_000_000, T0)
        await rig.outbox.add_transaction_data(cut, begin, 1_000_000, T0)
        await rig.outbox.add_transaction_data(cut, periodic, 1_000_400, T1)
        done = await rig.outbox.start(2, "TAG-DONE", 2_000_000, T0)
        await rig.outbox.add_transaction_data(done, begin, 2_000_000, T0)
        await rig.outbox.stop(done, 2_000_100, T1, "Local", None)
        assert rig.db.transaction_data() == {cut.local_id: [begin, periodic]}
        # The sample's reading is the transaction's latest: a stop never bills less.
        assert [(t.last_meter_wh, t.last_meter_at) for t in rig.db.transactions()] == [
            (1_000_400, T1),
            (2_000_000, T0),
        ]
        await rig.outbox.record_meter(cut, 1_000_500, T2)
        await rig.reboot(BOOT)
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
        assert rig.db.transaction_data() == {}
    assert [payload for _, payload in rig.flow("StopTransaction")] == [
        {
            "transaction_id": 42,
            "meter_stop": 2_000_100,
            "timestamp": T1,
            "reason": "Local",
            "transaction_data": [begin],
        },
        {
            "transaction_id": 41,
            "meter_stop": 1_000_500,
            "timestamp": T2,
            "reason": "PowerLoss",
            "transaction_data": [begin, periodic],
        },
    ]


@pytest.mark.parametrize(
    ("registers", "meter_stops"),
    [
        # Hardware without a register (the simulation): the checkpoint, or a carried sample
        # above it.
        ({}, (1_000_900, 2_000_500)),
        ({1: None, 2: None}, (1_000_900, 2_000_500)),
        # A register above both (a PLC's meter counted on after the last checkpoint).
        ({1: 1_001_200, 2: 2_000_800}, (1_001_200, 2_000_800)),
        # A register below the checkpoint, or between it and a carried sample, takes nothing
        # off the bill.
        ({1: 1_000_000, 2: 2_000_400}, (1_000_900, 2_000_500)),
        ({1: 1_000_900, 2: 2_000_500}, (1_000_900, 2_000_500)),
    ],
)
async def test_power_loss_stop_bills_the_highest_of_register_checkpoint_and_carried_samples(
    autojump_clock: Any,
    tmp_path: Path,
    registers: dict[int, int | None],
    meter_stops: tuple[int, int],
) -> None:
    """The PowerLoss stop's meterStop is max(the register the hardware kept, the last
    persisted reading, the readings of the samples it carries); its timestamp stays the last
    persisted reading's, whichever of them bills."""
    # A's last reading is only persisted; B carries a sample (in kWh, beside a power reading)
    # above the reading persisted after it (a meter read lower once).
    sample = {
        "timestamp": T1,
        "sampled_value": [
            {"value": "99000", "measurand": "Power.Active.Import", "unit": "W"},
            {"value": "2000.5", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
        ],
    }
    csms = FakeCsms()
    csms.next_transaction_id = 51
    async with outbox_rig(tmp_path, csms) as rig:
        a = await rig.outbox.start(1, "TAG-A", 1_000_000, T0)
        b = await rig.outbox.start(2, "TAG-B", 2_000_000, T0)
        await rig.outbox.record_meter(a, 1_000_900, T2)
        await rig.outbox.add_transaction_data(b, sample, 2_000_500, T1)
        await rig.outbox.record_meter(b, 2_000_300, T2)
        await rig.reboot(BOOT, registers)
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
    stops = [payload for _, payload in rig.flow("StopTransaction")]
    assert stops == [
        {
            "transaction_id": 51,
            "meter_stop": meter_stops[0],
            "timestamp": T2,
            "reason": "PowerLoss",
        },
        {
            "transaction_id": 52,
            "meter_stop": meter_stops[1],
            "timestamp": T2,
            "reason": "PowerLoss",
            "transaction_data": [sample],
        },
    ]


# --- through the station ----------------------------------------------------------------------


async def test_station_queues_startup_on_first_boot_and_reset_or_reboot_on_reset(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms(security_events=True)
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        boot_at = h.wall_time(h.wall_origin or 0.0)
        await h.csms_call(call.Reset(type="Soft"))
        reset_at = h.wall_time(trio.current_time())
        await h.wait_calls("BootNotification", 2)
        await h.wait_calls("SecurityEventNotification", 2)
        await h.wait_calls("StatusNotification", 6)
        await trio.sleep(60)
    assert csms.received("SecurityEventNotification") == [
        {"type": "StartupOfTheDevice", "timestamp": boot_at},
        {"type": "ResetOrReboot", "timestamp": reset_at, "tech_info": "Soft reset by the CSMS"},
    ]


async def test_a_refused_security_event_holds_back_neither_a_start_nor_a_resets_stop(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """A central system that answers SecurityEventNotification with another CALLERROR than
    NotImplemented: StartupOfTheDevice (queued first at boot) and ResetOrReboot (queued before
    the reset's StopTransaction) are retried aside, the transactions' messages go at once."""
    csms = FakeCsms(security_events=True)
    csms.refuse("SecurityEventNotification", 1000, code="FormationViolation")
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        asked_at = trio.current_time()
        tx_id = await h.start_charging(1, "TAG-SE")
        assert csms.times("StartTransaction")[0] - asked_at < 1
        await trio.sleep(30)
        reset_at = trio.current_time()
        await h.csms_call(call.Reset(type="Soft"))
        await h.wait_calls("BootNotification", 2)
        assert trio.current_time() - reset_at < RESET_FLUSH_TIMEOUT / 2
    second_boot = [i for i, (_, a, _) in enumerate(csms.calls) if a == "BootNotification"][1]
    assert csms.index_of("StopTransaction") < second_boot
    (stop,) = csms.received("StopTransaction")
    assert (stop["transaction_id"], stop["reason"]) == (tx_id, "SoftReset")


async def test_power_loss_stop_does_not_bill_a_register_the_gun_cannot_have_reached(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A garbage or swapped register far above the last reading persisted (more than the gun
    can deliver between that reading and the crash) is not believed: the checkpoint bills,
    and a warning says why. A register within the rise bills."""
    csms = FakeCsms()
    csms.next_transaction_id = 71
    async with outbox_rig(tmp_path, csms) as rig:
        a = await rig.outbox.start(1, "TAG-A", 1_000_000, T0)
        b = await rig.outbox.start(2, "TAG-B", 2_000_000, T0)
        await rig.outbox.record_meter(a, 1_000_900, T2)
        await rig.outbox.record_meter(b, 2_000_300, T2)
        registers: dict[int, int | None] = {1: 429_496_729_500, 2: 2_000_500}
        await rig.reboot(BOOT, registers, max_rise={1: 310, 2: 310})
        with trio.fail_after(LIMIT):
            await rig.outbox.wait_empty()
    stops = {p["transaction_id"]: p["meter_stop"] for _, p in rig.flow("StopTransaction")}
    assert stops == {71: 1_000_900, 72: 2_000_500}
    assert any("not billed" in r.getMessage() for r in caplog.records)
