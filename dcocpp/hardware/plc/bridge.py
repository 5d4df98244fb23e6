"""Reading a python-can bus from trio: the one reader both ends of the PLC bus use.

A bus with a file descriptor (socketcan, `SelectableVirtualBus`) is waited on with
`trio.lowlevel.wait_readable` and drained with `recv(0)`, which never blocks: no thread at all.

A bus without one (python-can's plain `virtual`, most vendor interfaces) can only be read by
blocking in `recv`, so a `can.Notifier` thread reads it and `TrioBridge` hands each frame (or the
reader's failure) to trio with `run_sync_soon` into a bounded memory channel, counting what does
not fit rather than blocking the bus thread. The hand-over is bounded too: while RX_QUEUE frames
wait in trio's queue of callbacks (trio is busy), further frames are dropped in the bus thread
and counted, so a bus faster than trio cannot grow that queue without limit. A Notifier rather
than `trio.to_thread.run_sync(bus.recv)`: its thread is ours to stop and join, so when the reader
ends no thread is left behind (trio's worker cache would keep idle threads), and a cancelled
reader does not abandon a thread blocked in `recv`.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

import can
import trio

__all__ = ["NOTIFIER_POLL_S", "RX_QUEUE", "BusReadError", "TrioBridge", "read_frames"]

RX_QUEUE = 256  # frames the Notifier thread may be ahead of trio before it drops (counted)
NOTIFIER_POLL_S = 0.02  # the reader thread's recv timeout: bounds the join on shutdown


class BusReadError(Exception):
    """Reading the bus failed; `__cause__` is what python-can raised. Callers translate it
    into their own layer's error."""


class TrioBridge(can.Listener):
    """Runs in the Notifier's thread: hands frames (and a reader failure) to trio."""

    def __init__(
        self,
        token: trio.lowlevel.TrioToken,
        send: trio.MemorySendChannel[can.Message | Exception],
        on_overrun: Callable[[], None],
    ):
        self._token = token
        self._send = send
        self._on_overrun = on_overrun
        self.closed = False  # set by the owner when its reader ends; late frames are dropped
        self._lock = threading.Lock()
        self._waiting = 0  # frames posted to trio, not delivered yet
        self._lost = 0  # frames dropped in the bus thread, not counted by trio yet

    @property
    def waiting(self) -> int:
        """Frames handed to trio that it has not taken yet (at most RX_QUEUE)."""
        return self._waiting

    def on_message_received(self, msg: can.Message) -> None:
        with self._lock:
            if self._waiting >= RX_QUEUE:
                self._lost += 1  # counted by trio with the next frame it takes
                return
            self._waiting += 1
        self._post(msg)

    def on_error(self, exc: Exception) -> None:
        with self._lock:
            self._waiting += 1
        self._post(exc)  # never dropped: the reader's end

    def _post(self, item: can.Message | Exception) -> None:
        if self.closed:
            return
        try:
            self._token.run_sync_soon(self._deliver, item)
        except trio.RunFinishedError:
            self.closed = True

    def _deliver(self, item: can.Message | Exception) -> None:  # in trio's thread
        with self._lock:
            self._waiting -= 1
            lost, self._lost = self._lost, 0
        for _ in range(lost):
            self._on_overrun()
        if self.closed:
            return
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self._on_overrun()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            # The owner closed its end before marking us closed: a late frame, dropped.
            pass


def _fileno(bus: can.BusABC) -> int:
    try:
        return bus.fileno()
    except NotImplementedError:
        return -1


async def read_frames(
    bus: can.BusABC,
    handle: Callable[[can.Message], Awaitable[None]],
    *,
    on_overrun: Callable[[], None],
    gather: float = 0.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Call `handle` for every frame `bus` receives, in order, until cancelled;
    `task_status.started()` once frames are being read. Raises BusReadError when the bus
    fails. `on_overrun` counts frames the Notifier thread had to drop (thread path only).
    Never closes the bus; on the thread path the thread is stopped and joined on the way out
    (blocking trio for at most one NOTIFIER_POLL_S).

    `gather` (fd path): after a burst, wait this long before looking again, so that a busy
    bus is read in batches (one wake-up per `gather` instead of one per frame, like a NIC's
    interrupt coalescing); a frame on a quiet bus is still handled at once."""
    fd = _fileno(bus)
    if fd >= 0:
        task_status.started()
        busy = False
        while True:
            if busy and gather > 0:
                # Frames came last time: let more gather, then drain without asking epoll
                # (one wake-up per `gather` while the bus is busy, not two).
                await trio.sleep(gather)
            else:
                await trio.lowlevel.wait_readable(fd)
            busy = False
            while True:
                try:
                    msg = bus.recv(0)
                except can.CanError as exc:
                    raise BusReadError(str(exc) or type(exc).__name__) from exc
                if msg is None:
                    break
                busy = True
                await handle(msg)
    token = trio.lowlevel.current_trio_token()
    send, receive = trio.open_memory_channel[can.Message | Exception](RX_QUEUE)
    bridge = TrioBridge(token, send, on_overrun)
    notifier = can.Notifier(bus, [bridge], timeout=NOTIFIER_POLL_S)
    try:
        task_status.started()
        async for item in receive:
            if isinstance(item, Exception):
                # The Notifier's thread has ended: this bus reads nothing more.
                raise BusReadError(str(item) or type(item).__name__) from item
            await handle(item)
    finally:
        # `closed` before the channel: a frame already posted to trio is then dropped by the
        # bridge instead of hitting a closed channel (BrokenResourceError in trio).
        bridge.closed = True
        send.close()
        receive.close()
        notifier.stop(timeout=5.0)
