"""python-can's receive thread -> trio: the one bridge both ends of the PLC bus use.

A bus without a file descriptor (python-can's `virtual`, most vendor interfaces) is read by a
`can.Notifier` thread; this listener hands each frame (or the reader's failure) to trio with
`run_sync_soon` into a bounded memory channel, counting what does not fit rather than blocking
the bus thread.
"""

from __future__ import annotations

from collections.abc import Callable

import can
import trio


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

    def on_message_received(self, msg: can.Message) -> None:
        self._post(msg)

    def on_error(self, exc: Exception) -> None:
        self._post(exc)

    def _post(self, item: can.Message | Exception) -> None:
        if self.closed:
            return
        try:
            self._token.run_sync_soon(self._deliver, item)
        except trio.RunFinishedError:
            self.closed = True

    def _deliver(self, item: can.Message | Exception) -> None:  # in trio's thread
        if self.closed:
            return
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self._on_overrun()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            # The owner closed its end before marking us closed: a late frame, dropped.
            pass
