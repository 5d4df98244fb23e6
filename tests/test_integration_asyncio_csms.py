"""dcocpp as an operator runs it, against an independent central system, in real time.

The central system is tests/peers/asyncio_csms.py (the `ocpp` package's own asyncio ChargePoint on
the `websockets` server, validating every payload with the package's schemas) in one process;
the charger is `python -m dcocpp run` in another; both on loopback, port 0. The peer's `--script`
drives the central system's side, its `--record` file is what we assert on.

Most checks share one run (`main_run`: boot, configuration, availability, trigger, RPC errors,
then a hard reset); each test asserts one part of it, named after the OCTT case it covers
(docs/conformance.md). Every wait has a deadline and every process is killed in a
`finally`, so a broken charger fails these tests with its output instead of hanging them.
"""

from __future__ import annotations

import json
import re
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ocpp.messages import MessageType, get_validator

from dcocpp.cli.commands import EXIT_HARD_RESET, EXIT_OK
from dcocpp.cli.logs import MESSAGE_LOG_NAME
from tests.processes import ManagedProcess, start_charger, start_peer_csms, wait_api_status

pytestmark = pytest.mark.process

CHARGE_POINT_ID = "DCOCPP-001"  # configs/charger.json
START_TIMEOUT = 10.0  # a process is up (LISTENING / first log line)
SCRIPT_TIMEOUT = 15.0  # the whole scripted exchange
EXIT_TIMEOUT = 8.0  # a reset or a signal ends the process (the close handshake is bounded by 2 s)

