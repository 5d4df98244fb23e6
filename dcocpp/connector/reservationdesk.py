"""The station's reservations as a connector sees them (`ReservationDesk`, which the station's
`ReservationBook` implements), and how the connector keeps its machine in line with them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from dcocpp.connector import events
from dcocpp.connector.machine import ConnectorMachine, Truth


class ReservationDesk(Protocol):
    """The station's reservations, as the connectors see them."""

    def wanted(self, connector_id: int) -> events.ReservationsChanged:
        """The reservations this connector serves now, and whether it is held for the
        connector-0 ones."""
        ...

    def stepped(self, connector_id: int) -> None:
        """The connector's machine took an event: what other guns serve may have changed."""
        ...

    def ended(self, connector_id: int, reservation_id: int, cause: str) -> None:
        """The connector ended a reservation: "used" (its StartTransaction carries it),
        "Faulted" or "Unavailable". In memory: the connector awaits `flush` next."""
        ...

    async def flush(self) -> None:
        """Store the ends of reservations told so far."""
        ...


def in_line(truth: Truth, wanted: events.ReservationsChanged) -> bool:
    """The machine (its `truth`) serves the reservations the desk wants it to."""
    return (truth.reservations, truth.hold_zero) == (wanted.reservations, wanted.hold_zero)


class ReservationSync:
    """Keeps one connector's machine in line with the desk (none: the Reservation profile is
    not wired in, and every call does nothing)."""

    def __init__(
        self,
        connector_id: int,
        desk: ReservationDesk | None,
        machine: ConnectorMachine,
        execute: Callable[[list[events.Effect]], Awaitable[None]],
    ):
        self._id = connector_id
        self._desk = desk
        self._machine = machine
        self._execute = execute  # carries out the machine's effects (the connector task's)

    async def bring_in_line(self) -> None:
        """Give the machine the reservations the station keeps for this gun now. Done before
        every event, not only when told: a connector-0 hold that another gun's step has just
        created must already apply to the tag this gun hears next. Storing a reservation's
        end lets other guns step meanwhile: it returns only once no await came after the
        last look."""
        if self._desk is None:
            return
        while True:
            wanted = self._desk.wanted(self._id)
            if in_line(self._machine.truth, wanted):
                return
            self._machine.dispatch(wanted)
            effects = self._machine.take_effects()
            await self.note(effects)
            await self._execute(effects)

    async def note(self, effects: list[events.Effect]) -> None:
        """Tell the station at once (before any await) which reservations ended here, so that
        no other gun serves one that a transaction here has just used; then store that."""
        if self._desk is None:
            return
        told = False
        for effect in effects:
            if isinstance(effect, events.StartTransaction) and effect.reservation_id is not None:
                self._desk.ended(self._id, effect.reservation_id, "used")
                told = True
            elif isinstance(effect, events.ReservationEnded):
                self._desk.ended(self._id, effect.reservation_id, effect.cause)
                told = True
        if told:
            await self._desk.flush()

    def stepped(self) -> None:
        """The machine took an event: tell the desk (other guns may serve otherwise now)."""
        if self._desk is not None:
            self._desk.stepped(self._id)
