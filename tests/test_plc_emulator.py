"""The PLC firmware emulator, driven like the real host would: a second Bus on the same virtual
channel, frames encoded and decoded with the codec.

Timing: frames to the emulator cross python-can's receive thread (a Notifier), and trio's
autojump clock would jump while such a frame is in flight, so every test that depends on the
host's keep-alive arriving in time (acks, watchdog, ...) runs in real time with short periods
and generous margins. The debounce and energy tests need exact time and use `autojump_clock`
with the watchdog out of the way; there, a frame to the PLC is sent with `Host.deliver`, which
waits until the emulator has taken it.
"""

from __future__ import annotations

import itertools
import math
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import can
import pytest
import trio

from dcocpp.config import ConnectorConfig
from dcocpp.hardware.plc import codec
from dcocpp.hardware.plc.emulator import PlcEmulator
from dcocpp.hardware.plc.interlocks import FAULT_ESTOP, FAULT_NONE, FAULT_RELAY_TIMEOUT
from dcocpp.hardware.plc.parameters import ACK_OK, ACK_OUT_OF_RANGE, ACK_UNKNOWN_PARAM
from dcocpp.hardware.simulation import EvModel

CONNECTOR = ConnectorConfig(
    id=1,
    plc_id=3,
    label="A",
    max_current_a=200.0,
    max_power_w=60_000.0,
)
FAST = {"period": 0.05}  # real-time tests: frames every 50 ms
NO_WATCHDOG = 1e9


@contextmanager
def buses(count: int) -> Iterator[list[can.BusABC]]:
    """`count` buses on one fresh virtual channel, shut down afterwards."""
    channel = f"plc-emulator-{uuid.uuid4().hex}"
    opened = [can.Bus(interface="virtual", channel=channel) for _ in range(count)]
    try:
        yield opened
    finally:
        for bus in opened:
            bus.shutdown()


@asynccontextmanager
async def running(*emulators: PlcEmulator) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        for emulator in emulators:
            await nursery.start(emulator.run)
        yield
        nursery.cancel_scope.cancel()


