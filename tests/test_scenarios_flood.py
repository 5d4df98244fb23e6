"""No floods: an input that flaps a thousand times a second costs the central system a few
StatusNotifications a second, and no queue between the hardware and the central system grows
with it (issue 12, item 8). Through the whole station, on both backends, on virtual time."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import attrs
import can
import pytest
import trio
from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action

from dcocpp.connector.task import FAULT_LINES_PER_WINDOW, FAULT_LOG_WINDOW
from dcocpp.hardware.events import HELD_PER_KIND
from dcocpp.hardware.interface import FaultKind
from dcocpp.hardware.plc import codec
from dcocpp.hardware.plc.bridge import read_frames
from dcocpp.hardware.plc.driver import RX_GATHER_S
from dcocpp.hardware.plc.emulated import InProcessPlcHardware
from dcocpp.hardware.plc.virtualbus import SelectableVirtualBus
from dcocpp.ocpp.session import STATUS_BURST, STATUS_INTERVAL, STATUS_QUEUE_LIMIT
from dcocpp.ocpp.statuses import allowed_transitions
from tests.csms import FakeCsms
from tests.station_harness import Harness, charger_config, running_station

pytestmark = pytest.mark.usefixtures("backend")

FLAP_PERIOD = 0.001  # the input changes every millisecond (1 kHz)
FLAP_SECONDS = 8.0
SETTLE = 10.0  # after the flapping, for the last status to go out
PERIODIC_FRAMES = 0.1  # the PLC's period: two clear frames in a row release the host at most then
ANSWER_DELAY = 0.05  # the central system answers a StatusNotification this much later


class SlowCsms(FakeCsms):
    """Takes ANSWER_DELAY to answer a StatusNotification: 50 flips happen meanwhile."""

    @on(Action.status_notification)
    async def on_status(self, **payload: Any) -> Any:
        await trio.sleep(ANSWER_DELAY)
        self._record("StatusNotification", payload)
        return call_result.StatusNotification()


@attrs.define
class Peaks:
    """The most each queue held while the input flapped."""

    statuses: int = 0  # StatusNotifications of connector 1 not sent yet
    held_events: int = 0  # hardware events waiting for room in connector 1's inbox

    def sample(self, h: Harness) -> None:
        session = h.station.session
        assert session is not None
        self.statuses = max(self.statuses, len(session._status_queue.get(1, ())))
        self.held_events = max(self.held_events, h.station.hardware_events[1].held)


@attrs.define
class BusLog:
    """PLC 0's safety reports and the host's RelayControl frames to it, in bus order."""

    frames: list[tuple[float, str, dict[str, Any]]] = attrs.field(factory=list)

    async def record(self, channel: str, *, task_status: trio.TaskStatus[None]) -> None:
        bus = SelectableVirtualBus(channel=channel)
        wanted = {codec.frame_id(name, 0): name for name in _WATCHED}

        async def handle(msg: can.Message) -> None:
            name = wanted.get(msg.arbitration_id)
            if name is not None:
                signals = codec.decode(msg.arbitration_id, bytes(msg.data), scaling=False)
                self.frames.append((trio.current_time(), name, dict(signals.signals)))

        try:
            await read_frames(bus, handle, on_overrun=lambda: None, task_status=task_status)
        finally:
            bus.shutdown()

    def trips(self, release_frames: int = 2) -> list[int]:
        """Indexes of the PLC frames at which the host trips, by the driver's documented rule:
        the first frame reporting the emergency stop trips it, `release_frames` consecutive
        frames reporting it clear release it."""
        trips, tripped, clear = [], False, 0
        for index, (_, name, signals) in enumerate(self.frames):
            if name == "RelayControl":
                continue
            if signals["ESTOP_INPUT" if name == "RelayStatus" else "ESTOP"]:
                if not tripped:
                    trips.append(index)
                tripped, clear = True, 0
            elif tripped:
                clear += 1
                tripped = clear < release_frames
        return trips


_WATCHED = ("RelayStatus", "SafetySwitchStatus", "RelayControl")


async def flap(h: Harness, peaks: Peaks) -> None:
    """Emergency stop on connector 1, on and off every FLAP_PERIOD for FLAP_SECONDS; off at
    the end."""
    for flip in range(round(FLAP_SECONDS / FLAP_PERIOD)):
        await h.hardware.set_fault(1, FaultKind.EMERGENCY_STOP, flip % 2 == 0)
        await trio.sleep(FLAP_PERIOD)
        peaks.sample(h)
    await h.hardware.set_fault(1, FaultKind.EMERGENCY_STOP, False)


async def test_a_safety_input_flapping_at_1_khz_costs_a_few_status_notifications_a_second(
    autojump_clock: Any, tmp_path: Path, backend: str
) -> None:
    config = charger_config(tmp_path)
    hardware = None
    if backend == "plc":
        # A PLC that passes every bounce of its input on (its 20 ms debounce off).
        hardware = InProcessPlcHardware(
            config.connectors,
            config.charge_point.can_interface,
            emulator_options={"debounce": 0.0},
        )
    peaks = Peaks()
    bus = BusLog()
    csms = SlowCsms()
    async with running_station(config, csms, hardware=hardware, simulation=hardware) as h:
        await h.booted()
        if backend == "plc":
            await h.nursery.start(bus.record, config.charge_point.can_interface)
        other = await h.start_charging(2, "TAG-OTHER")
        since = h.csms.mark()
        started = trio.current_time()
        await flap(h, peaks)
        flapped = trio.current_time() - started
        await trio.sleep(SETTLE)
        assert h.connector(1).machine.status == "Available"
        assert h.transaction_id(2) == other  # the other gun charged on, undisturbed
    ones = [p for p in h.csms.received("StatusNotification", since) if p["connector_id"] == 1]
    # A few a second: the burst, then one per STATUS_INTERVAL, however fast the input flaps.
    assert 2 <= len(ones) <= STATUS_BURST + (flapped + SETTLE) / STATUS_INTERVAL
    assert len(ones) <= 3 * (flapped + SETTLE)
    assert ones[-1]["status"] == "Available" and ones[-1]["error_code"] == "NoError"
    table = allowed_transitions("connector")
    steps = itertools.pairwise(["Available", *(p["status"] for p in ones)])
    assert all(after in table[before] for before, after in steps)
    assert not [p for p in h.csms.received("StatusNotification", since) if p["connector_id"] == 2]
    # Bounded all along: the statuses not sent yet, the events waiting for the connector.
    assert peaks.statuses <= STATUS_QUEUE_LIMIT
    assert peaks.held_events <= 2 * HELD_PER_KIND
    if backend == "plc":
        trips = bus.trips()
        # Tripped and released again and again (released where two clear frames follow).
        assert len(trips) > FLAP_SECONDS / (4 * PERIODIC_FRAMES)
        for trip in trips:
            # At once, the host forces every relay of that PLC off.
            at = bus.frames[trip][0]
            sent, _, signals = next(f for f in bus.frames[trip:] if f[1] == "RelayControl")
            assert signals["FORCE_ALL_OFF"] == 1 and sent - at <= 2 * RX_GATHER_S, at


async def test_a_flapping_fault_costs_a_few_log_lines_and_the_last_says_how_it_ends(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, backend: str
) -> None:
    """The operator's log is a bounded resource too: at 1 kHz the fault is said a few times
    per window, then one line counts the rest and says what the fault is at the end."""
    caplog.set_level(logging.INFO, logger="dcocpp.connector.task")
    config = charger_config(tmp_path)
    hardware = None
    if backend == "plc":
        hardware = InProcessPlcHardware(
            config.connectors,
            config.charge_point.can_interface,
            emulator_options={"debounce": 0.0},  # every bounce on the bus
        )
    async with running_station(config, hardware=hardware, simulation=hardware) as h:
        await h.booted()
        await flap(h, Peaks())
        await trio.sleep(FAULT_LOG_WINDOW + 1)
    lines = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("connector 1: fault")
    ]
    windows = FLAP_SECONDS / FAULT_LOG_WINDOW + 1
    assert len(lines) <= windows * (FAULT_LINES_PER_WINDOW + 1), lines
    assert lines[-1].startswith("connector 1: fault estop changed ")
    assert lines[-1].endswith("; it is cleared")
    if backend == "simulated":  # every flip reaches the connector: all are accounted for
        summaries = [line for line in lines if " changed " in line]
        counted = sum(int(line.split(" changed ")[1].split()[0]) for line in summaries)
        assert counted + len(lines) - len(summaries) == FLAP_SECONDS / FLAP_PERIOD


async def test_meter_values_triggered_faster_than_the_central_system_answers_do_not_pile_up(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """A central system sends TriggerMessage(MeterValues) a hundred times while it holds
    back its answers to MeterValues: on the idle gun one is in flight and the newest waits;
    on the charging gun one triggered MeterValues waits in the outbox and answers them all."""
    keys = {"MeterValueSampleInterval": 0, "ClockAlignedDataInterval": 0}
    async with running_station(charger_config(tmp_path), keys=keys) as h:
        await h.booted()
        tx_id = await h.start_charging(2, "TAG-TRIGGER")
        outbox = h.station.outbox
        assert outbox is not None
        h.csms.hold("MeterValues")
        for _ in range(100):
            for connector_id in (1, 2):
                result = await h.csms_call(
                    call.TriggerMessage(requested_message="MeterValues", connector_id=connector_id)
                )
                assert result.status == "Accepted"
            assert len(outbox) <= 1
        await h.wait_until(lambda: len(h.csms.waiting) == 2)
        since = h.csms.mark()
        h.csms.release("MeterValues")
        await trio.sleep(10)
    delivered = h.csms.received("MeterValues", since)
    idle = [p for p in delivered if p["connector_id"] == 1]
    charging = [p for p in delivered if p["connector_id"] == 2]
    assert len(idle) == 2  # the one held, then the newest of the rest
    assert [p["transaction_id"] for p in charging] == [tx_id]
