"""python-can's `virtual` bus with a file descriptor, so trio can wait on it like on socketcan.

A plain `VirtualBus` can only be read by blocking in `recv`, which needs a thread; a thread and
trio's `autojump_clock` do not mix (the clock jumps while a frame is still in the thread), and
the in-process simulation would pay a thread per bus. `SelectableVirtualBus` is the same bus on
the same in-process channels (it talks to plain `VirtualBus` objects on the channel both ways)
whose receive queue writes a byte to a socket pair when a frame arrives while it is empty:
`fileno()` is readable whenever a frame is waiting (until the reader has found the queue
empty), and the driver and the emulator read it exactly as they read
socketcan (`trio.lowlevel.wait_readable`, then `recv(0)` until empty). Since the peer's `send`
writes synchronously, a frame sent from trio is visible to the next I/O poll, before trio
considers itself idle: with `autojump_clock` a frame is never overtaken by a clock jump.
"""

from __future__ import annotations

import contextlib
import queue
import socket
from typing import Any

import can
from can.interfaces.virtual import VirtualBus, channels_lock

__all__ = ["SelectableVirtualBus"]


class _SignallingQueue(queue.Queue[can.Message]):
    """A receive queue that makes a socket readable whenever it holds a frame."""

    def __init__(self, maxsize: int, signal: socket.socket):
        super().__init__(maxsize)
        self._signal = signal

    def _put(self, item: can.Message) -> None:
        # Called under the queue's lock. Only a frame into an empty queue needs a signal: the
        # reader drains the signal only once it has found the queue empty, and looks at the
        # queue again afterwards (`SelectableVirtualBus._recv_internal`).
        signal = not self._qsize()
        super()._put(item)
        if signal:
            # Full: the socket is readable already. Closed: the bus is shutting down.
            with contextlib.suppress(BlockingIOError, OSError):
                self._signal.send(b"\0")


class SelectableVirtualBus(VirtualBus):
    """A `VirtualBus` with a `fileno()` that is readable while frames are waiting.

    Interface name for python-can's `can.Bus`: use the class directly (it is not registered as
    a python-can plugin). Reading drains the signal bytes before taking frames, so a byte never
    stands for a frame that is not yet queued; a spurious wake-up (a byte whose frame was
    already taken) only makes `recv(0)` return None once."""

    def __init__(self, channel: Any = "channel-0", **kwargs: Any):
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        try:
            super().__init__(channel=channel, **kwargs)
            # Swap the receive queue VirtualBus registered on the channel for ours, under the
            # channel lock so that no sender sees the bus half-registered.
            with channels_lock:
                plain = self.queue
                signalling = _SignallingQueue(plain.maxsize, self._wake_w)
                self.channel[self.channel.index(plain)] = signalling
                self.queue = signalling
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise

    def fileno(self) -> int:
        return self._wake_r.fileno()

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        # A queued frame is taken without touching the socket (a leftover signal byte only
        # makes one later wake-up find nothing). The signal bytes are drained when the queue
        # looks empty, and the queue is looked at again after that: a byte is never drained
        # for a frame that is then not taken.
        self._check_if_open()
        try:
            return self.queue.get_nowait(), False
        except queue.Empty:
            pass
        self._drain()
        return super()._recv_internal(timeout)

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self._wake_r.recv(4096):
                pass

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            self._wake_r.close()
            self._wake_w.close()