# Steps of the main run, by name; `main_run` turns them into the peer's --script list.
MAIN_STEPS: list[tuple[str, dict[str, Any]]] = [
    # The script starts right after BootNotification.conf: let the three boot-time
    # StatusNotifications through first (a later one for the same connector would replace an
    # undelivered one, by design, and we want to see connector 1 go Available -> Unavailable).
    ("statuses", {"wait_for": "StatusNotification", "count": 3, "timeout": 5}),
    ("get_all", {"call": "GetConfiguration", "payload": {}}),
    (
        "get_some",
        {"call": "GetConfiguration", "payload": {"key": ["MeterValueSampleInterval", "Foo"]}},
    ),
    (
        "change_sample_interval",
        {
            "call": "ChangeConfiguration",
            "payload": {"key": "MeterValueSampleInterval", "value": "30"},
        },
    ),
    (
        "read_sample_interval",
        {"call": "GetConfiguration", "payload": {"key": ["MeterValueSampleInterval"]}},
    ),
    (
        "change_invalid",
        {"call": "ChangeConfiguration", "payload": {"key": "HeartbeatInterval", "value": "abc"}},
    ),
    (
        "change_unknown",
        {"call": "ChangeConfiguration", "payload": {"key": "FooBarBaz", "value": "1"}},
    ),
    ("unknown_action", {"raw": [2, "x1", "FooBar", {}], "timeout": 3}),
    (
        "invalid_call",
        {"raw": [2, "x2", "ChangeConfiguration", {"key": "HeartbeatInterval"}], "timeout": 3},
    ),
    ("garbage", {"raw_text": "not json", "timeout": 0.5}),
    (
        "availability",
        {"call": "ChangeAvailability", "payload": {"connectorId": 1, "type": "Inoperative"}},
    ),
    # Heartbeats every second (the boot answer's interval) while the above ran.
    ("heartbeats", {"wait_for": "Heartbeat", "count": 2, "timeout": 5}),
    # From here on no spontaneous heartbeat, so the triggered one is unambiguous.
    (
        "quiet",
        {"call": "ChangeConfiguration", "payload": {"key": "HeartbeatInterval", "value": "3600"}},
    ),
    ("trigger_heartbeat", {"call": "TriggerMessage", "payload": {"requestedMessage": "Heartbeat"}}),
    (
        "trigger_status_2",
        {
            "call": "TriggerMessage",
            "payload": {"requestedMessage": "StatusNotification", "connectorId": 2},
        },
    ),
    (
        "trigger_status_9",
        {
            "call": "TriggerMessage",
            "payload": {"requestedMessage": "StatusNotification", "connectorId": 9},
        },
    ),
    ("reset", {"call": "Reset", "payload": {"type": "Hard"}}),
]
STEP = {name: index for index, (name, _) in enumerate(MAIN_STEPS)}
NEXT_ATTEMPT = re.compile(r"next (connection )?attempt in \d+(\.\d+)? s")
STEP_OUTCOMES = {"result", "error", "raw_reply", "raw_no_reply", "waited", "wait_timeout", "slept"}


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_record(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def is_event(kind: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == kind and all(e.get(k) == v for k, v in fields.items())


def calls(events: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "call" and e["action"] == action]


def statuses(events: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [
        (p["connectorId"], p["status"], p["errorCode"])
        for p in (e["payload"] for e in calls(events, "StatusNotification"))
    ]


def assert_no_traceback(charger: ManagedProcess) -> None:
    assert "Traceback" not in charger.stderr.text, charger.describe()


# --- the main run ------------------------------------------------------------------------------


@dataclass
class MainRun:
    tmp: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    exit_status: int | None = None
    charger_stderr: str = ""
    problems: list[str] = field(default_factory=list)

    def context(self) -> str:
        return "\n".join(self.problems) + "\ncharger stderr:\n" + self.charger_stderr[-6000:]

    def outcome(self, name: str) -> dict[str, Any]:
        """What the peer recorded for the scripted step `name`."""
        index = STEP[name]
        for position, event in enumerate(self.events):
            if event["event"] in STEP_OUTCOMES and event.get("step") == index:
                return {**event, "position": position}
        raise AssertionError(f"step {name!r} has no recorded outcome\n{self.context()}")

    def result(self, name: str) -> dict[str, Any]:
        outcome = self.outcome(name)
        assert outcome["event"] == "result", (outcome, self.context())
        return outcome["payload"]  # type: ignore[no-any-return]

    def between(self, first: str, last: str) -> list[dict[str, Any]]:
        """Events recorded after step `first`'s outcome and before step `last`'s."""
        return self.events[self.outcome(first)["position"] + 1 : self.outcome(last)["position"]]


@pytest.fixture(scope="module")
def main_run(tmp_path_factory: pytest.TempPathFactory) -> MainRun:
    """One charger against one scripted central system, ending with Reset Hard."""
    tmp = tmp_path_factory.mktemp("main")
    run = MainRun(tmp)
    csms, port = start_peer_csms(
        tmp, [step for _, step in MAIN_STEPS], name="csms", timeout=START_TIMEOUT
    )
    charger: ManagedProcess | None = None
    try:
        charger = start_charger(tmp, f"ws://127.0.0.1:{port}/ocpp")
        try:
            csms.stdout.wait_for_event(is_event("script_done"), SCRIPT_TIMEOUT)
        except AssertionError as exc:
            run.problems.append(str(exc))
        try:
            run.exit_status = charger.wait(EXIT_TIMEOUT)
        except AssertionError as exc:
            run.problems.append(str(exc))
    finally:
        if charger is not None:
            charger.stop()
            run.charger_stderr = charger.stderr.text
        csms.stop()
    run.events = read_record(tmp / "csms.jsonl")
    return run


def test_tc_001_cold_boot_statuses_and_heartbeats(main_run: MainRun) -> None:
    events = main_run.events
    boots = calls(events, "BootNotification")
    assert [b["payload"] for b in boots] == [
        {"chargePointVendor": "dcocpp", "chargePointModel": "DC-2G-150", "firmwareVersion": "0.1.0"}
    ], main_run.context()
    assert boots[0]["cp_id"] == CHARGE_POINT_ID
    connected = [e for e in events if e["event"] == "connected"]
    assert len(connected) == 1 and connected[0]["subprotocol"] == "ocpp1.6"
    # After Accepted: connector 0 and each connector Available, in id order.
    assert statuses(events)[:3] == [
        (0, "Available", "NoError"),
        (1, "Available", "NoError"),
        (2, "Available", "NoError"),
    ]
    # Heartbeats every `interval` (1 s) until the central system changed HeartbeatInterval.
    beats = [e["time"] for e in calls(main_run.between("statuses", "quiet"), "Heartbeat")]
    assert len(beats) >= 2, main_run.context()
    gaps = [b - a for a, b in zip([boots[0]["time"], *beats], beats, strict=False)]
    assert all(0.5 < gap < 2.5 for gap in gaps), gaps


def test_every_call_from_the_charger_passes_the_ocpp16_schemas(main_run: MainRun) -> None:
    # The peer validated these too (an invalid CALL would have been answered with a CALLERROR
    # and the run would have stalled); check again here so that a failure says which one.
    sent = [e for e in main_run.events if e["event"] == "call"]
    assert {e["action"] for e in sent} >= {"BootNotification", "StatusNotification", "Heartbeat"}
    for event in sent:
        get_validator(MessageType.Call, event["action"], "1.6").validate(event["payload"])
    # Every scripted CALL got a result that passed the peer's schema validation.
    errors = [e for e in main_run.events if e["event"] in ("error", "wait_timeout")]
    assert errors == [], main_run.context()


def test_tc_019_get_configuration(main_run: MainRun) -> None:
    keys = {k["key"]: k for k in main_run.result("get_all")["configurationKey"]}
    # Set from BootNotification.conf's interval.
    assert keys["HeartbeatInterval"] == {
        "key": "HeartbeatInterval",
        "readonly": False,
        "value": "1",
    }
    assert keys["NumberOfConnectors"] == {
        "key": "NumberOfConnectors",
        "readonly": True,
        "value": "2",
    }
    assert "AuthorizationKey" not in keys  # write-only
    assert "unknownKey" not in main_run.result("get_all")
    some = main_run.result("get_some")
    assert some == {
        "configurationKey": [{"key": "MeterValueSampleInterval", "readonly": False, "value": "60"}],
        "unknownKey": ["Foo"],
    }


def test_tc_021_change_meter_value_sample_interval(main_run: MainRun) -> None:
    assert main_run.result("change_sample_interval") == {"status": "Accepted"}
    assert main_run.result("read_sample_interval") == {
        "configurationKey": [{"key": "MeterValueSampleInterval", "readonly": False, "value": "30"}]
    }


def test_tc_040_1_change_unknown_key_not_supported(main_run: MainRun) -> None:
    assert main_run.result("change_unknown") == {"status": "NotSupported"}


def test_tc_040_2_change_invalid_value_rejected(main_run: MainRun) -> None:
    assert main_run.result("change_invalid") == {"status": "Rejected"}


def test_change_availability_inoperative_reports_unavailable(main_run: MainRun) -> None:
    assert main_run.result("availability") == {"status": "Accepted"}
    # The StatusNotification may overtake the CALLRESULT on the wire, but not the CALL.
    after = main_run.events[main_run.outcome("garbage")["position"] + 1 :]
    assert (1, "Unavailable", "NoError") in statuses(after), main_run.context()
    # Connector 1 went Available -> Unavailable; nothing else changed.
    assert [s for s in statuses(main_run.events) if s[0] == 1] == [
        (1, "Available", "NoError"),
        (1, "Unavailable", "NoError"),
    ]


def test_tc_054_trigger_message(main_run: MainRun) -> None:
    assert main_run.result("quiet") == {"status": "Accepted"}
    assert main_run.result("trigger_heartbeat") == {"status": "Accepted"}
    # A triggered message goes out after its TriggerMessage.conf, but the peer may record it
    # after a later step's answer: look from the step before up to the reset. HeartbeatInterval
    # is 3600 s by now, so this is the triggered one.
    window = main_run.between("quiet", "reset")
    assert len(calls(window, "Heartbeat")) == 1, window

    assert main_run.result("trigger_status_2") == {"status": "Accepted"}
    window = main_run.between("trigger_heartbeat", "reset")
    assert (2, "Available", "NoError") in statuses(window), window


def test_tc_055_trigger_message_unknown_connector_rejected(main_run: MainRun) -> None:
    assert main_run.result("trigger_status_9") == {"status": "Rejected"}
    # The only StatusNotification after the triggers is the one for connector 2.
    window = main_run.between("trigger_heartbeat", "reset")
    assert statuses(window) == [(2, "Available", "NoError")], window


def test_unknown_action_and_invalid_payload_get_callerrors(main_run: MainRun) -> None:
    unknown = main_run.outcome("unknown_action")
    assert unknown["event"] == "raw_reply", main_run.context()
    assert unknown["frame"][:3] == [4, "x1", "NotSupported"]
    invalid = main_run.outcome("invalid_call")
    assert invalid["event"] == "raw_reply", main_run.context()
    assert invalid["frame"][:3] == [4, "x2", "OccurenceConstraintViolation"]
    for frame in (unknown["frame"], invalid["frame"]):
        assert len(frame) == 5 and isinstance(frame[3], str) and isinstance(frame[4], dict)


def test_garbage_text_is_dropped_and_the_session_stays_up(main_run: MainRun) -> None:
    assert main_run.outcome("garbage")["event"] == "raw_no_reply"
    # The next scripted CALL is answered on the same connection.
    assert main_run.result("availability") == {"status": "Accepted"}
    before_reset = main_run.events[: main_run.outcome("trigger_status_9")["position"]]
    assert [e["event"] for e in before_reset if "connected" in e["event"]] == ["connected"]


def test_tc_013_hard_reset_exits_with_status_3(main_run: MainRun) -> None:
    assert main_run.result("reset") == {"status": "Accepted"}
    assert main_run.exit_status == EXIT_HARD_RESET, main_run.context()
    assert "Traceback" not in main_run.charger_stderr, main_run.context()


def test_message_log_holds_the_frames(main_run: MainRun) -> None:
    log = main_run.tmp / "logs" / MESSAGE_LOG_NAME
    assert log.is_file(), list((main_run.tmp / "logs").iterdir())
    lines = log.read_text(encoding="utf-8").splitlines()
    boot = [line for line in lines if '"BootNotification"' in line]
    assert len(boot) == 1 and " >> [2," in boot[0], boot
    frame = json.loads(boot[0].split(" >> ", 1)[1])
    assert frame[2:] == [
        "BootNotification",
        calls(main_run.events, "BootNotification")[0]["payload"],
    ]
    assert any(" << " in line and '"FooBar"' in line for line in lines)


def test_tc_013_hard_reset_keeps_connector_unavailable(main_run: MainRun) -> None:
    """After the hard reset, the restarted charger (same data directory) still reports connector
    1 Unavailable, and the changed configuration key survived too."""
    assert main_run.exit_status == EXIT_HARD_RESET, main_run.context()
    tmp = main_run.tmp
    steps = [
        {"wait_for": "StatusNotification", "count": 3, "timeout": 5},
        {"call": "GetConfiguration", "payload": {"key": ["MeterValueSampleInterval"]}},
    ]
    csms, port = start_peer_csms(tmp, steps, name="csms-restart", timeout=START_TIMEOUT)
    charger: ManagedProcess | None = None
    try:
        charger = start_charger(tmp, f"ws://127.0.0.1:{port}/ocpp", name="charger-restart")
        csms.stdout.wait_for_event(is_event("script_done"), SCRIPT_TIMEOUT)
        events = csms.stdout.events
        assert statuses(events)[:3] == [
            (0, "Available", "NoError"),
            (1, "Unavailable", "NoError"),
            (2, "Available", "NoError"),
        ], charger.describe()
        answer = csms.stdout.wait_for_event(is_event("result", step=1), 1)
        assert answer["payload"]["configurationKey"][0]["value"] == "30"
        charger.send_signal(signal.SIGTERM)
        assert charger.wait(EXIT_TIMEOUT) == EXIT_OK
        assert_no_traceback(charger)
    finally:
        if charger is not None:
            charger.stop()
        csms.stop()


# --- soft reset, no central system -------------------------------------------------------------


def test_tc_014_soft_reset_reboots_in_process(tmp_path: Path) -> None:
    steps = [
        {"wait_for": "StatusNotification", "count": 3, "timeout": 5},
        {"call": "Reset", "payload": {"type": "Soft"}},
        {"wait_for": "BootNotification", "timeout": 10},
    ]
    csms, port = start_peer_csms(tmp_path, steps, name="csms", timeout=START_TIMEOUT)
    charger: ManagedProcess | None = None
    try:
        charger = start_charger(tmp_path, f"ws://127.0.0.1:{port}/ocpp")
        csms.stdout.wait_for_event(is_event("script_done"), SCRIPT_TIMEOUT)
        events = csms.stdout.events
        outcomes = {e["step"]: e for e in events if e["event"] in STEP_OUTCOMES}
        assert outcomes[1]["event"] == "result", events
        assert outcomes[1]["payload"] == {"status": "Accepted"}
        assert outcomes[2]["event"] == "waited", events  # a second BootNotification came
        # The second boot is registered: its StatusNotifications follow.
        csms.stdout.wait_for_event(is_event("call", action="StatusNotification"), 5, nth=6)
        events = csms.stdout.events
        assert len(calls(events, "BootNotification")) == 2
        assert [e["event"] for e in events if "connected" in e["event"]] == [
            "connected",
            "disconnected",
            "connected",
        ]
        assert charger.returncode is None, charger.describe()  # the process stayed up

        charger.send_signal(signal.SIGTERM)
        assert charger.wait(EXIT_TIMEOUT) == EXIT_OK
        assert_no_traceback(charger)
        assert any("soft reset" in line for line in charger.stderr.lines), charger.describe()
    finally:
        if charger is not None:
            charger.stop()
        csms.stop()


def test_reconnect_resumes_the_registration_without_a_boot_notification(tmp_path: Path) -> None:
    """A central system that hangs up gets the charger back without a BootNotification (it
    is no reboot; some central systems end its transactions on one): a Heartbeat and every
    connector's status."""
    steps = [
        {"wait_for": "StatusNotification", "count": 3, "timeout": 5},
        {"close": True},
        {"wait_for": "StatusNotification", "count": 3, "timeout": 10},
        {"wait_for": "Heartbeat", "timeout": 5},
    ]
    csms, port = start_peer_csms(tmp_path, steps, name="csms", timeout=START_TIMEOUT)
    charger: ManagedProcess | None = None
    try:
        charger = start_charger(tmp_path, f"ws://127.0.0.1:{port}/ocpp")
        csms.stdout.wait_for_event(is_event("script_done"), SCRIPT_TIMEOUT)
        events = csms.stdout.events
        outcomes = {e["step"]: e for e in events if e["event"] in STEP_OUTCOMES}
        assert [outcomes[i]["event"] for i in (2, 3)] == ["waited", "waited"], events
        assert [e["event"] for e in events if "connected" in e["event"]] == [
            "connected",
            "disconnected",
            "connected",
        ]
        reconnected = max(i for i, e in enumerate(events) if e["event"] == "connected")
        after = [e["action"] for e in events[reconnected:] if e["event"] == "call"]
        assert "BootNotification" not in after, after
        assert len(calls(events, "BootNotification")) == 1
        assert charger.returncode is None, charger.describe()
        charger.send_signal(signal.SIGTERM)
        assert charger.wait(EXIT_TIMEOUT) == EXIT_OK
        assert_no_traceback(charger)
    finally:
        if charger is not None:
            charger.stop()
        csms.stop()


def test_no_central_system_is_shown_at_warning_once_and_keeps_retrying(tmp_path: Path) -> None:
    base = f"ws://127.0.0.1:{free_port()}/ocpp"
    url = f"{base}/DCOCPP-001"  # what it connects to: the charge point id appended
    port = free_port()
    with start_charger(tmp_path, base, api_port=port, log_level="WARNING") as charger:
        # At WARNING too: the URL connected to and the reason, with the next attempt.
        line = charger.stderr.wait_for_line(lambda s: "cannot connect" in s, START_TIMEOUT)
        assert f"cannot connect to {url}: cannot connect to 127.0.0.1:" in line, line
        assert "connection refused" in line and NEXT_ATTEMPT.search(line), line
        # It keeps trying (the status counts the attempts), without a line per attempt.
        status = wait_api_status(
            port,
            charger,
            lambda s: (s["chargePoint"]["lastConnectionFailure"] or {}).get("attempts", 0) >= 3,
            "three failed attempts",
            15,
        )
        failure = status["chargePoint"]["lastConnectionFailure"]
        assert failure["url"] == status["chargePoint"]["url"] == url
        assert "connection refused" in failure["reason"]
        assert sum("cannot connect" in s for s in charger.stderr.lines) == 1, charger.describe()
        assert charger.returncode is None, charger.describe()
        charger.send_signal(signal.SIGTERM)
        assert charger.wait(5) == EXIT_OK
        assert_no_traceback(charger)
