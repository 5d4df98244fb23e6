"""Resets, power failures and a central system out of reach, through the whole station against
the in-test central system, on virtual time (OCTT case names from
docs/conformance.md). What must not get lost is the transaction messages: they
are in the station database before anyone is told (dcocpp/ocpp/transactions.py), so they are
delivered, in order and with the central system's transactionId, after a reconnect, a reset or
a power cut. TC_016 (soft reset with a transaction) is in test_scenarios_metering.py.

A "power cut without backup" is the station's nursery cancelled mid-transaction (nothing runs
after it), then a new `Station` on the same data directory: the next process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from ocpp.v16 import call
from ocpp.v16.enums import ResetType

from dcocpp.config import ChargerConfig
from dcocpp.connector.task import METER_PERSIST_INTERVAL, RELAY_ACK_DEADLINE
from dcocpp.hardware.simulation import SimulatedHardware
from dcocpp.station.station import RESET_FLUSH_TIMEOUT, HardReset
from dcocpp.storage.database import Database
from tests.csms import FakeCsms
from tests.station_harness import (
    WAIT_LIMIT,
    Harness,
    charger_config,
    running_station,
    statuses_of,
)

# Every scenario runs on the simulated guns and on the PLC backend (emulated PLCs on CAN).
pytestmark = pytest.mark.usefixtures("backend")

# No clock-aligned samples: the periodic ones (every 60 s) are the meter values to follow.
PERIODIC_ONLY = {"ClockAlignedDataInterval": 0, "MeterValueSampleInterval": 60}
OFFLINE_UNKNOWN_OK = {**PERIODIC_ONLY, "AllowOfflineTxForUnknownId": True}


def transaction_flow(csms: FakeCsms, since: int = 0) -> list[tuple[str, Any]]:
    """The transaction messages in arrival order: (action, transactionId or idTag)."""
    out: list[tuple[str, Any]] = []
    for _, action, p in csms.calls[since:]:
        if action == "StartTransaction":
            out.append((action, p["id_tag"]))
        elif action in ("MeterValues", "StopTransaction"):
            out.append((action, p.get("transaction_id")))
    return out


def energy_of(meter_value: dict[str, Any]) -> int:
    (energy,) = [
        s["value"]
        for s in meter_value["sampled_value"]
        if s["measurand"] == "Energy.Active.Import.Register"
    ]
    return int(energy)


def periodic(csms: FakeCsms, since: int = 0) -> list[tuple[float, dict[str, Any]]]:
    """(arrival time, payload) of the Sample.Periodic MeterValues, in arrival order."""
    return [
        (t, p)
        for t, a, p in csms.calls[since:]
        if a == "MeterValues"
        and p["meter_value"][0]["sampled_value"][0]["context"] == "Sample.Periodic"
    ]


async def go_offline(h: Harness) -> None:
    """The central system becomes unreachable and the connection dies."""
    h.network.down = True
    await h.network.drop()
    session = h.station.session
    assert session is not None
    await h.wait_until(lambda: not session.connected, poll=0.01)


async def go_online(h: Harness) -> float:
    """The central system is reachable again; returns when the station is Accepted on a new
    connection (the trio time then)."""
    session = h.station.session
    assert session is not None
    connection = session.connection_number
    h.network.down = False
    with trio.fail_after(WAIT_LIMIT):
        await session.wait_until_accepted(after_connection=connection)
    return trio.current_time()


async def start_offline(h: Harness, connector_id: int, id_tag: str) -> float:
    """Plug in and present `id_tag` with the central system out of reach; returns the trio
    time at which the transaction started (its StartTransaction's timestamp)."""
    await h.station.plug(connector_id)
    await h.station.present_id(connector_id, id_tag)
    with trio.fail_after(WAIT_LIMIT):
        await h.connector(connector_id).wait_truth(lambda t: t.transaction is not None)
    return trio.current_time()


async def stop_with_tag(h: Harness, connector_id: int, id_tag: str) -> float:
    """Present `id_tag` to stop; returns the trio time its StopTransaction was queued."""
    await h.station.present_id(connector_id, id_tag)
    with trio.fail_after(RELAY_ACK_DEADLINE + 1):
        await h.connector(connector_id).wait_settled()
    return trio.current_time()


def stored_transactions(db_dir: Path) -> list[tuple[int, bool]]:
    """(connector, stopped) of every transaction the station database still holds."""
    db = Database.open(db_dir)
    try:
        return [(row.connector_id, row.stopped) for row in db.transactions()]
    finally:
        db.close()


async def assert_a_restart_repeats_nothing(config: ChargerConfig, csms: FakeCsms) -> None:
    """Start the station again on the same data: no transaction message is sent twice (no
    second PowerLoss from the boot's recovery, no StopTransaction delivered before)."""
    since = csms.mark()
    async with running_station(config, csms) as h:
        await h.booted()
        await trio.sleep(10)
    assert transaction_flow(csms, since) == []


# --- resets ------------------------------------------------------------------------------------


async def test_tc_014_soft_reset_keeps_connector_unavailable(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """A connector set Inoperative stays Unavailable across a soft reset (the availability is
    persisted before it is answered; the restarted station reads it back)."""
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        result = await h.csms_call(call.ChangeAvailability(connector_id=1, type="Inoperative"))
        assert result.status == "Accepted"
        await h.wait_status(1, "Unavailable")
        old_session = h.station.session
        result = await h.csms_call(call.Reset(type="Soft"))
        assert result.status == "Accepted"
        await h.wait_until(
            lambda: h.station.session is not old_session and h.station.started.is_set()
        )
        since = h.csms.mark()
        await h.wait_calls("BootNotification", since=since)
        await h.wait_calls("StatusNotification", 3, since=since)
    statuses = {
        p["connector_id"]: p["status"] for p in h.csms.received("StatusNotification", since)
    }
    assert statuses == {0: "Available", 1: "Unavailable", 2: "Available"}


async def test_tc_015_hard_reset_with_transaction(autojump_clock: Any, tmp_path: Path) -> None:
    config = charger_config(tmp_path)
    csms = FakeCsms()
    with pytest.RaisesGroup(HardReset, flatten_subgroups=True):
        async with running_station(config, csms) as h:
            await h.booted()
            tx_id = await h.start_charging(1, "TAG-015")
            await trio.sleep(30)
            csms.hold("StopTransaction")  # to look at the charger before it goes down
            result = await h.csms_call(call.Reset(type="Hard"))
            assert result.status == "Accepted"
            await h.wait_until(lambda: bool(csms.waiting))
            assert not h.relay_closed(1)  # opened before the StopTransaction was queued
            csms.release("StopTransaction")
            await trio.sleep_forever()  # the station's run ends with HardReset
    ((stopped_at, _, stop),) = csms.held
    start = csms.received("StartTransaction")[0]
    assert csms.received("StopTransaction") == [stop]
    data = stop.pop("transaction_data")
    assert stop == {
        "transaction_id": tx_id,
        "meter_stop": energy_of(data[-1]),
        "timestamp": h.wall_time(stopped_at),
        "reason": "HardReset",
    }
    assert stop["meter_stop"] > start["meter_start"]
    assert data[-1]["sampled_value"][0]["context"] == "Transaction.End"
    assert stored_transactions(config.data_dir) == []  # delivered: nothing left for the next start
    # The restarted process has nothing to repeat.
    await assert_a_restart_repeats_nothing(config, csms)


async def test_hard_reset_while_offline_delivers_the_stop_after_the_restart(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    csms = FakeCsms()
    with pytest.RaisesGroup(HardReset, flatten_subgroups=True):
        async with running_station(config, csms, keys=PERIODIC_ONLY) as h:
            await h.booted()
            tx_id = await h.start_charging(2, "TAG-HARD-OFF")
            await trio.sleep(30)
            await go_offline(h)
            reset_at = trio.current_time()
            await h.station.perform_reset(ResetType.hard)
            await trio.sleep_forever()
    first = h
    assert stored_transactions(config.data_dir) == [(2, True)]  # stopped, not delivered
    since = csms.mark()
    async with running_station(config, csms) as h:
        await h.wait_calls("StopTransaction", since=since)
        await trio.sleep(10)
    (stop,) = csms.received("StopTransaction")
    assert (stop["transaction_id"], stop["reason"]) == (tx_id, "HardReset")
    # Stopped at the reset, not at the delivery.
    window = (first.wall_time(reset_at), first.wall_time(reset_at + RELAY_ACK_DEADLINE))
    assert window[0] <= stop["timestamp"] <= window[1]
    assert stop["meter_stop"] == energy_of(stop["transaction_data"][-1])
    assert transaction_flow(csms, since) == [("StopTransaction", tx_id)]  # no PowerLoss too
    assert stored_transactions(config.data_dir) == []


async def test_soft_reset_while_offline_delivers_the_stop_after_reconnect(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path), keys=PERIODIC_ONLY) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-RST-OFF")
        await trio.sleep(70)
        await go_offline(h)
        old_session = h.station.session
        reset_at = trio.current_time()
        await h.station.perform_reset(ResetType.soft)
        # The StopTransaction could not go: the reset waited RESET_FLUSH_TIMEOUT for it.
        assert trio.current_time() - reset_at == pytest.approx(RESET_FLUSH_TIMEOUT, abs=1e-6)
        await h.wait_until(
            lambda: h.station.session is not old_session and h.station.started.is_set()
        )
        since = h.csms.mark()
        await trio.sleep(30)
        assert transaction_flow(h.csms, since) == []
        assert stored_transactions(h.station.config.data_dir) == [(1, True)]
        await go_online(h)
        await h.wait_calls("StopTransaction")
        await h.wait_machine_status(1, "Finishing")  # the EV is still plugged
    (stop,) = h.csms.received("StopTransaction")
    assert (stop["transaction_id"], stop["reason"]) == (tx_id, "SoftReset")
    # Its own time, not the delivery's.
    stopped = stop["timestamp"]
    assert h.wall_time(reset_at) <= stopped <= h.wall_time(reset_at + RELAY_ACK_DEADLINE)
    assert stop["meter_stop"] == energy_of(stop["transaction_data"][-1])
    # The meter values of before the reset first, then the stop; nothing twice.
    assert transaction_flow(h.csms) == [
        ("StartTransaction", "TAG-RST-OFF"),
        ("MeterValues", tx_id),
        ("StopTransaction", tx_id),
    ]


async def test_soft_reset_whose_connection_dies_right_after_the_answer_still_resets(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """The central system's Reset is answered, then the link is lost before the
    StopTransaction could go: the reset goes on, and the StopTransaction is delivered after
    the reconnect."""
    async with running_station(charger_config(tmp_path), keys=PERIODIC_ONLY) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-RST-LOST")
        await trio.sleep(30)
        old_session = h.station.session
        result = await h.csms_call(call.Reset(type="Soft"))
        assert result.status == "Accepted"
        await go_offline(h)
        await trio.sleep(RESET_FLUSH_TIMEOUT + 5)
        await h.wait_until(
            lambda: h.station.session is not old_session and h.station.started.is_set(),
            limit=60,
        )
        await go_online(h)
        await h.wait_calls("StopTransaction")
    (stop,) = h.csms.received("StopTransaction")
    assert (stop["transaction_id"], stop["reason"]) == (tx_id, "SoftReset")


# --- power failure ------------------------------------------------------------------------------


async def test_tc_032_1_power_failure_with_backup_power(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    csms = FakeCsms()
    async with running_station(config, csms, keys=PERIODIC_ONLY) as h:
        await h.booted()
        tx_1 = await h.start_charging(1, "TAG-032-A")
        tx_2 = await h.start_charging(2, "TAG-032-B")
        await trio.sleep(75)
        since = csms.mark()
        await h.station.power_failure()
        # Before going down: both StopTransactions delivered, the relays open.
        stops = {p["transaction_id"]: p for p in csms.received("StopTransaction", since)}
        assert h.station.outbox is not None and h.station.outbox.empty
        assert not h.relay_closed(1) and not h.relay_closed(2)
        stop_times = {p["transaction_id"]: t for t, a, p in csms.calls if a == "StopTransaction"}
    assert set(stops) == {tx_1, tx_2}
    for tx_id in (tx_1, tx_2):
        stop = dict(stops[tx_id])
        data = stop.pop("transaction_data")
        assert stop == {
            "transaction_id": tx_id,
            "meter_stop": energy_of(data[-1]),
            "timestamp": h.wall_time(stop_times[tx_id]),
            "reason": "PowerLoss",
        }
        assert stop_times[tx_id] - stop_times[tx_1] <= RELAY_ACK_DEADLINE
    assert stored_transactions(config.data_dir) == []
    # The next start repeats nothing (no second PowerLoss from the boot's recovery).
    await assert_a_restart_repeats_nothing(config, csms)


async def test_tc_032_1_power_failure_while_offline_delivers_after_restart(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    csms = FakeCsms()
    async with running_station(config, csms, keys=PERIODIC_ONLY) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-032-OFF")
        await trio.sleep(30)
        await go_offline(h)
        failed_at = trio.current_time()
        await h.station.power_failure()  # the backup runs out before the CSMS is back
        assert trio.current_time() - failed_at == pytest.approx(RESET_FLUSH_TIMEOUT, abs=1e-6)
        assert not h.relay_closed(1)
    first = h
    assert stored_transactions(config.data_dir) == [(1, True)]
    since = csms.mark()
    async with running_station(config, csms) as h:
        await h.wait_calls("StopTransaction", since=since)
        await trio.sleep(10)
    (stop,) = csms.received("StopTransaction")
    assert (stop["transaction_id"], stop["reason"]) == (tx_id, "PowerLoss")
    # Stopped when the power failed, not when it was delivered.
    window = (first.wall_time(failed_at), first.wall_time(failed_at + RELAY_ACK_DEADLINE))
    assert window[0] <= stop["timestamp"] <= window[1]
    assert stop["meter_stop"] == energy_of(stop["transaction_data"][-1])
    assert transaction_flow(csms, since) == [("StopTransaction", tx_id)]


async def _cut_power_mid_transaction(
    config: Any, csms: FakeCsms, hardware: SimulatedHardware | None = None
) -> tuple[Harness, int, float]:
    """A transaction on connector 1 that charges for 125 s, then the power is cut (no
    backup): the station is cancelled, nothing of it runs after that. Returns the harness
    (for its wall clock), the transactionId and the trio time the transaction started."""
    async with running_station(config, csms, keys=PERIODIC_ONLY, hardware=hardware) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-032-2")
        started = csms.times("StartTransaction")[0]
        assert csms.received("StartTransaction")[0]["timestamp"] == h.wall_time(started)
        await trio.sleep_until(started + 125)
    assert csms.received("StopTransaction") == []
    assert stored_transactions(config.data_dir) == [(1, False)]
    return h, tx_id, started


async def test_tc_032_2_power_failure_without_backup_stops_with_power_loss_after_reboot(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    csms = FakeCsms()
    before, tx_id, started = await _cut_power_mid_transaction(config, csms)
    # The reading is persisted every METER_PERSIST_INTERVAL (10 s): the last one at +120 s,
    # the moment of the second periodic sample (MeterValueSampleInterval 60).
    assert METER_PERSIST_INTERVAL == 10
    samples = [p["meter_value"][0] for _, p in periodic(csms)]
    assert [s["timestamp"] for s in samples] == [
        before.wall_time(started + 60),
        before.wall_time(started + 120),
    ]
    since = csms.mark()
    async with running_station(config, csms) as h:
        await h.wait_calls("StopTransaction", since=since)
        await h.booted()
        await trio.sleep(10)
    (stop,) = csms.received("StopTransaction")
    # The StopTxnSampledData samples taken before the cut were persisted: Transaction.Begin
    # and the two periodic ones (StopTxnSampledData: Energy.Active.Import.Register).
    data = stop.pop("transaction_data")
    assert [(d["timestamp"], d["sampled_value"][0]["context"]) for d in data] == [
        (before.wall_time(started), "Transaction.Begin"),
        (before.wall_time(started + 60), "Sample.Periodic"),
        (before.wall_time(started + 120), "Sample.Periodic"),
    ]
    assert energy_of(data[-1]) == energy_of(samples[1])
    assert stop == {
        "transaction_id": tx_id,
        "meter_stop": energy_of(samples[1]),
        "timestamp": before.wall_time(started + 120),
        "reason": "PowerLoss",
    }
    assert transaction_flow(csms, since) == [("StopTransaction", tx_id)]
    assert stored_transactions(config.data_dir) == []


@pytest.mark.simulated_only("the emulated PLCs restart with the station: no EV stays plugged")
async def test_tc_032_2_ev_still_plugged_after_the_power_cut_is_finishing(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    hardware = SimulatedHardware(config.connectors)  # the world outlives the controller
    csms = FakeCsms()
    _, tx_id, _ = await _cut_power_mid_transaction(config, csms, hardware)
    since = csms.mark()
    async with running_station(config, csms, hardware=hardware) as h:
        await h.booted()
        await h.wait_calls("StopTransaction", since=since)
        await trio.sleep(30)
        assert h.connector(1).machine.status == "Finishing"
        # The driver's session is over: their tag does not start another one.
        with pytest.raises(
            ValueError, match="refused TAG-032-2 at the reader: the gun is Finishing"
        ):
            await h.station.present_id(1, "TAG-032-2")
        await h.station.unplug(1)
        await h.wait_status(1, "Available", since=since)
    boot = csms.received("StatusNotification", since)[:3]
    assert [(p["connector_id"], p["status"]) for p in boot] == [
        (0, "Available"),
        (1, "Finishing"),
        (2, "Available"),
    ]
    assert statuses_of(h, 1, since) == ["Finishing", "Available"]
    assert transaction_flow(csms, since) == [("StopTransaction", tx_id)]
    assert len(csms.received("StartTransaction")) == 1


@pytest.mark.simulated_only("the emulated PLCs restart with the station, their relays open")
async def test_relay_found_closed_at_boot_without_a_transaction_is_opened(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """Hardware that outlived the controller with its relay closed (here the simulated guns;
    a PLC's RelayControl watchdog opens it by itself): no energy without a transaction."""
    config = charger_config(tmp_path)
    hardware = SimulatedHardware(config.connectors)
    csms = FakeCsms()
    await _cut_power_mid_transaction(config, csms, hardware)
    assert hardware.relay_closed(1)
    async with running_station(config, csms, hardware=hardware) as h:
        await h.booted()
        await trio.sleep(RELAY_ACK_DEADLINE + 1)
        assert h.connector(1).transaction is None
        assert not h.relay_closed(1)


async def test_tc_034_power_failure_with_unavailable_status(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    csms = FakeCsms()
    async with running_station(config, csms) as h:
        await h.booted()
        since = csms.mark()
        result = await h.csms_call(call.ChangeAvailability(connector_id=0, type="Inoperative"))
        assert result.status == "Accepted"
        await h.wait_calls("StatusNotification", 3, since=since)
    assert sorted(statuses_of(h, c, since)[0] for c in (0, 1, 2)) == ["Unavailable"] * 3
    # The power is cut; the next start is Unavailable from the first StatusNotification on.
    since = csms.mark()
    async with running_station(config, csms) as h:
        await h.booted()
        await trio.sleep(60)
        # Unavailable: nothing starts.
        remote = await h.csms_call(call.RemoteStartTransaction(id_tag="TAG-034", connector_id=1))
        assert remote.status == "Rejected"
        back = csms.mark()
        result = await h.csms_call(call.ChangeAvailability(connector_id=0, type="Operative"))
        assert result.status == "Accepted"
        await h.wait_calls("StatusNotification", 3, since=back)
    assert [
        (p["connector_id"], p["status"]) for p in csms.received("StatusNotification", since)
    ] == [
        (0, "Unavailable"),
        (1, "Unavailable"),
        (2, "Unavailable"),
        (0, "Available"),
        (1, "Available"),
        (2, "Available"),
    ]
    assert csms.received("StartTransaction") == []


# --- connection loss ----------------------------------------------------------------------------


async def test_tc_036_connection_loss_during_transaction(
    autojump_clock: Any, tmp_path: Path
) -> None:
    # Samples every 30 s (the reconnect backoff decides when the link is back: up to
    # RetryBackoffWaitMaximum plus jitter).
    keys = {**PERIODIC_ONLY, "MeterValueSampleInterval": 30}
    async with running_station(charger_config(tmp_path), keys=keys) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-036")
        started = h.csms.times("StartTransaction")[0]
        await trio.sleep(40)  # one sample delivered online
        await go_offline(h)
        lost_at = trio.current_time()
        lost = h.csms.mark()
        await trio.sleep_until(started + 160)  # samples at +60 ... +150 s queued offline
        assert periodic(h.csms, lost) == []
        back_at = await go_online(h)
        # Every sample taken so far, and the first one taken after the return.
        await h.wait_until(lambda: len(periodic(h.csms)) >= (back_at - started) // 30 + 1)
        assert h.transaction_id(1) == tx_id
    samples = periodic(h.csms)
    taken = [started + 30 * k for k in range(1, len(samples) + 1)]
    # Sampled every 30 s, each with its own time, whenever it was delivered.
    assert [p["meter_value"][0]["timestamp"] for _, p in samples] == [h.wall_time(t) for t in taken]
    assert {p["transaction_id"] for _, p in samples} == {tx_id}
    assert {p["connector_id"] for _, p in samples} == {1}
    # The ones taken offline go out after the reconnect, in one go, before the first new one,
    # which goes out when it is taken.
    offline = [i for i, t in enumerate(taken) if lost_at < t < back_at]
    assert len(offline) >= 4
    assert all(back_at <= samples[i][0] < back_at + 1 for i in offline)
    first_new = offline[-1] + 1
    assert samples[first_new][0] == pytest.approx(taken[first_new], abs=1e-6)
    assert samples[first_new][0] >= samples[offline[-1]][0]
    energies = [energy_of(p["meter_value"][0]) for _, p in samples]
    assert energies == sorted(energies) and len(set(energies)) == len(energies)
    assert transaction_flow(h.csms)[:2] == [("StartTransaction", "TAG-036"), ("MeterValues", tx_id)]


# --- offline transactions -----------------------------------------------------------------------


async def test_tc_037_1_offline_start_with_a_valid_tag(autojump_clock: Any, tmp_path: Path) -> None:
    # The tag was accepted before (a session online): the authorization cache knows it, and
    # LocalAuthorizeOffline (true by default) lets it start while the central system is away.
    async with running_station(charger_config(tmp_path), keys=PERIODIC_ONLY) as h:
        await h.booted()
        first = await h.start_charging(1, "TAG-037")
        await stop_with_tag(h, 1, "TAG-037")
        await h.station.unplug(1)
        assert h.station.outbox is not None
        with trio.fail_after(WAIT_LIMIT):
            await h.station.outbox.wait_empty()  # its answer is in, not only the CALL out
        await go_offline(h)
        since = h.csms.mark()
        started = await start_offline(h, 1, "TAG-037")
        await h.wait_machine_status(1, "Charging")
        await trio.sleep_until(started + 130)
        assert h.transaction_id(1) is None  # no id from the central system yet
        await go_online(h)
        await h.wait_until(lambda: h.transaction_id(1) is not None)
        await h.wait_status(1, "Charging", since=since)
        await trio.sleep(10)
        assert h.connector(1).machine.status == "Charging"
    second = h.transaction_id(1)
    assert second == first + 1
    assert h.csms.received("StartTransaction", since) == [
        {
            "connector_id": 1,
            "id_tag": "TAG-037",
            "meter_start": h.csms.received("StopTransaction")[0]["meter_stop"],
            "timestamp": h.wall_time(started),
        }
    ]
    assert h.csms.authorize_count("TAG-037") == 1  # only the first, online session's
    # The two samples taken offline, with their own times, then whatever came after.
    flow = transaction_flow(h.csms, since)
    assert flow[:3] == [
        ("StartTransaction", "TAG-037"),
        ("MeterValues", second),
        ("MeterValues", second),
    ]
    assert set(flow[1:]) == {("MeterValues", second)}
    stamps = [p["meter_value"][0]["timestamp"] for _, p in periodic(h.csms, since)]
    assert stamps == [h.wall_time(started + 60 * k) for k in range(1, len(stamps) + 1)]


@pytest.mark.parametrize("stop_on_invalid", [False, True], ids=["tc_037_2", "tc_037_3"])
async def test_tc_037_2_and_3_offline_start_tag_invalid_after_reconnect(
    autojump_clock: Any, tmp_path: Path, stop_on_invalid: bool
) -> None:
    csms = FakeCsms(start_statuses={"TAG-UNKNOWN": "Invalid"})
    keys = {**OFFLINE_UNKNOWN_OK, "StopTransactionOnInvalidId": stop_on_invalid}
    async with running_station(charger_config(tmp_path), csms, keys=keys) as h:
        await h.booted()
        await go_offline(h)
        since = csms.mark()
        started = await start_offline(h, 1, "TAG-UNKNOWN")  # AllowOfflineTxForUnknownId
        await h.wait_machine_status(1, "Charging")
        assert h.relay_closed(1)
        await trio.sleep_until(started + 90)
        await go_online(h)
        if stop_on_invalid:
            await h.wait_calls("StopTransaction", since=since)
            await h.wait_status(1, "Finishing", since=since)
        else:
            await h.wait_status(1, "SuspendedEVSE", since=since)
        await trio.sleep(60)
        assert not h.relay_closed(1)
        status = h.connector(1).machine.status
    (start,) = csms.received("StartTransaction")
    assert start == {
        "connector_id": 1,
        "id_tag": "TAG-UNKNOWN",
        "meter_start": 1_000_000,  # gun 1's simulated register
        "timestamp": h.wall_time(started),
    }
    if stop_on_invalid:
        assert status == "Finishing"
        (stop,) = csms.received("StopTransaction")
        assert (stop["transaction_id"], stop["reason"]) == (1, "DeAuthorized")
        assert "id_tag" not in stop
        assert transaction_flow(csms, since) == [
            ("StartTransaction", "TAG-UNKNOWN"),
            ("MeterValues", 1),
            ("StopTransaction", 1),
        ]
    else:
        # The transaction is kept (the central system may still stop it), no energy flows.
        assert status == "SuspendedEVSE"
        assert h.transaction_id(1) == 1
        assert csms.received("StopTransaction") == []
        assert transaction_flow(csms, since)[:2] == [
            ("StartTransaction", "TAG-UNKNOWN"),
            ("MeterValues", 1),
        ]
        assert {tx for action, tx in transaction_flow(csms, since)[1:]} == {1}
    assert statuses_of(h, 1, since)[-1] == status


async def test_tc_038_offline_stop(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path), keys=PERIODIC_ONLY) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-038")
        started = h.csms.times("StartTransaction")[0]
        await trio.sleep(30)
        await go_offline(h)
        since = h.csms.mark()
        await trio.sleep_until(started + 150)
        stopped = await stop_with_tag(h, 1, "TAG-038")
        await h.station.unplug(1)
        await trio.sleep(30)
        assert transaction_flow(h.csms, since) == []
        await go_online(h)
        await h.wait_calls("StopTransaction", since=since)
        await h.wait_status(1, "Available", since=since)
    (stop,) = h.csms.received("StopTransaction")
    data = stop.pop("transaction_data")
    assert stop == {
        "transaction_id": tx_id,
        "id_tag": "TAG-038",
        "meter_stop": energy_of(data[-1]),
        "timestamp": h.wall_time(stopped),
        "reason": "Local",
    }
    assert [mv["timestamp"] for mv in data] == [
        h.wall_time(started),
        h.wall_time(started + 60),
        h.wall_time(started + 120),
        h.wall_time(stopped),
    ]
    assert transaction_flow(h.csms, since) == [
        ("MeterValues", tx_id),
        ("MeterValues", tx_id),
        ("StopTransaction", tx_id),
    ]
    assert h.csms.authorize_count() == 1  # the start's; the same tag stops without asking


async def test_tc_039_offline_transaction(autojump_clock: Any, tmp_path: Path) -> None:
    csms = FakeCsms()
    csms.next_transaction_id = 3900
    async with running_station(charger_config(tmp_path), csms, keys=OFFLINE_UNKNOWN_OK) as h:
        await h.booted()
        await go_offline(h)
        since = csms.mark()
        started = await start_offline(h, 2, "TAG-039")
        await h.wait_machine_status(2, "Charging")
        await trio.sleep_until(started + 150)
        stopped = await stop_with_tag(h, 2, "TAG-039")
        await h.station.unplug(2)
        await h.wait_machine_status(2, "Available")
        await trio.sleep(60)
        assert transaction_flow(csms, since) == []
        await go_online(h)
        await h.wait_calls("StopTransaction", since=since)
        await trio.sleep(10)
    (start,) = csms.received("StartTransaction")
    (stop,) = csms.received("StopTransaction")
    samples = [p for _, p in periodic(csms)]
    assert start == {
        "connector_id": 2,
        "id_tag": "TAG-039",
        "meter_start": 1_100_000,  # gun 2's simulated register
        "timestamp": h.wall_time(started),
    }
    assert [p["meter_value"][0]["timestamp"] for p in samples] == [
        h.wall_time(started + 60),
        h.wall_time(started + 120),
    ]
    data = stop.pop("transaction_data")
    assert stop == {
        "transaction_id": 3900,
        "id_tag": "TAG-039",
        "meter_stop": energy_of(data[-1]),
        "timestamp": h.wall_time(stopped),
        "reason": "Local",
    }
    energies = [start["meter_start"], *(energy_of(p["meter_value"][0]) for p in samples)]
    assert energies == sorted(energies) and stop["meter_stop"] > energies[-1]
    assert transaction_flow(csms, since) == [
        ("StartTransaction", "TAG-039"),
        ("MeterValues", 3900),
        ("MeterValues", 3900),
        ("StopTransaction", 3900),
    ]
    assert statuses_of(h, 2, since) == ["Available"]  # only the latest, after reconnect
