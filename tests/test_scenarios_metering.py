"""Meter values, billing, faults, availability, two guns at once and reset through the whole
station against the in-test central system, on virtual time (the companion of
test_scenarios_core.py; OCTT case names from docs/conformance.md)."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from ocpp.v16 import call
from ocpp.v16.enums import ChargePointStatus

from dcocpp.connector.task import RELAY_ACK_DEADLINE, RELAY_RETRY_INTERVAL
from dcocpp.hardware.plc.driver import ACK_TIMEOUT, ATTEMPTS, BACKOFF
from dcocpp.station.station import RESET_FLUSH_TIMEOUT
from dcocpp.storage.database import Database
from tests.csms import FakeCsms
from tests.station_harness import Harness, charger_config, running_station, statuses_of

# Every scenario runs on the simulated guns and on the PLC backend (emulated PLCs on CAN).
pytestmark = pytest.mark.usefixtures("backend")

SAMPLED_UNITS = [
    ("Energy.Active.Import.Register", "Wh"),
    ("Power.Active.Import", "W"),
    ("Current.Import", "A"),
    ("Voltage", "V"),
    ("SoC", "Percent"),
]


def meter_values(
    h: Harness, connector_id: int, context: str, since: int = 0
) -> list[tuple[float, dict[str, Any]]]:
    """(arrival time, MeterValues payload) of one connector whose samples have `context`."""
    out = []
    for t, action, p in h.csms.calls[since:]:
        if action != "MeterValues" or p["connector_id"] != connector_id:
            continue
        contexts = {s.get("context") for mv in p["meter_value"] for s in mv["sampled_value"]}
        if contexts == {context}:
            out.append((t, p))
    return out


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- meter values ------------------------------------------------------------------------------


async def test_tc_070_sampled_meter_values(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(
        charger_config(tmp_path), keys={"MeterValueSampleInterval": 10}
    ) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-070")
        started = h.csms.times("StartTransaction")[0]
        await trio.sleep(45)
    periodic = meter_values(h, 1, "Sample.Periodic")
    assert len(periodic) == 4
    times = [t for t, _ in periodic]
    assert [b - a for a, b in zip([started, *times], times, strict=False)] == pytest.approx(
        [10, 10, 10, 10], abs=1e-6
    )
    energies = []
    for t, payload in periodic:
        assert payload["transaction_id"] == tx_id
        (value,) = payload["meter_value"]
        assert value["timestamp"] == h.wall_time(t)
        sampled = value["sampled_value"]
        assert [(s["measurand"], s["unit"]) for s in sampled] == SAMPLED_UNITS
        assert {s["context"] for s in sampled} == {"Sample.Periodic"}
        assert sampled[4]["location"] == "EV"
        energy, power, current, voltage, soc = (float(s["value"]) for s in sampled)
        assert power == pytest.approx(voltage * current, rel=1e-3)
        # The gun's maxCurrentA (200 A) binds, then its maxPowerW (75 kW) at ~375 V.
        assert current == pytest.approx(min(200.0, 75_000 / voltage), abs=0.1)
        assert 20.0 <= soc < 25.0  # the PLC reports whole percent (SOC_PCT)
        energies.append(energy)
    # 200 A at ~374 V for 10 s is ~208 Wh per interval.
    deltas = [b - a for a, b in zip([1_000_000.0, *energies], energies, strict=False)]
    assert all(200 <= d <= 216 for d in deltas), deltas


async def test_tc_071_clock_aligned_meter_values(autojump_clock: Any, tmp_path: Path) -> None:
    keys = {"ClockAlignedDataInterval": 300, "MeterValueSampleInterval": 0}
    async with running_station(charger_config(tmp_path), keys=keys) as h:
        await h.booted()
        await trio.sleep(60)
        tx_id = await h.start_charging(1, "TAG-071")  # starts at 23:51, wall-clock time
        await h.wait_until(
            lambda: all(len(meter_values(h, c, "Sample.Clock")) >= 3 for c in (1, 2)),
            poll=60,  # they are messages: the CSMS side wakes the wait
        )
    # Aligned to the wall clock's 5-minute grid, across midnight.
    expected = ["2026-11-23T23:55:00.000Z", "2026-11-24T00:00:00.000Z", "2026-11-24T00:05:00.000Z"]
    for connector_id in (1, 2):
        aligned = meter_values(h, connector_id, "Sample.Clock")[:3]
        assert [p["meter_value"][0]["timestamp"] for _, p in aligned] == expected
        assert [h.wall_time(t) for t, _ in aligned] == expected  # sent on the boundary
        for _, payload in aligned:
            ((sample,),) = [mv["sampled_value"] for mv in payload["meter_value"]]
            assert (sample["measurand"], sample["unit"]) == ("Energy.Active.Import.Register", "Wh")
            moment = parse_time(payload["meter_value"][0]["timestamp"])
            assert (moment.minute * 60 + moment.second) % 300 == 0 and moment.microsecond == 0
        # On the transaction where one runs; without transactionId on the idle gun.
        want = tx_id if connector_id == 1 else None
        assert [p.get("transaction_id") for _, p in aligned] == [want] * 3


async def test_tc_054_trigger_meter_values(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        result = await h.csms_call(
            call.TriggerMessage(requested_message="MeterValues", connector_id=1)
        )
        assert result.status == "Accepted"
        await h.wait_until(lambda: len(meter_values(h, 1, "Trigger")) == 1)
        (_, idle), *_ = meter_values(h, 1, "Trigger")
        tx_id = await h.start_charging(1, "TAG-054")
        await trio.sleep(20)
        result = await h.csms_call(
            call.TriggerMessage(requested_message="MeterValues", connector_id=1)
        )
        assert result.status == "Accepted"
        await h.wait_until(lambda: len(meter_values(h, 1, "Trigger")) == 2)
        await trio.sleep(1)
    assert "transaction_id" not in idle
    (value,) = idle["meter_value"]
    # No EV: no SoC, and nothing flows.
    assert [(s["measurand"], s["value"], s["unit"]) for s in value["sampled_value"]] == [
        ("Energy.Active.Import.Register", "1000000", "Wh"),
        ("Power.Active.Import", "0.0", "W"),
        ("Current.Import", "0.0", "A"),
        ("Voltage", "0.0", "V"),
    ]
    _, during = meter_values(h, 1, "Trigger")[1]
    assert during["transaction_id"] == tx_id
    assert len(during["meter_value"][0]["sampled_value"]) == 5
    assert meter_values(h, 2, "Trigger") == []  # only the connector asked for


# --- billing -----------------------------------------------------------------------------------


async def test_stop_transaction_bills_the_delivered_energy(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-BILL")
        await trio.sleep(290)
        since = h.csms.mark()
        await h.station.present_id(1, "TAG-BILL")
        await h.wait_calls("StopTransaction", since=since)
        await trio.sleep(30)  # nothing flows after the stop
        register = h.register_wh(1)
        stopped_at = h.csms.times("StopTransaction")[0]
    start = h.csms.received("StartTransaction")[0]
    stop = h.csms.received("StopTransaction")[0]
    assert set(stop) == {
        "transaction_id",
        "id_tag",
        "meter_stop",
        "timestamp",
        "reason",
        "transaction_data",
    }
    assert (stop["transaction_id"], stop["id_tag"], stop["reason"]) == (tx_id, "TAG-BILL", "Local")
    assert stop["timestamp"] == h.wall_time(stopped_at)
    assert stop["meter_stop"] == round(register)
    assert stop["meter_stop"] > start["meter_start"] == 1_000_000
    delivered = register - 1_000_000  # what the simulated EV received
    assert abs((stop["meter_stop"] - start["meter_start"]) - delivered) <= 1
    assert delivered == pytest.approx(290 * 74_800 / 3600, rel=0.02)  # ~74.8 kW for 290 s
    data = stop["transaction_data"]
    contexts = [mv["sampled_value"][0]["context"] for mv in data]
    assert contexts[0] == "Transaction.Begin" and contexts[-1] == "Transaction.End"
    assert contexts[1:-1] == ["Sample.Periodic"] * 4  # MeterValueSampleInterval 60
    for mv in data:
        (sample,) = mv["sampled_value"]
        assert (sample["measurand"], sample["unit"]) == ("Energy.Active.Import.Register", "Wh")
    assert data[0]["sampled_value"][0]["value"] == str(start["meter_start"])
    assert data[-1]["sampled_value"][0]["value"] == str(stop["meter_stop"])
    assert data[0]["timestamp"] == start["timestamp"]
    assert data[-1]["timestamp"] == stop["timestamp"]
    values = [int(mv["sampled_value"][0]["value"]) for mv in data]
    assert values == sorted(values)


# --- meter values the charger cannot send ------------------------------------------------------


async def test_a_sample_with_nothing_measurable_is_not_sent_and_the_stop_goes_out(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SoC alone is configured and the EV stops telling it (unplugged, the transaction goes
    on): no MeterValues and no stop sample without a value is built (logged once at INFO),
    and the StopTransaction is delivered at once, with the samples that have values."""
    caplog.set_level(logging.DEBUG)
    keys = {
        "MeterValuesSampledData": "SoC",
        "StopTxnSampledData": "SoC",
        "MeterValueSampleInterval": 10,
        "StopTransactionOnEVSideDisconnect": False,
    }
    async with running_station(charger_config(tmp_path), keys=keys) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-SOC")
        await h.wait_calls("MeterValues")
        await h.station.unplug(1)
        await trio.sleep(60)
        assert len(h.csms.received("MeterValues")) == 1  # none while nothing is measured
        since = h.csms.mark()
        stopped_at = trio.current_time()
        await h.csms_call(call.RemoteStopTransaction(transaction_id=tx_id))
        (stop,) = await h.wait_calls("StopTransaction", since=since)
        assert trio.current_time() - stopped_at <= RELAY_ACK_DEADLINE
        await h.wait_until(lambda: h.station.outbox is not None and h.station.outbox.empty)
    assert [a for _, a, _ in h.csms.refused] == ["SecurityEventNotification"]
    contexts = [[v["context"] for v in mv["sampled_value"]] for mv in stop["transaction_data"]]
    # Taken while the EV told its SoC; none at the end, when it no longer did.
    assert ["Sample.Periodic"] in contexts and ["Transaction.End"] not in contexts
    ((value,),) = [mv["sampled_value"] for mv in h.csms.received("MeterValues")[0]["meter_value"]]
    assert value["measurand"] == "SoC"
    unmeasured = [
        r for r in caplog.records if r.getMessage().startswith("connector 1: none of SoC can")
    ]
    assert [r.levelno for r in unmeasured][:1] == [logging.INFO]
    assert {r.levelno for r in unmeasured[1:]} == {logging.DEBUG}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def seed_older_version(config: Any, meter_value: list[dict[str, Any]]) -> None:
    """The database an older dcocpp left behind: a transaction on connector 1, running when
    the process died, with a MeterValues queued that OCPP's schema refuses."""
    db = Database.open(config.data_dir)
    try:
        at = "2026-11-23T23:40:00.000Z"
        start = {"connector_id": 1, "id_tag": "TAG-OLD", "meter_start": 1_000_000, "timestamp": at}
        fields = {
            "connector_id": 1,
            "id_tag": "TAG-OLD",
            "meter_start": 1_000_000,
            "started_at": at,
            "reservation_id": None,
            "last_meter_wh": 1_000_000,
            "last_meter_at": at,
        }
        local_id, _ = db.begin_transaction(fields, start, "TAG-OLD")
        db.queue_message("MeterValues", local_id, {"connector_id": 1, "meter_value": meter_value})
    finally:
        db.close()


