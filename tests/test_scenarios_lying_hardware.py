"""The whole station on the PLC backend (the real driver on a virtual CAN bus, emulated PLCs)
when the PLC's word contradicts physics or the host's command: a meter register that goes back,
reads 0, jumps, or a meter over range; a relay reported closed that was commanded open; a PLC
that falls silent while charging. Billing follows physics, the faults reach the central
system, and recovery is reported as soon as the hardware recovers (virtual time). Last, the
connector's own check, which keeps the bill physical on any backend."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from dcocpp.connector.task import METER_PERSIST_INTERVAL, OCPP_MAX_WH, REGISTER_BEYOND_OCPP
from dcocpp.hardware import simulation
from dcocpp.hardware.plc.driver import ACK_TIMEOUT
from dcocpp.hardware.plc.emulated import InProcessPlcHardware
from dcocpp.hardware.plc.emulator import PlcEmulator
from dcocpp.hardware.simulation import SimulatedHardware
from dcocpp.storage.database import Database
from tests.billing import assert_billed_physically
from tests.csms import FakeCsms
from tests.station_harness import (
    Harness,
    charger_config,
    emulated_plcs,
    plc_driver,
    running_station,
    statuses_of,
    use_backend,
)


@pytest.fixture(autouse=True)
def _plc_backend() -> Iterator[None]:
    use_backend("plc")
    yield
    use_backend("simulated")


def emulator(h: Harness, connector_id: int) -> PlcEmulator:
    hardware = h.station.simulation
    assert isinstance(hardware, InProcessPlcHardware)
    return hardware.plcs.emulator(connector_id)


KEYS = {
    "MeterValueSampleInterval": 10,
    "MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import",
    "StopTxnSampledData": "Energy.Active.Import.Register",
}


# --- the meter ------------------------------------------------------------------------------


async def _meter_misbehaves(
    h: Harness, action: str
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Charge on connector 1 for a while, then make its meter misbehave (`action`); returns
    the Faulted StatusNotification, the StopTransaction and the delivered energy physically
    metered until then."""
    await h.booted()
    await h.start_charging(1, "TAG-METER")
    await trio.sleep(45)
    plc = emulator(h, 1)
    since = h.csms.mark()
    register = plc.read_meter().energy_wh
    match action:
        case "back 500 kWh":
            plc.set_register(register - 500_000)
        case "zero":
            plc.set_register(0)
        case "jump 1e6 Wh in 5 s":
            await trio.sleep(2.5)
            plc.set_register(plc.read_meter().energy_wh + 1_000_000)
            await trio.sleep(2.5)
        case "overrange":
            plc.set_meter_overrange(True)
    faulted = await h.wait_status(1, "Faulted", since=since)
    (stop,) = await h.wait_calls("StopTransaction", since=since)
    return faulted, stop, register


@pytest.mark.parametrize(
    ("action", "detail"),
    [
        ("back 500 kWh", "PLC 0: meter register went back 500000 Wh"),
        ("zero", "PLC 0: meter register went back"),
        ("jump 1e6 Wh in 5 s", "PLC 0: meter register rose 1000"),
        ("overrange", "PLC 0: meter over range (OVERRANGE)"),
    ],
)
async def test_an_implausible_meter_is_a_power_meter_failure_and_is_never_billed(
    autojump_clock: Any, tmp_path: Path, action: str, detail: str
) -> None:
    config = charger_config(tmp_path)
    max_power_w = config.connectors[0].max_power_w
    async with running_station(config, keys=KEYS) as h:
        faulted, stop, physical = await _meter_misbehaves(h, action)
        await trio.sleep(5)
        assert h.connector(1).machine.status == "Faulted"
    assert faulted["error_code"] == "PowerMeterFailure"
    assert faulted["info"].startswith(detail), faulted["info"]
    assert stop["reason"] == "Other"
    assert_billed_physically(h, max_power_w)
    (start,) = h.csms.received("StartTransaction")
    # Billed up to the last plausible reading, which is what the meter had counted then.
    assert stop["meter_stop"] >= start["meter_start"] + 0.9 * (physical - start["meter_start"])


