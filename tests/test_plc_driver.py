"""The PLC driver against the PLC firmware emulator on a python-can virtual bus.

Every test runs twice: on python-can's plain `virtual` bus, read through the Notifier thread
bridge, and on `SelectableVirtualBus`, read through the file-descriptor path that socketcan
takes. Real time, short periods: on the thread path trio's autojump clock would jump while a
frame is in flight. Every wait is a poll with a deadline well above what the step needs, so a
loaded machine slows the test rather than failing it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import can
import pytest
import trio

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
from dcocpp.hardware.plc import codec
from dcocpp.hardware.plc.driver import PlcBackend, PlcDriverError
from dcocpp.hardware.plc.emulator import FAULT_NONE, PlcEmulator
from dcocpp.hardware.plc.virtualbus import SelectableVirtualBus

WAIT = 3.0  # any single step; generous so that a loaded machine slows, not fails, a test
BUS_CLASSES: dict[str, type[can.BusABC]] = {
    "thread": can.interfaces.virtual.VirtualBus,
    "fd": SelectableVirtualBus,
}
_bus_class: list[type[can.BusABC]] = [SelectableVirtualBus]


@pytest.fixture(autouse=True, params=sorted(BUS_CLASSES))
def bus_class(request: pytest.FixtureRequest) -> type[can.BusABC]:
    """Which reader path the test exercises (the rig opens every bus with this class)."""
    _bus_class[0] = BUS_CLASSES[request.param]
    return _bus_class[0]


def connector(cid: int, plc_id: int) -> ConnectorConfig:
    return ConnectorConfig(
        id=cid,
        plc_id=plc_id,
        label=str(cid),
        max_current_a=200.0,
        max_power_w=60_000.0,
        meter_sample_interval_s=10,
    )


@attrs.define
class Rig:
    backend: PlcBackend
    emulators: dict[int, PlcEmulator]  # by plcId
    listener: can.BusABC  # a third node on the bus: sees what the driver sends
    events: dict[int, list[HardwareEvent]]
    opened: list[can.BusABC]  # every bus the driver's bus_factory opened, in order

    async def wait_event(self, cid: int, event: HardwareEvent) -> None:
        await self.wait_until(lambda: event in self.events[cid])

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        # Polling: the state is changed by other tasks and by frames from other threads.
        with trio.fail_after(WAIT):
            while not condition():  # noqa: ASYNC110
                await trio.sleep(0.01)

    def sent(self, plc_id: int) -> list[dict[str, float | int]]:
        """RelayControl frames the driver sent to `plc_id` since the last call."""
        frames = []
        while (msg := self.listener.recv(0)) is not None:
            if msg.arbitration_id == codec.frame_id("RelayControl", plc_id):
                frames.append(dict(codec.decode(msg.arbitration_id, bytes(msg.data)).signals))
        return frames


@asynccontextmanager
async def rig(
    connectors: list[ConnectorConfig],
    *,
    extra_plcs: tuple[int, ...] = (),
    no_filters: bool = False,
    wrap_bus: Callable[[can.BusABC], None] | None = None,
    **options: Any,
) -> AsyncIterator[Rig]:
    channel = f"plc-driver-{uuid.uuid4().hex}"
    threads_before = set(threading.enumerate())
    plc_ids = [c.plc_id for c in connectors] + list(extra_plcs)
    bus_class = _bus_class[0]
    emu_buses = [bus_class(channel=channel) for _ in plc_ids]
    listener = bus_class(channel=channel)
    emulators = {
        plc_id: PlcEmulator(bus, plc_id, connector=connector(99, plc_id), period=0.05)
        for plc_id, bus in zip(plc_ids, emu_buses, strict=True)
    }

    def factory() -> can.BusABC:
        bus = bus_class(channel=channel)
        if no_filters:  # a controller without acceptance filters: the driver must sort
            bus.set_filters = lambda filters=None: None  # type: ignore[method-assign]
        if wrap_bus is not None:
            wrap_bus(bus)
        opened.append(bus)
        return bus

    opened: list[can.BusABC] = []

    backend = PlcBackend(connectors, bus_factory=factory, **options)
    events: dict[int, list[HardwareEvent]] = {c.id: [] for c in connectors}
    try:
        async with trio.open_nursery() as nursery:
            for emulator in emulators.values():
                await nursery.start(emulator.run)
            senders = {}
            for c in connectors:
                send, receive = trio.open_memory_channel[HardwareEvent](64)
                senders[c.id] = send
                nursery.start_soon(collect, receive, events[c.id])
            backend_scope, backend_done = trio.CancelScope(), trio.Event()

            async def run_backend(*, task_status: trio.TaskStatus[None]) -> None:
                try:
                    with backend_scope:
                        await backend.run(senders, task_status=task_status)
                finally:
                    backend_done.set()

            await nursery.start(run_backend)
            yield Rig(backend, emulators, listener, events, opened)
            # The driver first, so that no frame of it is still in flight towards an emulator
            # whose reader is shutting down.
            backend_scope.cancel()
            await backend_done.wait()
            nursery.cancel_scope.cancel()
    finally:
        for bus in [*emu_buses, listener]:
            bus.shutdown()
    # Clean shutdown: every Notifier thread has been joined.
    assert set(threading.enumerate()) <= threads_before


async def collect(
    receive: trio.MemoryReceiveChannel[HardwareEvent], into: list[HardwareEvent]
) -> None:
    async with receive:
        async for event in receive:
            into.append(event)


ONE = [connector(1, 3)]


async def test_keepalive_cadence() -> None:
    async with rig(ONE, keepalive=0.1) as r:
        r.sent(3)
        await trio.sleep(0.5)
        frames = r.sent(3)
    assert 3 <= len(frames) <= 8  # ~5 at 100 ms; margins for a loaded machine
    seqs = {f["CMD_SEQ"] for f in frames}
    assert len(seqs) == 1  # keep-alives repeat the command's seq
    (frame,) = {tuple(sorted(f.items())) for f in frames}
    assert dict(frame) == {
        "RLY1_CMD": 0,
        "SYS_ENABLE": 1,
        "FORCE_ALL_OFF": 0,
        "CLEAR_FAULTS": 0,
        "CMD_SEQ": seqs.pop(),
        "RLY_ENABLE_MASK": 1,
        "RLY_MODE": 0,
        "PULSE_MS": 0,
    }


async def test_relay_command_acked_and_reported() -> None:
    async with rig(ONE) as r:
        gun = r.backend.gun(1)
        await gun.set_relay(True)
        assert gun.status().relay_closed
        assert r.emulators[3].state.relay_closed
        await r.wait_event(1, RelayState(True))
        await gun.set_relay(False)
        assert not r.emulators[3].state.relay_closed
        await r.wait_event(1, RelayState(False))


async def test_stuck_relay_three_attempts_then_force_off() -> None:
    async with rig(ONE, ack_timeout=0.15, backoff=0.02) as r:
        gun = r.backend.gun(1)
        await gun.set_relay(False)  # a known, applied starting seq
        r.emulators[3].set_relay_stuck(True)
        r.sent(3)
        with pytest.raises(HardwareError, match="after 3 attempts"):
            await gun.set_relay(True)
        await trio.sleep(0.15)
        frames = r.sent(3)
    closing = [f["CMD_SEQ"] for f in frames if f["RLY1_CMD"] == 1]
    assert len(set(closing)) == 3  # every attempt was a new command
    assert frames[-1]["FORCE_ALL_OFF"] == 1 and frames[-1]["RLY1_CMD"] == 0
    assert frames[-1]["CMD_SEQ"] not in closing


async def test_estop_while_charging() -> None:
    async with rig(ONE) as r:
        gun, emu = r.backend.gun(1), r.emulators[3]
        emu.plug()
        await gun.set_relay(True)
        emu.set_estop(True)
        await r.wait_event(1, RelayState(False))
        await r.wait_until(lambda: any(isinstance(e, FaultRaised) for e in r.events[1]))
        raised = [e for e in r.events[1] if isinstance(e, FaultRaised)]
        assert [e.kind for e in raised] == [FaultKind.EMERGENCY_STOP]
        assert FaultKind.EMERGENCY_STOP in dict(gun.status().faults)
        emu.set_estop(False)
        await r.wait_event(1, FaultCleared(FaultKind.EMERGENCY_STOP))
        # The driver sent CLEAR_FAULTS, so the PLC unlatched and closing works again.
        await r.wait_until(lambda: emu.state.fault_reason == FAULT_NONE)
        await gun.set_relay(True)


async def test_silent_plc_is_a_communication_fault_until_it_talks() -> None:
    async with rig(ONE, rx_timeout=0.3) as r:
        r.emulators[3].set_silent(True)
        await r.wait_event(1, FaultRaised(FaultKind.COMMUNICATION, "PLC 3 communication lost"))
        r.emulators[3].set_silent(False)
        await r.wait_event(1, FaultCleared(FaultKind.COMMUNICATION))
        assert r.backend.gun(1).status().faults == ()


async def test_stale_meter_fault() -> None:
    async with rig(ONE, meter_stale=0.4) as r:
        await trio.sleep(0.2)
        assert r.events[1] == []
        r.emulators[3].set_meter_stale(True)
        await r.wait_event(1, FaultRaised(FaultKind.METER, "meter data stale"))
        r.emulators[3].set_meter_stale(False)
        await r.wait_event(1, FaultCleared(FaultKind.METER))


async def test_wrong_crc_counted_and_dropped() -> None:
    async with rig(ONE) as r:
        await trio.sleep(0.1)
        r.emulators[3].corrupt_next_crc()
        await r.wait_until(lambda: r.backend.stats.crc_errors == 1)
        await trio.sleep(0.1)
        assert r.events[1] == []


@pytest.mark.parametrize("no_filters", [False, True])
async def test_unconfigured_plc_ignored(no_filters: bool) -> None:
    async with rig(ONE, extra_plcs=(5,), no_filters=no_filters) as r:
        r.emulators[5].plug()
        await trio.sleep(0.3)
        assert r.events[1] == []
        if no_filters:
            assert r.backend.stats.ignored > 0
        else:  # the bus filters did the sorting
            assert r.backend.stats.ignored == 0
        r.emulators[3].plug()
        await r.wait_event(1, CablePlugged())


async def test_two_plcs_are_independent() -> None:
    async with rig([connector(1, 3), connector(2, 4)]) as r:
        r.emulators[4].plug()
        await r.backend.gun(1).set_relay(True)
        await r.wait_event(2, CablePlugged())
        await r.wait_event(1, RelayState(True))
        assert r.emulators[3].state.relay_closed and not r.emulators[4].state.relay_closed
        assert CablePlugged() not in r.events[1]
        assert RelayState(True) not in r.events[2]
        r.emulators[4].set_silent(True)
        await trio.sleep(0.2)
        await r.backend.gun(1).set_relay(False)


async def test_meter_readings() -> None:
    async with rig(ONE) as r:
        gun, emu = r.backend.gun(1), r.emulators[3]
        emu.plug()
        await gun.set_relay(True)

        def flowing() -> bool:
            m = gun.read_meter()
            return m.current_a > 0 and m.voltage_v > 0 and m.power_w > 0 and m.soc is not None

        await r.wait_until(flowing)
        reading, truth = gun.read_meter(), emu.read_meter()
        assert reading.voltage_v == pytest.approx(truth.voltage_v, abs=1.0)
        assert reading.current_a == pytest.approx(truth.current_a, abs=0.5)
        assert reading.power_w == pytest.approx(truth.power_w, abs=500)
        assert reading.energy_wh == pytest.approx(1_300_000, abs=1_000)
        assert reading.energy_wh % 100 == 0  # 0.1 kWh register, in Wh
        assert reading.soc is not None and reading.soc == pytest.approx(truth.soc or 0, abs=1)


async def test_plug_demand_unplug_events() -> None:
    async with rig(ONE) as r:
        emu = r.emulators[3]
        emu.plug()
        await r.wait_event(1, EvDemand(True))
        emu.set_ev_suspended(True)
        await r.wait_event(1, EvDemand(False))
        emu.unplug()
        await r.wait_event(1, CableUnplugged())
        assert r.events[1] == [CablePlugged(), EvDemand(True), EvDemand(False), CableUnplugged()]
        assert not r.backend.gun(1).status().plugged


async def test_current_limit_and_lock() -> None:
    async with rig(ONE) as r:
        gun = r.backend.gun(1)
        gun.set_current_limit(32.5)
        await r.wait_until(lambda: r.emulators[3].state.current_limit_a == pytest.approx(32.5))
        await gun.set_lock(True)  # no lock on the contract: returns at once


async def test_configure_acked_and_applied() -> None:
    async with rig(ONE) as r:
        gun = r.backend.gun(1)
        assert await gun.configure(1, 160) == 160
        assert r.emulators[3].state.current_limit_a == pytest.approx(16.0)
        assert await gun.read_config(1) == 160
        assert await gun.read_config(3) == 300  # the relay timeout's default


async def test_configure_refused() -> None:
    async with rig(ONE) as r:
        gun = r.backend.gun(1)
        with pytest.raises(PlcDriverError, match="unknown param"):
            await gun.configure(99, 1)
        with pytest.raises(PlcDriverError, match="read-only"):
            await gun.configure(4, 100)
        with pytest.raises(PlcDriverError, match="out of range"):
            await gun.configure(1, 999_999)
        assert r.emulators[3].state.current_limit_a == pytest.approx(200.0)  # unchanged


async def test_configure_without_ack() -> None:
    async with rig(ONE, config_timeout=0.2, rx_timeout=5.0) as r:
        r.emulators[3].set_silent(True)
        gun = r.backend.gun(1)
        started = trio.current_time()
        with pytest.raises(PlcDriverError, match="no ConfigAck"):
            await gun.configure(1, 160)
        assert 0.19 <= trio.current_time() - started < WAIT
        # The silent PLC still received and applied it; only the answer is missing.
        assert r.emulators[3].state.current_limit_a == pytest.approx(16.0)


async def test_set_current_limit_failure_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with rig(ONE) as r:
        r.backend.gun(1).set_current_limit(500.0)  # above the connector's 200 A
        await r.wait_until(lambda: "not applied" in caplog.text)
        assert "out of range" in caplog.text


async def test_bus_error_reopens_the_bus() -> None:
    fail = threading.Event()

    def failing_once(bus: can.BusABC) -> None:
        recv = bus.recv

        def flaky_recv(timeout: float | None = None) -> can.Message | None:
            if fail.is_set():
                fail.clear()
                raise can.CanError("injected receive failure")
            return recv(timeout)

        bus.recv = flaky_recv  # type: ignore[method-assign]

    connectors = [connector(1, 3), connector(2, 4)]
    async with rig(connectors, wrap_bus=failing_once, rx_timeout=2.0) as r:
        await r.backend.gun(1).set_relay(True)
        fail.set()
        raised = FaultRaised(FaultKind.COMMUNICATION, "CAN bus error: injected receive failure")
        for cid in (1, 2):
            await r.wait_event(cid, raised)
        await r.wait_until(lambda: len(r.opened) == 2)
        for cid in (1, 2):
            await r.wait_event(cid, FaultCleared(FaultKind.COMMUNICATION))
            assert r.backend.gun(cid).status().faults == ()
        # Relay commands work again on the reopened bus.
        await r.backend.gun(1).set_relay(False)
        await r.backend.gun(2).set_relay(True)
        assert r.emulators[4].state.relay_closed and not r.emulators[3].state.relay_closed


async def test_repeated_send_errors_reopen_the_bus() -> None:
    failures = [0]  # sends still to fail, on whichever bus is open

    def failing_sends(bus: can.BusABC) -> None:
        send = bus.send

        def flaky_send(msg: can.Message, timeout: float | None = None) -> None:
            if failures[0] > 0:
                failures[0] -= 1
                raise can.CanError("injected send failure")
            send(msg, timeout)

        bus.send = flaky_send  # type: ignore[method-assign]

    async with rig(ONE, wrap_bus=failing_sends, rx_timeout=2.0) as r:
        # A longer PLC watchdog: the missed keep-alives must not trip it (its own fault
        # would be the COMMUNICATION fault's first cause).
        assert await r.backend.gun(1).configure(3, 2000) == 2000
        await r.backend.gun(1).set_relay(True)
        failures[0] = 3
        await r.wait_until(
            lambda: any(
                isinstance(e, FaultRaised)
                and e.kind == FaultKind.COMMUNICATION
                and e.detail.startswith("CAN bus error: 3 sends in a row failed")
                for e in r.events[1]
            )
        )
        await r.wait_until(lambda: len(r.opened) == 2)
        await r.wait_event(1, FaultCleared(FaultKind.COMMUNICATION))
        assert r.backend.stats.tx_errors == 3
        await r.backend.gun(1).set_relay(False)
        assert not r.emulators[3].state.relay_closed
