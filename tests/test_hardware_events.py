"""Hardware events on their way to a connector (dcocpp/hardware/events.py): never holding back
the backend, bounded however long an input flaps, and still telling the connector every kind
of change and the latest state. Last, the PLC backend with a connector that reads nothing:
another gun's emergency stop is still acted on at once."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import trio
import trio.testing

from dcocpp.config import ConnectorConfig
from dcocpp.hardware.events import HELD_PER_KIND, CoalescingChannel
from dcocpp.hardware.interface import (
    CablePlugged,
    CableUnplugged,
    EvDemand,
    FaultCleared,
    FaultKind,
    FaultRaised,
    HardwareEvent,
    RelayState,
)
from dcocpp.hardware.plc import codec
from dcocpp.hardware.plc.driver import RX_GATHER_S, PlcBackend
from dcocpp.hardware.plc.emulator import DEBOUNCE_S, PlcEmulator
from dcocpp.hardware.plc.virtualbus import SelectableVirtualBus

ESTOP = FaultKind.EMERGENCY_STOP
RAISED = FaultRaised(ESTOP, "PLC 0: emergency stop")
CLEARED = FaultCleared(ESTOP)


def drain(receive: trio.MemoryReceiveChannel[Any]) -> list[Any]:
    """What the inbox holds now (until its end)."""
    items = []
    while True:
        try:
            items.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return items


async def test_an_event_goes_straight_into_an_inbox_with_room_in_its_place() -> None:
    send, receive = trio.open_memory_channel[Any](8)
    channel = CoalescingChannel(send.clone())
    await send.send("request before")
    await channel.send(CablePlugged())
    await send.send("request after")
    assert drain(receive) == ["request before", CablePlugged(), "request after"]
    assert channel.held == 0


async def test_a_connector_that_reads_nothing_never_holds_back_the_sender(
    autojump_clock: Any,
) -> None:
    """The inbox is full and nobody reads it: 10,000 events of a flapping emergency stop
    (with the relay opening each time) are sent without waiting, and at most three of each
    kind are held."""
    send, receive = trio.open_memory_channel[Any](1)
    channel = CoalescingChannel(send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel.run)
        await channel.send(CablePlugged())  # fills the inbox
        started = trio.current_time()
        for flip in range(5_000):
            await channel.send(RAISED if flip % 2 == 0 else CLEARED)
            await channel.send(RelayState(flip % 2 != 0))
            assert channel.held <= 2 * HELD_PER_KIND
        assert trio.current_time() == started  # never waited
        await channel.send(CLEARED)  # the same state as the last held one: replaces it
        await channel.send(EvDemand(True))
        # The connector reads again: what it hears, in order.
        heard: list[HardwareEvent] = [await receive.receive()]
        while channel.held or len(heard) < 3:
            heard.append(await receive.receive())
        await trio.testing.wait_all_tasks_blocked()
        heard += drain(receive)
        nursery.cancel_scope.cancel()
    assert heard[0] == CablePlugged()
    faults = [e for e in heard if isinstance(e, FaultRaised | FaultCleared)]
    relays = [e for e in heard if isinstance(e, RelayState)]
    # Every kind of change is still heard (raised and cleared, opened and closed), alternating,
    # and each ends in the latest state.
    assert faults[0] == RAISED and faults[-1] == CLEARED and len(faults) <= HELD_PER_KIND + 1
    assert all(type(a) is not type(b) for a, b in itertools.pairwise(faults))
    assert relays[-1] == RelayState(True) and len(relays) <= HELD_PER_KIND + 1
    assert all(a != b for a, b in itertools.pairwise(relays))
    assert heard[-1] == EvDemand(True)


async def test_a_fault_that_came_and_went_while_held_is_still_raised_and_cleared() -> None:
    send, receive = trio.open_memory_channel[Any](1)
    channel = CoalescingChannel(send)
    await channel.send(CableUnplugged())  # fills the inbox
    for event in (RAISED, CLEARED, RAISED, CLEARED, RAISED, CLEARED):
        await channel.send(event)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel.run)
        heard = [await receive.receive() for _ in range(3)]
        channel.close()
    assert heard == [CableUnplugged(), RAISED, CLEARED]
    assert drain(receive) == []


async def test_after_close_the_held_events_are_forwarded_and_the_inbox_closed() -> None:
    send, receive = trio.open_memory_channel[Any](1)
    channel = CoalescingChannel(send)
    await channel.send(CablePlugged())
    await channel.send(EvDemand(True))
    channel.close()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel.run)
        assert [event async for event in receive] == [CablePlugged(), EvDemand(True)]
    try:
        await channel.send(CableUnplugged())
    except trio.ClosedResourceError:
        pass
    else:
        raise AssertionError("a closed channel took an event")


def _connector(cid: int, plc_id: int) -> ConnectorConfig:
    return ConnectorConfig(
        id=cid, plc_id=plc_id, label=f"gun {cid}", max_current_a=200.0, max_power_w=75_000.0
    )


async def test_a_connector_that_reads_nothing_does_not_delay_another_guns_safety_trip(
    autojump_clock: Any,
) -> None:
    """Gun 1's connector is stuck and its emergency stop bounces for seconds: the PLC
    driver's single reader goes on reading, and gun 2's emergency stop forces its PLC's
    relays off at once and reaches gun 2's connector."""
    channel_name = f"events-{uuid.uuid4().hex}"
    connectors = [_connector(1, 0), _connector(2, 1)]
    buses = [SelectableVirtualBus(channel=channel_name) for _ in range(3)]
    emulators = [
        PlcEmulator(bus, c.plc_id, connector=c) for bus, c in zip(buses, connectors, strict=False)
    ]
    backend = PlcBackend(connectors, bus_factory=lambda: SelectableVirtualBus(channel=channel_name))
    stuck_send, _stuck = trio.open_memory_channel[Any](1)
    live_send, live = trio.open_memory_channel[Any](64)
    events = {1: CoalescingChannel(stuck_send), 2: CoalescingChannel(live_send)}
    listener = buses[2]
    try:
        async with trio.open_nursery() as nursery:
            for emulator in emulators:
                await nursery.start(emulator.run)
            for channel in events.values():
                nursery.start_soon(channel.run)
            await nursery.start(backend.run, events)
            await trio.sleep(1)
            for flip in range(100):  # each bounce outlasts the PLC's own debounce
                emulators[0].set_estop(flip % 2 == 0)
                await trio.sleep(2 * DEBOUNCE_S)
                assert events[1].held <= 2 * HELD_PER_KIND
            drain(live)
            while listener.recv(0) is not None:
                pass
            emulators[1].set_estop(True)
            tripped_at = trio.current_time() + DEBOUNCE_S
            forced_at = None
            with trio.fail_after(1):
                while forced_at is None:
                    await trio.sleep(0.001)
                    while (msg := listener.recv(0)) is not None:
                        if msg.arbitration_id != codec.frame_id("RelayControl", 1):
                            continue
                        signals = codec.decode(msg.arbitration_id, bytes(msg.data)).signals
                        if signals["FORCE_ALL_OFF"]:
                            forced_at = trio.current_time()
            assert forced_at - tripped_at <= 2 * RX_GATHER_S + 0.002
            with trio.fail_after(1):
                while await live.receive() != FaultRaised(ESTOP, "PLC 1: emergency stop"):
                    pass
            nursery.cancel_scope.cancel()
    finally:
        for bus in buses:
            bus.shutdown()


def test_held_events_are_bounded_per_kind() -> None:
    """Every kind of event coalesces on its own: a dozen kinds flapping at once hold at most
    three each."""
    send, _receive = trio.open_memory_channel[Any](0)
    channel = CoalescingChannel(send)
    kinds = list(FaultKind)
    for flip in range(1_000):
        for kind in kinds:
            channel.send_nowait(FaultRaised(kind) if flip % 2 == 0 else FaultCleared(kind))
        channel.send_nowait(CablePlugged() if flip % 2 == 0 else CableUnplugged())
        channel.send_nowait(EvDemand(flip % 2 == 0))
        channel.send_nowait(RelayState(flip % 2 == 0))
    assert channel.held <= HELD_PER_KIND * (len(kinds) + 3)
