"""The PLC driver against the PLC firmware emulator on a python-can virtual bus (or, where a
test must script the PLC's frames one by one, against `FakePlc`).

Every test runs twice: on python-can's plain `virtual` bus, read through the Notifier thread
bridge, and on `SelectableVirtualBus`, read through the file-descriptor path that socketcan
takes. Real time, short periods: on the thread path trio's autojump clock would jump while a
frame is in flight. Every wait is a poll with a deadline well above what the step needs, so a
loaded machine slows the test rather than failing it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
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
from dcocpp.hardware.plc.driver import (
    ACK_TIMEOUT,
    REOPEN_MAX_S,
    REOPEN_MIN_S,
    CanBusNotFound,
    PlcBackend,
    PlcDriverError,
    PlcGun,
)
from dcocpp.hardware.plc.emulator import PlcEmulator
from dcocpp.hardware.plc.interlocks import FAULT_NONE
from dcocpp.hardware.plc.virtualbus import SelectableVirtualBus
from tests.plc_frames import ESTOP_FRAMES, IDLE_FRAMES, Signals

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
    )


class FakePlc:
    """A scripted PLC: every `period` it sends the frames in `frames` (RelayStatus,
    SafetySwitchStatus, CpStatus, both EnergyMeterData branches), which the test edits;
    `paused` stops that, for frame-by-frame tests with `send` and `sync`. It reads nothing:
    what the driver sends is seen on the rig's listener. With `crc = False` it is old firmware
    (byte 7 always zero)."""

    def __init__(self, bus: can.BusABC, plc_id: int, period: float = 0.05):
        self.bus = bus
        self.plc_id = plc_id
        self.period = period
        self.frames = {name: dict(signals) for name, signals in IDLE_FRAMES.items()}
        self.paused = False
        self.crc = True
        self._markers = itertools.cycle(range(1, 101))

    def send(self, frame: str, **overrides: int) -> None:
        """One frame: `frames[frame]` with `overrides` (a frame not in `frames`, e.g.
        ChargingSession, takes `overrides` only)."""
        message = "EnergyMeterData" if frame.startswith("EnergyMeterData") else frame
        signals = {**self.frames.get(frame, {}), **overrides}
        can_id, data = codec.encode(message, self.plc_id, signals, scaling=False)
        if not self.crc:
            data = data[:7] + b"\0"
        self.bus.send(can.Message(arbitration_id=can_id, data=data, is_extended_id=True))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if not self.paused:
                for frame in self.frames:
                    self.send(frame)
            await trio.sleep(self.period)

    async def sync(self, gun: PlcGun) -> None:
        """Return once the driver has handled every frame sent so far: a ChargingSession with
        a new SOC is a marker that shows in `read_meter()` (frames are handled in order)."""
        marker = next(self._markers)
        self.send(
            "ChargingSession",
            SESSION_ACTIVE=1,
            SOC_PCT=marker,
            EVDC_MAX_CURRENT_0p1A=0,
            EVDC_MAX_VOLTAGE_0p1V=0,
            EVDC_TARGET_CURRENT_0p1A=0,
        )
        with trio.fail_after(WAIT):
            while gun.read_meter().soc != marker:  # noqa: ASYNC110
                await trio.sleep(0.005)


@attrs.define
class BusControl:
    """The rig's bus_factory: raises `error` while `down`; `attempts` has the trio time of
    every call."""

    down: bool = False
    attempts: list[float] = attrs.Factory(list)
    error: Exception = attrs.Factory(lambda: OSError("can0 is down"))


@attrs.define
class Rig:
    backend: PlcBackend
    emulators: dict[int, PlcEmulator]  # by plcId
    fakes: dict[int, FakePlc]  # by plcId, for the plcIds given as `fakes`
    listener: can.BusABC  # a third node on the bus: sees what the driver (and PLCs) send
    events: dict[int, list[HardwareEvent]]
    opened: list[can.BusABC]  # every bus the driver's bus_factory opened, in order
    control: BusControl
    backlog: list[codec.Decoded] = attrs.Factory(list)  # read, not yet returned by traffic()

    async def wait_event(self, cid: int, event: HardwareEvent) -> None:
        await self.wait_until(lambda: event in self.events[cid])

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        # Polling: the state is changed by other tasks and by frames from other threads.
        with trio.fail_after(WAIT):
            while not condition():  # noqa: ASYNC110
                await trio.sleep(0.01)

    def traffic(self) -> list[codec.Decoded]:
        """Every frame on the bus since the last call (but the listener's own), in the order
        it was sent, decoded; frames with a wrong CRC are left out."""
        frames, self.backlog = self.backlog, []
        while (msg := self.listener.recv(0)) is not None:
            with suppress(codec.CrcError):
                frames.append(codec.decode(msg.arbitration_id, bytes(msg.data), scaling=False))
        return frames

    def sent(self, plc_id: int) -> list[dict[str, float | int]]:
        """RelayControl frames the driver sent to `plc_id` since the last call."""
        return [dict(f.signals) for f in self.traffic() if is_control(f, plc_id)]

    async def wait_traffic(
        self, condition: Callable[[list[codec.Decoded]], bool]
    ) -> list[codec.Decoded]:
        """`traffic()` from now until the frames so far meet `condition`."""
        frames: list[codec.Decoded] = []
        with trio.fail_after(WAIT):
            while not condition(frames):
                await trio.sleep(0.01)
                frames += self.traffic()
        return frames

    async def wait_sent(
        self, plc_id: int, condition: Callable[[Mapping[str, float | int]], bool]
    ) -> list[dict[str, float | int]]:
        """RelayControl frames to `plc_id` from now up to the first that meets `condition`
        (included); later frames are left for the next call."""
        frames: list[dict[str, float | int]] = []
        with trio.fail_after(WAIT):
            while True:
                traffic = self.traffic()
                for i, frame in enumerate(traffic):
                    if is_control(frame, plc_id):
                        frames.append(dict(frame.signals))
                        if condition(frame.signals):
                            self.backlog = traffic[i + 1 :]
                            return frames
                await trio.sleep(0.01)

    def inject(self, message: str, plc_id: int, signals: Mapping[str, int]) -> None:
        """A frame as a PLC would send it, from the listener (raw values, real CRC)."""
        can_id, data = codec.encode(message, plc_id, signals, scaling=False)
        self.listener.send(can.Message(arbitration_id=can_id, data=data, is_extended_id=True))


def is_control(frame: codec.Decoded, plc_id: int) -> bool:
    return frame.message == "RelayControl" and frame.plc_id == plc_id


@asynccontextmanager
async def rig(
    connectors: list[ConnectorConfig],
    *,
    extra_plcs: tuple[int, ...] = (),
    no_filters: bool = False,
    wrap_bus: Callable[[can.BusABC], None] | None = None,
    fakes: tuple[int, ...] = (),
    no_crc: tuple[int, ...] = (),
    silent: tuple[int, ...] = (),
    emulator_options: Mapping[str, Any] | None = None,
    bus_down: bool = False,
    **options: Any,
) -> AsyncIterator[Rig]:
    """The driver (`options` go to PlcBackend) against one emulator per plcId of `connectors`
    and `extra_plcs` (with `emulator_options`; those in `silent` silent from the start), but a
    FakePlc for those in `fakes` (old firmware without CRC for those also in `no_crc`).
    `bus_down`: the bus cannot be opened until `control.down` is cleared."""
    channel = f"plc-driver-{uuid.uuid4().hex}"
    threads_before = set(threading.enumerate())
    plc_ids = [c.plc_id for c in connectors] + list(extra_plcs)
    bus_class = _bus_class[0]
    emu_buses = [bus_class(channel=channel) for _ in plc_ids]
    listener = bus_class(channel=channel)
    emulators = {
        plc_id: PlcEmulator(
            bus, plc_id, connector=connector(99, plc_id), period=0.05, **(emulator_options or {})
        )
        for plc_id, bus in zip(plc_ids, emu_buses, strict=True)
        if plc_id not in fakes
    }
    fake_plcs = {
        plc_id: FakePlc(bus, plc_id)
        for plc_id, bus in zip(plc_ids, emu_buses, strict=True)
        if plc_id in fakes
    }
    for plc_id in silent:
        emulators[plc_id].set_silent(True)
    for plc_id in no_crc:
        fake_plcs[plc_id].crc = False
    control = BusControl(down=bus_down)

    def factory() -> can.BusABC:
        control.attempts.append(trio.current_time())
        if control.down:
            raise control.error
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
            for fake in fake_plcs.values():
                await nursery.start(fake.run)
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
            yield Rig(backend, emulators, fake_plcs, listener, events, opened, control)
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


async def test_config_ack_of_an_earlier_set_does_not_answer_a_new_one() -> None:
    """ConfigAck has no sequence number: a late ack of a SET that timed out carries the same
    CFG_PARAM_ID as the next request. A SET that took effect echoes its value, so an OK ack
    with another value is not the answer to the SET waiting."""
    async with rig(ONE, fakes=(3,), **PAUSED_OK) as r:
        gun, plc = r.backend.gun(1), r.fakes[3]
        plc.paused = True
        await plc.sync(gun)
        results: list[int] = []

        async def configure() -> None:
            results.append(await gun.configure(1, 100))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(configure)
            await r.wait_until(lambda: gun.protocol.config_exchange.pending)
            ack = {"CFG_PARAM_ID": 1, "ACK_STATUS": 0, "PLC_ID": 3}
            plc.send("ConfigAck", **ack, CFG_VALUE=50)  # the answer to an earlier SET 50
            await plc.sync(gun)
            assert results == []
            plc.send("ConfigAck", **ack, CFG_VALUE=100)
        assert results == [100]


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


BUS = "CAN bus can9 (socketcan)"  # the bus_name the tests below give the driver


def bus_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """The driver's lines about the bus (not about single PLCs), at `level`."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "dcocpp.hardware.plc.driver" and r.levelno == level and BUS in r.getMessage()
    ]


