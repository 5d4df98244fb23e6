"""The gun's relay, driven by one worker task to the state the machine last commanded.

Each command runs under the ack deadline (a relay that does not confirm in time is a
PowerSwitchFailure, not a hang); after a failure the worker tries again every
RELAY_RETRY_INTERVAL, and at once when the machine wants something new or the hardware brings
news that may mean it obeys again. What the hardware did, or did not, goes to the connector's
inbox as `RelayConfirmed` or `RelayFailed`; the machine decides what that means.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from dcocpp.concurrency import Pulse, WakeUp
from dcocpp.connector import events
from dcocpp.hardware import interface as hw

log = logging.getLogger(__name__)

# How long the hardware has to confirm a relay command (the PLC retries within it).
RELAY_ACK_DEADLINE = 2.0
# After a relay failure, the last command is repeated this often until the hardware obeys.
RELAY_RETRY_INTERVAL = 10.0


class RelayWorker:
    """Drives one gun's relay; `run` until cancelled. Raises nothing of its own: a failed
    command is a `RelayFailed` in the inbox."""

    def __init__(
        self,
        connector_id: int,
        gun: hw.GunHardware,
        post: Callable[[events.Event], Awaitable[None]],
        *,
        confirmed: bool | None,
    ):
        self._id = connector_id
        self._gun = gun
        self._post = post
        # A new boot has no transaction: whatever the relay is, it must be open (a relay
        # found closed, e.g. hardware that outlived the controller without a watchdog, is
        # opened by the worker at once).
        self._target = False
        self._confirmed = confirmed  # None: unknown (the last command failed)
        self._wake = WakeUp()  # a new target, or news from the hardware
        self._changed = Pulse()  # `_confirmed` changed

    @property
    def target(self) -> bool:
        """Closed (True) or open, as the machine last commanded."""
        return self._target

    def command(self, closed: bool) -> None:
        self._target = closed
        self._wake.set()

    def news(self) -> None:
        """The hardware reported something that may end a relay failure (the relay as
        wanted, a fault gone: a PLC that talks again): retry at once."""
        self._wake.set()

    async def run(self) -> None:
        """Drive the relay to the latest target; report what the hardware did (or did not)."""
        while True:
            target = self._target
            if target == self._confirmed:
                await self._wake.wait()
                self._wake.clear()
                continue
            failure = await self._command(target)
            if failure is None:
                self._set_confirmed(target)
                await self._post(events.RelayConfirmed(target))
            else:
                await self._failed(failure)

    async def wait_open(self) -> None:
        """Until the relay is confirmed open (the final meter reading must come after it), or
        the deadline: a relay that does not open is reported by the worker."""
        with trio.move_on_after(RELAY_ACK_DEADLINE):
            while self._confirmed is not False:
                await self._changed.wait()

    async def _command(self, target: bool) -> str | None:
        """One command under the ack deadline; why it failed (None: confirmed)."""
        with trio.move_on_after(RELAY_ACK_DEADLINE):
            try:
                await self._gun.set_relay(target)
            except hw.HardwareError as exc:
                return f"relay refused: {exc}"
            return None
        return f"no {'close' if target else 'open'} confirmation in {RELAY_ACK_DEADLINE:g} s"

    async def _failed(self, detail: str) -> None:
        # The PowerSwitchFailure it raises is logged once (the task's fault lines); not
        # every retry.
        log.debug("connector %d: relay command failed: %s", self._id, detail)
        self._set_confirmed(None)
        await self._post(events.RelayFailed(detail))
        # Try again after RELAY_RETRY_INTERVAL; at once when the machine wants something new
        # or the hardware reported news that may mean it obeys again, since the failed
        # attempt began. A relay that confirms clears the PowerSwitchFailure.
        with trio.move_on_after(RELAY_RETRY_INTERVAL):
            await self._wake.wait()
        self._wake.clear()

    def _set_confirmed(self, state: bool | None) -> None:
        self._confirmed = state
        self._changed.fire()
