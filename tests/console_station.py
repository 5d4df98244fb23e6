"""A real charger for the console's tests: `python -m dcocpp run` on simulated guns with its
API on 127.0.0.1 (port 0), against the independent asyncio central system; every wait bounded.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.processes import (
    ManagedProcess,
    api_port,
    api_request,
    preset_user_keys,
    start_charger,
    start_peer_csms,
    wait_api_status,
)

START_TIMEOUT = 20.0
STATE_TIMEOUT = 10.0
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ConsoleStation:
    """The charger and its central system (see the module docstring)."""

    def __init__(self, csms: ManagedProcess, charger: ManagedProcess, port: int) -> None:
        self.csms = csms
        self.charger = charger
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> dict[str, Any]:
        return api_request(self.port, "GET", path)

    def get_json_list(self, path: str) -> list[dict[str, Any]]:
        text, kind = self.get_text(path, accept="application/json")
        assert kind == "application/json", kind
        answer = json.loads(text)
        assert isinstance(answer, list), answer
        return answer

    def get_text(self, path: str, accept: str = "*/*") -> tuple[str, str]:
        """The body of GET `path` as text, and its content type."""
        request = urllib.request.Request(self.base + path, headers={"Accept": accept})
        with _opener.open(request, timeout=5) as response:
            return response.read().decode(), response.headers["Content-Type"]

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return api_request(self.port, "POST", path, body or {})

    def status(self) -> dict[str, Any]:
        return self.get("/api/status")

    def wait(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        return wait_api_status(self.port, self.charger, predicate, what, STATE_TIMEOUT)

    def wait_gun(self, cid: int, predicate: Callable[[dict[str, Any]], bool], what: str) -> None:
        self.wait(lambda s: predicate(gun(s, cid)), f"gun {cid} {what}")

    def calls(self, action: str) -> list[dict[str, Any]]:
        """The payloads of the CALLs of `action` the central system received, in order."""
        return [
            e["payload"]
            for e in self.csms.stdout.events
            if e.get("event") == "call" and e.get("action") == action
        ]

    def charge(self, cid: int, id_tag: str) -> None:
        """Plug gun `cid` in and present `id_tag`: until it charges."""
        self.post(f"/api/connectors/{cid}/plug")
        self.post(f"/api/connectors/{cid}/authorize", {"idTag": id_tag})
        self.wait_gun(cid, charging, "Charging")

    def wait_delivered(self) -> None:
        self.wait(lambda s: s["chargePoint"]["outbox"]["queued"] == 0, "the outbox empty")


def gun(snapshot: dict[str, Any], cid: int) -> dict[str, Any]:
    (entry,) = [c for c in snapshot["connectors"] if c["id"] == cid]
    return entry  # type: ignore[no-any-return]


def charging(entry: dict[str, Any]) -> bool:
    return entry["status"] == "Charging" and entry["transactionId"] is not None


@contextmanager
def console_station(
    tmp: Path, *, csms_steps: list[dict[str, Any]] | None = None, **keys: Any
) -> Iterator[ConsoleStation]:
    """The charger (OCPP keys preset to `keys`) and its central system (running `csms_steps`,
    its script, once the charger connects), both stopped after."""
    preset_user_keys(tmp, **keys)
    csms, csms_port = start_peer_csms(tmp, csms_steps, heartbeat_interval=60, timeout=START_TIMEOUT)
    charger: ManagedProcess | None = None
    try:
        charger = start_charger(tmp, f"ws://127.0.0.1:{csms_port}/ocpp", api_port=0)
        port = api_port(charger, START_TIMEOUT)
        station = ConsoleStation(csms, charger, port)
        wait_api_status(
            port,
            charger,
            lambda s: (
                s["chargePoint"]["registration"] == "Accepted"
                and all(c["status"] == "Available" for c in s["connectors"])
            ),
            "registered with both guns Available",
            START_TIMEOUT,
        )
        yield station
    finally:
        if charger is not None:
            charger.stop()
        csms.stop()


def read_events(
    station: ConsoleStation, until: Callable[[str, Any], bool], timeout: float
) -> float:
    """Read GET /api/events until `until(kind, data)` holds; the seconds it took from the
    first event. AssertionError after `timeout`."""
    request = urllib.request.Request(station.base + "/api/events")
    deadline = time.monotonic() + timeout
    with _opener.open(request, timeout=timeout) as response:
        kind, first = "", None
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                first = first if first is not None else time.monotonic()
                if until(kind, json.loads(line[len("data: ") :])):
                    return time.monotonic() - first
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"the event stream did not show it within {timeout} s")
