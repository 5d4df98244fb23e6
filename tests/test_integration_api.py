"""dcocpp as an operator runs it, driven through its local HTTP API, against an independent CSMS.

The central system is tests/peers/asyncio_csms.py (the `ocpp` package's own asyncio ChargePoint on
`websockets`, validating every payload with the package's schemas) in one process; the charger is
`python -m dcocpp run ... --api 127.0.0.1:<port>` in another; both on loopback. The test plays
the operator and the EVs: it plugs guns, presents tags and raises faults with plain JSON POSTs to
the API (and once with `python -m dcocpp sim`, the operator's own command), and waits for states
by polling `GET /api/status` with a deadline. The peer's `--script` plays the central system's
side; the JSON events it prints are what we assert on.

One charger and one central system serve the whole module (`api_run`). The scenario, in order:

1. TC_010 on gun 2: plug it (CLI); the script waits for its StatusNotification Preparing and
   sends RemoteStartTransaction -> transaction 1 (the peer numbers transactions from 1).
2. TC_003 on gun 1, while gun 2 charges: plug, present INVALID-A (refused by the peer, with
   `python -m dcocpp sim authorize`), then TAG-A -> transaction 2.
3. Emergency stop on gun 1 -> Faulted, StopTransaction(2, EmergencyStop); the script, waiting for
   that StopTransaction, then sends RemoteStopTransaction(1) (TC_012 on gun 2). A tag at the
   faulted gun is refused; the fault is cleared with the EV still plugged -> Finishing.
4. Both guns unplugged, then both plugged and authorized together -> transactions 3 and 4; one is
   stopped with its own tag while the other keeps charging.
5. SIGTERM: the charger exits 0.

Each test asserts one part of it and is named after the OCTT case it covers
(docs/conformance.md). Every wait has a deadline and both processes are stopped in a
`finally`, so a broken charger fails these tests with its output instead of hanging them.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from ocpp.messages import MessageType, get_validator

from dcocpp.cli.commands import EXIT_OK
from tests.processes import (
    REPO_ROOT,
    ManagedProcess,
    plc_charger_config,
    start_charger,
    start_peer_csms,
)

pytestmark = pytest.mark.process

START_TIMEOUT = 15.0  # a process is up (LISTENING, the API answers, BootNotification accepted)
STATE_TIMEOUT = 10.0  # one state change seen through the API or by the peer
CLI_TIMEOUT = 20.0  # `python -m dcocpp sim ...` runs to its end
EXIT_TIMEOUT = 8.0  # SIGTERM ends the charger
POLL_SECONDS = 0.05
# meterStart/meterStop are whole Wh, rounded from the register; the API rounds it to 0.1 Wh.
WH_TOLERANCE = 0.55

# What the peer assigns, in order, for the whole process (see the module docstring).
REMOTE_TX = 1  # gun 2, RemoteStartTransaction REMOTE-1 (TC_010, stopped remotely in TC_012)
TAG_A_TX = 2  # gun 1, TAG-A over the API (TC_003, stopped by the emergency stop)

# The central system's side, by name; `api_run` turns them into the peer's --script list. The
# script starts right after BootNotification.conf. Each wait_for counts the calls received after
# the step starts, so every gate waits for a call nothing else can send at that moment.
SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("boot_statuses", {"wait_for": "StatusNotification", "count": 3, "timeout": 15}),
    # The test plugs gun 2 only once the boot statuses are in: the next one is its Preparing.
    ("gun2_preparing", {"wait_for": "StatusNotification", "count": 1, "timeout": 30}),
    (
        "remote_start",
        {
            "call": "RemoteStartTransaction",
            "payload": {"connectorId": 2, "idTag": "REMOTE-1"},
            "timeout": 10,
        },
    ),
    # The first StopTransaction is the emergency stop on gun 1 (the test raises it).
    ("gun1_stopped", {"wait_for": "StopTransaction", "count": 1, "timeout": 40}),
    (
        "remote_stop",
        {
            "call": "RemoteStopTransaction",
            "payload": {"transactionId": REMOTE_TX},
            "timeout": 10,
        },
    ),
]
STEP = {name: index for index, (name, _) in enumerate(SCRIPT)}
STEP_OUTCOMES = {"result", "error", "raw_reply", "raw_no_reply", "waited", "wait_timeout", "slept"}


# --- processes and the API ---------------------------------------------------------------------


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_event(kind: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == kind and all(e.get(k) == v for k, v in fields.items())


def is_call(action: str, **payload: Any) -> Callable[[dict[str, Any]], bool]:
    """A CALL from the charger whose payload has these fields."""

    def match(event: dict[str, Any]) -> bool:
        body = event.get("payload")
        return (
            event.get("event") == "call"
            and event.get("action") == action
            and isinstance(body, dict)
            and all(body.get(k) == v for k, v in payload.items())
        )

    return match


class Refused(AssertionError):
    """The API answered with an HTTP error status."""

    def __init__(self, request: str, code: int, answer: Any) -> None:
        super().__init__(f"{request} -> HTTP {code}: {answer}")
        self.code = code
        self.answer = answer if isinstance(answer, dict) else {"error": answer}


# The API is local: never send it through a proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Api:
    """The charger's local API over plain urllib; every call and every wait is bounded."""

    def __init__(self, port: int, charger: ManagedProcess) -> None:
        self.address = f"127.0.0.1:{port}"
        self.base = f"http://{self.address}"
        self.charger = charger
        self.last: dict[str, Any] | None = None  # the most recent /api/status answer

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with _opener.open(request, timeout=5) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                raw = error.read()
            try:
                refused = json.loads(raw)
            except ValueError:
                refused = {"error": raw.decode(errors="replace")}
            raise Refused(f"{method} {path} {body}", error.code, refused) from None
        assert isinstance(answer, dict), answer
        return answer

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST a JSON object; the connector entry of the `{"ok": true, ...}` answer."""
        return self.post_answer(path, body)["connector"]  # type: ignore[no-any-return]

    def post_answer(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST a JSON object; the whole `{"ok": true, ...}` answer."""
        answer = self._request("POST", path, {} if body is None else body)
        assert answer.get("ok") is True, answer
        return answer

    def post_refused(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """POST what the API must refuse: its HTTP status and the answer's `error`."""
        try:
            answer = self._request("POST", path, body)
        except Refused as refused:
            return refused.code, refused.answer.get("error")
        raise AssertionError(f"POST {path} {body} was accepted: {answer}")

    def status(self) -> dict[str, Any]:
        self.last = self._request("GET", "/api/status", None)
        return self.last

    def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float
    ) -> dict[str, Any]:
        """The first /api/status answer for which `predicate` holds, polled until `timeout`."""
        deadline = time.monotonic() + timeout
        failure = ""
        while True:
            try:
                snapshot = self.status()
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                failure = f"{type(exc).__name__}: {exc}"  # not listening yet, or busy
            else:
                if predicate(snapshot):
                    return snapshot
            if self.charger.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"API never showed {what} within {timeout} s; last answer {self.last}"
                    f"{f' ({failure})' if failure else ''}\n{self.charger.describe()}"
                )
            time.sleep(POLL_SECONDS)

    def wait_connector(
        self, cid: int, predicate: Callable[[dict[str, Any]], bool], what: str
    ) -> dict[str, Any]:
        snapshot = self.wait_status(
            lambda s: predicate(connector(s, cid)), f"connector {cid} {what}", STATE_TIMEOUT
        )
        return connector(snapshot, cid)


