"""The session's connection and registration state, as an explicit `transitions` machine.

Pure and synchronous like every machine here: the session task fires events, the machine keeps
the state, logs one line per change (at the `level` the event carries: the session knows
whether a failure is news or the same one again), and answers the one question the rest of
the session asks: may we send CALLs other than BootNotification yet?

A reconnect is not a reboot (OCPP 1.6 4.2 asks for a BootNotification at each boot, and some
central systems end a charger's open transactions on one): `registered` remembers an Accepted
registration across lost connections, and the next connection resumes it (Connecting ->
Accepted). It is forgotten when a BootNotification is answered Pending or Rejected, and a new
machine (a start, a soft reset) has none: then a connection boots first (Connecting ->
Booting).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from transitions import EventData, Machine

log = logging.getLogger("dcocpp.session")


class Registration(StrEnum):
    DISCONNECTED = "Disconnected"
    CONNECTING = "Connecting"
    BOOTING = "Booting"  # connected, BootNotification not yet answered
    PENDING = "Pending"
    REJECTED = "Rejected"
    ACCEPTED = "Accepted"


# transitions treats Enum states by member name; plain values keep the diagrams readable.
_D, _C, _B = (
    Registration.DISCONNECTED.value,
    Registration.CONNECTING.value,
    Registration.BOOTING.value,
)
_P, _R, _A = Registration.PENDING.value, Registration.REJECTED.value, Registration.ACCEPTED.value
_CONNECTED = [_B, _P, _R, _A]

TRANSITIONS: list[dict[str, object]] = [
    {"trigger": "connect", "source": _D, "dest": _C},
    {"trigger": "connected", "source": _C, "dest": _A, "conditions": "registered"},
    {"trigger": "connected", "source": _C, "dest": _B, "unless": "registered"},
    {"trigger": "connect_failed", "source": _C, "dest": _D},
    {"trigger": "boot_accepted", "source": _CONNECTED, "dest": _A},
    {"trigger": "boot_pending", "source": _CONNECTED, "dest": _P},
    {"trigger": "boot_rejected", "source": _CONNECTED, "dest": _R},
    {"trigger": "connection_lost", "source": _CONNECTED, "dest": _D},
]


class RegistrationMachine:
    """Model of the `transitions` machine; `state` is a `Registration` value.

    `on_change(old, new, reason)` is called after every state change (the session uses it to
    wake tasks that wait for Accepted)."""

    state: str  # a Registration value
    # Triggers added by transitions; declared for the type checker.
    connect: Callable[..., bool]
    connected: Callable[..., bool]
    connect_failed: Callable[..., bool]
    boot_accepted: Callable[..., bool]
    boot_pending: Callable[..., bool]
    boot_rejected: Callable[..., bool]
    connection_lost: Callable[..., bool]

    def __init__(self, on_change: Callable[[Registration, Registration, str], None] | None = None):
        self._on_change = on_change
        # An Accepted registration that a new connection resumes without BootNotification.
        self.registered = False
        self.machine = build_machine(self)

    @property
    def accepted(self) -> bool:
        return self.state == Registration.ACCEPTED

    @property
    def is_connected(self) -> bool:
        return self.state in _CONNECTED

    def _log_change(self, event: EventData) -> None:
        assert event.transition is not None
        old = Registration(event.transition.source)
        new = Registration(str(event.transition.dest))
        if new in (Registration.PENDING, Registration.REJECTED, Registration.ACCEPTED):
            self.registered = new == Registration.ACCEPTED
        if old == new:
            return  # a repeated Pending/Rejected answer is not a change
        reason = str(event.kwargs.get("reason", ""))
        # An attempt to connect is only worth a line together with its outcome.
        default = logging.DEBUG if new == Registration.CONNECTING else logging.INFO
        level = int(event.kwargs.get("level", default))
        log.log(level, "connection state %s -> %s%s", old, new, f": {reason}" if reason else "")
        if self._on_change is not None:
            self._on_change(old, new, reason)


def build_machine(model: object, machine_cls: type[Machine] = Machine, **kwargs: Any) -> Machine:
    """The registration machine on `model`; `machine_cls` lets the diagram exporter reuse it."""
    return machine_cls(
        model=model,
        states=[s.value for s in Registration],
        transitions=TRANSITIONS,
        initial=_D,
        after_state_change="_log_change" if hasattr(model, "_log_change") else None,
        send_event=True,
        auto_transitions=False,
        **kwargs,
    )
