"""Handing frames from python-can's reader thread to trio (dcocpp/hardware/plc/bridge.py):
bounded however far the bus runs ahead of trio, every frame lost counted."""

from __future__ import annotations

import threading
from typing import Any

import can
import trio
import trio.testing

from dcocpp.hardware.plc.bridge import RX_QUEUE, TrioBridge


async def test_a_bus_faster_than_trio_waits_in_a_bounded_hand_over() -> None:
    """Trio is busy (blocked) while the bus thread delivers ten queues' worth of frames: at
    most RX_QUEUE wait for trio; the others are dropped in the bus thread and counted once
    trio runs again; the frames kept are the first ones, in order."""
    send, receive = trio.open_memory_channel[Any](RX_QUEUE)
    overruns = 0

    def overrun() -> None:
        nonlocal overruns
        overruns += 1

    bridge = TrioBridge(trio.lowlevel.current_trio_token(), send, overrun)

    def flood() -> None:
        for n in range(10 * RX_QUEUE):
            bridge.on_message_received(can.Message(arbitration_id=n))

    thread = threading.Thread(target=flood)
    thread.start()
    thread.join()  # in trio's thread: trio takes nothing meanwhile
    assert bridge.waiting == RX_QUEUE
    await trio.testing.wait_all_tasks_blocked()
    frames = []
    while True:
        try:
            frames.append(receive.receive_nowait())
        except trio.WouldBlock:
            break
    assert [frame.arbitration_id for frame in frames] == list(range(RX_QUEUE))
    assert overruns == 9 * RX_QUEUE and bridge.waiting == 0
    # A failure of the reader is never dropped: it ends the reading.
    bridge.on_error(can.CanError("adapter unplugged"))
    await trio.testing.wait_all_tasks_blocked()
    assert isinstance(receive.receive_nowait(), can.CanError)
