"""A power cut, for real: `python -m dcocpp run` charging against a separate-process central
system (tests/peers/asyncio_csms.py) is killed with SIGKILL mid-transaction and started again.

What dcocpp/ocpp/transactions.py promises for that: the transaction the database still holds
as running is stopped at the next boot with reason PowerLoss, at the last meter reading the
connector task persisted (every METER_PERSIST_INTERVAL, dcocpp/connector/task.py) and that
reading's time; and what was queued but not delivered before the kill (here MeterValues
queued while the central system was away) is delivered after the restart, in order, before
that StopTransaction. The second test is the orderly version: SIGPWR (a UPS daemon's "mains
lost") stops every transaction with PowerLoss, delivers it, and exits 0. The last ones are the
planned stop (dcocpp/station/station.py `Station.shut_down`): SIGTERM stops every transaction with
Reboot at the reading after its relay opened, stores it, delivers it within SHUTDOWN_GRACE or
leaves it for the next start (once, never stopped again as PowerLoss), and exits 0; a second
SIGTERM cuts the grace short.

Both processes run on loopback with port 0; every wait has a deadline and every process is
stopped in a `with` block, so a broken charger fails these tests with its output instead of
hanging them. The charger's database is read with a read-only SQLite connection.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from dcocpp.cli.commands import EXIT_OK
from dcocpp.connector.task import METER_PERSIST_INTERVAL
from dcocpp.ocpp import wire
from dcocpp.station.station import RESET_FLUSH_TIMEOUT, SHUTDOWN_GRACE, STOP_TIMEOUT
from dcocpp.storage.database import DATABASE_NAME, Database, QueuedMessage, TransactionRow
from tests.processes import (
    ManagedProcess,
    api_port,
    api_request,
    preset_user_keys,
    start_charger,
    start_peer_csms,
    wait_api_status,
)

pytestmark = pytest.mark.process

START_TIMEOUT = 15.0  # a process is up (LISTENING, the API answers, BootNotification accepted)
STATE_TIMEOUT = 10.0  # one state change seen through the API or by the central system
EXIT_TIMEOUT = 15.0  # SIGPWR: stop, deliver (bounded by RESET_FLUSH_TIMEOUT, 10 s), exit
# The connector task persists the reading METER_PERSIST_INTERVAL after the start (10 s of
# real time: it is a constant, not a key, and this is a real process).
PERSIST_TIMEOUT = METER_PERSIST_INTERVAL + 8.0
KEYS = {
    # Queued meter values arrive every second while the central system is away.
    "MeterValueSampleInterval": 1,
    "MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import",
    "WebSocketPingInterval": 0,
}
GUN = 1
TX_ACTIONS = ("StartTransaction", "MeterValues", "StopTransaction")


def url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ocpp"


def is_call(action: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == "call" and e.get("action") == action


def calls(csms: ManagedProcess, action: str) -> list[dict[str, Any]]:
    """Payloads (camelCase, as on the wire) of the CALLs `action` the peer recorded."""
    return [e["payload"] for e in csms.stdout.events if is_call(action)(e)]


def gun(snapshot: dict[str, Any]) -> dict[str, Any]:
    (entry,) = [c for c in snapshot["connectors"] if c["id"] == GUN]
    return entry


def read_database(tmp: Path) -> tuple[list[TransactionRow], list[QueuedMessage]]:
    """The charger's transactions and outbox as on disk (read-only: nothing is recovered or
    checkpointed on the charger's behalf)."""
    path = tmp / "data" / DATABASE_NAME
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        db = Database(connection, path)
        return db.transactions(), db.queued_messages()


def read_stop_samples(tmp: Path) -> dict[int, list[dict[str, Any]]]:
    """The StopTxnSampledData samples on disk, by transaction (read-only)."""
    path = tmp / "data" / DATABASE_NAME
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        return Database(connection, path).transaction_data()