def connector(snapshot: dict[str, Any], cid: int) -> dict[str, Any]:
    (entry,) = [c for c in snapshot["connectors"] if c["id"] == cid]
    return entry  # type: ignore[no-any-return]


def charging(entry: dict[str, Any]) -> bool:
    return (
        entry["status"] == "Charging"
        and entry["transactionId"] is not None
        and entry["relayClosed"]
        and entry["powerW"] > 0
    )


def settled(status: str) -> Callable[[dict[str, Any]], bool]:
    """In `status` with no transaction and the relay confirmed open: no energy flows."""
    return lambda entry: (
        entry["status"] == status
        and entry["transactionId"] is None
        and not entry["relayClosed"]
        and entry["powerW"] == 0
    )


# --- the run -----------------------------------------------------------------------------------


@dataclass
class ApiRun:
    events: list[dict[str, Any]] = field(default_factory=list)  # the peer's, in order
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # API answers, by name
    cli: subprocess.CompletedProcess[str] | None = None
    invalid_tag_cli: subprocess.CompletedProcess[str] | None = None  # sim authorize INVALID-A
    tag_while_faulted: tuple[int, Any] | None = None  # HTTP status and error of the refusal
    exit_status: int | None = None
    charger_stderr: str = ""
    problems: list[str] = field(default_factory=list)

    def context(self) -> str:
        lines = [f"{e}" for e in self.events[-40:]]
        return (
            "\n".join(self.problems)
            + "\npeer events (last 40):\n  "
            + "\n  ".join(lines)
            + "\ncharger stderr:\n"
            + self.charger_stderr[-4000:]
        )

    def entry(self, name: str) -> dict[str, Any]:
        """What the API answered at the scenario's point `name`."""
        if name not in self.entries:
            raise AssertionError(f"the scenario did not get to {name!r}\n{self.context()}")
        return self.entries[name]

    def outcome(self, name: str) -> tuple[int, dict[str, Any]]:
        """Position and event of what the peer recorded for the scripted step `name`."""
        for position, event in enumerate(self.events):
            if event.get("event") in STEP_OUTCOMES and event.get("step") == STEP[name]:
                return position, event
        raise AssertionError(f"step {name!r} has no recorded outcome\n{self.context()}")

    def result(self, name: str) -> dict[str, Any]:
        _, event = self.outcome(name)
        assert event["event"] == "result", (event, self.context())
        return event["payload"]  # type: ignore[no-any-return]

    def find(self, predicate: Callable[[dict[str, Any]], bool]) -> list[tuple[int, dict[str, Any]]]:
        """(position, payload) of every recorded CALL matching `predicate`, in order."""
        return [(i, e["payload"]) for i, e in enumerate(self.events) if predicate(e)]

    def first(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> tuple[int, Any]:
        found = self.find(predicate)
        assert found, f"no {what} recorded\n{self.context()}"
        return found[0]

    def one(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> tuple[int, Any]:
        found = self.find(predicate)
        assert len(found) == 1, f"expected exactly one {what}, got {found}\n{self.context()}"
        return found[0]

    def statuses(self, cid: int) -> list[tuple[str, str]]:
        """(status, errorCode) of every StatusNotification for connector `cid`, in order."""
        return [
            (p["status"], p["errorCode"])
            for _, p in self.find(is_call("StatusNotification", connectorId=cid))
        ]

    def transaction_ids(self) -> dict[int, int]:
        """Position of each StartTransaction -> the id the peer gave it (1, 2, ... in the order
        it received them, see `on_start_transaction` in the peer)."""
        starts = self.find(is_call("StartTransaction"))
        return {position: number for number, (position, _) in enumerate(starts, start=1)}


def run_sim_cli(api: Api, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m dcocpp sim ARGS --api ...`, as an operator types it."""
    return subprocess.run(
        [sys.executable, "-m", "dcocpp", "sim", *args, "--api", api.address],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def drive(run: ApiRun, csms: ManagedProcess, charger: ManagedProcess, api: Api) -> None:
    """The operator's side of the scenario (see the module docstring)."""
    peer = csms.stdout
    snap = api.wait_status(
        lambda s: (
            s["chargePoint"]["registration"] == "Accepted"
            and all(c["status"] == "Available" for c in s["connectors"])
        ),
        "the charger registered, both guns Available",
        START_TIMEOUT,
    )
    run.entries["gun1_before"] = connector(snap, 1)
    run.entries["gun2_before"] = connector(snap, 2)
    peer.wait_for_event(is_event("waited", step=STEP["boot_statuses"]), START_TIMEOUT)

    # 1. TC_010: cable first, through the operator's command line; then the remote start.
    run.cli = run_sim_cli(api, "plug", "2")
    assert run.cli.returncode == 0, run.cli
    peer.wait_for_event(is_event("result", step=STEP["remote_start"]), STATE_TIMEOUT)
    run.entries["gun2_charging"] = api.wait_connector(2, charging, "Charging")
    peer.wait_for_event(
        is_call("StatusNotification", connectorId=2, status="Charging"), STATE_TIMEOUT
    )

    # 2. TC_003 on gun 1 while gun 2 charges: plug in first, then the tag.
    run.entries["gun1_plugged"] = api.post("/api/connectors/1/plug")
    run.invalid_tag_cli = run_sim_cli(api, "authorize", "1", "INVALID-A")  # the peer refuses it
    answer = api.post_answer("/api/connectors/1/authorize", {"idTag": "TAG-A"})
    run.entries["gun1_authorize"] = answer["connector"]
    run.entries["tag_a_decision"] = answer["authorization"]
    run.entries["gun1_charging"] = api.wait_connector(1, charging, "Charging")
    peer.wait_for_event(
        is_call("StatusNotification", connectorId=1, status="Charging"), STATE_TIMEOUT
    )
    snap = api.status()
    run.entries["both_remote_and_local_1"] = connector(snap, 1)
    run.entries["both_remote_and_local_2"] = connector(snap, 2)

    # 3. Emergency stop on gun 1; the script answers its StopTransaction with the remote stop
    #    of gun 2 (TC_012). The fault is cleared only once the peer has the StopTransaction.
    run.entries["estop_on"] = api.post("/api/connectors/1/faults/estop", {"active": True})
    run.entries["gun1_faulted"] = api.wait_connector(1, settled("Faulted"), "Faulted, relay open")
    peer.wait_for_event(is_call("StopTransaction", transactionId=TAG_A_TX), STATE_TIMEOUT)
    run.tag_while_faulted = api.post_refused("/api/connectors/1/authorize", {"idTag": "TAG-X"})
    run.entries["estop_off"] = api.post("/api/connectors/1/faults/estop", {"active": False})
    run.entries["gun1_finishing"] = api.wait_connector(1, settled("Finishing"), "Finishing")
    peer.wait_for_event(is_event("result", step=STEP["remote_stop"]), STATE_TIMEOUT)
    run.entries["gun2_finishing"] = api.wait_connector(2, settled("Finishing"), "Finishing")
    peer.wait_for_event(is_call("StopTransaction", transactionId=REMOTE_TX), STATE_TIMEOUT)
    peer.wait_for_event(is_event("script_done"), STATE_TIMEOUT)

    # 4. Two guns over the API at once: unplug both, then plug and authorize both together.
    for cid in (1, 2):
        api.post(f"/api/connectors/{cid}/unplug")
    for cid in (1, 2):
        run.entries[f"gun{cid}_available"] = api.wait_connector(
            cid, settled("Available"), "Available"
        )
    api.post("/api/connectors/1/plug")
    api.post("/api/connectors/2/plug")
    api.post("/api/connectors/1/authorize", {"idTag": "TAG-B"})
    api.post("/api/connectors/2/authorize", {"idTag": "TAG-C"})
    snap = api.wait_status(
        lambda s: charging(connector(s, 1)) and charging(connector(s, 2)),
        "both guns Charging",
        STATE_TIMEOUT,
    )
    run.entries["both_api_1"] = connector(snap, 1)
    run.entries["both_api_2"] = connector(snap, 2)
    for cid in (1, 2):
        peer.wait_for_event(
            is_call("StatusNotification", connectorId=cid, status="Charging"), STATE_TIMEOUT, nth=2
        )
    # Gun 1's own tag ends gun 1's transaction; gun 2 charges on.
    tx_1 = run.entries["both_api_1"]["transactionId"]
    answer = api.post_answer("/api/connectors/1/authorize", {"idTag": "TAG-B"})
    run.entries["tag_b_stop_decision"] = answer["authorization"]
    peer.wait_for_event(is_call("StopTransaction", transactionId=tx_1), STATE_TIMEOUT)
    run.entries["both_api_1_stopped"] = api.wait_connector(1, settled("Finishing"), "Finishing")
    run.entries["both_api_2_after"] = connector(api.status(), 2)

    # 5. The operator stops the charger.
    charger.send_signal(signal.SIGTERM)
    run.exit_status = charger.wait(EXIT_TIMEOUT)


@pytest.fixture(scope="module", params=["simulated", "plc"])
def api_run(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> ApiRun:
    """One charger with its API against one scripted central system, the whole scenario: on
    the simulated guns, and on the PLC backend against emulated PLCs on a virtual CAN bus."""
    tmp = tmp_path_factory.mktemp("api")
    config = plc_charger_config(tmp) if request.param == "plc" else None
    run = ApiRun()
    csms, csms_port = start_peer_csms(
        tmp, [step for _, step in SCRIPT], heartbeat_interval=60, timeout=START_TIMEOUT
    )
    charger: ManagedProcess | None = None
    try:
        api_port = free_port()
        charger = start_charger(
            tmp, f"ws://127.0.0.1:{csms_port}/ocpp", api_port=api_port, config=config
        )
        api = Api(api_port, charger)
        try:
            drive(run, csms, charger, api)
        except Exception:  # each test reports what it misses, with this context
            run.problems.append(f"the scenario stopped:\n{traceback.format_exc(limit=4)}")
    finally:
        if charger is not None:
            charger.stop()
            run.charger_stderr = charger.stderr.text
        csms.stop()
        run.events = csms.stdout.events
    return run


# --- the tests ---------------------------------------------------------------------------------


def test_tc_003_plug_in_first_over_the_api(api_run: ApiRun) -> None:
    before = api_run.entry("gun1_before")
    assert api_run.entry("gun1_plugged")["status"] == "Preparing"
    assert api_run.entry("gun1_plugged")["plugged"] is True

    # SN Preparing -> Authorize -> StartTransaction, SN Charging after the Authorize (before or
    # after StartTransaction, as OCTT allows).
    preparing, _ = api_run.first(
        is_call("StatusNotification", connectorId=1, status="Preparing"), "SN Preparing"
    )
    authorize, auth_payload = api_run.one(is_call("Authorize", idTag="TAG-A"), "Authorize TAG-A")
    start, start_payload = api_run.one(
        is_call("StartTransaction", idTag="TAG-A"), "StartTransaction TAG-A"
    )
    charging_sn, _ = api_run.first(
        is_call("StatusNotification", connectorId=1, status="Charging"), "SN Charging"
    )
    assert preparing < authorize < start, api_run.context()
    assert authorize < charging_sn, api_run.context()
    assert auth_payload == {"idTag": "TAG-A"}
    assert start_payload["connectorId"] == 1
    assert type(start_payload["meterStart"]) is int
    # The register the API showed (nothing has flowed yet, it is a whole number of Wh).
    assert start_payload["meterStart"] == before["energyWh"], (before, start_payload)
    assert set(start_payload) <= {"connectorId", "idTag", "meterStart", "timestamp"}
    assert api_run.statuses(1)[:3] == [
        ("Available", "NoError"),
        ("Preparing", "NoError"),
        ("Charging", "NoError"),
    ], api_run.context()

    # The API shows the transaction the central system numbered.
    assert api_run.transaction_ids()[start] == TAG_A_TX
    entry = api_run.entry("gun1_charging")
    assert entry["status"] == "Charging" and entry["errorCode"] == "NoError"
    assert entry["transactionId"] == TAG_A_TX
    assert entry["idTag"] == "TAG-A"
    assert entry["powerW"] > 0 and entry["relayClosed"] is True
    assert entry["energyWh"] >= before["energyWh"]


def test_tc_010_remote_start_cable_plugged_first(api_run: ApiRun) -> None:
    # The operator's command line plugged gun 2.
    cli = api_run.cli
    assert cli is not None, api_run.context()
    assert cli.returncode == 0, cli
    assert cli.stdout.startswith("connector 2: Preparing, plugged, relay open"), cli.stdout

    # The script's gate was gun 2's Preparing, and only then came the remote start.
    booted, _ = api_run.outcome("boot_statuses")
    gate, _ = api_run.outcome("gun2_preparing")
    assert api_run.events[gate]["event"] == "waited", api_run.context()
    between = [
        (e["action"], e["payload"])
        for e in api_run.events[booted:gate]
        if e.get("event") == "call" and e["action"] != "Heartbeat"
    ]
    assert len(between) == 1, api_run.context()
    assert between[0][0] == "StatusNotification"
    assert between[0][1]["connectorId"] == 2 and between[0][1]["status"] == "Preparing"
    assert api_run.result("remote_start") == {"status": "Accepted"}

    start, payload = api_run.one(
        is_call("StartTransaction", idTag="REMOTE-1"), "StartTransaction REMOTE-1"
    )
    assert start > gate, api_run.context()
    assert payload["connectorId"] == 2
    assert payload["meterStart"] == api_run.entry("gun2_before")["energyWh"], payload
    assert api_run.transaction_ids()[start] == REMOTE_TX
    assert api_run.statuses(2)[:3] == [
        ("Available", "NoError"),
        ("Preparing", "NoError"),
        ("Charging", "NoError"),
    ], api_run.context()

    entry = api_run.entry("gun2_charging")
    assert entry["status"] == "Charging"
    assert entry["transactionId"] == REMOTE_TX
    assert entry["idTag"] == "REMOTE-1"
    assert entry["powerW"] > 0


def test_tc_012_remote_stop(api_run: ApiRun) -> None:
    assert api_run.result("remote_stop") == {"status": "Accepted"}
    gate, _ = api_run.outcome("gun1_stopped")  # the RemoteStopTransaction went out after this
    _, start = api_run.one(is_call("StartTransaction", idTag="REMOTE-1"), "remote start")
    stop_at, stop = api_run.one(
        is_call("StopTransaction", transactionId=REMOTE_TX), f"StopTransaction {REMOTE_TX}"
    )
    assert stop_at > gate, api_run.context()
    assert stop["reason"] == "Remote"
    assert type(stop["meterStop"]) is int and stop["meterStop"] >= start["meterStart"]
    # SN Finishing follows the RemoteStopTransaction (before or after StopTransaction).
    finishing_at, _ = api_run.first(
        is_call("StatusNotification", connectorId=2, status="Finishing"), "SN Finishing"
    )
    assert finishing_at > gate, api_run.context()
    assert api_run.statuses(2)[:4] == [
        ("Available", "NoError"),
        ("Preparing", "NoError"),
        ("Charging", "NoError"),
        ("Finishing", "NoError"),
    ], api_run.context()

    entry = api_run.entry("gun2_finishing")  # waited for with the relay open
    assert entry["status"] == "Finishing"
    assert entry["transactionId"] is None and entry["idTag"] is None
    assert entry["plugged"] is True and entry["relayClosed"] is False and entry["powerW"] == 0
    # Billed up to the register the API shows once no energy flows.
    assert abs(stop["meterStop"] - entry["energyWh"]) <= WH_TOLERANCE, (stop, entry)


def test_tc_041_emergency_stop_while_charging_then_cleared_with_ev_plugged(
    api_run: ApiRun,
) -> None:
    raised = api_run.entry("estop_on")
    assert (raised["status"], raised["errorCode"]) == ("Faulted", "OtherError")
    faulted = api_run.entry("gun1_faulted")
    assert faulted["transactionId"] is None and faulted["powerW"] == 0
    assert faulted["relayClosed"] is False and faulted["plugged"] is True
    # The status names the fault, not only OtherError; the log says it once, at WARNING.
    assert faulted["faults"] == [
        {
            "kind": "estop",
            "errorCode": "OtherError",
            "vendorErrorCode": "EmergencyStop",
            "detail": "PLC 0: emergency stop",
        }
    ]
    fault_lines = [line for line in api_run.charger_stderr.splitlines() if " fault " in line]
    assert len(fault_lines) == 2, fault_lines
    assert "WARNING" in fault_lines[0]
    assert fault_lines[0].endswith(
        "connector 1: fault estop raised (OtherError, EmergencyStop): PLC 0: emergency stop"
    )
    assert fault_lines[1].endswith("connector 1: fault estop cleared")

    faulted_at, sn = api_run.one(
        is_call("StatusNotification", connectorId=1, status="Faulted"), "SN Faulted"
    )
    assert sn["errorCode"] == "OtherError"
    assert sn["vendorErrorCode"] == "EmergencyStop"
    _, start = api_run.one(is_call("StartTransaction", idTag="TAG-A"), "TAG-A start")
    _, stop = api_run.one(
        is_call("StopTransaction", transactionId=TAG_A_TX), f"StopTransaction {TAG_A_TX}"
    )
    assert stop["reason"] == "EmergencyStop"
    assert type(stop["meterStop"]) is int and stop["meterStop"] >= start["meterStart"]
    assert abs(stop["meterStop"] - faulted["energyWh"]) <= WH_TOLERANCE, (stop, faulted)

    # No transaction can start while Faulted: a tag at that gun is refused, nothing is sent.
    assert api_run.tag_while_faulted is not None, api_run.context()
    code, error = api_run.tag_while_faulted
    assert code == 422 and "Faulted" in error, api_run.tag_while_faulted
    assert not api_run.find(is_call("Authorize", idTag="TAG-X")), api_run.context()

    # Cleared with the EV still plugged: the truthful status, Finishing, and no new transaction
    # until the EV is unplugged (Available, which the scenario does next).
    assert api_run.statuses(1)[2:6] == [
        ("Charging", "NoError"),
        ("Faulted", "OtherError"),
        ("Finishing", "NoError"),
        ("Available", "NoError"),
    ], api_run.context()
    unplugged_at = api_run.find(is_call("StatusNotification", connectorId=1, status="Available"))
    assert not [
        position
        for position, _ in api_run.find(is_call("StartTransaction", connectorId=1))
        if faulted_at < position < unplugged_at[1][0]
    ], api_run.context()
    cleared = api_run.entry("gun1_finishing")
    assert cleared["status"] == "Finishing" and cleared["errorCode"] == "NoError"
    assert cleared["faults"] == []
    assert cleared["plugged"] is True and cleared["transactionId"] is None


def test_two_guns_charging_at_once_over_the_api(api_run: ApiRun) -> None:
    # Gun 2 (remote start) and gun 1 (TAG-A) were charging at the same moment...
    first = api_run.entry("both_remote_and_local_1"), api_run.entry("both_remote_and_local_2")
    assert all(charging(e) for e in first), first
    assert [e["transactionId"] for e in first] == [TAG_A_TX, REMOTE_TX]

    # ... and so were both guns plugged and authorized over the API together.
    entries = api_run.entry("both_api_1"), api_run.entry("both_api_2")
    assert all(charging(e) for e in entries), entries
    assert [e["idTag"] for e in entries] == ["TAG-B", "TAG-C"]
    ids = {
        api_run.transaction_ids()[position]: p
        for position, p in api_run.find(is_call("StartTransaction"))
    }
    for cid, entry in zip((1, 2), entries, strict=True):
        payload = ids[entry["transactionId"]]  # the StartTransaction the peer gave that id
        assert payload["connectorId"] == cid and payload["idTag"] == entry["idTag"], ids
        # The gun's register did not move while it stood idle (the API shows 0.1 Wh).
        idle = api_run.entry(f"gun{cid}_available")
        assert abs(payload["meterStart"] - idle["energyWh"]) <= WH_TOLERANCE, (payload, idle)
    assert {e["transactionId"] for e in entries} == {3, 4}

    # Gun 1's tag stops gun 1's transaction only.
    tx_1, tx_2 = (e["transactionId"] for e in entries)
    _, stop = api_run.one(is_call("StopTransaction", transactionId=tx_1), f"StopTransaction {tx_1}")
    assert stop["reason"] == "Local" and stop["idTag"] == "TAG-B"
    # Gun 2's goes on until the charger is stopped at the end of the run (SIGTERM: Reboot).
    stops_2 = api_run.find(is_call("StopTransaction", transactionId=tx_2))
    assert [p["reason"] for _, p in stops_2] == ["Reboot"], api_run.context()
    after = api_run.entry("both_api_2_after")
    assert charging(after) and after["transactionId"] == tx_2, after
    assert api_run.entry("both_api_1_stopped")["transactionId"] is None


def test_the_api_answers_a_tag_with_what_the_charger_decided(api_run: ApiRun) -> None:
    # Invalid for the central system, through the operator's command line: exit status 2.
    cli = api_run.invalid_tag_cli
    assert cli is not None, api_run.context()
    assert cli.returncode == 2, cli
    lines = cli.stdout.splitlines()
    assert lines[0] == "INVALID-A: Invalid (central system)", cli.stdout
    assert lines[1].startswith("connector 1: Preparing, plugged, relay open"), cli.stdout
    api_run.one(is_call("Authorize", idTag="INVALID-A"), "Authorize INVALID-A")
    assert not api_run.find(is_call("StartTransaction", idTag="INVALID-A")), api_run.context()

    # Accepted: the gun took it.
    assert api_run.entry("tag_a_decision") == {
        "idTag": "TAG-A",
        "status": "Accepted",
        "source": "central system",
        "taken": True,
        "detail": None,
    }
    # The transaction's own tag stops it, nobody asked.
    assert api_run.entry("tag_b_stop_decision") == {
        "idTag": "TAG-B",
        "status": "Accepted",
        "source": "the transaction's own tag",
        "taken": True,
        "detail": "stops the transaction",
    }
    # Refused at the reader (the gun is Faulted), and why.
    assert api_run.tag_while_faulted is not None, api_run.context()
    code, error = api_run.tag_while_faulted
    assert code == 422, api_run.tag_while_faulted
    assert error.startswith("connector 1 refused TAG-X at the reader: the gun is Faulted ("), error


def test_every_call_passes_the_schemas_and_the_script_ran_clean(api_run: ApiRun) -> None:
    sent = [e for e in api_run.events if e.get("event") == "call"]
    for event in sent:
        get_validator(MessageType.Call, event["action"], "1.6").validate(event["payload"])
    errors = [e for e in api_run.events if e.get("event") in ("error", "wait_timeout")]
    assert errors == [], api_run.context()
    assert [e["event"] for e in api_run.events if "connected" in e.get("event", "")] == [
        "connected",
        "disconnected",
    ], api_run.context()
    assert api_run.problems == [], api_run.context()


def test_sigterm_stops_the_charger_cleanly(api_run: ApiRun) -> None:
    assert api_run.exit_status == EXIT_OK, api_run.context()
    assert "Traceback" not in api_run.charger_stderr, api_run.context()
