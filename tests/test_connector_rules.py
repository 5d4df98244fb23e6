"""The connector's status rules and its statechart: each rule says what its row says, every
transition is one OCPP 1.6 allows, the exhaustive exploration takes every arrow of the chart and
no other, and the chart and the README show the rules the code runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ocpp.v16.enums import AuthorizationStatus, ChargePointStatus

from dcocpp.connector import events, exploration
from dcocpp.connector.exploration import explored
from dcocpp.connector.machine import ConnectorMachine
from dcocpp.connector.rules import PASS_THROUGH, RULES, derive_status, pass_through, rule, rule_for
from dcocpp.connector.statechart import OVERLAY, mermaid, sources
from dcocpp.connector.truth import Authorized, Transaction, Truth
from dcocpp.hardware.interface import FaultKind
from dcocpp.ocpp.statuses import allowed_transitions

REPO = Path(__file__).resolve().parent.parent
ALLOWED = allowed_transitions("connector")
S = ChargePointStatus
OWN = events.Reservation(7, "HOLDER")
ZERO = events.Reservation(9, "HOLDER", any_connector=True)
TX = Transaction("T")
PAST_PREPARING = Transaction("T", past_preparing=True)
CLOSED = {"relay_commanded": True, "relay_closed": True}

# For each row, truths it is the first rule to hold for, as its words say.
EXAMPLES: list[tuple[int, Truth]] = [
    (1, Truth(faults=((FaultKind.EARTH_FAULT, "earth"),))),
    (1, Truth(faults=((FaultKind.METER, "stale"),), plugged=True, finishing=True)),
    (2, Truth(transaction=TX)),
    (2, Truth(transaction=Transaction("T", transaction_id=3, past_preparing=True))),
    (3, Truth(transaction=TX, plugged=True, ev_requesting=True, **CLOSED)),
    (4, Truth(transaction=TX, plugged=True, **CLOSED)),
    (5, Truth(transaction=TX, plugged=True, relay_commanded=True)),
    # The relay, commanded closed again after a pause, is not confirmed yet.
    (6, Truth(transaction=PAST_PREPARING, plugged=True, relay_commanded=True)),
    (6, Truth(transaction=TX, plugged=True, evse_suspended=True)),
    (6, Truth(transaction=Transaction("T", deauthorized=True), plugged=True)),
    (7, Truth(operative=False, plugged=True)),
    (7, Truth(operative=False, authorized=Authorized("T"), reservations=(OWN,))),
    (8, Truth(finishing=True, plugged=True, reservations=(OWN,))),
    (8, Truth(finishing=True, locked=True)),
    (9, Truth(authorized=Authorized("HOLDER"), reservations=(OWN,))),
    (9, Truth(plugged=True)),
    (9, Truth(plugged=True, reservations=(ZERO,))),
    (10, Truth(maintenance=True)),
    (10, Truth(maintenance=True, reservations=(ZERO,), hold_zero=True)),
    (11, Truth(plugged=True, reservations=(OWN,))),
    (11, Truth(reservations=(ZERO,), hold_zero=True)),
    (12, Truth()),
    (12, Truth(reservations=(ZERO,))),
    (12, Truth(pending_id="T")),
]


@pytest.mark.parametrize(("number", "truth"), EXAMPLES)
def test_each_rule_row_decides_what_its_words_say(number: int, truth: Truth) -> None:
    assert rule_for(truth) == rule(number)
    assert derive_status(truth) == rule(number).status


def test_rules_are_numbered_in_order_and_each_has_an_example() -> None:
    assert [r.number for r in RULES] == list(range(1, len(RULES) + 1))
    assert {number for number, _ in EXAMPLES} == {r.number for r in RULES}
    assert RULES[-1].holds(Truth(faults=((FaultKind.LOCK, "x"),)))  # the last always holds
    assert len({r.cause for r in RULES}) == len(RULES)


def test_every_transition_is_a_change_ocpp16_allows() -> None:
    for r in RULES:
        for source in sources(r):
            assert r.status in ALLOWED[source], (r.number, source, r.status)
    # The machine built for a gun is that table, trigger by trigger.
    model = ConnectorMachine(1)
    built = {
        (name, source, transition.dest)
        for name, event in model.machine.events.items()
        for source, transitions in event.transitions.items()
        for transition in transitions
    }
    assert built == {(r.cause, s.value, r.status.value) for r in RULES for s in sources(r)}


def test_faulted_is_an_overlay() -> None:
    """Faulted follows every other status, and any other rule may hold as it lifts."""
    faulted = rule_for(Truth(faults=((FaultKind.EARTH_FAULT, "earth"),)))
    assert faulted.status == OVERLAY and faulted.number == 1
    assert set(sources(faulted)) == set(S) - {OVERLAY}
    for r in RULES[1:]:
        assert OVERLAY in sources(r) and OVERLAY not in r.follows


def test_pass_through_statuses_make_two_allowed_steps() -> None:
    """Each pass-through is needed (OCPP forbids the direct change from some status) and makes
    two allowed steps wherever it applies."""
    for p in PASS_THROUGH:
        via = rule(p.via).status
        for dest in p.into:
            forbidden = [s for s in S if s != dest and dest not in ALLOWED[s]]
            assert forbidden
            for source in forbidden:
                if source != via:
                    assert pass_through(source, dest) == rule(p.via)
                    assert via in ALLOWED[source] and dest in ALLOWED[via]
    assert pass_through(S.preparing, S.reserved) == rule(12)
    assert pass_through(S.preparing, S.unavailable) == rule(12)
    assert pass_through(S.reserved, S.charging) == rule(5)
    assert pass_through(S.available, S.reserved) is None


def test_exhaustive_exploration_takes_every_arrow_and_no_other() -> None:
    """Every status change any event makes from any reachable truth is a transition of the
    statechart, allowed by OCPP 1.6, to the status of the rule that then holds or through a
    pass-through; and every arrow the statechart draws happens."""
    findings, visited = explored()
    assert visited > 50_000
    taken: set[tuple[int, S]] = set()
    for finding in findings:
        status = finding.status
        for step in finding.steps:
            assert step.source == status and step.dest != status
            assert step.dest in ALLOWED[status]
            assert status in sources(step.rule)
            taken.add((step.rule.number, status))
            status = step.dest
    drawn = {(r.number, s) for r in RULES for s in r.follows}
    assert taken - {(r.number, OVERLAY) for r in RULES} == drawn
    # The overlay lifts to nearly every rule (a session it stopped cannot be one whose EV left).
    assert {n for n, s in taken if s == OVERLAY} == {r.number for r in RULES[1:]} - {2}


CHART = REPO / "statecharts" / "connector.mmd"


def test_statechart_stays_readable() -> None:
    """At most 38 arrows, at most two labels on any, every status described by its rules."""
    text = mermaid()
    arrows = re.findall(r"^\s*(\S+) --> (\S+) : (.*)$", text, re.MULTILINE)
    assert len(re.findall("-->", text)) <= 38
    assert max(label.count("|") + 1 for _, _, label in arrows) <= 2
    for r in RULES:
        assert f"{r.status.value} : {r.number}. {r.when}" in text
    # The overlay: one arrow in, one out.
    assert [a for a in arrows if OVERLAY.value in a[:2]] == [
        ("NoFault", "Faulted", "1 fault_active"),
        ("Faulted", "NoFault", "last fault cleared, to the rule that holds then"),
    ]


def test_readme_shows_the_statechart_and_the_rule_table() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    body = mermaid().split("---\n", 2)[2]  # without the title
    assert f"```mermaid\n{body}```" in readme
    for r in RULES:
        row = f"| {r.number} | {r.status.value} | `{r.cause}` | {r.when} |"
        assert row in readme


def test_machine_reports_the_rule_behind_each_change() -> None:
    machine = ConnectorMachine(1)
    machine.dispatch(events.ReservationsChanged((OWN,)))
    assert [(s.source, s.rule.number) for s in machine.steps] == [(S.available, 11)]
    machine.dispatch(events.IdPresented("HOLDER"))
    machine.dispatch(events.AuthorizationResult("HOLDER", AuthorizationStatus.accepted))
    assert [(s.source, s.rule.cause) for s in machine.steps] == [(S.reserved, "usage_initiated")]
    machine.dispatch(events.ConnectionTimedOut())
    assert [(s.source, s.dest, s.rule.number) for s in machine.steps] == [
        (S.preparing, S.available, 12),  # passing through: OCPP allows no Preparing -> Reserved
        (S.available, S.reserved, 11),
    ]


def test_the_committed_event_table_is_what_the_exploration_finds() -> None:
    # `statecharts --check` trusts the table's fingerprint of its sources; this draws it again.
    committed = (REPO / "statecharts" / "connector-events.md").read_text(encoding="utf-8")
    assert committed == exploration.markdown()


def test_a_table_drawn_from_other_sources_is_stale() -> None:
    table = exploration.markdown()
    assert exploration.generated_from_these_sources(table)
    digest = exploration.fingerprint().split()[2]
    assert not exploration.generated_from_these_sources(table.replace(digest, "0" * 64))
