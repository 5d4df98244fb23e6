"""What the link to the central system did: message counts, round trips, the connection's
history, and a tap on the message log, for the operator's console and `/metrics`.

One `LinkTraffic` lives as long as the process (the station keeps it across soft resets and
hands it to each boot's session), so its counters only grow, as Prometheus counters must. The
RPC layer and the session write it on the path of every frame: each record is a dict increment
or an attribute store, nothing that parses or allocates much. No trio here: the console's
event stream subscribes through `tap`, a plain callable.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable
from typing import Any

# Round-trip buckets (seconds) of a CALL and its answer: a LAN central system answers in
# milliseconds, one across a mobile network in hundreds, a stuck one at ResponseTimeout.
ROUND_TRIP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SENT = "sent"
RECEIVED = "received"


class RoundTrips:
    """A cumulative histogram of round trips: counts per upper bound (`ROUND_TRIP_BUCKETS`,
    then +Inf), their sum and count."""

    def __init__(self) -> None:
        self.counts = [0] * (len(ROUND_TRIP_BUCKETS) + 1)  # per bucket, not cumulative
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(ROUND_TRIP_BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), +Inf last: Prometheus' buckets."""
        running = 0
        buckets = []
        for bound, count in zip((*ROUND_TRIP_BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


class LinkTraffic:
    """Counters and facts about the central system link (see the module docstring)."""

    def __init__(self) -> None:
        # (action, direction, message type) -> frames; type is CALL, CALLRESULT or CALLERROR.
        self.messages: Counter[tuple[str, str, str]] = Counter()
        self.round_trips = RoundTrips()
        self.connections = 0  # WebSocket connections opened
        self.connection_failures = 0  # attempts that failed, and connections lost
        self.connected_since: str | None = None  # OCPP dateTime; None while disconnected
        self.next_attempt_at: str | None = None  # OCPP dateTime of the next connect attempt
        self.ping_round_trip_s: float | None = None  # the last WebSocket ping's
        self.heartbeat_at: str | None = None  # OCPP dateTime of the last Heartbeat answered
        self.heartbeat_round_trip_s: float | None = None
        # Each message-log line of the link as it is written: (direction, redacted text),
        # direction ">>", "<<" or "--" (see `messagelog.MessageLog`).
        self.tap: Callable[[str, str], None] | None = None

    def frame(self, direction: str, text: str) -> None:
        tap = self.tap
        if tap is not None:
            tap(direction, text)

    def count(self, action: str, direction: str, kind: str) -> None:
        self.messages[(action, direction, kind)] += 1

    def snapshot(self) -> dict[str, Any]:
        """The link's facts for the status snapshot (counters are for `/metrics`)."""
        return {
            "connectedSince": self.connected_since,
            "nextAttemptAt": self.next_attempt_at,
            "connections": self.connections,
            "pingRoundTripS": self.ping_round_trip_s,
            "heartbeatAt": self.heartbeat_at,
            "heartbeatRoundTripS": self.heartbeat_round_trip_s,
        }

    def counters(self) -> dict[str, Any]:
        """Everything counted, as plain data (`/metrics` reads it at scrape time)."""
        return {
            "messages": [
                {"action": action, "direction": direction, "type": kind, "count": n}
                for (action, direction, kind), n in sorted(self.messages.items())
            ],
            "roundTrip": {
                "buckets": self.round_trips.cumulative(),
                "sum": self.round_trips.total,
                "count": self.round_trips.count,
            },
            "connections": self.connections,
            "connectionFailures": self.connection_failures,
        }