async def test_meter_values_the_charger_cannot_validate_do_not_hold_back_its_stop(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A queued MeterValues that fails our own schema check (empty samples, as an older
    version built them) is our bug: logged as an error and dropped at once, never retried or
    parked, so the transaction's StopTransaction (PowerLoss, at the next start) follows it."""
    config = charger_config(tmp_path)
    seed_older_version(config, [{"timestamp": "2026-11-23T23:45:00.000Z", "sampled_value": []}])
    async with running_station(config) as h:
        (stop,) = await h.wait_calls("StopTransaction", limit=5)
        await trio.sleep(600)
        assert h.station.outbox is not None and len(h.station.outbox) == 0
    assert (stop["reason"], stop["meter_stop"]) == ("PowerLoss", 1_000_000)
    # Only the idle guns' clock-aligned values (no transaction); nothing refused by the CSMS.
    assert all("transaction_id" not in p for p in h.csms.received("MeterValues"))
    assert [a for _, a, _ in h.csms.refused] == ["SecurityEventNotification"]
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.startswith("MeterValues #2 fails our own OCPP schema check, a bug of this charger")
    assert "dropping it" in error and "'sampled_value': []" in error


async def test_a_parked_message_does_not_delay_another_transaction_across_a_reconnect(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """The central system refuses every MeterValues of one transaction: parked, then retried
    after each reconnect (30 s, then 60 s later). Another transaction started right after a
    reconnect is not held back by those retries: its messages go at once."""
    keys = {
        "MeterValueSampleInterval": 60,
        "TransactionMessageAttempts": 3,
        "TransactionMessageRetryInterval": 30,
    }
    csms = FakeCsms()
    async with running_station(charger_config(tmp_path), csms, keys=keys) as h:
        await h.booted()
        poisoned = await h.start_charging(1, "TAG-POISON")
        csms.refuse("MeterValues", 10_000, when=lambda p: p.get("transaction_id") == poisoned)
        await h.wait_until(lambda: h.station.outbox is not None and h.station.outbox.parked)
        refused = len(csms.refused)
        await h.network.drop()
        await h.wait_until(lambda: len(csms.refused) > refused, poll=0.01)  # unparked, retried
        retried_at = trio.current_time()
        since = h.csms.mark()
        await h.hardware.plug(2)
        await h.station.present_id(2, "TAG-OTHER")
        await h.wait_calls("StartTransaction", since=since)
        other = await h.wait_status(2, "Charging", since=since)
        assert trio.current_time() - retried_at <= 2.0  # not 30 + 60 s behind the retries
        stopping = trio.current_time()
        await h.station.present_id(2, "TAG-OTHER")
        await h.wait_calls("StopTransaction", since=since)
        assert trio.current_time() - stopping <= RELAY_ACK_DEADLINE + 1.0
        assert len(csms.refused) == refused + 1  # the poisoned one still waits for its retry
    assert other["connector_id"] == 2
    (stop,) = h.csms.received("StopTransaction", since)
    assert stop["id_tag"] == "TAG-OTHER"


# --- faults while charging ---------------------------------------------------------------------

FAULT_CASES = {
    "estop": ("OtherError", "EmergencyStop", "PLC 0: emergency stop", "EmergencyStop"),
    "earth": ("GroundFailure", None, "PLC 0: earth fault", "Other"),
    "comm": ("InternalError", "PLC 0 communication lost", "PLC 0 communication lost", "Other"),
    "meter": ("PowerMeterFailure", None, "meter data stale", "Other"),
}


@pytest.mark.parametrize("kind", list(FAULT_CASES))
async def test_fault_while_charging_stops_and_recovers_truthfully(
    autojump_clock: Any, tmp_path: Path, kind: str
) -> None:
    error_code, vendor_code, info, reason = FAULT_CASES[kind]
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-FAULT")
        await trio.sleep(60)
        since = h.csms.mark()
        await h.station.set_fault(1, kind, True)
        faulted = await h.wait_status(1, "Faulted", since=since)
        await h.wait_calls("StopTransaction", since=since)
        assert not h.relay_closed(1)
        await trio.sleep(30)
        cleared = h.csms.mark()
        await h.station.set_fault(1, kind, False)
        # The EV is still plugged and the transaction is over: Finishing, no error.
        finishing = await h.wait_status(1, "Finishing", since=cleared)
        await trio.sleep(10)
        assert h.connector(1).machine.status == "Finishing"
        assert not h.relay_closed(1)
        await h.station.unplug(1)
        await h.wait_status(1, "Available", since=cleared)
    expected = {"connector_id": 1, "status": "Faulted", "error_code": error_code, "info": info}
    if vendor_code is not None:
        expected["vendor_error_code"] = vendor_code
    assert {k: v for k, v in faulted.items() if k != "timestamp"} == expected
    stop = h.csms.received("StopTransaction")[0]
    assert (stop["transaction_id"], stop["reason"]) == (tx_id, reason)
    assert "id_tag" not in stop
    assert finishing["error_code"] == "NoError"
    assert statuses_of(h, 1, since) == ["Faulted", "Finishing", "Available"]
    assert len(h.csms.received("StartTransaction")) == 1  # no new session after the clear


async def test_stuck_relay_at_start_is_a_power_switch_failure(
    autojump_clock: Any, tmp_path: Path, backend: str
) -> None:
    # The connector's deadline, or the PLC driver's own attempts when they end first.
    plc_give_up = ATTEMPTS * ACK_TIMEOUT + BACKOFF * (2 ** (ATTEMPTS - 1) - 1)
    give_up = RELAY_ACK_DEADLINE if backend == "simulated" else min(plc_give_up, RELAY_ACK_DEADLINE)
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        h.hardware.set_relay_stuck(1, True)
        since = h.csms.mark()
        await h.station.plug(1)
        await h.station.present_id(1, "TAG-RELAY")
        await h.wait_calls("StartTransaction", since=since)
        started = trio.current_time()
        faulted = await h.wait_status(1, "Faulted", since=since)
        assert trio.current_time() - started == pytest.approx(give_up, abs=1e-6)
        await h.wait_calls("StopTransaction", since=since)
        assert trio.current_time() - started <= 3 * RELAY_ACK_DEADLINE  # and no hang
    assert faulted["error_code"] == "PowerSwitchFailure"
    start = h.csms.received("StartTransaction")[0]
    stop = h.csms.received("StopTransaction")[0]
    assert stop["reason"] == "Other"
    assert stop["meter_stop"] == start["meter_start"]  # the relay never closed
    assert "Charging" not in statuses_of(h, 1, since)


async def test_stuck_relay_recovers_once_it_works_again(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        h.hardware.set_relay_stuck(1, True)
        since = h.csms.mark()
        await h.station.plug(1)
        await h.station.present_id(1, "TAG-RELAY")
        await h.wait_status(1, "Faulted", since=since)
        await h.wait_calls("StopTransaction", since=since)
        h.hardware.set_relay_stuck(1, False)
        cleared = h.csms.mark()
        await trio.sleep(300)
        # The relay is open and obeys: the truth is a finished session with the EV plugged.
        assert h.connector(1).machine.status == "Finishing"
        assert statuses_of(h, 1, cleared) == ["Finishing"]


def fault_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "dcocpp.connector.task" and " fault " in r.getMessage()
    ]


async def test_stuck_relay_is_logged_once_not_at_every_retry(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        h.hardware.set_relay_stuck(1, True)
        since = h.csms.mark()
        await h.station.plug(1)
        await h.station.present_id(1, "TAG-RELAY")
        await h.wait_status(1, "Faulted", since=since)
        await trio.sleep(300)  # the relay worker retries every RELAY_RETRY_INTERVAL
        h.hardware.set_relay_stuck(1, False)
        await h.wait_until(lambda: h.connector(1).machine.status == "Finishing")
    retries = [m for m in caplog.messages if m.startswith("connector 1: relay command failed")]
    assert len(retries) >= 300 // (RELAY_ACK_DEADLINE + RELAY_RETRY_INTERVAL)
    lines = fault_lines(caplog)
    assert len(lines) == 2, lines
    level, raised = lines[0]
    assert level == logging.WARNING
    assert raised.startswith("connector 1: fault relay raised (PowerSwitchFailure): ")
    assert lines[1] == (logging.INFO, "connector 1: fault relay cleared")


# --- availability ------------------------------------------------------------------------------


async def test_change_availability_while_charging_is_scheduled_and_survives_restart(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    async with running_station(config) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-AV")
        since = h.csms.mark()
        result = await h.csms_call(call.ChangeAvailability(connector_id=1, type="Inoperative"))
        assert result.status == "Scheduled"
        await trio.sleep(60)
        assert h.transaction_id(1) == tx_id  # the session goes on
        assert statuses_of(h, 1, since) == []
        await h.station.present_id(1, "TAG-AV")
        await h.wait_calls("StopTransaction", since=since)
        await h.wait_status(1, "Unavailable", since=since)
        # Unavailable: a new session cannot start on it.
        remote = await h.csms_call(call.RemoteStartTransaction(id_tag="TAG-AV", connector_id=1))
        assert remote.status == "Rejected"
    assert h.csms.received("StopTransaction")[0]["reason"] == "Local"
    assert statuses_of(h, 1, since)[-1] == "Unavailable"
    csms = FakeCsms()
    async with running_station(config, csms) as h:
        await h.booted()
    assert [(p["connector_id"], p["status"]) for p in csms.received("StatusNotification")] == [
        (0, "Available"),
        (1, "Unavailable"),
        (2, "Available"),
    ]


# --- two guns ----------------------------------------------------------------------------------


async def test_two_guns_charge_independently(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(
        charger_config(tmp_path), keys={"MeterValueSampleInterval": 10}
    ) as h:
        await h.booted()
        tx_1 = await h.start_charging(1, "TAG-GUN-1")
        tx_2 = await h.start_charging(2, "TAG-GUN-2")
        await trio.sleep(35)
        since = h.csms.mark()
        energy_1 = h.register_wh(1)
        await h.station.set_fault(2, "earth", True)
        await h.wait_status(2, "Faulted", error_code="GroundFailure", since=since)
        await h.wait_calls("StopTransaction", since=since)
        await trio.sleep(30)
        assert h.connector(1).machine.status == "Charging"
        assert h.relay_closed(1) and not h.relay_closed(2)
        assert h.register_wh(1) > energy_1 + 500  # gun 1 still delivers
        # Gun 2's fault told the CSMS nothing about gun 1.
        assert statuses_of(h, 1, since) == []
        assert h.csms.received("StopTransaction", since)[0]["transaction_id"] == tx_2
        await h.station.present_id(1, "TAG-GUN-1")
        await h.wait_calls("StopTransaction", 2, since=since)
    assert tx_1 != tx_2
    starts = {p["connector_id"]: p for p in h.csms.received("StartTransaction")}
    assert starts[1]["meter_start"] == 1_000_000 and starts[2]["meter_start"] == 1_100_000
    assert (starts[1]["id_tag"], starts[2]["id_tag"]) == ("TAG-GUN-1", "TAG-GUN-2")
    for connector_id, tx_id in ((1, tx_1), (2, tx_2)):
        periodic = meter_values(h, connector_id, "Sample.Periodic")
        assert len(periodic) >= 3
        assert {p["transaction_id"] for _, p in periodic} == {tx_id}
        # Each from its own gun's meter (gun 2's register starts 100 kWh higher).
        energies = [float(p["meter_value"][0]["sampled_value"][0]["value"]) for _, p in periodic]
        low = 1_000_000 + 100_000 * (connector_id - 1)
        assert all(low < e < low + 10_000 for e in energies), energies
    stops = {p["transaction_id"]: p for p in h.csms.received("StopTransaction")}
    assert (stops[tx_2]["reason"], stops[tx_1]["reason"]) == ("Other", "Local")
    assert stops[tx_1]["id_tag"] == "TAG-GUN-1"
    assert statuses_of(h, 1, since) == ["Finishing"]
    assert statuses_of(h, 2, since) == ["Faulted"]


# --- reset -------------------------------------------------------------------------------------


async def test_tc_016_soft_reset_with_transaction(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-RESET")
        await trio.sleep(30)
        result = await h.csms_call(call.Reset(type="Soft"))
        assert result.status == "Accepted"
        await h.wait_calls("BootNotification", 2)
        boots = [i for i, (_, a, _) in enumerate(h.csms.calls) if a == "BootNotification"]
        await h.wait_calls("StatusNotification", 3, since=boots[1])
    stop_index = h.csms.index_of("StopTransaction")
    assert stop_index < boots[1]  # delivered before the station went down
    stop = h.csms.calls[stop_index][2]
    assert (stop["transaction_id"], stop["reason"]) == (tx_id, "SoftReset")
    assert stop["meter_stop"] > h.csms.received("StartTransaction")[0]["meter_start"]
    assert h.csms.connections == 2


async def test_soft_reset_with_transaction_restarts_promptly(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await h.start_charging(1, "TAG-RESET")
        reset_at = trio.current_time()
        result = await h.csms_call(call.Reset(type="Soft"))
        assert result.status == "Accepted"
        await h.wait_calls("BootNotification", 2)
        assert trio.current_time() - reset_at < RESET_FLUSH_TIMEOUT / 2


# --- MinimumStatusDuration ---------------------------------------------------------------------


async def test_minimum_status_duration_suppresses_short_statuses(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path), keys={"MinimumStatusDuration": 10}) as h:
        await h.booted()
        assert h.store.get_int("MinimumStatusDuration") == 10
        since = h.csms.mark()
        await h.station.plug(1)
        await trio.sleep(2)
        await h.station.unplug(1)  # Preparing for 2 s: never reported
        await trio.sleep(30)
        assert statuses_of(h, 1, since) == []
        plugged_at = trio.current_time()
        await h.station.plug(1)
        await h.wait_status(1, "Preparing", since=since)
        assert trio.current_time() - plugged_at == pytest.approx(10, abs=1e-6)


async def test_statuses_not_sent_yet_are_coalesced_to_a_path_the_table_allows(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """Statuses a connector passes through before the first of them went out are cut down
    to the latest, with the intermediates that make each step one the OCPP 1.6 table allows
    from the status the central system has; offline only the latest per connector is kept."""
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        session = h.station.session
        assert session is not None
        statuses = h.station.statuses()
        one = statuses[1]

        async def report(*names: str) -> list[str]:
            since = h.csms.mark()
            for status in names:
                session.report_status(attrs.evolve(one, status=ChargePointStatus(status)))
            await trio.sleep(10)
            return statuses_of(h, 1, since)

        # Available -> Unavailable is allowed: the rest came and went.
        assert await report("Preparing", "Available", "Unavailable") == ["Unavailable"]
        # Unavailable -> Finishing is not, Unavailable -> Preparing -> Finishing is.
        assert await report("Available", "Preparing", "Finishing") == ["Preparing", "Finishing"]
        # Back where the central system is: nothing to say.
        assert await report("Available", "Finishing") == []
        await report("Available")
        # Offline: coalesced to the latest.
        h.network.down = True
        await h.network.drop()
        await h.wait_until(lambda: not session.connected, poll=0.01)
        for status in ("Available", "Preparing", "Available"):
            session.report_status(attrs.evolve(one, status=ChargePointStatus(status)))
        since = h.csms.mark()
        h.network.down = False
        await h.csms.wait_connected(2)
        await h.wait_calls("StatusNotification", 3, since=since)  # 0, 1, 2 after the reconnect
        await trio.sleep(10)
        assert statuses_of(h, 1, since) == ["Available"]


async def test_plugged_ev_is_finishing_after_a_soft_reset_that_stopped_its_session(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await h.start_charging(1, "TAG-RST")
        await h.csms_call(call.Reset(type="Soft"))
        await h.wait_calls("BootNotification", 2)
        await h.wait_until(lambda: h.station.started.is_set() and 1 in h.station.connectors)
        await h.wait_machine_status(1, "Finishing")
        # The driver's session ended with the reset: a tag does not start another one.
        with pytest.raises(ValueError, match="refused TAG-RST at the reader: the gun is Finishing"):
            await h.station.present_id(1, "TAG-RST")
        await h.station.unplug(1)
        await h.wait_machine_status(1, "Available")
    stops = h.csms.received("StopTransaction")
    assert [s["reason"] for s in stops] == ["SoftReset"]
    assert len(h.csms.received("StartTransaction")) == 1


async def test_new_sample_interval_applies_at_once(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(
        charger_config(tmp_path), keys={"MeterValueSampleInterval": 600}
    ) as h:
        await h.booted()
        await h.start_charging(1, "TAG-INT")
        started = h.csms.times("StartTransaction")[0]
        await trio.sleep(30)
        result = await h.csms_call(
            call.ChangeConfiguration(key="MeterValueSampleInterval", value="60")
        )
        assert result.status == "Accepted"
        await trio.sleep(100)
    times = [t for t, _ in meter_values(h, 1, "Sample.Periodic")]
    # Counted from the transaction's start, not after the old 600 s ran out.
    assert times == pytest.approx([started + 60, started + 120], abs=1e-6)
