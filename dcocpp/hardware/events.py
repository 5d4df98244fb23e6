"""One gun's hardware events on their way to its connector's inbox, never holding back the
backend that sends them.

A backend's reader serves every gun (the PLC driver reads one bus for all of them): waiting
for one slow connector's inbox would hold back the frames of every other gun, their safety
inputs included. `CoalescingChannel.send` never waits for the connector. An event goes
straight into the inbox while it has room and nothing is held back (so events keep their place
among the connector's other inbox items); otherwise it is held, and `run` forwards what is held,
in order, as the inbox makes room.

What is held is coalesced per kind of event (the cable, the EV's demand, the relay, each fault
kind), whose events alternate between two states: at most three of a kind are held, and a
fourth cancels the two before it (raised, cleared, raised, cleared -> raised, cleared). So the
connector still hears of every kind of change that happened meanwhile (a fault that came and
went while the gun was busy is still raised and cleared) and ends in the latest state, while a
flapping input holds at most 3 events per kind: a few dozen per gun, however long it flaps.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import trio

from dcocpp.concurrency import WakeUp
from dcocpp.hardware.interface import (
    CablePlugged,
    CableUnplugged,
    EvDemand,
    FaultCleared,
    FaultRaised,
    HardwareEvent,
    RelayState,
)

__all__ = ["HELD_PER_KIND", "CoalescingChannel"]

HELD_PER_KIND = 3


def _kind_and_state(event: HardwareEvent) -> tuple[Hashable, object]:
    """Which state an event changes, and to what."""
    match event:
        case CablePlugged():
            return "cable", True
        case CableUnplugged():
            return "cable", False
        case EvDemand(requesting=requesting):
            return "demand", requesting
        case RelayState(closed=closed):
            return "relay", closed
        case FaultRaised(kind=kind):
            return ("fault", kind), True
        case FaultCleared(kind=kind):
            return ("fault", kind), False
    return type(event), event


class CoalescingChannel:
    """Sends one gun's `HardwareEvent`s into `inbox` (the connector's) without waiting for it
    (see the module docstring); `run` forwards what had to be held. A backend uses it as it
    would a trio memory send channel: `send`, `close`. After `close`, `run` forwards what is
    still held, closes `inbox` and returns."""

    def __init__(self, inbox: trio.MemorySendChannel[Any]):
        self._inbox = inbox
        self._held: list[HardwareEvent] = []
        self._forwarding = False  # `run` has taken a held event and waits for inbox room
        self._closed = False
        self._wake = WakeUp()

    @property
    def held(self) -> int:
        """Events waiting for room in the inbox."""
        return len(self._held)

    async def send(self, value: HardwareEvent) -> None:
        """Pass `value` on or hold it; never waits for the connector. A checkpoint, like a
        channel's send. Raises trio.ClosedResourceError after `close`, and
        trio.BrokenResourceError once the connector's inbox is closed."""
        self.send_nowait(value)
        await trio.lowlevel.checkpoint()

    def send_nowait(self, value: HardwareEvent) -> None:
        if self._closed:
            raise trio.ClosedResourceError("hardware events closed")
        if not (self._held or self._forwarding):
            try:
                self._inbox.send_nowait(value)
                return
            except trio.WouldBlock:
                pass
        self._hold(value)
        self._wake.set()

    def _hold(self, event: HardwareEvent) -> None:
        kind, state = _kind_and_state(event)
        same = [i for i, held in enumerate(self._held) if _kind_and_state(held)[0] == kind]
        if same and _kind_and_state(self._held[same[-1]])[1] == state:
            self._held[same[-1]] = event  # that state still (a new detail): the newest says it
            return
        if len(same) >= HELD_PER_KIND:
            # x, y, x + y: the last two cancel out; the connector still sees x then y.
            del self._held[same[-1]]
            del self._held[same[-2]]
        self._held.append(event)

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        """Forward held events into the inbox, in order, until closed and nothing is held
        (or the connector's inbox is closed)."""
        try:
            while True:
                while self._held:
                    event = self._held.pop(0)
                    self._forwarding = True
                    try:
                        await self._inbox.send(event)
                    finally:
                        self._forwarding = False
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
        except trio.BrokenResourceError:
            return  # the connector is gone: nobody to tell
        finally:
            self._inbox.close()
