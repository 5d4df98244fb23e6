"""A planned stop and a controller crash, through the whole station on virtual time.

A planned stop (`Station.shut_down`, what SIGTERM and Ctrl-C run) stops every transaction with
reason Reboot at the reading taken after its relay opened, stores the StopTransactions, then
delivers them for SHUTDOWN_GRACE at most (`end_delivery` cuts that short); what is left goes
out after the next start, once, and is not stopped again as PowerLoss. The process tests of
the same are in tests/test_crash_recovery.py.

A crash on the PLC backend: the station is cancelled mid-transaction while the emulated PLCs
run on (`emulated_plcs`: the meter keeps its register, the watchdog opens the relay); the next
station on the same data directory and the same PLCs stops the transaction as PowerLoss at the
register the PLC reports, which is above the last persisted reading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from dcocpp.connector.task import METER_PERSIST_INTERVAL, RELAY_ACK_DEADLINE
from dcocpp.station.station import SHUTDOWN_GRACE, STOP_TIMEOUT
from dcocpp.storage.database import Database, TransactionRow
from tests.csms import FakeCsms
from tests.station_harness import (
    Harness,
    charger_config,
    emulated_plcs,
    plc_driver,
    running_station,
)
from tests.test_scenarios_offline import (
    PERIODIC_ONLY,
    assert_a_restart_repeats_nothing,
    energy_of,
    go_offline,
    stored_transactions,
    transaction_flow,
)


def stored_rows(data_dir: Path) -> tuple[list[TransactionRow], list[tuple[str, dict[str, Any]]]]:
    """The transactions and the queued transaction messages (action, payload) on disk."""
    db = Database.open(data_dir)
    try:
        return db.transactions(), [(m.action, m.payload) for m in db.queued_messages()]
    finally:
        db.close()


async def stop_offline(h: Harness, connector_id: int, id_tag: str) -> tuple[int, float]:
    """A transaction charging for 30 s, then the central system out of reach; returns its
    transactionId and the trio time the charger is told to stop (not yet told)."""
    tx_id = await h.start_charging(connector_id, id_tag)
    await trio.sleep(30)
    await go_offline(h)
    return tx_id, trio.current_time()


async def deliver_after_restart(config: Any, csms: FakeCsms, tx_id: int) -> dict[str, Any]:
    """Start again with the central system there: returns the one StopTransaction delivered,
    after checking it is the only transaction message and that nothing is left."""
    since = csms.mark()
    async with running_station(config, csms) as h:
        await h.wait_calls("StopTransaction", since=since)
        await trio.sleep(10)
    assert transaction_flow(csms, since) == [("StopTransaction", tx_id)]  # no PowerLoss too
    assert stored_transactions(config.data_dir) == []
    (stop,) = csms.received("StopTransaction", since)
    return stop


@pytest.mark.usefixtures("backend")
async def test_planned_stop_bills_every_transaction_with_reboot_after_its_relay_opened(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    csms = FakeCsms()
    async with running_station(config, csms, keys=PERIODIC_ONLY) as h:
        await h.booted()
        tx_ids = {
            1: await h.start_charging(1, "TAG-STOP-A"),
            2: await h.start_charging(2, "TAG-STOP-B"),
        }
        await trio.sleep(75)
        before = {cid: h.register_wh(cid) for cid in tx_ids}
        since = csms.mark()
        signalled = trio.current_time()
        await h.station.shut_down()
        took = trio.current_time() - signalled
        # Both relays open; the registers stand where the stops billed them.
        assert not h.relay_closed(1) and not h.relay_closed(2)
        after = {cid: round(h.register_wh(cid)) for cid in tx_ids}
        assert h.station.outbox is not None and h.station.outbox.empty
    # Delivered at once: the grace is a bound, not a wait.
    assert took < STOP_TIMEOUT
    stops = {p["transaction_id"]: p for p in csms.received("StopTransaction", since)}
    assert set(stops) == set(tx_ids.values())
    for cid, tx_id in tx_ids.items():
        stop = dict(stops[tx_id])
        data = stop.pop("transaction_data")
        assert data[-1]["sampled_value"][0]["context"] == "Transaction.End"
        assert stop["reason"] == "Reboot"
        assert stop["meter_stop"] == after[cid] == energy_of(data[-1])
        assert stop["meter_stop"] >= before[cid]
        assert h.wall_time(signalled) <= stop["timestamp"]
        assert stop["timestamp"] <= h.wall_time(signalled + RELAY_ACK_DEADLINE)
    assert stored_transactions(config.data_dir) == []
    await assert_a_restart_repeats_nothing(config, csms)


@pytest.mark.usefixtures("backend")
async def test_planned_stop_while_offline_stores_the_stop_and_the_next_start_delivers_it(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    csms = FakeCsms()
    async with running_station(config, csms, keys=PERIODIC_ONLY) as h:
        await h.booted()
        tx_id, signalled = await stop_offline(h, 1, "TAG-STOP-OFF")
        await h.station.shut_down()
        took = trio.current_time() - signalled
        assert not h.relay_closed(1)
        first = h
    # The relay opened and the stop was stored first, then the grace ran out.
    assert SHUTDOWN_GRACE <= took <= SHUTDOWN_GRACE + RELAY_ACK_DEADLINE
    rows, queued = stored_rows(config.data_dir)
    assert [(row.connector_id, row.transaction_id, row.stopped) for row in rows] == [
        (1, tx_id, True)
    ]
    stops = [payload for action, payload in queued if action == "StopTransaction"]
    assert [payload["reason"] for payload in stops] == ["Reboot"]
    stop = await deliver_after_restart(config, csms, tx_id)
    assert (stop["transaction_id"], stop["reason"]) == (tx_id, "Reboot")
    # Its own time and reading, not the delivery's.
    assert first.wall_time(signalled) <= stop["timestamp"]
    assert stop["timestamp"] <= first.wall_time(signalled + RELAY_ACK_DEADLINE)
    assert stop["meter_stop"] == energy_of(stop["transaction_data"][-1])
    await assert_a_restart_repeats_nothing(config, csms)


async def test_planned_stop_with_nothing_charging_does_not_wait_for_the_central_system(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """With no transaction to stop there is nothing to deliver now: what the outbox holds
    (here a security event queued while the central system is away) is stored already."""
    config = charger_config(tmp_path)
    async with running_station(config, FakeCsms(security_events=True)) as h:
        await h.booted()
        await go_offline(h)
        assert h.station.outbox is not None
        await h.station.outbox.security_event("SettingSystemTime", h.wall_time(trio.current_time()))
        signalled = trio.current_time()
        await h.station.shut_down()
        assert trio.current_time() == signalled
        assert len(h.station.outbox) == 1


@pytest.mark.usefixtures("backend")
async def test_no_transaction_starts_while_the_station_stops(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """During the grace nothing new may start: a transaction started then would be cut off
    at exit and billed only at the next start (PowerLoss). An EV plugged in after its tag was
    accepted does not start, and a remote start is Rejected."""
    config = charger_config(tmp_path)
    csms = FakeCsms()
    async with running_station(config, csms, keys=PERIODIC_ONLY) as h:
        await h.booted()
        await h.station.present_id(2, "TAG-WAITING")  # accepted, waiting for its EV
        await h.wait_until(lambda: h.connector(2).machine.truth.authorized is not None)
        await stop_offline(h, 1, "TAG-STOP-NEW")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.station.shut_down)
            await trio.sleep(RELAY_ACK_DEADLINE + 0.5)  # the stop is stored: the grace runs
            await h.hardware.plug(2)
            assert await h.station.remote_start(1, "TAG-REMOTE") == "Rejected"
            await trio.sleep(1)
            assert h.connector(2).transaction is None
            assert not h.relay_closed(2)
    assert stored_transactions(config.data_dir) == [(1, True)]


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("cut_after", [0.0, 1.0], ids=["while-stopping", "during-the-grace"])
async def test_ending_the_delivery_returns_at_once_with_every_stop_stored(
    autojump_clock: Any, tmp_path: Path, cut_after: float
) -> None:
    """A second SIGTERM (`end_delivery`) while the relays open still lets every stop be
    stored (a stop not stored would be billed only to the last checkpoint); during the grace
    it ends the delivery at once."""
    config = charger_config(tmp_path)
    csms = FakeCsms()
    async with running_station(config, csms, keys=PERIODIC_ONLY) as h:
        await h.booted()
        tx_id, signalled = await stop_offline(h, 2, "TAG-STOP-CUT")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.station.shut_down)
            await trio.sleep(cut_after)
            h.station.end_delivery()
        took = trio.current_time() - signalled
    assert cut_after <= took < cut_after + RELAY_ACK_DEADLINE
    assert took < SHUTDOWN_GRACE
    assert stored_transactions(config.data_dir) == [(2, True)]
    stop = await deliver_after_restart(config, csms, tx_id)
    assert (stop["transaction_id"], stop["reason"]) == (tx_id, "Reboot")


@pytest.mark.parametrize("backend", ["plc"], indirect=True)
@pytest.mark.usefixtures("backend")
async def test_crash_on_the_plc_backend_bills_the_register_the_plc_kept(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    csms = FakeCsms()
    async with emulated_plcs(config) as plcs:
        async with running_station(
            config, csms, keys=PERIODIC_ONLY, hardware=plc_driver(config), simulation=plcs
        ) as h:
            await h.booted()
            tx_id = await h.start_charging(1, "TAG-CRASH")
            # Two checkpoints (every METER_PERSIST_INTERVAL), then the crash 8 s after the
            # last one: at 75 kW about 160 Wh the checkpoint does not hold.
            await trio.sleep(2 * METER_PERSIST_INTERVAL + 8)
        # The controller is gone; the PLC's watchdog has opened the relay.
        await trio.sleep(1)
        assert not plcs.relay_closed(1)
        (row,) = stored_rows(config.data_dir)[0]
        assert (row.transaction_id, row.stopped) == (tx_id, False)
        # What the PLC's EnergyMeterData reports: its register, in 0.1 kWh.
        register = int(plcs.meter(1).energy_wh // 100) * 100
        assert register >= row.last_meter_wh + 100, (register, row)
        await trio.sleep(60)  # no energy flows through an open relay
        assert int(plcs.meter(1).energy_wh // 100) * 100 == register
        since = csms.mark()
        async with running_station(config, csms, hardware=plc_driver(config), simulation=plcs) as h:
            await h.wait_calls("StopTransaction", since=since)
            await trio.sleep(10)
    assert transaction_flow(csms, since) == [("StopTransaction", tx_id)]
    (stop,) = csms.received("StopTransaction")
    data = stop.pop("transaction_data")
    assert stop == {
        "transaction_id": tx_id,
        "meter_stop": register,
        # The last moment the charger saw the transaction running (see transactions.py).
        "timestamp": row.last_meter_at,
        "reason": "PowerLoss",
    }
    # The samples taken before the crash go with it, all below the register.
    assert data and max(energy_of(d) for d in data) <= row.last_meter_wh < register
    assert stored_transactions(config.data_dir) == []
    await assert_a_restart_repeats_nothing(config, csms)
