"""The simulated hardware: exact timing and energy on trio's virtual clock."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import attrs
import pytest
import trio
import trio.testing

from dcocpp.config import ConnectorConfig
from dcocpp.hardware.interface import (
    CablePlugged,
    CableUnplugged,
    EvDemand,
    FaultCleared,
    FaultKind,
    FaultRaised,
    HardwareError,
    HardwareEvent,
    RelayState,
)
from dcocpp.hardware.simulation import EvModel, SimulatedHardware

GUN_A = ConnectorConfig(id=1, plc_id=0, label="A", max_current_a=200, max_power_w=75000)
# Gun B is power-limited well below its current rating.
GUN_B = ConnectorConfig(id=2, plc_id=1, label="B", max_current_a=200, max_power_w=50000)
RELAY_DELAY = 0.05


def volts(soc: float) -> float:
    return 350.0 + 1.2 * soc


def constant_current_wh(soc: float, amps: float, capacity_wh: float, seconds: float) -> float:
    """Energy at constant current into a battery whose voltage rises 1.2 V per % SoC:
    dV/dt = 1.2 * amps * V / (36 * capacity), so V(t) = V0 * exp(rate * t)."""
    rate = 1.2 * amps / (36 * capacity_wh)
    return capacity_wh / 100 * volts(soc) * math.expm1(rate * seconds) / 1.2


@attrs.define
class Rig:
    sim: SimulatedHardware
    receivers: dict[int, trio.MemoryReceiveChannel[HardwareEvent]]

    def drain(self, connector_id: int) -> list[HardwareEvent]:
        """Every event the gun has sent so far."""
        events = []
        while True:
            try:
                events.append(self.receivers[connector_id].receive_nowait())
            except trio.WouldBlock:
                return events

    async def charging(self, connector_id: int, ev: EvModel, amps: float) -> float:
        """Plug `ev`, set the limit, close the relay; return the moment energy starts."""
        await self.sim.plug(connector_id, ev)
        self.sim.gun(connector_id).set_current_limit(amps)
        await self.sim.gun(connector_id).set_relay(True)
        assert self.drain(connector_id) == [CablePlugged(), EvDemand(True), RelayState(True)]
        return trio.current_time()


@pytest.fixture
async def rig(nursery: trio.Nursery) -> AsyncIterator[Rig]:
    sim = SimulatedHardware([GUN_A, GUN_B], plc_names={1: "Rear PLC"})
    send1, receive1 = trio.open_memory_channel[HardwareEvent](100)
    send2, receive2 = trio.open_memory_channel[HardwareEvent](100)
    async with receive1, receive2:
        await nursery.start(sim.run, {1: send1, 2: send2})
        yield Rig(sim, {1: receive1, 2: receive2})


# --- relay ---------------------------------------------------------------------------------


async def test_relay_confirms_after_the_delay(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    gun = rig.sim.gun(1)
    start = trio.current_time()
    await gun.set_relay(True)
    assert trio.current_time() - start == pytest.approx(RELAY_DELAY)
    assert rig.drain(1) == [RelayState(True)]
    assert rig.sim.state(1).relay_closed

    await gun.set_relay(True)  # no change, no event
    await gun.set_relay(False)
    assert rig.drain(1) == [RelayState(False)]
    assert rig.drain(2) == []


async def test_stuck_relay_never_confirms(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    rig.sim.set_relay_stuck(1, True)
    with trio.move_on_after(5) as scope:
        await rig.sim.gun(1).set_relay(True)
    assert scope.cancelled_caught
    assert not rig.sim.state(1).relay_closed
    assert rig.sim.state(1).relay_stuck
    assert rig.drain(1) == []

    rig.sim.set_relay_stuck(1, False)
    await rig.sim.gun(1).set_relay(True)
    assert rig.drain(1) == [RelayState(True)]


# --- meter ---------------------------------------------------------------------------------


async def test_meter_at_rest(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    reading = rig.sim.gun(1).read_meter()
    assert (reading.energy_wh, reading.power_w, reading.current_a) == (1_000_000, 0, 0)
    assert (reading.voltage_v, reading.soc) == (0, None)
    assert rig.sim.gun(2).read_meter().energy_wh == 1_100_000

    await rig.sim.plug(1, EvModel(soc=50))
    reading = rig.sim.gun(1).read_meter()
    # The meter sits on the EV side: battery voltage while plugged, but no current yet.
    assert (reading.voltage_v, reading.current_a, reading.soc) == (volts(50), 0, 50)


async def test_energy_integrates_exactly(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    ev = EvModel(capacity_wh=75_000, soc=20)
    await rig.charging(1, ev, amps=100)
    gun = rig.sim.gun(1)
    before = gun.read_meter()
    assert before.current_a == 100
    assert before.voltage_v == pytest.approx(volts(20))
    assert before.power_w == pytest.approx(100 * volts(20))

    await trio.sleep(36)
    after = gun.read_meter()
    expected = constant_current_wh(20, 100, 75_000, 36)
    assert after.energy_wh - before.energy_wh == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(374 * 100 * 36 / 3600, rel=1e-3)  # ~374 Wh
    assert after.soc == pytest.approx(20 + expected / 750, rel=1e-9)


async def test_readings_do_not_change_the_energy(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """Gun 1 is read every second, gun 2 once: the same physics, the same energy."""
    ev = EvModel(capacity_wh=75_000, soc=20)
    for connector_id in (1, 2):
        await rig.sim.plug(connector_id, ev)
        rig.sim.gun(connector_id).set_current_limit(100)  # 37.4 kW: below both power limits
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.sim.gun(1).set_relay, True)
        nursery.start_soon(rig.sim.gun(2).set_relay, True)
    start_1 = rig.sim.gun(1).read_meter().energy_wh
    start_2 = rig.sim.gun(2).read_meter().energy_wh

    previous = start_1
    for _ in range(600):
        await trio.sleep(1)
        energy = rig.sim.gun(1).read_meter().energy_wh
        assert energy > previous
        previous = energy
    delivered_1 = rig.sim.gun(1).read_meter().energy_wh - start_1
    delivered_2 = rig.sim.gun(2).read_meter().energy_wh - start_2
    assert delivered_1 == pytest.approx(delivered_2, rel=1e-9)


async def test_current_is_bounded(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    await rig.charging(1, EvModel(soc=20, max_current_a=250), amps=100)
    gun = rig.sim.gun(1)
    assert gun.read_meter().current_a == 100

    gun.set_current_limit(500)  # the connector's maxCurrentA binds
    assert gun.read_meter().current_a == 200
    assert gun.read_meter().power_w == pytest.approx(200 * volts(20))  # 74.8 kW < 75 kW

    await rig.charging(2, EvModel(soc=20, max_current_a=150), amps=100)
    gun_b = rig.sim.gun(2)
    gun_b.set_current_limit(120)
    assert gun_b.read_meter().current_a == 120
    gun_b.set_current_limit(500)  # at 374 V, 150 A would be 56 kW; gun B has 50 kW
    reading = gun_b.read_meter()
    assert reading.power_w == pytest.approx(50_000)
    assert reading.current_a == pytest.approx(50_000 / volts(20))

    with pytest.raises(ValueError):
        gun.set_current_limit(-1)
    with pytest.raises(ValueError):
        gun.set_current_limit(math.nan)


async def test_power_limit_gives_linear_energy(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    await rig.charging(2, EvModel(soc=20), amps=200)
    gun = rig.sim.gun(2)
    before = gun.read_meter()
    await trio.sleep(36)
    assert gun.read_meter().energy_wh - before.energy_wh == pytest.approx(500.0, rel=1e-9)


async def test_zero_limit_pauses_the_energy(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    await rig.charging(1, EvModel(), amps=0)
    gun = rig.sim.gun(1)
    before = gun.read_meter()
    assert (before.current_a, before.power_w) == (0, 0)
    await trio.sleep(60)
    assert gun.read_meter().energy_wh == before.energy_wh

    gun.set_current_limit(50)
    await trio.sleep(60)
    assert gun.read_meter().energy_wh > before.energy_wh


async def test_open_relay_or_unplugged_ev_draws_nothing(
    rig: Rig, autojump_clock: trio.abc.Clock
) -> None:
    gun = rig.sim.gun(1)
    await gun.set_relay(True)
    await trio.sleep(60)
    assert gun.read_meter().energy_wh == 1_000_000  # relay closed, nothing plugged

    await rig.charging(2, EvModel(), amps=100)
    await rig.sim.gun(2).set_relay(False)
    energy = rig.sim.gun(2).read_meter().energy_wh
    await trio.sleep(60)
    assert rig.sim.gun(2).read_meter().energy_wh == energy

    await rig.sim.unplug(2)
    assert rig.drain(2) == [RelayState(False), CableUnplugged()]
    reading = rig.sim.gun(2).read_meter()
    assert (reading.energy_wh, reading.voltage_v, reading.soc) == (energy, 0, None)


# --- EV ------------------------------------------------------------------------------------


async def test_ev_stops_at_its_target(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    ev = EvModel(capacity_wh=10_000, soc=50, target_soc=80)
    start = await rig.charging(1, ev, amps=100)  # <= 44.6 kW: constant current throughout
    # V = V0 * exp(rate * t) with rate = 1.2 * 100 / (36 * 10_000)
    expected_at = start + math.log(volts(80) / volts(50)) * 3000

    with trio.move_on_after(1000):
        event = await rig.receivers[1].receive()
    assert event == EvDemand(False)
    assert trio.current_time() == pytest.approx(expected_at, abs=1e-6)

    state = rig.sim.state(1)
    assert (state.soc, state.ev_requesting, state.relay_closed) == (80, False, True)
    assert state.meter.energy_wh == pytest.approx(1_000_000 + 3000, rel=1e-12)
    assert state.meter.power_w == 0
    await trio.sleep(3600)
    assert rig.sim.gun(1).read_meter() == state.meter
    assert rig.drain(1) == []

    await rig.sim.set_ev_suspended(1, False)  # a full EV does not ask again
    assert rig.drain(1) == []


async def test_ev_target_across_the_power_limit(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    ev = EvModel(capacity_wh=10_000, soc=20, target_soc=30)
    start = await rig.charging(1, ev, amps=200)
    # 200 A until V = 375 V (75 kW), then 75 kW.
    crossover = (375 - 350) / 1.2
    seconds = 1500 * math.log(375 / volts(20)) + (30 - crossover) * 36 * 10_000 / 75_000

    # Reading along the way must not move the moment the EV stops.
    with trio.move_on_after(1000):
        while True:
            rig.sim.gun(1).read_meter()
            with trio.move_on_after(0.7):
                assert await rig.receivers[1].receive() == EvDemand(False)
                break
    assert trio.current_time() - start == pytest.approx(seconds, abs=1e-6)
    assert rig.sim.gun(1).read_meter().energy_wh == pytest.approx(1_001_000, rel=1e-12)


async def test_target_moves_with_the_power(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    ev = EvModel(capacity_wh=10_000, soc=50, target_soc=80)
    start = await rig.charging(1, ev, amps=100)
    await trio.sleep(60)
    rig.sim.gun(1).set_current_limit(0)
    await trio.sleep(100)
    rig.sim.gun(1).set_current_limit(100)
    with trio.move_on_after(1000):
        assert await rig.receivers[1].receive() == EvDemand(False)
    assert trio.current_time() - start == pytest.approx(
        100 + math.log(volts(80) / volts(50)) * 3000, abs=1e-6
    )


async def test_ev_suspend_and_resume(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    await rig.charging(1, EvModel(), amps=100)
    await rig.sim.set_ev_suspended(1, True)
    assert rig.drain(1) == [EvDemand(False)]
    await rig.sim.set_ev_suspended(1, True)
    assert rig.drain(1) == []  # only changes are reported
    energy = rig.sim.gun(1).read_meter().energy_wh
    await trio.sleep(60)
    reading = rig.sim.gun(1).read_meter()
    assert (reading.energy_wh, reading.power_w) == (energy, 0)
    assert not rig.sim.state(1).ev_requesting

    await rig.sim.set_ev_suspended(1, False)
    assert rig.drain(1) == [EvDemand(True)]
    assert rig.sim.gun(1).read_meter().current_a == 100


async def test_full_ev_does_not_ask(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    await rig.sim.plug(1, EvModel(soc=90, target_soc=80))
    assert rig.drain(1) == [CablePlugged()]


async def test_plug_and_unplug_rules(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    with pytest.raises(ValueError):
        await rig.sim.unplug(1)
    with pytest.raises(ValueError):
        await rig.sim.set_ev_suspended(1, True)
    await rig.sim.plug(1)
    with pytest.raises(ValueError):
        await rig.sim.plug(1)
    await rig.sim.unplug(1)
    assert rig.drain(1) == [CablePlugged(), EvDemand(True), CableUnplugged()]
    assert rig.sim.state(1).soc is None


def test_ev_model_is_validated() -> None:
    with pytest.raises(ValueError):
        EvModel(soc=101)
    with pytest.raises(ValueError):
        EvModel(capacity_wh=0)


# --- lock ----------------------------------------------------------------------------------


async def test_lock(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    gun = rig.sim.gun(1)
    start = trio.current_time()
    await gun.set_lock(True)
    assert trio.current_time() - start == pytest.approx(0.05)
    assert rig.sim.state(1).locked

    await rig.sim.set_fault(1, FaultKind.LOCK, True)
    with pytest.raises(HardwareError, match="lock did not release"):
        await gun.set_lock(False)
    with pytest.raises(HardwareError, match="lock did not engage"):
        await gun.set_lock(True)
    assert rig.sim.state(1).locked

    await rig.sim.set_fault(1, FaultKind.LOCK, False)
    await gun.set_lock(False)
    assert not rig.sim.state(1).locked


# --- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connector_id", "kind", "detail"),
    [
        (1, FaultKind.EMERGENCY_STOP, "PLC 0: emergency stop"),
        (1, FaultKind.EARTH_FAULT, "PLC 0: earth fault"),
        (1, FaultKind.COMMUNICATION, "PLC 0 communication lost"),
        (2, FaultKind.COMMUNICATION, "Rear PLC communication lost"),
        (1, FaultKind.METER, "meter data stale"),
        (1, FaultKind.LOCK, "connector lock failure"),
        (1, FaultKind.POWER_SWITCH, "relay feedback mismatch"),
    ],
)
async def test_fault_raised_and_cleared_once(
    rig: Rig, autojump_clock: trio.abc.Clock, connector_id: int, kind: FaultKind, detail: str
) -> None:
    await rig.sim.set_fault(connector_id, kind, True)
    await rig.sim.set_fault(connector_id, kind, True)
    assert rig.drain(connector_id) == [FaultRaised(kind, detail)]
    assert rig.sim.state(connector_id).faults == {kind}

    await rig.sim.set_fault(connector_id, kind, False)
    await rig.sim.set_fault(connector_id, kind, False)
    assert rig.drain(connector_id) == [FaultCleared(kind)]
    assert rig.sim.state(connector_id).faults == set()


async def test_fault_with_own_detail(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    await rig.sim.set_fault(1, FaultKind.COMMUNICATION, True, "PLC 0: no frame for 600 ms")
    assert rig.drain(1) == [FaultRaised(FaultKind.COMMUNICATION, "PLC 0: no frame for 600 ms")]


INTERLOCKS = {
    FaultKind.EMERGENCY_STOP: "PLC 0: emergency stop",
    FaultKind.EARTH_FAULT: "PLC 0: earth fault",
}


@pytest.mark.parametrize("kind", list(INTERLOCKS))
async def test_interlock_opens_and_holds_the_relay(
    rig: Rig, autojump_clock: trio.abc.Clock, kind: FaultKind
) -> None:
    await rig.charging(1, EvModel(), amps=100)
    gun = rig.sim.gun(1)
    await rig.sim.set_fault(1, kind, True)
    # At once, no relay delay: the PLC's hardware interlock, reported after its cause.
    assert rig.drain(1) == [FaultRaised(kind, INTERLOCKS[kind]), RelayState(False)]
    assert not rig.sim.state(1).relay_closed
    assert gun.read_meter().power_w == 0

    with pytest.raises(HardwareError, match=INTERLOCKS[kind]):
        await gun.set_relay(True)
    await gun.set_relay(False)  # opening always works
    assert rig.drain(1) == []

    await rig.sim.set_fault(1, kind, False)
    await gun.set_relay(True)
    assert rig.drain(1) == [FaultCleared(kind), RelayState(True)]


async def test_interlock_while_the_relay_closes(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    async def press_estop() -> None:
        await trio.sleep(RELAY_DELAY / 2)
        await rig.sim.set_fault(1, FaultKind.EMERGENCY_STOP, True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(press_estop)
        with pytest.raises(HardwareError):
            await rig.sim.gun(1).set_relay(True)
    assert not rig.sim.state(1).relay_closed
    assert rig.drain(1) == [FaultRaised(FaultKind.EMERGENCY_STOP, "PLC 0: emergency stop")]


@pytest.mark.parametrize("kind", [FaultKind.COMMUNICATION, FaultKind.METER])
async def test_comm_and_meter_faults_freeze_the_readings(
    rig: Rig, autojump_clock: trio.abc.Clock, kind: FaultKind
) -> None:
    start = await rig.charging(1, EvModel(soc=20), amps=100)
    gun = rig.sim.gun(1)
    await trio.sleep(10)
    await rig.sim.set_fault(1, kind, True)
    frozen = gun.read_meter()
    assert frozen.power_w > 0
    await trio.sleep(30)
    assert gun.read_meter() == frozen
    assert rig.sim.state(1).meter == frozen

    # The EV kept charging meanwhile; the reading catches up once the fault clears.
    await rig.sim.set_fault(1, kind, False)
    delivered = gun.read_meter().energy_wh - 1_000_000
    expected = constant_current_wh(20, 100, 75_000, trio.current_time() - start)
    assert delivered == pytest.approx(expected, rel=1e-9)


async def test_guns_are_independent(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    await rig.charging(1, EvModel(), amps=100)
    await rig.sim.set_fault(1, FaultKind.EMERGENCY_STOP, True)
    await rig.sim.set_fault(1, FaultKind.COMMUNICATION, True)
    await trio.sleep(10)
    assert rig.drain(2) == []

    state = rig.sim.state(2)
    assert not (state.plugged or state.relay_closed or state.faults)
    await rig.charging(2, EvModel(), amps=100)
    await trio.sleep(10)
    assert rig.sim.gun(2).read_meter().energy_wh > 1_100_000
    assert rig.drain(1) == [
        FaultRaised(FaultKind.EMERGENCY_STOP, "PLC 0: emergency stop"),
        RelayState(False),
        FaultRaised(FaultKind.COMMUNICATION, "PLC 0 communication lost"),
    ]


# --- the backend's life --------------------------------------------------------------------


async def test_unknown_connector(rig: Rig) -> None:
    sim = rig.sim
    with pytest.raises(KeyError):
        sim.gun(3)
    with pytest.raises(KeyError):
        await sim.plug(3)
    with pytest.raises(KeyError):
        await sim.unplug(3)
    with pytest.raises(KeyError):
        await sim.set_ev_suspended(3, True)
    with pytest.raises(KeyError):
        await sim.set_fault(3, FaultKind.METER, True)
    with pytest.raises(KeyError):
        sim.set_relay_stuck(3, True)
    with pytest.raises(KeyError):
        sim.state(3)


async def test_controls_need_a_running_backend() -> None:
    sim = SimulatedHardware([GUN_A])
    with pytest.raises(RuntimeError, match="hardware not started"):
        await sim.plug(1)
    with pytest.raises(RuntimeError, match="hardware not started"):
        await sim.set_fault(1, FaultKind.METER, True)
    with pytest.raises(RuntimeError, match="hardware not started"):
        await sim.gun(1).set_relay(True)
    assert sim.gun(1).read_meter().energy_wh == 1_000_000  # readings need no backend


async def test_channels_closed_when_run_ends(autojump_clock: trio.abc.Clock) -> None:
    sim = SimulatedHardware([GUN_A, GUN_B])
    send1, receive1 = trio.open_memory_channel[HardwareEvent](10)
    send2, receive2 = trio.open_memory_channel[HardwareEvent](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run, {1: send1, 2: send2})
        await sim.plug(1)
        nursery.cancel_scope.cancel()

    assert [event async for event in receive1] == [CablePlugged(), EvDemand(True)]
    with pytest.raises(trio.EndOfChannel):
        await receive2.receive()
    with pytest.raises(RuntimeError, match="hardware stopped"):
        await sim.unplug(1)


async def test_guns_without_a_channel_stay_silent(autojump_clock: trio.abc.Clock) -> None:
    sim = SimulatedHardware([GUN_A, GUN_B])
    send1, receive1 = trio.open_memory_channel[HardwareEvent](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run, {1: send1})
        await sim.plug(2)
        await sim.gun(2).set_relay(True)
        assert sim.state(2).relay_closed
        nursery.cancel_scope.cancel()
    assert [event async for event in receive1] == []


async def test_run_rejects_an_unknown_connector() -> None:
    sim = SimulatedHardware([GUN_A])
    send9, receive9 = trio.open_memory_channel[HardwareEvent](10)
    async with trio.open_nursery() as nursery:
        with pytest.raises(KeyError):
            await nursery.start(sim.run, {9: send9})
    with pytest.raises(trio.EndOfChannel):
        await receive9.receive()


def test_duplicate_connector_ids() -> None:
    with pytest.raises(ValueError):
        SimulatedHardware([GUN_A, GUN_A])
