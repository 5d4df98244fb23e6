"""The OCPP 1.6 status transitions a connector and the charge point may report (section 4.9),
kept as data (`status-transitions.json` beside this module) so that tests, the statechart export
and the connector rules all read the one table."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Literal

from ocpp.v16.enums import ChargePointStatus

Transitions = dict[ChargePointStatus, frozenset[ChargePointStatus]]


@functools.cache
def allowed_transitions(of: Literal["connector", "chargePoint"] = "connector") -> Transitions:
    """status -> the statuses OCPP 1.6 allows next, for a connector (id > 0) or the charge
    point (connector 0)."""
    text = resources.files(__package__).joinpath("status-transitions.json").read_text("utf-8")
    table = json.loads(text)[of]
    return {
        ChargePointStatus(source): frozenset(ChargePointStatus(dest) for dest in dests)
        for source, dests in table.items()
    }