async def test_bus_that_stays_down_is_logged_once_then_once_when_it_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="dcocpp.hardware.plc.driver")
    async with rig(ONE, bus_down=True, rx_timeout=0.3, bus_name=BUS) as r:
        await r.wait_until(lambda: len(r.control.attempts) >= 5)
        r.control.down = False
        await r.wait_event(1, FaultCleared(FaultKind.COMMUNICATION))
        await r.wait_until(lambda: bool(bus_lines(caplog, logging.INFO)))
    assert bus_lines(caplog, logging.WARNING) == [
        f"{BUS} failed: OSError: can0 is down; reopening it until frames arrive again"
    ]
    reopening = [m for m in bus_lines(caplog, logging.DEBUG) if m.startswith("reopening")]
    assert len(reopening) >= 3  # every attempt but the first and the last
    assert bus_lines(caplog, logging.INFO) == [
        f"{BUS} works again (it had failed: OSError: can0 is down)"
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_sends_failing_on_every_reopened_bus_are_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="dcocpp.hardware.plc.driver")
    failing = [True]

    def failing_sends(bus: can.BusABC) -> None:
        send = bus.send

        def flaky_send(msg: can.Message, timeout: float | None = None) -> None:
            if failing[0]:
                raise can.CanError("injected send failure")
            send(msg, timeout)

        bus.send = flaky_send  # type: ignore[method-assign]

    async with rig(ONE, wrap_bus=failing_sends, rx_timeout=2.0, bus_name=BUS) as r:
        failing[0] = True
        # Frames still arrive on each reopened bus, but its sends fail: not "working again".
        await r.wait_until(lambda: len(r.opened) >= 4)
        failing[0] = False
        await r.wait_until(lambda: bool(bus_lines(caplog, logging.INFO)))
        assert r.backend.stats.tx_errors >= 3 * 3
    warnings = bus_lines(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{BUS} failed: 3 sends in a row failed: injected send failure")
    assert len(bus_lines(caplog, logging.INFO)) == 1
    # Each failed send is only counted and logged at DEBUG: ten keep-alives a second would
    # otherwise flood the log.
    sends = [
        r
        for r in caplog.records
        if "sending RelayControl failed" in r.getMessage() and r.levelno > logging.DEBUG
    ]
    assert sends == []


# --- helpers for the tests below ---------------------------------------------------------------

# A paused FakePlc is not a silent one: no COMMUNICATION / METER fault while a test steps it.
PAUSED_OK: dict[str, Any] = {"rx_timeout": 10.0, "meter_stale": 20.0}
# For tests about the driver's own fault rules: a late keep-alive on a loaded machine must
# not trip the emulator's watchdog (its fault would be reported too).
SLOW_WATCHDOG = {"watchdog": 5.0}


def control(
    seq: int, *, close: bool = False, force_off: bool = False, clear: bool = False
) -> dict[str, float | int]:
    """A RelayControl frame as the driver sends it."""
    return {
        "RLY1_CMD": int(close),
        "SYS_ENABLE": 1,
        "FORCE_ALL_OFF": int(force_off),
        "CLEAR_FAULTS": int(clear),
        "CMD_SEQ": seq,
        "RLY_ENABLE_MASK": 1,
        "RLY_MODE": 0,
        "PULSE_MS": 0,
    }


def next_seq(seq: int) -> int:
    """The driver's seq after `seq` (1..255, 0 is never used)."""
    return seq % 255 + 1


def faulted(gun: PlcGun, kind: FaultKind) -> bool:
    return kind in dict(gun.status().faults)


ESTOP = FaultRaised(FaultKind.EMERGENCY_STOP, "PLC 3: emergency stop")
ESTOP_GONE = FaultCleared(FaultKind.EMERGENCY_STOP)


# --- safety trip -------------------------------------------------------------------------------


async def test_estop_forces_all_off_at_once_and_until_released() -> None:
    # Keep-alives every 0.5 s (the PLC's watchdog lengthened to match): an estop right after
    # one is 0.5 s from the next, so the first RelayControl after it is the driver's answer.
    async with rig(ONE, keepalive=0.5, emulator_options=SLOW_WATCHDOG) as r:
        gun, emu = r.backend.gun(1), r.emulators[3]
        await gun.set_relay(True)
        seq = emu.state.last_cmd_seq_applied
        r.traffic()
        await r.wait_sent(3, lambda f: True)
        emu.set_estop(True)
        await r.wait_event(1, ESTOP)
        frames = await r.wait_traffic(
            lambda fs: any(is_control(f, 3) and f.signals["FORCE_ALL_OFF"] for f in fs)
        )
        estop = next(
            i
            for i, f in enumerate(frames)
            if f.message == "RelayStatus" and f.signals["ESTOP_INPUT"] == 1
        )
        assert all(
            f.signals == control(seq, close=True) for f in frames[:estop] if is_control(f, 3)
        )
        trip = next(f.signals for f in frames[estop:] if is_control(f, 3))
        trip_seq = next_seq(seq)  # a new command: open
        assert trip == control(trip_seq, force_off=True)

        # Every keep-alive keeps it while the estop is pressed; closing is refused at once.
        await trio.sleep(1.4)
        held = r.sent(3)
        assert len(held) >= 2
        assert all(f == control(trip_seq, force_off=True) for f in held)
        with pytest.raises(PlcDriverError, match="safety trip"):
            await gun.set_relay(True)

        emu.set_estop(False)
        await r.wait_event(1, ESTOP_GONE)
        sent = await r.wait_sent(3, lambda f: f["FORCE_ALL_OFF"] == 0)
        assert sent[:-1] == [control(trip_seq, force_off=True)] * (len(sent) - 1)
        # Released: no more FORCE_ALL_OFF, CLEAR_FAULTS for the estop the PLC still latches;
        # the command stays "open": the relay stays open until the next set_relay(True).
        assert sent[-1] == control(trip_seq, clear=True)
        await r.wait_until(lambda: emu.state.fault_reason == FAULT_NONE)
        await r.wait_sent(3, lambda f: f == control(trip_seq))
        assert not emu.state.relay_closed and not gun.status().relay_closed
        assert r.events[1] == [RelayState(True), ESTOP, RelayState(False), ESTOP_GONE]
        await gun.set_relay(True)
        assert emu.state.relay_closed


async def test_single_glitch_frame_trips_fail_safe() -> None:
    async with rig(ONE, debounce_frames=3) as r:
        gun, emu = r.backend.gun(1), r.emulators[3]
        await gun.set_relay(True)
        seq = emu.state.last_cmd_seq_applied
        r.traffic()
        glitch = {
            **IDLE_FRAMES["RelayStatus"],
            "RLY1_STATE": 1,
            "RLY1_FEEDBACK": 1,
            "LAST_CMD_SEQ_APPLIED": seq,
            **ESTOP_FRAMES["RelayStatus"],
        }
        r.inject("RelayStatus", 3, glitch)  # between the emulator's own frames
        await r.wait_event(1, ESTOP)
        frames = await r.wait_sent(3, lambda f: f["FORCE_ALL_OFF"] == 1)
        assert frames == [control(seq, close=True)] * (len(frames) - 1) + [
            control(next_seq(seq), force_off=True)
        ]
        # Fail-safe: the PLC never saw an estop, yet its relay was forced open.
        await r.wait_until(lambda: not emu.state.relay_closed)
        assert not emu.state.estop
        # The emulator's clear frames release it (counted exactly in the next test).
        await r.wait_event(1, ESTOP_GONE)
        frames = await r.wait_sent(3, lambda f: f["FORCE_ALL_OFF"] == 0)
        assert frames[-1] == control(next_seq(seq))  # and the relay stays open
        await r.wait_event(1, RelayState(False))
        assert r.events[1][:2] == [RelayState(True), ESTOP]
        assert sorted(map(repr, r.events[1][2:])) == sorted(
            map(repr, [RelayState(False), ESTOP_GONE])
        )
        await trio.sleep(0.2)
        assert not emu.state.relay_closed and not gun.status().relay_closed


async def test_safety_release_needs_debounce_frames_consecutive_clear_frames() -> None:
    async with rig(ONE, fakes=(3,), debounce_frames=3, **PAUSED_OK) as r:
        gun, plc = r.backend.gun(1), r.fakes[3]
        plc.paused = True
        await plc.sync(gun)

        async def step(*frames: tuple[str, Signals]) -> bool:
            """Send the frames; whether the driver is tripped once it has handled them."""
            for name, overrides in frames:
                plc.send(name, **overrides)
            await plc.sync(gun)
            return faulted(gun, FaultKind.EMERGENCY_STOP)

        relay: tuple[str, Signals] = ("RelayStatus", {})
        switches: tuple[str, Signals] = ("SafetySwitchStatus", {})
        assert not await step(relay, switches)
        assert await step(("SafetySwitchStatus", ESTOP_FRAMES["SafetySwitchStatus"]))
        # Clear frames of either kind count; debounce_frames - 1 are not enough ...
        assert await step(relay)
        assert await step(switches)
        # ... one reporting the estop again starts the count anew ...
        assert await step(("RelayStatus", ESTOP_FRAMES["RelayStatus"]))
        assert await step(switches, relay)
        # ... frames without safety bits do not count ...
        assert await step(("CpStatus", {}), ("EnergyMeterData1", {}))
        # ... the third consecutive clear frame releases it.
        assert not await step(switches)
        await r.wait_event(1, ESTOP_GONE)
        assert r.events[1] == [ESTOP, ESTOP_GONE]


async def test_every_trip_forces_all_off_even_when_released_before_the_writer_ran() -> None:
    """A bouncing input read in one batch (the trip and the clear frames that release it):
    the trip's own command still goes out with FORCE_ALL_OFF, never as a plain open."""
    async with rig(ONE, fakes=(3,), **PAUSED_OK) as r:
        gun, plc = r.backend.gun(1), r.fakes[3]
        plc.paused = True
        await plc.sync(gun)
        r.sent(3)
        (idle,) = await r.wait_sent(3, lambda f: True)  # the command before the trips
        trips = 20
        for _ in range(trips):
            plc.send("SafetySwitchStatus", **ESTOP_FRAMES["SafetySwitchStatus"])
            plc.send("SafetySwitchStatus")
            plc.send("RelayStatus")
            await plc.sync(gun)
        await r.wait_until(lambda: r.events[1].count(ESTOP_GONE) == trips)
        await trio.sleep(0.2)  # a keep-alive after the last one
        first_of_each: dict[int, Mapping[str, float | int]] = {}
        for frame in r.sent(3):
            first_of_each.setdefault(int(frame["CMD_SEQ"]), frame)
        first_of_each.pop(int(idle["CMD_SEQ"]), None)
        commands = list(first_of_each.values())
        assert len(commands) == trips
        assert all(frame["FORCE_ALL_OFF"] == 1 for frame in commands)


async def test_safety_chain_open_is_an_emergency_stop() -> None:
    async with rig(ONE, fakes=(3,), **PAUSED_OK) as r:
        gun, plc = r.backend.gun(1), r.fakes[3]
        plc.paused = True
        await plc.sync(gun)
        seq = r.sent(3)[-1]["CMD_SEQ"]
        assert isinstance(seq, int)

        # SAFETY_OK=0 for neither estop nor earth fault: another switch of SW_MASK is open.
        chain = {"SW_STATES": 0b100, "ESTOP": 0, "SAFETY_OK": 0, "EARTH_FAULT": 0, "SW_MASK": 0b111}
        chain_open = FaultRaised(
            FaultKind.EMERGENCY_STOP, "PLC 3: safety chain open (switches 0x04)"
        )
        plc.send("SafetySwitchStatus", **chain)
        await r.wait_event(1, chain_open)
        frames = await r.wait_sent(3, lambda f: f["CMD_SEQ"] != seq)
        assert next(f for f in frames if f["CMD_SEQ"] != seq) == control(
            next_seq(seq), force_off=True
        )
        plc.send("SafetySwitchStatus")
        plc.send("RelayStatus")
        await r.wait_event(1, ESTOP_GONE)
        await r.wait_sent(3, lambda f: f == control(next_seq(seq)))

        # An estop and an open chain at once: one fault, the estop's.
        both = {**chain, "SW_STATES": 0b101, "ESTOP": 1}
        plc.send("SafetySwitchStatus", **both)
        plc.send("RelayStatus", ESTOP_INPUT=1, SAFETY_OK=0, SW_STATES=0b101, FAULT_REASON=4)
        await plc.sync(gun)
        # The estop released, the chain still open: still tripped, nothing new to report.
        plc.send("SafetySwitchStatus", **chain)
        plc.send("RelayStatus", SAFETY_OK=0, SW_STATES=0b100, FAULT_REASON=4)
        plc.send("SafetySwitchStatus", **chain)
        await plc.sync(gun)
        assert faulted(gun, FaultKind.EMERGENCY_STOP)
        assert r.sent(3)[-1]["FORCE_ALL_OFF"] == 1
        plc.send("SafetySwitchStatus")
        plc.send("RelayStatus")
        await r.wait_until(lambda: r.events[1].count(ESTOP_GONE) == 2)
        assert r.events[1] == [chain_open, ESTOP_GONE, ESTOP, ESTOP_GONE]


# --- relay acknowledgement ---------------------------------------------------------------------


async def test_stale_ack_does_not_confirm_a_relay_command() -> None:
    async with rig(ONE, fakes=(3,), attempts=1, ack_timeout=1.0, **PAUSED_OK) as r:
        gun, plc = r.backend.gun(1), r.fakes[3]
        seen_closed = failed = -1.0

        async def close() -> None:
            nonlocal failed
            with pytest.raises(PlcDriverError, match="after 1 attempts"):
                await gun.set_relay(True)
            failed = trio.current_time()

        async with trio.open_nursery() as nursery:
            r.sent(3)
            nursery.start_soon(close)
            frames = await r.wait_sent(3, lambda f: f["RLY1_CMD"] == 1)
            seq = next(f["CMD_SEQ"] for f in frames if f["RLY1_CMD"] == 1)
            assert isinstance(seq, int)
            # The relay reported closed, but an older command reported applied.
            plc.frames["RelayStatus"].update(
                RLY1_STATE=1, RLY1_FEEDBACK=1, LAST_CMD_SEQ_APPLIED=(seq - 2) % 255 + 1
            )
            await r.wait_until(lambda: gun.status().relay_closed)
            seen_closed = trio.current_time()
        assert 0 <= seen_closed < failed
        # Given up: the PLC is told FORCE_ALL_OFF with a new (open) command.
        forced = next_seq(seq)
        await r.wait_sent(3, lambda f: f == control(forced, force_off=True))

        # The newest command acknowledged with the wanted state: confirmed.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gun.set_relay, True)
            await r.wait_sent(3, lambda f: f == control(next_seq(forced), close=True))
            plc.frames["RelayStatus"]["LAST_CMD_SEQ_APPLIED"] = next_seq(forced)
        await r.wait_event(1, RelayState(True))
        assert r.events[1] == [RelayState(True)]


async def test_newer_command_to_the_same_state_confirms_a_waiting_open() -> None:
    async with rig(ONE, fakes=(3,), attempts=1, ack_timeout=WAIT, **PAUSED_OK) as r:
        gun, plc = r.backend.gun(1), r.fakes[3]
        async with trio.open_nursery() as nursery:
            seq = r.sent(3)[-1]["CMD_SEQ"]
            assert isinstance(seq, int)
            nursery.start_soon(gun.set_relay, False)  # the fake PLC does not acknowledge it
            await r.wait_sent(3, lambda f: f["CMD_SEQ"] == next_seq(seq))
            # A safety trip commands open again, with a newer seq ...
            for name, signals in ESTOP_FRAMES.items():
                plc.frames[name].update(signals)
            await r.wait_sent(3, lambda f: f == control(next_seq(next_seq(seq)), force_off=True))
            # ... whose acknowledgement confirms the open that was waiting.
            plc.frames["RelayStatus"]["LAST_CMD_SEQ_APPLIED"] = next_seq(next_seq(seq))
        await r.wait_event(1, ESTOP)
        assert r.events[1] == [ESTOP]


# --- startup, bus and silence ------------------------------------------------------------------


async def test_started_once_every_plc_has_reported_its_meter() -> None:
    before = trio.current_time()
    async with rig(ONE, rx_timeout=WAIT, emulator_options={"initial_energy_wh": 1_234_567.0}) as r:
        # Nothing has run since `started`: the register was read before it.
        assert trio.current_time() - before < WAIT
        assert r.backend.gun(1).read_meter().energy_wh == 1_234_500.0  # floored to 0.1 kWh
        status = r.backend.gun(1).status()
        assert not status.plugged and not status.relay_closed and status.faults == ()


async def test_silent_plc_delays_started_by_rx_timeout_then_faults() -> None:
    before = trio.current_time()
    async with rig(
        [connector(1, 3), connector(2, 4)],
        silent=(4,),
        rx_timeout=0.5,
        emulator_options=SLOW_WATCHDOG,
    ) as r:
        assert trio.current_time() - before >= 0.5
        # The PLC that did report is fully known.
        assert r.backend.gun(1).read_meter().energy_wh == 1_300_000.0
        lost = FaultRaised(FaultKind.COMMUNICATION, "PLC 4 communication lost")
        await r.wait_event(2, lost)
        r.emulators[4].set_silent(False)
        await r.wait_event(2, FaultCleared(FaultKind.COMMUNICATION))
        assert r.events[2] == [lost, FaultCleared(FaultKind.COMMUNICATION)]
        assert r.events[1] == []


async def test_bus_that_cannot_be_opened_is_retried_with_backoff() -> None:
    async with rig(ONE, bus_down=True, rx_timeout=0.3) as r:
        # `run` has started regardless, and reports the bus on every gun.
        down = FaultRaised(FaultKind.COMMUNICATION, "CAN bus error: OSError: can0 is down")
        await r.wait_event(1, down)
        with pytest.raises(PlcDriverError, match="bus not open"):
            await r.backend.gun(1).configure(1, 100)
        await r.wait_until(lambda: len(r.control.attempts) >= 3)
        r.control.down = False
        await r.wait_event(1, FaultCleared(FaultKind.COMMUNICATION))
        assert len(r.opened) == 1
        gaps = [b - a for a, b in itertools.pairwise(r.control.attempts)]
        for k, gap in enumerate(gaps):
            assert gap >= min(REOPEN_MIN_S * 2**k, REOPEN_MAX_S) * 0.99
        await r.backend.gun(1).set_relay(True)
        assert r.emulators[3].state.relay_closed
        await r.wait_event(1, RelayState(True))  # set_relay returns before it is delivered
        assert r.events[1] == [down, FaultCleared(FaultKind.COMMUNICATION), RelayState(True)]


async def test_a_bus_that_does_not_exist_at_start_ends_run() -> None:
    """A channel or interface type missing on this machine is not waited for: `run` raises
    before it has started (the charger does not start, see docs/can-bus.md)."""

    def missing() -> can.BusABC:
        raise CanBusNotFound("CAN channel can9 (interface socketcan): no such device")

    backend = PlcBackend(ONE, bus_factory=missing)
    send, receive = trio.open_memory_channel[HardwareEvent](8)
    async with trio.open_nursery() as nursery:
        with pytest.RaisesGroup(
            pytest.RaisesExc(CanBusNotFound, match="^CAN channel can9 "), flatten_subgroups=True
        ):
            await nursery.start(backend.run, {1: send})
    with pytest.raises(trio.EndOfChannel):
        receive.receive_nowait()  # no event, and closed


async def test_a_bus_that_disappears_later_is_retried_like_any_bus_error() -> None:
    fail = threading.Event()

    def failing_once(bus: can.BusABC) -> None:
        recv = bus.recv

        def flaky_recv(timeout: float | None = None) -> can.Message | None:
            if fail.is_set():
                fail.clear()
                raise can.CanError("adapter unplugged")
            return recv(timeout)

        bus.recv = flaky_recv  # type: ignore[method-assign]

    async with rig(ONE, wrap_bus=failing_once, rx_timeout=2.0) as r:
        r.control.error = CanBusNotFound("CAN channel can0 (interface socketcan): no such device")
        r.control.down = True
        fail.set()
        await r.wait_event(
            1, FaultRaised(FaultKind.COMMUNICATION, "CAN bus error: adapter unplugged")
        )
        await r.wait_until(lambda: len(r.control.attempts) >= 3)  # reopened again and again
        r.control.down = False
        await r.wait_event(1, FaultCleared(FaultKind.COMMUNICATION))
        assert len(r.opened) == 2


def meter_faults(events: list[HardwareEvent]) -> list[HardwareEvent]:
    return [e for e in events if isinstance(e, FaultRaised) and e.kind == FaultKind.METER]


async def test_silent_plc_is_not_reported_meter_stale_on_top() -> None:
    async with rig(ONE, rx_timeout=0.5, meter_stale=1.0, emulator_options=SLOW_WATCHDOG) as r:
        emu = r.emulators[3]
        lost = FaultRaised(FaultKind.COMMUNICATION, "PLC 3 communication lost")
        emu.set_silent(True)
        await r.wait_event(1, lost)
        # It will come back without fresh meter data.
        emu.set_meter_stale(True)
        await trio.sleep(1.5)  # well past meter_stale: the link is the fault, not the meter
        assert r.events[1] == [lost]
        emu.set_silent(False)
        await r.wait_event(1, FaultCleared(FaultKind.COMMUNICATION))
        back = trio.current_time()
        # The meter gets a full meter_stale from the first frame before it is called stale.
        stale = FaultRaised(FaultKind.METER, "meter data stale")
        await r.wait_event(1, stale)
        assert trio.current_time() - back >= 0.5
        assert r.events[1][:2] == [lost, FaultCleared(FaultKind.COMMUNICATION)]
        assert meter_faults(r.events[1]) == [stale]
        emu.set_meter_stale(False)
        await r.wait_event(1, FaultCleared(FaultKind.METER))


async def test_silence_and_back_raises_no_meter_fault() -> None:
    async with rig(ONE, rx_timeout=0.5, meter_stale=1.0, emulator_options=SLOW_WATCHDOG) as r:
        lost = FaultRaised(FaultKind.COMMUNICATION, "PLC 3 communication lost")
        r.emulators[3].set_silent(True)
        await r.wait_event(1, lost)
        await trio.sleep(1.2)
        r.emulators[3].set_silent(False)
        await r.wait_event(1, FaultCleared(FaultKind.COMMUNICATION))
        await trio.sleep(1.2)  # past meter_stale since the PLC came back
        assert r.events[1][:2] == [lost, FaultCleared(FaultKind.COMMUNICATION)]
        assert meter_faults(r.events[1]) == []


async def test_unplug_while_requesting_is_cable_unplugged_only() -> None:
    async with rig(ONE) as r:
        emu = r.emulators[3]
        emu.plug()
        await r.wait_event(1, EvDemand(True))
        emu.unplug()
        await r.wait_event(1, CableUnplugged())
        await trio.sleep(0.2)
        assert r.events[1] == [CablePlugged(), EvDemand(True), CableUnplugged()]
        status = r.backend.gun(1).status()
        assert not status.plugged and not status.ev_requesting


# --- CRC ---------------------------------------------------------------------------------------


def zero_crc_cp_status(**signals: int) -> Signals:
    """CpStatus signals (`signals` plus a searched CP voltage) whose real CRC8 is 0: on the
    wire such a frame looks exactly like one without CRC."""
    for volts in range(1000):
        candidate = {**IDLE_FRAMES["CpStatus"], **signals, "CP_VOLTAGE_0p1V": volts}
        if codec.encode("CpStatus", 3, candidate, scaling=False)[1][7] == 0:
            return candidate
    raise AssertionError("no CpStatus with CRC 0")


def send_without_crc(bus: can.BusABC, message: str, plc_id: int, signals: Signals) -> None:
    can_id, data = codec.encode(message, plc_id, signals, scaling=False)
    assert data[7] != 0  # else it would not be a frame without CRC
    bus.send(can.Message(arbitration_id=can_id, data=data[:7] + b"\0", is_extended_id=True))


PLUGGED = {"CP_STATE": 1, "PLUGGED": 1, "EV_READY": 0, "CP_VOLTAGE_0p1V": 90, "CP_DUTY_PCT": 5}


async def test_frame_without_crc_from_a_plc_that_sends_crcs_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="dcocpp.hardware.plc.driver")
    async with rig(ONE) as r:
        await trio.sleep(0.1)
        assert r.backend.stats.crc_errors == 0
        for _ in range(2):
            send_without_crc(r.listener, "CpStatus", 3, PLUGGED)
        await r.wait_until(lambda: r.backend.stats.crc_errors == 2)
        warnings = [rec for rec in caplog.records if "without CRC" in rec.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        assert "PLC 3" in warnings[0].getMessage()
        # A frame whose real CRC is 0 (byte 7 zero, yet valid) is still accepted.
        r.inject("CpStatus", 3, zero_crc_cp_status(**PLUGGED))
        await r.wait_event(1, CablePlugged())
        await r.wait_event(1, CableUnplugged())  # the emulator's next CpStatus
        assert r.backend.stats.crc_errors == 2


async def test_old_firmware_without_crc_is_accepted() -> None:
    async with rig(ONE, fakes=(3,), no_crc=(3,), **PAUSED_OK) as r:
        gun, plc = r.backend.gun(1), r.fakes[3]
        plc.paused = True
        await plc.sync(gun)
        plc.send("CpStatus", **PLUGGED)
        await r.wait_event(1, CablePlugged())
        # A frame whose real CRC happens to be 0 proves nothing: still old firmware.
        plc.send("CpStatus", **zero_crc_cp_status())
        await r.wait_event(1, CableUnplugged())
        plc.send("CpStatus", **PLUGGED)
        await r.wait_until(lambda: r.events[1].count(CablePlugged()) == 2)
        assert r.backend.stats.crc_errors == 0
        # One frame with a (valid, non-zero) CRC: from now on frames without one are dropped.
        plc.crc = True
        plc.send("RelayStatus")
        plc.crc = False
        plc.send("CpStatus")
        await r.wait_until(lambda: r.backend.stats.crc_errors == 1)
        plc.crc = True
        await plc.sync(gun)
        assert gun.status().plugged
        assert r.events[1] == [CablePlugged(), CableUnplugged(), CablePlugged()]


async def test_force_off_of_a_failed_command_outlasts_a_safety_trip() -> None:
    async with rig(ONE, fakes=(3,), attempts=1, ack_timeout=0.2, **PAUSED_OK) as r:
        gun, plc = r.backend.gun(1), r.fakes[3]
        plc.paused = True
        with pytest.raises(PlcDriverError, match="after 1 attempts"):
            await gun.set_relay(True)  # the fake PLC never acknowledges
        forced = (await r.wait_sent(3, lambda f: f["FORCE_ALL_OFF"] == 1))[-1]
        assert forced["RLY1_CMD"] == 0
        plc.send("SafetySwitchStatus", **ESTOP_FRAMES["SafetySwitchStatus"])
        await r.wait_event(1, ESTOP)
        plc.send("SafetySwitchStatus")
        plc.send("RelayStatus")
        await r.wait_event(1, ESTOP_GONE)
        r.sent(3)
        # Released, but the earlier give-up still holds until the next set_relay.
        frames = await r.wait_sent(3, lambda f: True)
        assert frames == [control(next_seq(int(forced["CMD_SEQ"])), force_off=True)]


# --- the meter and the relay against physics ---------------------------------------------------


def meter_fault_reported(r: Rig, gun: PlcGun) -> bool:
    """The gun is METER-faulted and the connector has its FaultRaised (the event reaches the
    connector's task after the state has changed: waiting on the state alone races it)."""
    return faulted(gun, FaultKind.METER) and any(isinstance(e, FaultRaised) for e in r.events[1])


def meter_fault(events: list[HardwareEvent]) -> FaultRaised:
    (raised,) = [e for e in events if isinstance(e, FaultRaised)]
    assert raised.kind == FaultKind.METER
    return raised


@pytest.mark.parametrize(
    ("register", "detail"),
    [
        (lambda wh: wh - 500_000, "PLC 3: meter register went back 500000 Wh"),
        (lambda wh: 0, "PLC 3: meter register went back 1300000 Wh"),
        (lambda wh: wh + 1_000_000, "PLC 3: meter register rose 1000000 Wh in "),
    ],
    ids=["back 500 kWh", "zero", "jump 1e6 Wh"],
)
async def test_an_implausible_register_is_a_meter_fault_and_is_not_taken(
    register: Callable[[float], float], detail: str
) -> None:
    async with rig(ONE) as r:
        gun, emu = r.backend.gun(1), r.emulators[3]
        believed = gun.read_meter().energy_wh
        assert believed == 1_300_000  # 1000 kWh + 100 kWh x plcId 3
        emu.set_register(register(believed))
        await r.wait_until(lambda: meter_fault_reported(r, gun))
        assert meter_fault(r.events[1]).detail.startswith(detail)
        await trio.sleep(0.3)  # more frames of it: still not taken
        assert gun.read_meter().energy_wh == believed
        assert gun.surviving_register_wh() == believed
        assert faulted(gun, FaultKind.METER)


async def test_a_meter_over_range_is_a_meter_fault_and_its_values_are_not_taken() -> None:
    async with rig(ONE) as r:
        gun, emu = r.backend.gun(1), r.emulators[3]
        emu.plug()
        await gun.set_relay(True)
        await r.wait_until(lambda: gun.read_meter().current_a > 0)
        emu.set_meter_overrange(True)
        await r.wait_until(lambda: meter_fault_reported(r, gun))
        assert meter_fault(r.events[1]).detail == "PLC 3: meter over range (OVERRANGE)"
        await trio.sleep(0.3)
        reading = gun.read_meter()
        # 327.67 A / kW were on the bus; a 200 A / 60 kW gun never reports them.
        assert 0 < reading.current_a <= 200 and 0 < reading.power_w <= 60_000
        # The relay opens: the faulted gun shows no current, not the session's last values.
        await gun.set_relay(False)
        await r.wait_until(lambda: not gun.status().relay_closed)
        await trio.sleep(0.3)
        reading = gun.read_meter()
        assert (reading.current_a, reading.power_w) == (0, 0)


async def test_a_relay_reported_closed_against_the_command_forces_all_off_until_it_agrees() -> None:
    async with rig(ONE, fakes=(3,), **PAUSED_OK) as r:
        gun, plc = r.backend.gun(1), r.fakes[3]
        await plc.sync(gun)
        seq = r.sent(3)[-1]["CMD_SEQ"]
        assert isinstance(seq, int)
        # The idle gun, commanded open, reported closed (the PLC did so for 3 s).
        plc.frames["RelayStatus"].update(RLY1_STATE=1, RLY1_FEEDBACK=1)
        lied = trio.current_time()
        before = await r.wait_sent(3, lambda f: f["FORCE_ALL_OFF"] == 1)
        took = trio.current_time() - lied
        assert ACK_TIMEOUT - 0.06 <= took < ACK_TIMEOUT + WAIT  # not before the ack deadline
        assert before[-1] == control(seq, force_off=True)  # the command stays: open
        raised = FaultRaised(FaultKind.POWER_SWITCH, "PLC 3: relay reported closed, commanded open")
        await r.wait_event(1, raised)
        # Every RelayControl carries it while the relay is reported closed ...
        await trio.sleep(1.0)
        held = r.sent(3)
        assert len(held) >= 5 and all(f == control(seq, force_off=True) for f in held)
        # ... and no more once it agrees again.
        plc.frames["RelayStatus"].update(RLY1_STATE=0, RLY1_FEEDBACK=0)
        await r.wait_event(1, FaultCleared(FaultKind.POWER_SWITCH))
        sent = await r.wait_sent(3, lambda f: f["FORCE_ALL_OFF"] == 0)
        assert sent[-1]["RLY1_CMD"] == 0
        assert not faulted(gun, FaultKind.POWER_SWITCH)
        assert r.events[1] == [
            RelayState(True),
            raised,
            RelayState(False),
            FaultCleared(FaultKind.POWER_SWITCH),
        ]


async def test_a_welded_relay_is_reported_closed_and_forced_off_while_it_lasts() -> None:
    async with rig(ONE) as r:
        gun, emu = r.backend.gun(1), r.emulators[3]
        emu.set_relay_welded(True)
        await r.wait_until(lambda: faulted(gun, FaultKind.POWER_SWITCH))
        # The coil is open as commanded; its auxiliary contact says closed.
        assert gun.status().relay_closed and not emu.state.relay_closed
        await r.wait_until(lambda: emu.state.force_off_active)
        emu.set_relay_welded(False)
        await r.wait_event(1, FaultCleared(FaultKind.POWER_SWITCH))
        await r.wait_until(lambda: not emu.state.force_off_active)
        # Closing works again.
        await gun.set_relay(True)
        assert emu.state.relay_closed