def wait_database(
    tmp: Path,
    predicate: Callable[[list[TransactionRow], list[QueuedMessage]], bool],
    what: str,
    timeout: float,
    charger: ManagedProcess,
) -> None:
    deadline = time.monotonic() + timeout
    rows: Any = None
    queued: Any = None
    while True:
        try:
            rows, queued = read_database(tmp)
        except sqlite3.OperationalError as exc:  # busy for a moment: the charger writes
            rows, queued = str(exc), None
        else:
            if predicate(rows, queued):
                return
        if time.monotonic() > deadline or charger.returncode is not None:
            raise AssertionError(
                f"the database never showed {what} within {timeout} s: {rows} {queued}\n"
                f"{charger.describe()}"
            )
        time.sleep(0.2)


def recent(events: list[dict[str, Any]]) -> str:
    return "\n".join(str(e) for e in events[-30:])


def transaction_calls(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(action, payload) of every transaction message the peer recorded, in order."""
    return [
        (e["action"], e["payload"])
        for e in events
        if e.get("event") == "call" and e["action"] in TX_ACTIONS
    ]


def start_session(csms: ManagedProcess, charger: ManagedProcess, id_tag: str) -> int:
    """Plug gun 1 and present `id_tag` over the API; returns the transactionId once the
    charger is Charging with it (StartTransaction answered)."""
    port = api_port(charger, START_TIMEOUT)
    wait_api_status(
        port,
        charger,
        lambda s: (
            s["chargePoint"]["registration"] == "Accepted" and gun(s)["status"] == "Available"
        ),
        "the charger registered, gun 1 Available",
        START_TIMEOUT,
    )
    api_request(port, "POST", f"/api/connectors/{GUN}/plug", {})
    api_request(port, "POST", f"/api/connectors/{GUN}/authorize", {"idTag": id_tag})
    csms.stdout.wait_for_event(is_call("StartTransaction"), STATE_TIMEOUT)
    snapshot = wait_api_status(
        port,
        charger,
        lambda s: gun(s)["status"] == "Charging" and gun(s)["transactionId"] is not None,
        "gun 1 Charging with a transactionId",
        STATE_TIMEOUT,
    )
    return int(gun(snapshot)["transactionId"])


def test_sigkill_mid_transaction_then_restart_stops_it_with_power_loss(tmp_path: Path) -> None:
    preset_user_keys(tmp_path, **KEYS)
    csms, port = start_peer_csms(tmp_path, None, heartbeat_interval=60, timeout=START_TIMEOUT)
    with csms, start_charger(tmp_path, url(port), api_port=0) as charger:
        transaction_id = start_session(csms, charger, "CRASH-1")
        # The central system goes away: from now on the meter values queue up, unsent.
        csms.stop()
        wait_database(
            tmp_path,
            lambda rows, queued: (
                len(rows) == 1
                and rows[0].last_meter_at != rows[0].started_at
                and any(m.action == "MeterValues" for m in queued)
            ),
            "a persisted meter reading after the start and a queued MeterValues",
            PERSIST_TIMEOUT,
            charger,
        )
        charger.send_signal(signal.SIGKILL)
        assert charger.wait(EXIT_TIMEOUT) == -signal.SIGKILL
    before = csms.stdout.events

    # What the power cut left on disk.
    rows, queued = read_database(tmp_path)
    (row,) = rows
    assert (row.connector_id, row.id_tag, row.transaction_id) == (GUN, "CRASH-1", transaction_id)
    assert not row.stopped
    assert row.last_meter_at > row.started_at and row.last_meter_wh > row.meter_start, row
    # The StopTxnSampledData samples taken before the cut, persisted with their readings.
    samples = read_stop_samples(tmp_path)[row.local_id]
    assert samples[0]["sampled_value"][0]["context"] == "Transaction.Begin", samples
    assert samples[-1]["timestamp"] <= row.last_meter_at, (samples[-1], row)
    pending = [m for m in queued if m.action in TX_ACTIONS]
    assert pending and all(m.action == "MeterValues" for m in pending), queued
    assert all(m.local_id == row.local_id for m in pending), queued
    # None of them reached the central system before it went away.
    sent_before = [e["payload"] for e in before if is_call("MeterValues")(e)]
    expected_values = [
        wire.to_camel({**m.payload, "transaction_id": transaction_id}) for m in pending
    ]
    late = [mv for mv in expected_values if mv not in sent_before]
    assert late, "every queued MeterValues was already delivered: nothing to deliver late"

    # Restart both: the central system on a new port, the charger on the same data dir.
    csms_after, port_after = start_peer_csms(
        tmp_path, None, name="csms-after", heartbeat_interval=60, timeout=START_TIMEOUT
    )
    with (
        csms_after,
        start_charger(tmp_path, url(port_after), name="charger-after") as charger_after,
    ):
        csms_after.stdout.wait_for_event(is_call("StopTransaction"), START_TIMEOUT)
        charger_after.stderr.wait_for_line(lambda s: "was cut off by a power loss" in s, 5)
        # Answered: the transaction and its messages are gone from the database.
        wait_database(
            tmp_path,
            lambda rows, queued: rows == [] and all(m.action not in TX_ACTIONS for m in queued),
            "the transaction delivered and forgotten",
            STATE_TIMEOUT,
            charger_after,
        )
        charger_after.send_signal(signal.SIGTERM)
        assert charger_after.wait(EXIT_TIMEOUT) == EXIT_OK, charger_after.describe()
        events = csms_after.stdout.events

    # The queued meter values, in the order they were queued, then the PowerLoss stop at the
    # last persisted reading; nothing else about this transaction, nothing twice.
    assert transaction_calls(events) == [("MeterValues", mv) for mv in expected_values] + [
        (
            "StopTransaction",
            {
                "transactionId": transaction_id,
                "meterStop": row.last_meter_wh,
                "timestamp": row.last_meter_at,
                "reason": "PowerLoss",
                "transactionData": wire.to_camel(samples),
            },
        )
    ], recent(events)


def test_sigpwr_stops_the_transaction_with_power_loss_and_exits_0(tmp_path: Path) -> None:
    preset_user_keys(tmp_path, **KEYS)
    csms, port = start_peer_csms(tmp_path, None, heartbeat_interval=60, timeout=START_TIMEOUT)
    with csms, start_charger(tmp_path, url(port), api_port=0) as charger:
        transaction_id = start_session(csms, charger, "UPS-1")
        charger.send_signal(signal.SIGPWR)
        csms.stdout.wait_for_event(is_call("StopTransaction"), STATE_TIMEOUT)
        assert charger.wait(EXIT_TIMEOUT) == EXIT_OK, charger.describe()
        (start,) = calls(csms, "StartTransaction")
        (stop,) = calls(csms, "StopTransaction")
    assert stop["transactionId"] == transaction_id
    assert stop["reason"] == "PowerLoss"
    assert stop["meterStop"] > start["meterStart"]
    assert stop["timestamp"] > start["timestamp"]
    # Delivered before the exit: nothing left for the next boot to stop or send.
    rows, queued = read_database(tmp_path)
    assert rows == []
    assert [m for m in queued if m.action in TX_ACTIONS] == []


def test_sigpwr_while_the_central_system_is_away_keeps_the_stop_for_the_restart(
    tmp_path: Path,
) -> None:
    """The backup power outlasts the flush (RESET_FLUSH_TIMEOUT) but not the outage: the
    charger exits 0 with the PowerLoss StopTransaction queued, and the next boot delivers it,
    once; the transaction, stopped already, is not stopped a second time."""
    preset_user_keys(tmp_path, **KEYS)
    csms, port = start_peer_csms(tmp_path, None, heartbeat_interval=60, timeout=START_TIMEOUT)
    with csms, start_charger(tmp_path, url(port), api_port=0) as charger:
        transaction_id = start_session(csms, charger, "UPS-2")
        csms.stop()
        signalled = time.monotonic()
        charger.send_signal(signal.SIGPWR)
        assert charger.wait(EXIT_TIMEOUT) == EXIT_OK, charger.describe()
        assert time.monotonic() - signalled < RESET_FLUSH_TIMEOUT + 3.0, charger.describe()
    rows, queued = read_database(tmp_path)
    (row,) = rows
    assert row.stopped and row.transaction_id == transaction_id, row
    (stop,) = [m for m in queued if m.action == "StopTransaction"]
    assert stop.payload["reason"] == "PowerLoss"

    csms_after, port_after = start_peer_csms(
        tmp_path, None, name="csms-after", heartbeat_interval=60, timeout=START_TIMEOUT
    )
    with (
        csms_after,
        start_charger(tmp_path, url(port_after), name="charger-after") as charger_after,
    ):
        wait_database(
            tmp_path,
            lambda rows, queued: rows == [] and all(m.action not in TX_ACTIONS for m in queued),
            "the transaction delivered and forgotten",
            START_TIMEOUT,
            charger_after,
        )
        charger_after.send_signal(signal.SIGTERM)
        assert charger_after.wait(EXIT_TIMEOUT) == EXIT_OK, charger_after.describe()
        events = csms_after.stdout.events
    assert "cut off by a power loss" not in charger_after.stderr.text
    expected = [
        (m.action, wire.to_camel({**m.payload, "transaction_id": transaction_id}))
        for m in queued
        if m.action in TX_ACTIONS
    ]
    assert expected[-1][0] == "StopTransaction"
    assert transaction_calls(events) == expected, recent(events)


# --- a planned stop: SIGTERM, Ctrl-C ------------------------------------------------------------

# SIGTERM with the central system away: the relay opens, the stop is stored, the grace runs out.
SHUTDOWN_TIMEOUT = STOP_TIMEOUT + SHUTDOWN_GRACE + 3.0


def register_shown(charger: ManagedProcess, csms: ManagedProcess) -> float:
    """Gun 1's energy register as `GET /api/status` shows it once 20 Wh have flowed since
    the transaction started (the EV is charging)."""
    (start,) = calls(csms, "StartTransaction")
    snapshot = wait_api_status(
        api_port(charger, START_TIMEOUT),
        charger,
        lambda s: gun(s)["energyWh"] >= start["meterStart"] + 20,
        "energy flowing on gun 1",
        STATE_TIMEOUT,
    )
    return float(gun(snapshot)["energyWh"])


def restart_and_deliver(
    tmp: Path, transaction_id: int
) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    """Start the central system and the charger again on the same data, until the charger
    has nothing left to send; returns the transaction messages the central system received
    and the charger's log."""
    csms, port = start_peer_csms(
        tmp, None, name="csms-after", heartbeat_interval=60, timeout=START_TIMEOUT
    )
    with csms, start_charger(tmp, url(port), name="charger-after", api_port=0) as charger:
        wait_api_status(
            api_port(charger, START_TIMEOUT),
            charger,
            lambda s: (
                s["chargePoint"]["registration"] == "Accepted"
                and s["chargePoint"]["outbox"]["queued"] == 0
            ),
            "the charger registered with nothing left to send",
            START_TIMEOUT,
        )
        wait_database(
            tmp,
            lambda rows, queued: rows == [] and all(m.action not in TX_ACTIONS for m in queued),
            "the transaction delivered and forgotten",
            STATE_TIMEOUT,
            charger,
        )
        charger.send_signal(signal.SIGTERM)
        assert charger.wait(EXIT_TIMEOUT) == EXIT_OK, charger.describe()
        return transaction_calls(csms.stdout.events), charger.stderr.text


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_sigterm_mid_transaction_stops_it_with_reboot_at_the_register_and_exits_0(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    """SIGTERM (systemctl), SIGINT (Ctrl-C) and SIGHUP (the terminal or ssh session of a
    foreground `dcocpp run` closed) are each a planned stop."""
    preset_user_keys(tmp_path, **KEYS)
    csms, port = start_peer_csms(tmp_path, None, heartbeat_interval=60, timeout=START_TIMEOUT)
    with csms, start_charger(tmp_path, url(port), api_port=0) as charger:
        transaction_id = start_session(csms, charger, "STOP-1")
        shown = register_shown(charger, csms)
        charger.send_signal(stop_signal)
        assert charger.wait(EXIT_TIMEOUT) == EXIT_OK, charger.describe()
        (start,) = calls(csms, "StartTransaction")
        (stop,) = calls(csms, "StopTransaction")
    assert (stop["transactionId"], stop["reason"]) == (transaction_id, "Reboot")
    # Billed to the Wh (meterStop is whole Wh; the API shows tenths).
    assert stop["meterStop"] >= int(shown) > start["meterStart"], (shown, stop)
    assert stop["transactionData"][-1]["sampledValue"][0]["context"] == "Transaction.End"
    assert "stopping 1 transaction(s) with reason Reboot" in charger.stderr.text
    assert "transaction messages delivered" in charger.stderr.text
    # Delivered before the exit: nothing left for the next start, which repeats nothing.
    rows, queued = read_database(tmp_path)
    assert rows == [] and [m for m in queued if m.action in TX_ACTIONS] == []
    sent, log_after = restart_and_deliver(tmp_path, transaction_id)
    assert sent == [], recent(csms.stdout.events)
    assert "cut off by a power loss" not in log_after


def test_sigterm_while_the_central_system_is_away_delivers_the_stop_after_the_restart(
    tmp_path: Path,
) -> None:
    preset_user_keys(tmp_path, **KEYS)
    csms, port = start_peer_csms(tmp_path, None, heartbeat_interval=60, timeout=START_TIMEOUT)
    with csms, start_charger(tmp_path, url(port), api_port=0) as charger:
        transaction_id = start_session(csms, charger, "STOP-2")
        shown = register_shown(charger, csms)
        csms.stop()
        signalled = time.monotonic()
        charger.send_signal(signal.SIGTERM)
        assert charger.wait(SHUTDOWN_TIMEOUT) == EXIT_OK, charger.describe()
        took = time.monotonic() - signalled
    # The grace is waited out (the central system may come back within it), not more.
    assert SHUTDOWN_GRACE <= took < SHUTDOWN_TIMEOUT, charger.describe()
    assert "not delivered: queued for the next start" in charger.stderr.text
    rows, queued = read_database(tmp_path)
    (row,) = rows
    assert row.stopped and row.transaction_id == transaction_id, row
    (stored,) = [m for m in queued if m.action == "StopTransaction"]
    assert stored.payload["reason"] == "Reboot"
    assert stored.payload["meter_stop"] >= int(shown), (shown, stored)

    sent, log_after = restart_and_deliver(tmp_path, transaction_id)
    expected = [
        (m.action, wire.to_camel({**m.payload, "transaction_id": transaction_id}))
        for m in queued
        if m.action in TX_ACTIONS
    ]
    assert expected[-1][0] == "StopTransaction"
    # What was queued, in order, each once; no PowerLoss stop besides.
    assert sent == expected, sent
    assert "cut off by a power loss" not in log_after


def test_second_sigterm_during_the_grace_exits_at_once_and_loses_nothing(
    tmp_path: Path,
) -> None:
    preset_user_keys(tmp_path, **KEYS)
    csms, port = start_peer_csms(tmp_path, None, heartbeat_interval=60, timeout=START_TIMEOUT)
    with csms, start_charger(tmp_path, url(port), api_port=0) as charger:
        transaction_id = start_session(csms, charger, "STOP-3")
        csms.stop()
        charger.send_signal(signal.SIGTERM)
        # The StopTransaction is stored: the grace has begun.
        charger.stderr.wait_for_line(lambda s: "transaction stopped (Reboot)" in s, STATE_TIMEOUT)
        again = time.monotonic()
        charger.send_signal(signal.SIGTERM)
        assert charger.wait(EXIT_TIMEOUT) == EXIT_OK, charger.describe()
        took = time.monotonic() - again
    assert took < SHUTDOWN_GRACE / 2, charger.describe()
    assert "SIGTERM received again" in charger.stderr.text
    rows, queued = read_database(tmp_path)
    assert [(row.transaction_id, row.stopped) for row in rows] == [(transaction_id, True)]
    (stored,) = [m for m in queued if m.action == "StopTransaction"]
    assert stored.payload["reason"] == "Reboot"

    sent, log_after = restart_and_deliver(tmp_path, transaction_id)
    stops = [payload for action, payload in sent if action == "StopTransaction"]
    assert stops == [wire.to_camel({**stored.payload, "transaction_id": transaction_id})], sent
    assert "cut off by a power loss" not in log_after