class Host:
    """The host's end: sends RelayControl/ConfigCmd, reads what the PLCs send."""

    def __init__(self, bus: can.BusABC, plc_id: int = 3):
        self.bus = bus
        self.plc_id = plc_id
        self.seq = 0
        self.close = False
        self.clear = False
        self.force_off = False  # FORCE_ALL_OFF in every RelayControl, keep-alives included
        self.keep_alive_scope: trio.CancelScope | None = None
        self.last_sent = -math.inf

    def relay_control(self, **overrides: int) -> tuple[int, bytes]:
        signals = {
            "RLY1_CMD": int(self.close),
            "SYS_ENABLE": 1,
            "FORCE_ALL_OFF": int(self.force_off),
            "CLEAR_FAULTS": int(self.clear),
            "CMD_SEQ": self.seq,
            "RLY_ENABLE_MASK": 1,
            "RLY_MODE": 0,
            "PULSE_MS": 0,
        }
        signals.update(overrides)
        return codec.encode("RelayControl", self.plc_id, signals, scaling=False)

    def send_raw(self, can_id: int, data: bytes) -> None:
        self.last_sent = trio.current_time()
        self.bus.send(can.Message(arbitration_id=can_id, data=data, is_extended_id=True))

    def send_control(self, **overrides: int) -> None:
        self.send_raw(*self.relay_control(**overrides))

    def command(self, close: bool) -> int:
        """A new relay command: new CMD_SEQ, sent at once (keep-alives repeat it)."""
        self.seq = (self.seq + 1) % 256
        self.close = close
        self.send_control()
        return self.seq

    async def deliver(self, emulator: PlcEmulator, can_id: int, data: bytes) -> None:
        """Send one frame and wait until `emulator` has read it (safe under autojump)."""
        before = emulator.stats.rx_frames
        self.send_raw(can_id, data)
        await poll_until(lambda: emulator.stats.rx_frames != before)

    async def keep_alive(
        self,
        interval: float = 0.05,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with trio.CancelScope() as self.keep_alive_scope:
            task_status.started()
            while True:
                self.send_control()
                await trio.sleep(interval)

    def stop_keep_alive(self) -> None:
        assert self.keep_alive_scope is not None
        self.keep_alive_scope.cancel()

    def drain(self) -> list[codec.Decoded | codec.CrcError]:
        """Every frame received so far, decoded (a CRC failure as its exception)."""
        frames: list[codec.Decoded | codec.CrcError] = []
        while (msg := self.bus.recv(0)) is not None:
            try:
                frames.append(codec.decode(msg.arbitration_id, bytes(msg.data), scaling=False))
            except codec.CrcError as exc:
                frames.append(exc)
        return frames

    async def wait_for(
        self, message: str, within: float = 2.0, plc_id: int | None = None, **expected: int
    ) -> codec.Decoded:
        """The next `message` frame whose signals include `expected`."""
        plc = self.plc_id if plc_id is None else plc_id
        with trio.fail_after(within):
            while True:
                for frame in self.drain():
                    if (
                        isinstance(frame, codec.Decoded)
                        and frame.message == message
                        and frame.plc_id == plc
                        and all(frame.signals.get(k) == v for k, v in expected.items())
                    ):
                        return frame
                await trio.sleep(0.002)

    async def collect(self, seconds: float) -> list[codec.Decoded | codec.CrcError]:
        self.drain()
        await trio.sleep(seconds)
        return self.drain()


async def poll_until(condition: Callable[[], bool], *, step: float = 0.001) -> None:
    """Wait for state that another thread (the bus) changes: there is no event to wait on.
    The caller bounds it (the hang guard, or its own fail_after)."""
    while not condition():  # noqa: ASYNC110
        await trio.sleep(step)


def decoded(frames: list[codec.Decoded | codec.CrcError]) -> list[codec.Decoded]:
    return [frame for frame in frames if isinstance(frame, codec.Decoded)]


# --- periodic frames -----------------------------------------------------------------------------


async def test_periodic_frames_and_ids_for_plc_3() -> None:
    with buses(2) as (plc_bus, host_bus):
        emulator = PlcEmulator(plc_bus, 3, connector=CONNECTOR, **FAST)
        host = Host(host_bus)
        async with running(emulator):
            frames = await host.collect(0.5)
            ids = {codec.frame_id(f.message, f.plc_id) for f in decoded(frames)}
            assert ids == {0x163, 0x193, 0x113, 0x173}  # no ChargingSession while unplugged
            assert all(isinstance(f, codec.Decoded) and f.crc_ok for f in frames)
            relay_status = [f for f in decoded(frames) if f.message == "RelayStatus"]
            assert 5 <= len(relay_status) <= 12  # every 50 ms
            muxes = [f.signals["MUX"] for f in decoded(frames) if f.message == "EnergyMeterData"]
            assert set(muxes) == {0, 1}
            assert all(a != b for a, b in itertools.pairwise(muxes))  # alternating
            cp = [f for f in decoded(frames) if f.message == "CpStatus"][-1]
            assert cp.signals == {
                "CP_STATE": 0,
                "PLUGGED": 0,
                "EV_READY": 0,
                "CP_VOLTAGE_0p1V": 120,
                "CP_DUTY_PCT": 100,
            }
            status = relay_status[-1].signals
            assert status["SAFETY_OK"] == 1
            assert status["RLY1_STATE"] == 0
            assert status["FAULT_REASON"] == FAULT_NONE

            emulator.plug(EvModel(soc=40.0))
            session = await host.wait_for("ChargingSession")
            assert session.signals["SESSION_ACTIVE"] == 1
            assert session.signals["SOC_PCT"] == 40
            await host.wait_for("CpStatus", CP_STATE=2, PLUGGED=1, EV_READY=1)
            emulator.set_ev_suspended(True)
            await host.wait_for("CpStatus", CP_STATE=1, PLUGGED=1, EV_READY=0)
            emulator.unplug()
            await host.wait_for("CpStatus", CP_STATE=0, PLUGGED=0)


async def test_cp_status_sent_at_once_on_plug_unplug_and_suspend_and_the_session_ends(
    autojump_clock: Any,
) -> None:
    with buses(2) as (plc_bus, host_bus):
        emulator = PlcEmulator(plc_bus, 3, connector=CONNECTOR, watchdog=NO_WATCHDOG, period=1.0)
        host = Host(host_bus)
        async with running(emulator):
            await trio.sleep(0.5)  # halfway between two periodic bursts
            host.drain()
            now = trio.current_time()

            def cp_state_now(then: str | None = None) -> dict[str, float | int]:
                # Without any sleep: only what the control itself sent (CpStatus, `then`).
                frame, *more = decoded(host.drain())
                assert frame.message == "CpStatus" and frame.plc_id == 3
                assert [f.message for f in more] == ([then] if then else [])
                return dict(frame.signals)

            emulator.plug(EvModel(soc=40.0))
            assert cp_state_now() == {
                "CP_STATE": 2,
                "PLUGGED": 1,
                "EV_READY": 1,
                "CP_VOLTAGE_0p1V": 60,
                "CP_DUTY_PCT": 5,
            }
            emulator.set_ev_suspended(True)
            assert cp_state_now() == {
                "CP_STATE": 1,
                "PLUGGED": 1,
                "EV_READY": 0,
                "CP_VOLTAGE_0p1V": 90,
                "CP_DUTY_PCT": 5,
            }
            emulator.set_ev_suspended(False)
            assert cp_state_now()["CP_STATE"] == 2
            emulator.unplug()
            assert cp_state_now(then="ChargingSession") == {
                "CP_STATE": 0,
                "PLUGGED": 0,
                "EV_READY": 0,
                "CP_VOLTAGE_0p1V": 120,
                "CP_DUTY_PCT": 100,
            }
            assert trio.current_time() == now


# --- relay commands ------------------------------------------------------------------------------


async def test_relay_command_applied_after_delay_and_acknowledged() -> None:
    delay = 0.2
    with buses(2) as (plc_bus, host_bus):
        emulator = PlcEmulator(plc_bus, 3, connector=CONNECTOR, relay_delay=delay, **FAST)
        host = Host(host_bus)
        async with running(emulator), trio.open_nursery() as nursery:
            await nursery.start(host.keep_alive)
            sent_at = trio.current_time()
            seq = host.command(close=True)
            await trio.sleep(0.05)
            assert not emulator.state.relay_closed
            status = await host.wait_for("RelayStatus", LAST_CMD_SEQ_APPLIED=seq)
            assert trio.current_time() - sent_at >= delay
            assert status.signals["RLY1_STATE"] == 1
            assert status.signals["RLY1_FEEDBACK"] == 1
            assert emulator.state.relay_closed
            assert emulator.state.last_cmd_seq_applied == seq

            # The same seq again, even with another RLY1_CMD, is a keep-alive: nothing changes.
            host.close = False
            await trio.sleep(3 * delay)
            assert emulator.state.relay_closed
            assert emulator.state.last_cmd_seq_applied == seq

            seq = host.command(close=False)
            await host.wait_for("RelayStatus", LAST_CMD_SEQ_APPLIED=seq, RLY1_STATE=0)
            nursery.cancel_scope.cancel()


async def test_force_all_off_and_sys_enable() -> None:
    with buses(2) as (plc_bus, host_bus):
        emulator = PlcEmulator(plc_bus, 3, connector=CONNECTOR, **FAST)
        host = Host(host_bus)
        async with running(emulator), trio.open_nursery() as nursery:
            await nursery.start(host.keep_alive)
            seq = host.command(close=True)
            await host.wait_for("RelayStatus", LAST_CMD_SEQ_APPLIED=seq, RLY1_STATE=1)
            # Held in the keep-alives too: a keep-alive without it in between would end it
            # before the relay has opened on a loaded machine.
            host.force_off = True
            host.send_control()
            await host.wait_for("RelayStatus", RLY1_STATE=0, FORCE_OFF_ACTIVE=1)
            assert emulator.state.force_off_active
            # Keep-alives with FORCE_ALL_OFF=0 end it; the relay stays open.
            host.force_off = False
            await host.wait_for("RelayStatus", FORCE_OFF_ACTIVE=0, RLY1_STATE=0)
            seq = host.command(close=True)
            await host.wait_for("RelayStatus", LAST_CMD_SEQ_APPLIED=seq, RLY1_STATE=1)
            # SYS_ENABLE=0 opens it too.
            host.send_control(SYS_ENABLE=0)
            await host.wait_for("RelayStatus", RLY1_STATE=0)
            nursery.cancel_scope.cancel()


async def test_watchdog_opens_relay_and_latches_until_clear_faults() -> None:
    with buses(2) as (plc_bus, host_bus):
        emulator = PlcEmulator(plc_bus, 3, connector=CONNECTOR, watchdog=0.3, **FAST)
        host = Host(host_bus)
        async with running(emulator), trio.open_nursery() as nursery:
            await nursery.start(host.keep_alive)
            seq = host.command(close=True)
            await host.wait_for("RelayStatus", LAST_CMD_SEQ_APPLIED=seq, RLY1_STATE=1)

            host.stop_keep_alive()
            await trio.sleep(0.15)
            assert emulator.state.relay_closed
            assert not emulator.state.comm_fault
            status = await host.wait_for("RelayStatus", COMM_FAULT=1)
            assert trio.current_time() - host.last_sent >= 0.3
            assert status.signals["RLY1_STATE"] == 0
            assert status.signals["FAULT_REASON"] == FAULT_RELAY_TIMEOUT

            # Traffic alone does not clear the latch, nor close the relay again.
            await nursery.start(host.keep_alive)
            await trio.sleep(0.2)
            state = emulator.state
            assert state.comm_fault
            assert state.fault_reason == FAULT_RELAY_TIMEOUT
            assert not state.relay_closed

            host.send_control(CLEAR_FAULTS=1)
            await host.wait_for("RelayStatus", COMM_FAULT=0, FAULT_REASON=FAULT_NONE)
            await trio.sleep(0.1)
            assert not emulator.state.relay_closed  # the old seq is not applied again
            seq = host.command(close=True)
            await host.wait_for("RelayStatus", LAST_CMD_SEQ_APPLIED=seq, RLY1_STATE=1)
            nursery.cancel_scope.cancel()


async def test_stuck_relay_never_acknowledges() -> None:
    with buses(2) as (plc_bus, host_bus):
        emulator = PlcEmulator(plc_bus, 3, connector=CONNECTOR, **FAST)
        host = Host(host_bus)
        async with running(emulator), trio.open_nursery() as nursery:
            await nursery.start(host.keep_alive)
            seq = host.command(close=False)
            await host.wait_for("RelayStatus", LAST_CMD_SEQ_APPLIED=seq)
            emulator.set_relay_stuck(True)
            host.command(close=True)
            frames = decoded(await host.collect(0.4))
            statuses = [f.signals for f in frames if f.message == "RelayStatus"]
            assert statuses
            assert all(s["LAST_CMD_SEQ_APPLIED"] == seq and s["RLY1_STATE"] == 0 for s in statuses)
            assert emulator.state.last_cmd_seq_applied == seq
            nursery.cancel_scope.cancel()


# --- safety inputs (exact time: autojump) --------------------------------------------------------


async def test_estop_debounce_opens_relay_and_refuses_closing(autojump_clock: Any) -> None:
    with buses(2) as (plc_bus, host_bus):
        emulator = PlcEmulator(plc_bus, 3, connector=CONNECTOR, watchdog=NO_WATCHDOG)
        host = Host(host_bus)
        async with running(emulator):
            host.seq, host.close = 1, True
            await host.deliver(emulator, *host.relay_control())
            await trio.sleep(0.1)
            assert emulator.state.relay_closed

            # A 10 ms glitch is ignored.
            emulator.set_estop(True)
            await trio.sleep(0.010)
            emulator.set_estop(False)
            await trio.sleep(0.1)
            state = emulator.state
            assert state.safety_ok and not state.estop and state.relay_closed
            assert state.fault_reason == FAULT_NONE

            # Held for 30 ms it is not: SAFETY_OK follows after 20 ms.
            host.drain()
            emulator.set_estop(True)
            await trio.sleep(0.019)
            assert emulator.state.safety_ok
            host.drain()
            await trio.sleep(0.011)
            state = emulator.state
            assert not state.safety_ok and state.estop and not state.relay_closed
            assert state.fault_reason == FAULT_ESTOP
            # Sent at once (within the 11 ms), not only with the next periodic frames.
            status = next(
                f
                for f in decoded(host.drain())
                if f.message == "RelayStatus" and f.signals["ESTOP_INPUT"] == 1
            )
            assert status.signals["RLY1_STATE"] == 0
            assert status.signals["ESTOP_INPUT"] == 1
            assert status.signals["SAFETY_OK"] == 0
            assert status.signals["FAULT_REASON"] == FAULT_ESTOP

            # Closing is refused (and not acknowledged) while the estop is pressed.
            host.seq = 2
            await host.deliver(emulator, *host.relay_control())
            await trio.sleep(0.5)
            assert not emulator.state.relay_closed
            assert emulator.state.last_cmd_seq_applied == 1

            # Released: the fault stays latched until CLEAR_FAULTS.
            emulator.set_estop(False)
            await trio.sleep(0.1)
            state = emulator.state
            assert state.safety_ok and state.fault_reason == FAULT_ESTOP
            host.seq, host.close = 3, False
            await host.deliver(emulator, *host.relay_control(CLEAR_FAULTS=1))
            await trio.sleep(0.1)
            state = emulator.state
            assert state.fault_reason == FAULT_NONE
            assert state.last_cmd_seq_applied == 3 and not state.relay_closed


async def test_earth_fault_debounced(autojump_clock: Any) -> None:
    with buses(1) as (plc_bus,):
        emulator = PlcEmulator(plc_bus, 3, connector=CONNECTOR, watchdog=NO_WATCHDOG)
        async with running(emulator):
            emulator.set_earth_fault(True)
            await trio.sleep(0.03)
            state = emulator.state
            assert state.earth_fault and not state.safety_ok and state.fault_reason == 5


# --- fault injection -----------------------------------------------------------------------------


async def test_silent_plc_sends_nothing_but_still_listens() -> None:
    with buses(2) as (plc_bus, host_bus):
        emulator = PlcEmulator(plc_bus, 3, connector=CONNECTOR, **FAST)
        host = Host(host_bus)
        async with running(emulator):
            await host.wait_for("RelayStatus")
            emulator.set_silent(True)
            seq = host.command(close=True)
            assert await host.collect(0.3) == []
            assert emulator.state.last_cmd_seq_applied == seq
            emulator.set_silent(False)
            await host.wait_for("RelayStatus", LAST_CMD_SEQ_APPLIED=seq)


async def test_bad_crc_and_foreign_frames_are_ignored_and_counted() -> None:
    with buses(2) as (plc_bus, host_bus):
        emulator = PlcEmulator(plc_bus, 3, connector=CONNECTOR, **FAST)
        host = Host(host_bus)
        async with running(emulator):
            host.seq, host.close = 7, True
            can_id, data = host.relay_control()
            host.send_raw(can_id, data[:7] + bytes([data[7] ^ 0x55]))  # wrong, non-zero
            other_id, other = codec.encode(
                "RelayControl",
                4,
                {
                    "RLY1_CMD": 1,
                    "SYS_ENABLE": 1,
                    "FORCE_ALL_OFF": 0,
                    "CLEAR_FAULTS": 0,
                    "CMD_SEQ": 9,
                    "RLY_ENABLE_MASK": 1,
                    "RLY_MODE": 0,
                    "PULSE_MS": 0,
                },
            )
            host.send_raw(other_id, other)
            with trio.fail_after(2):
                await poll_until(lambda: emulator.stats.rx_frames >= 2)
            await trio.sleep(0.1)
            stats = emulator.stats
            assert stats.crc_errors == 1
            assert stats.ignored == 1
            assert not emulator.state.relay_closed
            assert emulator.state.last_cmd_seq_applied == 0

            host.send_raw(can_id, data)
            await host.wait_for("RelayStatus", LAST_CMD_SEQ_APPLIED=7, RLY1_STATE=1)


async def test_corrupt_next_crc_spoils_exactly_one_frame() -> None:
    with buses(2) as (plc_bus, host_bus):
        emulator = PlcEmulator(plc_bus, 3, connector=CONNECTOR, **FAST)
        host = Host(host_bus)
        async with running(emulator):
            await host.wait_for("RelayStatus")
            host.drain()
            emulator.corrupt_next_crc()
            frames = await host.collect(0.2)
            failures = [f for f in frames if isinstance(f, codec.CrcError)]
            assert len(failures) == 1
            assert len(frames) > 5


async def test_meter_stale_freezes_values(autojump_clock: Any) -> None:
    with buses(2) as (plc_bus, host_bus):
        emulator = PlcEmulator(plc_bus, 3, connector=CONNECTOR, watchdog=NO_WATCHDOG)
        host = Host(host_bus)
        async with running(emulator):
            emulator.plug()
            host.seq, host.close = 1, True
            await host.deliver(emulator, *host.relay_control())
            await trio.sleep(1)
            emulator.set_meter_stale(True)
            frozen = emulator.state.meter
            await trio.sleep(60)
            assert emulator.state.meter == frozen
            meter = [f for f in decoded(host.drain()) if f.message == "EnergyMeterData"][-1]
            assert meter.signals["DATA_STALE"] == 1
            emulator.set_meter_stale(False)
            assert emulator.state.meter.energy_wh > frozen.energy_wh + 900  # 60 kW for 60 s


# --- several PLCs --------------------------------------------------------------------------------


async def test_two_emulators_on_one_channel_are_independent() -> None:
    with buses(3) as (bus0, bus1, host_bus):
        plc0 = PlcEmulator(bus0, 0, connector=CONNECTOR, **FAST)
        plc1 = PlcEmulator(bus1, 1, connector=CONNECTOR, **FAST)
        host0, host1 = Host(host_bus, 0), Host(host_bus, 1)
        async with running(plc0, plc1):
            seq = host0.command(close=True)
            await host0.wait_for("RelayStatus", LAST_CMD_SEQ_APPLIED=seq, RLY1_STATE=1)
            assert plc0.state.relay_closed
            assert not plc1.state.relay_closed
            assert plc1.state.last_cmd_seq_applied == 0
            assert plc1.stats.ignored >= 1
            frames = decoded(await host1.collect(0.2))
            assert {f.plc_id for f in frames} == {0, 1}
            plc1_status = [f for f in frames if f.message == "RelayStatus" and f.plc_id == 1]
            assert plc1_status and all(f.signals["RLY1_STATE"] == 0 for f in plc1_status)


# --- energy and configuration --------------------------------------------------------------------


async def test_energy_integrates_while_plugged_and_relay_closed(autojump_clock: Any) -> None:
    with buses(2) as (plc_bus, host_bus):
        emulator = PlcEmulator(plc_bus, 3, connector=CONNECTOR, watchdog=NO_WATCHDOG, period=1.0)
        host = Host(host_bus)
        async with running(emulator):
            start = emulator.state.meter.energy_wh
            emulator.plug(EvModel(soc=20.0, max_current_a=250.0))
            await trio.sleep(10)  # relay open: nothing flows
            assert emulator.state.meter.energy_wh == start

            host.seq, host.close = 1, True
            await host.deliver(emulator, *host.relay_control())
            await poll_until(lambda: emulator.state.relay_closed)
            t0, e0 = trio.current_time(), emulator.state.meter.energy_wh
            await trio.sleep(60)
            t1, e1 = trio.current_time(), emulator.state.meter.energy_wh
            # 200 A at 374 V would be 74.8 kW: the connector's 60 kW binds.
            assert e1 - e0 == pytest.approx(60_000 * (t1 - t0) / 3600, rel=1e-9)

            frames = decoded(host.drain())
            meters = [f.signals for f in frames if f.message == "EnergyMeterData"]
            instant = [m for m in meters if m["MUX"] == 0][-1]
            assert instant["ACTIVE_POWER_0p01kW"] == 6000
            volts = instant["VOLTAGE_0p1V"] / 10
            assert instant["CURRENT_0p01A"] == pytest.approx(60_000 / volts * 100, abs=2)
            energy = [m for m in meters if m["MUX"] == 1][-1]["IMPORT_ENERGY_0p1kWh"]
            assert math.floor(e0 / 100) < energy <= math.floor(e1 / 100)
            assert all(m["DATA_STALE"] == 0 and m["METER_OK"] == 1 for m in meters)
            session = [f for f in frames if f.message == "ChargingSession"][-1].signals
            assert session["SOC_PCT"] == math.floor(emulator.state.soc or 0)


async def test_config_current_limit_acknowledged_and_enforced() -> None:
    with buses(2) as (plc_bus, host_bus):
        emulator = PlcEmulator(plc_bus, 3, connector=CONNECTOR, **FAST)
        host = Host(host_bus)

        def config(param: int, op: int, value: int) -> None:
            host.send_raw(
                *codec.encode(
                    "ConfigCmd", 3, {"CFG_PARAM_ID": param, "CFG_OP": op, "CFG_VALUE": value}
                )
            )

        async with running(emulator), trio.open_nursery() as nursery:
            config(1, 1, 1000)  # 100.0 A
            ack = await host.wait_for("ConfigAck")
            assert ack.signals == {
                "CFG_PARAM_ID": 1,
                "ACK_STATUS": ACK_OK,
                "PLC_ID": 3,
                "CFG_VALUE": 1000,
            }
            config(1, 0, 0)
            ack = await host.wait_for("ConfigAck")
            assert ack.signals["ACK_STATUS"] == ACK_OK and ack.signals["CFG_VALUE"] == 1000
            config(9, 1, 5)
            ack = await host.wait_for("ConfigAck")
            assert ack.signals["CFG_PARAM_ID"] == 9
            assert ack.signals["ACK_STATUS"] == ACK_UNKNOWN_PARAM
            config(1, 1, 2001)  # above the connector's 200 A
            ack = await host.wait_for("ConfigAck")
            assert ack.signals["ACK_STATUS"] == ACK_OUT_OF_RANGE
            assert ack.signals["CFG_VALUE"] == 1000
            assert emulator.state.current_limit_a == 100.0

            emulator.plug(EvModel(soc=20.0, max_current_a=250.0))
            await nursery.start(host.keep_alive)
            seq = host.command(close=True)
            await host.wait_for("RelayStatus", LAST_CMD_SEQ_APPLIED=seq, RLY1_STATE=1)
            meter = await host.wait_for("EnergyMeterData", MUX=0, within=1.0)
            assert meter.signals["CURRENT_0p01A"] == 10000  # 100 A at 374 V: under 60 kW

            config(2, 1, 20_000)  # 20 kW
            await host.wait_for("ConfigAck", CFG_PARAM_ID=2, ACK_STATUS=ACK_OK)
            meter = await host.wait_for("EnergyMeterData", MUX=0, ACTIVE_POWER_0p01kW=2000)
            volts = meter.signals["VOLTAGE_0p1V"] / 10
            assert meter.signals["CURRENT_0p01A"] == pytest.approx(20_000 / volts * 100, abs=2)
            nursery.cancel_scope.cancel()


# --- lifetime ------------------------------------------------------------------------------------


async def test_clean_shutdown_leaves_no_thread_and_the_bus_open() -> None:
    with buses(2) as (plc_bus, host_bus):
        before = threading.active_count()
        emulator = PlcEmulator(plc_bus, 3, connector=CONNECTOR, **FAST)
        host = Host(host_bus)
        async with trio.open_nursery() as nursery:
            await nursery.start(emulator.run)
            assert threading.active_count() == before + 1  # the Notifier's reader
            await host.wait_for("RelayStatus")
            nursery.cancel_scope.cancel()
        assert threading.active_count() == before
        with pytest.raises(RuntimeError):
            emulator.set_estop(True)
        # The bus is the caller's: still open, and a new emulator can use it.
        plc_bus.send(can.Message(arbitration_id=0x163, data=bytes(8), is_extended_id=True))
        async with running(PlcEmulator(plc_bus, 3, connector=CONNECTOR, **FAST)):
            await host.wait_for("RelayStatus")
        assert threading.active_count() == before