async def test_a_meter_plausible_again_for_a_while_clears_the_fault(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    async with running_station(config, keys=KEYS) as h:
        await _meter_misbehaves(h, "zero")
        since = h.csms.mark()
        cleared_from = trio.current_time()
        # The register counts on from 0: consistent again, it is believed from there on.
        await h.wait_status(1, "Finishing", since=since)
        waited = trio.current_time() - cleared_from
        await h.station.unplug(1)
        await h.wait_status(1, "Available", since=since)
        # A new transaction bills from the register as it reads now.
        await h.start_charging(1, "TAG-AFTER")
        await trio.sleep(60)
        await h.station.present_id(1, "TAG-AFTER")
        await h.wait_calls("StopTransaction", 2)
    assert waited <= 12
    _, after = h.csms.received("StartTransaction")
    assert after["meter_start"] < 1_000
    assert h.csms.received("StopTransaction")[1]["meter_stop"] > after["meter_start"]
    assert_billed_physically(h, config.connectors[0].max_power_w)
    assert statuses_of(h, 1, since)[:1] == ["Finishing"]


async def test_a_meter_that_keeps_flapping_stays_faulted(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path), keys=KEYS) as h:
        await h.booted()
        plc = emulator(h, 1)
        good = plc.read_meter().energy_wh
        since = h.csms.mark()
        for _ in range(10):
            plc.set_register(0)
            await trio.sleep(3)
            plc.set_register(good)
            await trio.sleep(3)
        assert statuses_of(h, 1, since) == ["Faulted"]
        assert h.connector(1).machine.status == "Faulted"


# --- the relay --------------------------------------------------------------------------------


