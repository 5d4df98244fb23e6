"""The status rules: which OCPP 1.6 status tells the truth of a gun, as data.

`RULES` is an ordered, numbered table; the first rule that holds for the truth names the
status (`derive_status`). Each rule also names the cause the machine's transition into its
status is called after, and the statuses it takes over from: the machine
(`dcocpp/connector/statechart.py`) is built from this table, and the exported statechart and
the README draw it. Rule 1, Faulted, is an overlay: it takes over from every other status, and
when the last fault clears whichever rule then holds takes over from it.

OCPP 1.6 forbids a few changes the rules could ask for (Preparing -> Reserved, for one):
`PASS_THROUGH` says, once, which allowed status is reported in between.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from ocpp.v16.enums import ChargePointStatus

from dcocpp.connector.truth import Truth, kept_for
from dcocpp.ocpp.statuses import allowed_transitions

S = ChargePointStatus


@attrs.frozen
class Rule:
    """One row of the table: while `holds` and no rule above it does, the status is `status`."""

    number: int
    status: ChargePointStatus
    # The machine's trigger when this rule starts to hold: why the status changes, as a reader
    # of the statechart would say it (in the spirit of libocpp's FSM events).
    cause: str
    holds: Callable[[Truth], bool] = attrs.field(repr=False)
    when: str  # the rule in words, for the statechart and the README
    # The statuses this rule takes over from (Faulted aside: the overlay lifts to any rule).
    follows: frozenset[ChargePointStatus]


def _relay_closed(t: Truth) -> bool:
    """Energy can flow: the relay is commanded closed and the hardware confirms it."""
    return t.relay_commanded and t.relay_closed


def _first_close(t: Truth) -> bool:
    """A transaction's relay is closing, and the gun never left Preparing since it started."""
    return t.relay_commanded and t.transaction is not None and not t.transaction.past_preparing


_SESSION = frozenset({S.preparing, S.charging, S.suspended_ev, S.suspended_evse})

RULES: tuple[Rule, ...] = (
    Rule(
        1,
        S.faulted,
        "fault_active",
        lambda t: bool(t.faults),
        "a fault is active (the relay open, no session)",
        frozenset(S) - {S.faulted},
    ),
    Rule(
        2,
        S.suspended_ev,
        "ev_unplugged",
        lambda t: t.transaction is not None and not t.plugged,
        "a transaction runs, the EV is unplugged (StopTransactionOnEVSideDisconnect false)",
        frozenset({S.preparing, S.charging, S.suspended_evse}),
    ),
    Rule(
        3,
        S.charging,
        "energy_flows",
        lambda t: t.transaction is not None and _relay_closed(t) and t.ev_requesting,
        "a transaction runs, the relay confirmed closed, the EV asks for energy",
        frozenset({S.preparing, S.suspended_ev, S.suspended_evse, S.unavailable}),
    ),
    Rule(
        4,
        S.suspended_ev,
        "ev_paused",
        lambda t: t.transaction is not None and _relay_closed(t),
        "a transaction runs, the relay confirmed closed, the EV asks for none",
        frozenset({S.preparing, S.charging, S.suspended_evse, S.unavailable}),
    ),
    Rule(
        5,
        S.preparing,
        "transaction_started",
        _first_close,
        "a transaction started, its relay closing for the first time",
        frozenset({S.reserved, S.unavailable}),
    ),
    Rule(
        6,
        S.suspended_evse,
        "evse_paused",
        lambda t: t.transaction is not None,
        "a transaction runs, the charger gives no energy",
        frozenset({S.preparing, S.charging, S.suspended_ev, S.unavailable}),
    ),
    Rule(
        7,
        S.unavailable,
        "made_unavailable",
        lambda t: not t.operative,
        "no transaction, the gun inoperative (ChangeAvailability)",
        frozenset({S.available, S.finishing, S.reserved}),
    ),
    Rule(
        8,
        S.finishing,
        "transaction_ended",
        lambda t: t.finishing,
        "a transaction ended, its cable still plugged in or locked",
        _SESSION,
    ),
    Rule(
        9,
        S.preparing,
        "usage_initiated",
        lambda t: t.authorized is not None or (t.plugged and not kept_for(t)),
        "a tag authorized, or an EV plugged in on a gun not kept for a reservation",
        frozenset({S.available, S.finishing, S.reserved, S.unavailable}),
    ),
    Rule(
        10,
        S.unavailable,
        "held_for_maintenance",
        lambda t: t.maintenance,
        "held by the station for a firmware install, the gun free (no session, no EV)",
        frozenset({S.available, S.finishing, S.reserved, S.charging, S.suspended_ev})
        | {S.suspended_evse},
    ),
    Rule(
        11,
        S.reserved,
        "reserved",
        lambda t: bool(kept_for(t)),
        "kept for a reservation: only its holder may start",
        frozenset({S.available}),
    ),
    Rule(
        12,
        S.available,
        "freed",
        lambda t: True,
        "none of the above",
        _SESSION | {S.finishing, S.reserved, S.unavailable},
    ),
)


@attrs.frozen
class PassThrough:
    """Statuses OCPP 1.6 allows only after certain others: asked for by the rules after a status
    they may not follow, they are reached through the status of rule `via`, reported first."""

    into: frozenset[ChargePointStatus]
    via: int
    why: str


PASS_THROUGH: tuple[PassThrough, ...] = (
    PassThrough(
        frozenset({S.reserved}),
        12,
        "Reserved follows only Available or Faulted: a gun kept for a reservation as its "
        "session ends, or as its holder's authorization times out, is Available first",
    ),
    PassThrough(
        frozenset({S.charging, S.suspended_ev, S.suspended_evse}),
        5,
        "of a session's statuses only Preparing follows Reserved: a reserved gun whose "
        "holder's transaction starts at once (the EV was waiting) is Preparing first",
    ),
    PassThrough(
        frozenset({S.unavailable}),
        12,
        "Unavailable does not follow Preparing: a gun held for maintenance whose EV leaves "
        "before a transaction started is Available first",
    ),
)


def rule_for(t: Truth) -> Rule:
    """The first rule that holds."""
    return next(rule for rule in RULES if rule.holds(t))


def derive_status(t: Truth) -> ChargePointStatus:
    """The OCPP status that tells the truth."""
    return rule_for(t).status


def rule(number: int) -> Rule:
    """The rule numbered `number`."""
    return RULES[number - 1]


def pass_through(source: ChargePointStatus, dest: ChargePointStatus) -> Rule | None:
    """The rule whose status is reported between `source` and `dest`, when OCPP 1.6 does not
    allow `dest` right after `source` (None: it does, or nothing is said)."""
    if dest in allowed_transitions("connector")[source]:
        return None
    return next((rule(p.via) for p in PASS_THROUGH if dest in p.into), None)
