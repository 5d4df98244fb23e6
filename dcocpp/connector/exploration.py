"""Exhaustive exploration of the connector machine, and the table of what it found.

Breadth-first from a fresh gun over every truth a small alphabet of events reaches, each event
dispatched on each truth: what every event does to every status, each change with the rule
behind it. The tests check that every change is one the status rules declare and OCPP 1.6
allows, and that every arrow of the statechart happens; `python -m dcocpp statecharts` writes
the findings as `statecharts/connector-events.md` for auditors (`markdown()`).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections import deque
from importlib import resources

import attrs
from ocpp.v16.enums import AuthorizationStatus, ChargePointStatus, Reason

from dcocpp.connector import events
from dcocpp.connector.machine import ConnectorMachine, Step
from dcocpp.connector.truth import Settings, Truth
from dcocpp.hardware.interface import FaultKind

ACCEPTED, INVALID = AuthorizationStatus.accepted, AuthorizationStatus.invalid

BASE_ALPHABET: list[events.Event] = [
    events.Plugged(),
    events.Unplugged(),
    events.EvRequesting(True),
    events.EvRequesting(False),
    events.IdPresented("A"),
    events.IdPresented("B"),
    events.RemoteStartRequested("A", authorize=True),
    events.RemoteStartRequested("A", authorize=False),
    events.AuthorizationResult("A", ACCEPTED, "G"),
    events.AuthorizationResult("B", ACCEPTED, "G"),
    events.AuthorizationResult("A", INVALID),
    events.AuthorizationResult("B", INVALID),
    events.ConnectionTimedOut(),
    events.RelayConfirmed(True),
    events.RelayConfirmed(False),
    events.RelayFailed("stuck"),
    events.LockEngaged(),
    events.LockReleased(),
    events.EvseSuspended(True),
    events.EvseSuspended(False),
    events.FaultRaised(FaultKind.EMERGENCY_STOP, "pressed"),
    events.FaultCleared(FaultKind.EMERGENCY_STOP),
    events.FaultRaised(FaultKind.LOCK, "lock"),
    events.FaultCleared(FaultKind.LOCK),
    events.FaultCleared(FaultKind.POWER_SWITCH),
    events.AvailabilityChanged(False),
    events.AvailabilityChanged(True),
    events.StopRequested(Reason.remote),
    events.TransactionConfirmed(1, ACCEPTED),
    events.TransactionConfirmed(1, INVALID),
    events.UnlockRequested(),
]
# Reservations: the gun's own (tag A, or any tag of group G, as B is), a connector-0 one the
# station keeps this gun for, and none (cancelled, expired, used elsewhere).
RESERVATIONS: list[events.Event] = [
    events.ReservationsChanged((events.Reservation(1, "A", "G"),)),
    events.ReservationsChanged((events.Reservation(2, "B", any_connector=True),), hold_zero=True),
    events.ReservationsChanged(),
]
# The station's hold for a firmware install.
MAINTENANCE: list[events.Event] = [events.MaintenanceHold(True), events.MaintenanceHold(False)]
ALPHABET = BASE_ALPHABET + RESERVATIONS + MAINTENANCE

# The four settings that change what the machine decides, in all sixteen combinations.
ALL_SETTINGS = [Settings(*flags) for flags in itertools.product([True, False], repeat=4)]
# What is explored to stay fast: BASE_ALPHABET under five combinations and the whole ALPHABET
# under one. Together they find every finding the whole ALPHABET finds under ALL_SETTINGS
# (checked when the table was generated: `explore_everything()`, about three minutes).
EXPLORATIONS: list[tuple[Settings, list[events.Event]]] = [
    (Settings(), ALPHABET),
    (Settings(False, False, False, False), BASE_ALPHABET),
    (Settings(fixed_cable=False), BASE_ALPHABET),
    (Settings(stop_on_ev_disconnect=False), BASE_ALPHABET),
    (Settings(True, False, True, False), BASE_ALPHABET),
    (Settings(stop_on_ev_disconnect=False, fixed_cable=False), ALPHABET),
]


# The files whose content decides what the exploration finds (the connector's pure core and
# what it reads). `statecharts --check` compares their fingerprint with the one the table was
# generated from: the exploration takes half a minute, the fingerprint milliseconds. The test
# suite still compares the whole table (tests/test_connector_rules.py).
SOURCES = (
    ("dcocpp.connector", "events.py"),
    ("dcocpp.connector", "truth.py"),
    ("dcocpp.connector", "rules.py"),
    ("dcocpp.connector", "faults.py"),
    ("dcocpp.connector", "statechart.py"),
    ("dcocpp.connector", "machine.py"),
    ("dcocpp.connector", "exploration.py"),
    ("dcocpp", "idtags.py"),
    ("dcocpp.hardware", "interface.py"),
    ("dcocpp.ocpp", "statuses.py"),
    ("dcocpp.ocpp", "status-transitions.json"),
)
FINGERPRINT_PREFIX = "<!-- sources sha256:"


@attrs.frozen
class Finding:
    """Dispatched on a truth whose status is `status`, an event of type `event` made the
    status changes `steps` (none: the status stayed)."""

    status: ChargePointStatus
    event: str
    steps: tuple[Step, ...]


def explore(
    settings: Settings, alphabet: list[events.Event], limit: int = 200_000
) -> tuple[set[Finding], int]:
    """(what the events did, number of truths visited)."""
    findings: set[Finding] = set()
    seen = {Truth()}
    queue = deque([Truth()])
    machine = ConnectorMachine(1, settings)
    while queue:
        truth = queue.popleft()
        for event in alphabet:
            machine.restore(truth)
            status = machine.status
            machine.dispatch(event)
            findings.add(Finding(status, type(event).__name__, tuple(machine.steps)))
            if machine.truth not in seen:
                seen.add(machine.truth)
                queue.append(machine.truth)
                if len(seen) > limit:
                    raise RuntimeError("state space larger than expected")
    return findings, len(seen)


@functools.cache
def explored() -> tuple[frozenset[Finding], int]:
    """Every finding of `EXPLORATIONS`, and the number of truths they visited (once per
    process: the tests and `statecharts` export and check share it)."""
    findings: set[Finding] = set()
    visited = 0
    for settings, alphabet in EXPLORATIONS:
        found, count = explore(settings, alphabet)
        findings |= found
        visited += count
    return frozenset(findings), visited


def explore_everything() -> frozenset[Finding]:
    """Every finding of the whole ALPHABET under ALL_SETTINGS: what `EXPLORATIONS` stands
    for."""
    return frozenset().union(*(explore(settings, ALPHABET)[0] for settings in ALL_SETTINGS))


def fingerprint() -> str:
    """The line naming the digest of `SOURCES`, as the table carries it."""
    digest = hashlib.sha256()
    for package, name in SOURCES:
        digest.update(resources.files(package).joinpath(name).read_bytes())
    return f"{FINGERPRINT_PREFIX} {digest.hexdigest()} -->"


def generated_from_these_sources(table: str) -> bool:
    """Whether `table` (a committed `markdown()`) was generated from the sources as they are."""
    return fingerprint() in table.splitlines()


def markdown() -> str:
    """The findings as a (status, event) -> status table."""
    findings, visited = explored()
    kinds = list(dict.fromkeys(type(event).__name__ for event in ALPHABET))
    order = list(ChargePointStatus)
    outcomes: dict[tuple[ChargePointStatus, str], set[tuple[Step, ...]]] = {}
    for finding in findings:
        outcomes.setdefault((finding.status, finding.event), set()).add(finding.steps)
    lines = [
        "# Connector: what each event does to each status",
        "",
        "Generated by `python -m dcocpp statecharts` from an exhaustive exploration of the",
        "connector machine (`dcocpp/connector/exploration.py`); `--check` and the tests fail",
        "when it is stale. From a fresh gun, every truth the events of its alphabet reach",
        f"({visited} under six combinations of settings, which find all that the sixteen find),",
        "every event dispatched on every truth. A row lists what an event of that type",
        "(`dcocpp/connector/events.py`) can make of the status: the status it becomes with the",
        "number of the rule that then holds (`dcocpp/connector/rules.py`, the README's",
        "connector section), `stays` when it does not change, and `A (n) → B (m)` when it",
        "passes through A (OCPP 1.6 does not allow B right after the status, or a change of",
        "availability waited for the session to end). An event not listed for a status never",
        "changes it.",
        "",
        "| status | event | becomes |",
        "|---|---|---|",
    ]
    for status, event in itertools.product(order, kinds):
        paths = outcomes.get((status, event), set())
        if not any(paths):
            continue
        cells = sorted(
            paths, key=lambda p: (len(p), [(order.index(s.dest), s.rule.number) for s in p])
        )
        text = "; ".join(_path(path) for path in cells)
        lines.append(f"| {status.value} | {event} | {text} |")
    lines += ["", fingerprint()]
    return "\n".join(lines) + "\n"


def _path(steps: tuple[Step, ...]) -> str:
    return " → ".join(f"{step.dest.value} ({step.rule.number})" for step in steps) or "stays"