async def test_a_relay_reported_closed_on_an_idle_gun_is_a_power_switch_failure_with_force_off(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        plc = emulator(h, 1)
        since = h.csms.mark()
        welded_at = trio.current_time()
        plc.set_relay_welded(True)
        faulted = await h.wait_status(1, "Faulted", since=since)
        assert trio.current_time() - welded_at <= ACK_TIMEOUT + 0.2
        # FORCE_ALL_OFF while it lasts.
        await trio.sleep(0.2)
        assert plc.state.force_off_active
        await trio.sleep(3)
        assert plc.state.force_off_active and h.connector(1).machine.status == "Faulted"
        released_at = trio.current_time()
        plc.set_relay_welded(False)
        await h.wait_status(1, "Available", since=since)
        assert trio.current_time() - released_at <= 0.3
        await trio.sleep(0.3)
        assert not plc.state.force_off_active
        assert not plc.state.relay_closed
    assert faulted["error_code"] == "PowerSwitchFailure"
    assert faulted["info"] == "PLC 0: relay reported closed, commanded open"
    assert statuses_of(h, 1, since) == ["Faulted", "Available"]


async def test_a_relay_that_welds_while_charging_stops_the_transaction(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    async with running_station(config, keys=KEYS) as h:
        await h.booted()
        await h.start_charging(1, "TAG-WELD")
        await trio.sleep(30)
        plc = emulator(h, 1)
        since = h.csms.mark()
        plc.set_relay_welded(True)
        await trio.sleep(1)
        await h.station.present_id(1, "TAG-WELD")  # the driver stops: the relay stays shut
        faulted = await h.wait_status(1, "Faulted", since=since)
        (stop,) = await h.wait_calls("StopTransaction", since=since)
        assert plc.state.force_off_active
        plc.set_relay_welded(False)
        await h.wait_status(1, "Finishing", since=since)
    assert faulted["error_code"] == "PowerSwitchFailure"
    assert stop["reason"] == "Local"
    assert_billed_physically(h, config.connectors[0].max_power_w)


# The silence ends before, while, or after the relay worker gives up on its open command.
@pytest.mark.parametrize("silence", [1.6, 2.5, 3.0, 4.0])
async def test_after_a_plc_silence_recovery_is_reported_when_the_plc_reports_the_relay_open(
    autojump_clock: Any, tmp_path: Path, silence: float
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await h.start_charging(1, "TAG-SILENT")
        await trio.sleep(20)
        plc = emulator(h, 1)
        since = h.csms.mark()
        silenced = trio.current_time()
        plc.set_silent(True)
        await h.wait_status(1, "Faulted", error_code="InternalError", since=since)
        await trio.sleep_until(silenced + silence)
        assert not plc.state.relay_closed  # it heard the open command all along
        back = trio.current_time()
        plc.set_silent(False)
        await h.wait_status(1, "Finishing", since=since)
        recovered = trio.current_time() - back
        await h.wait_calls("StopTransaction", since=since)
        await trio.sleep(15)
        assert h.connector(1).machine.status == "Finishing"
    assert recovered <= 0.5
    reported = h.csms.received("StatusNotification", since)
    assert [(p["status"], p["error_code"]) for p in reported] == [
        ("Faulted", "InternalError"),
        ("Finishing", "NoError"),
    ]


# --- any backend -------------------------------------------------------------------------------


@pytest.mark.parametrize("change", [-500_000, -1_000_000, 1_000_000])
async def test_whatever_the_backend_a_transaction_bills_no_register_physics_cannot_explain(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, change: int
) -> None:
    """The simulated guns have no meter check of their own: their register, forced off by
    `change` Wh mid-transaction, meets the connector's (a backend that believes its meter)."""
    use_backend("simulated")
    config = charger_config(tmp_path)
    async with running_station(config, keys=KEYS) as h:
        await h.booted()
        await h.start_charging(1, "TAG-SIM")
        await trio.sleep(35)
        simulated = h.station.hardware
        assert isinstance(simulated, SimulatedHardware)
        gun = simulated.gun(1)
        gun.read_meter()  # settle the energy delivered so far
        gun._energy_wh = max(0.0, gun._energy_wh + change)
        await trio.sleep(35)
        await h.station.present_id(1, "TAG-SIM")
        await h.wait_calls("StopTransaction")
    assert_billed_physically(h, config.connectors[0].max_power_w)
    refused = [r for r in caplog.records if "not billed" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR
    assert refused[0].getMessage().startswith("connector 1: meter register ")


# --- a crash, and a register that jumped meanwhile ------------------------------------------------


async def test_a_register_that_jumped_during_a_crash_is_not_billed_by_the_power_loss_stop(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    csms = FakeCsms()
    async with emulated_plcs(config) as plcs:
        async with running_station(
            config, csms, keys=KEYS, hardware=plc_driver(config), simulation=plcs
        ) as h:
            await h.booted()
            tx_id = await h.start_charging(1, "TAG-CRASH")
            await trio.sleep(2 * METER_PERSIST_INTERVAL + 5)
        # The controller crashed; while it was down the meter's register jumped.
        await trio.sleep(1)
        plc = plcs.emulator(1)
        plc.set_register(plc.read_meter().energy_wh + 1_000_000)
        database = Database.open(config.data_dir)
        try:
            (row,) = database.transactions()
        finally:
            database.close()
        since = csms.mark()
        async with running_station(config, csms, hardware=plc_driver(config), simulation=plcs) as h:
            (stop,) = await h.wait_calls("StopTransaction", since=since)
    assert (stop["transaction_id"], stop["reason"]) == (tx_id, "PowerLoss")
    assert stop["meter_stop"] == row.last_meter_wh  # the checkpoint, not the jumped register
    assert_billed_physically(h, config.connectors[0].max_power_w)


async def test_a_register_beyond_ocpp_16s_integer_is_a_meter_failure_not_unbilled_energy(
    autojump_clock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OCPP 1.6 integers are 32 bits: a register above 2,147,483,647 Wh cannot be sent. A
    transaction running when the register crosses it stops at its last reading OCPP can carry
    (delivered, never dropped), and no transaction starts on the gun while it lasts."""
    use_backend("simulated")
    monkeypatch.setattr(simulation, "INITIAL_REGISTER_WH", OCPP_MAX_WH - 600)
    csms = FakeCsms()
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-BIG")
        faulted = await h.wait_status(1, "Faulted", error_code="PowerMeterFailure", limit=120)
        assert faulted["info"] == REGISTER_BEYOND_OCPP
        (stop,) = await h.wait_calls("StopTransaction")
        (start,) = csms.received("StartTransaction")
        assert stop["transaction_id"] == tx_id
        assert start["meter_start"] < stop["meter_stop"] <= OCPP_MAX_WH
        assert stop["reason"] == "Other"
        with pytest.raises(ValueError):  # refused at the reader: the gun is Faulted
            await h.station.present_id(1, "TAG-NEXT")
        await trio.sleep(60)
        assert len(csms.received("StartTransaction")) == 1
