"""The connector's status machine, built from the status rules, and its picture.

The `transitions` Machine's states are the OCPP 1.6 statuses; each rule of
`dcocpp/connector/rules.py` is one trigger, leading from the statuses the rule follows to its
own. The machine is flat, with Faulted as one of its states rather than a `HierarchicalMachine`
whose other statuses nest in a "no fault" parent: the states stay the very statuses the central
system is told; a nested state would promise a history (back to the status before the fault)
that OCPP does not want, since the status after a fault is whatever the rules say then; and
the hierarchical machine costs about four times as much per transition, which the exhaustive
exploration feels. The overlay is drawn, not nested: `mermaid()` puts every other status in a
box that one arrow leaves for Faulted and one arrow reenters.
"""

from __future__ import annotations

from typing import Any

from ocpp.v16.enums import ChargePointStatus
from transitions import Machine

from dcocpp.connector.rules import RULES, Rule

S = ChargePointStatus
OVERLAY = S.faulted
_ORDER = list(S)  # the order the OCPP enumeration lists the statuses in


def sources(rule: Rule) -> list[ChargePointStatus]:
    """The statuses the rule's transition leaves: those it follows and, below the overlay,
    Faulted (the rule may be the one that holds as the last fault clears)."""
    follows = rule.follows if rule.status == OVERLAY else rule.follows | {OVERLAY}
    return sorted(follows, key=_ORDER.index)


def build_machine(
    model: object,
    machine_cls: type[Machine] = Machine,
    *,
    initial: ChargePointStatus = S.available,
    **kwargs: Any,
) -> Machine:
    """The status machine on `model`: one trigger per rule, named after its cause."""
    return machine_cls(
        model=model,
        states=[s.value for s in S],
        transitions=[
            {
                "trigger": rule.cause,
                "source": [s.value for s in sources(rule)],
                "dest": rule.status.value,
            }
            for rule in RULES
        ],
        initial=initial.value,
        auto_transitions=False,
        **kwargs,
    )


class _Model:
    """A bare model: the picture needs the machine's structure, not its callbacks."""


TITLE = "Connector (one per gun) - the OCPP 1.6 status of the first rule that holds"
_BOX = "NoFault"


def mermaid() -> str:
    """The statechart as Mermaid text, drawn from the machine `build_machine` makes: each status
    described by its rules, each arrow labelled with the rules that take it, the overlay as a
    box of every other status."""
    machine = build_machine(_Model())
    by_cause = {rule.cause: rule for rule in RULES}
    arrows: dict[tuple[ChargePointStatus, ChargePointStatus], list[Rule]] = {}
    for name, event in machine.events.items():
        for source, transitions in event.transitions.items():
            for transition in transitions:
                key = (S(source), S(transition.dest))
                if OVERLAY not in key:
                    arrows.setdefault(key, []).append(by_cause[name])
    inside = [s for s in S if s != OVERLAY]
    lines = [
        "---",
        f"title: {TITLE}",
        "---",
        "stateDiagram-v2",
        "  direction LR",
        f'  state "no fault active" as {_BOX} {{',
        f"    [*] --> {S.available.value}",
    ]
    for status in inside:
        lines += [f"    {line}" for line in _described(status)]
    for (source, dest), rules in sorted(
        arrows.items(), key=lambda item: (_ORDER.index(item[0][0]), _ORDER.index(item[0][1]))
    ):
        labels = " | ".join(f"{r.number} {r.cause}" for r in sorted(rules, key=lambda r: r.number))
        lines.append(f"    {source.value} --> {dest.value} : {labels}")
    overlay = next(r for r in RULES if r.status == OVERLAY)
    lines += [
        "  }",
        *(f"  {line}" for line in _described(OVERLAY)),
        f"  {_BOX} --> {OVERLAY.value} : {overlay.number} {overlay.cause}",
        f"  {OVERLAY.value} --> {_BOX} : last fault cleared, to the rule that holds then",
    ]
    return "\n".join(lines) + "\n"


def _described(status: ChargePointStatus) -> list[str]:
    return [f"{status.value} : {r.number}. {r.when}" for r in RULES if r.status == status]
