"""The console's data on a real charger (`python -m dcocpp run`, simulated guns, the asyncio
central system in its own process): the session history agrees with what the central system
recorded, `/metrics` (read with prometheus_client's own parser) agrees with `/api/status`, and
a status change reaches the event stream at once."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.console_station import (
    STATE_TIMEOUT,
    ConsoleStation,
    console_station,
    gun,
    read_events,
)

pytestmark = pytest.mark.process

CHARGE_SECONDS = 2.5


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStation]:
    """Three sessions, each ended its own way, all delivered to the central system."""
    tmp: Path = tmp_path_factory.mktemp("console")
    with console_station(tmp, MeterValueSampleInterval=1) as station:
        # The tag again at the gun: reason Local (StopTransaction without a reason).
        station.charge(1, "TAG-ONE")
        time.sleep(CHARGE_SECONDS)
        station.post("/api/connectors/1/authorize", {"idTag": "TAG-ONE"})
        station.wait_gun(1, lambda c: c["transactionId"] is None, "stopped")
        station.post("/api/connectors/1/unplug")
        # The EV unplugged while charging: EVDisconnected.
        station.charge(2, "TAG-TWO")
        time.sleep(CHARGE_SECONDS)
        station.post("/api/connectors/2/unplug")
        station.wait_gun(2, lambda c: c["transactionId"] is None, "stopped")
        # The emergency stop: EmergencyStop.
        station.charge(1, "TAG-THREE")
        time.sleep(CHARGE_SECONDS)
        station.post("/api/connectors/1/faults/estop", {"active": True})
        station.wait_gun(1, lambda c: c["transactionId"] is None, "stopped")
        station.post("/api/connectors/1/faults/estop", {"active": False})
        station.post("/api/connectors/1/unplug")
        station.wait(
            lambda s: all(c["status"] == "Available" for c in s["connectors"]), "both Available"
        )
        station.wait_delivered()
        station.csms.stdout.wait_for_event(
            lambda e: e.get("event") == "call" and e.get("action") == "StopTransaction",
            STATE_TIMEOUT,
            nth=3,
        )
        yield station


def test_the_history_agrees_with_what_the_central_system_recorded(
    station: ConsoleStation,
) -> None:
    history = station.get_json_list("/api/transactions")
    starts = station.calls("StartTransaction")
    stops = {stop["transactionId"]: stop for stop in station.calls("StopTransaction")}
    assert len(history) == len(starts) == len(stops) == 3
    # Newest first; the peer numbers transactions 1, 2, 3 in the order it received them.
    assert [row["transactionId"] for row in history] == [3, 2, 1]
    for row in history:
        start = starts[row["transactionId"] - 1]
        stop = stops[row["transactionId"]]
        assert row["idTag"] == start["idTag"]
        assert row["connectorId"] == start["connectorId"]
        assert row["meterStartWh"] == start["meterStart"]
        assert row["meterStopWh"] == stop["meterStop"]
        assert row["energyWh"] == stop["meterStop"] - start["meterStart"] > 0
        assert row["reason"] == stop.get("reason", "Local")
        assert row["startedAt"] == start["timestamp"]
        assert row["stoppedAt"] == stop["timestamp"]
        assert row["durationS"] >= CHARGE_SECONDS - 0.5
        hours = row["durationS"] / 3600
        assert row["averageKw"] == pytest.approx(row["energyWh"] / hours / 1000, abs=0.01)
        assert row["peakKw"] >= row["averageKw"]
    assert [row["reason"] for row in history] == ["EmergencyStop", "EVDisconnected", "Local"]


def test_the_history_is_served_as_csv_too(station: ConsoleStation) -> None:
    text, kind = station.get_text("/api/transactions?format=csv")
    assert kind.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    json_rows = station.get_json_list("/api/transactions")
    assert [int(r["transactionId"]) for r in rows] == [r["transactionId"] for r in json_rows]
    assert [int(r["energyWh"]) for r in rows] == [r["energyWh"] for r in json_rows]
    by_accept, _ = station.get_text("/api/transactions?limit=1", accept="text/csv")
    assert len(list(csv.DictReader(io.StringIO(by_accept)))) == 1


def test_a_session_plot_has_its_meter_values(station: ConsoleStation) -> None:
    (newest,) = station.get_json_list("/api/transactions?limit=1")
    session = station.get(f"/api/transactions/{newest['id']}/meter-values")
    points = session["points"]
    sent = [
        sample
        for message in station.calls("MeterValues")
        if message.get("transactionId") == newest["transactionId"]
        for sample in message["meterValue"]
    ]
    assert sent, "MeterValueSampleInterval 1 s sends samples while charging"
    # Start, every sample sent (MeterValues and the stop's transactionData), and stop.
    assert points[0] == {"at": newest["startedAt"], "energyWh": newest["meterStartWh"]}
    assert points[-1] == {"at": newest["stoppedAt"], "energyWh": newest["meterStopWh"]}
    powers = [p["powerW"] for p in points if "powerW" in p]
    assert len(powers) >= len(sent)
    assert max(powers) / 1000 == pytest.approx(newest["peakKw"], abs=0.001)


def test_metrics_agree_with_the_status(station: ConsoleStation) -> None:
    text, kind = station.get_text("/metrics")
    status = station.status()
    assert kind.startswith("text/plain; version=")
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(name: str, **labels: Any) -> float:
        return samples[(name, frozenset((k, str(v)) for k, v in labels.items()))]

    for entry in status["connectors"]:
        cid = entry["id"]
        assert value("dcocpp_connector_status", connector=cid, status=entry["status"]) == 1
        assert value("dcocpp_connector_status", connector=cid, status="Charging") == 0
        assert value("dcocpp_connector_energy_joules_total", connector=cid) == pytest.approx(
            entry["energyWh"] * 3600
        )
        assert value("dcocpp_connector_power_watts", connector=cid) == entry["powerW"]
        assert (
            value("dcocpp_connector_current_limit_amperes", connector=cid) == entry["currentLimitA"]
        )
        assert value("dcocpp_connector_fault_active", connector=cid, kind="estop") == 0
    cp = status["chargePoint"]
    assert value("dcocpp_ocpp_connected") == 1
    assert value("dcocpp_ocpp_registration", state="Accepted") == 1
    assert value("dcocpp_outbox_messages") == cp["outbox"]["queued"] == 0
    assert value("dcocpp_outbox_parked_messages") == cp["outbox"]["parked"]
    # No firmware update asked for: Idle, the running version as the info's label.
    assert value("dcocpp_firmware_status", status=cp["firmware"]["status"]) == 1
    assert value("dcocpp_firmware_status", status="Downloading") == 0
    assert value("dcocpp_firmware_info", version=cp["firmware"]["version"]) == 1
    # The link's counters agree with what the central system received.
    for action in ("StartTransaction", "StopTransaction", "MeterValues"):
        received = len(station.calls(action))
        sent = value("dcocpp_ocpp_messages_total", action=action, direction="sent", type="CALL")
        answered = value(
            "dcocpp_ocpp_messages_total", action=action, direction="received", type="CALLRESULT"
        )
        assert sent == answered == received > 0
    calls_answered = sum(
        v
        for (name, labels), v in samples.items()
        if name == "dcocpp_ocpp_messages_total"
        and ("direction", "received") in labels
        and ("type", "CALLRESULT") in labels
    )
    assert value("dcocpp_ocpp_round_trip_seconds_count") == calls_answered
    assert value("dcocpp_ocpp_round_trip_seconds_bucket", le="+Inf") == calls_answered
    assert value("dcocpp_ocpp_connections_total") == 1
    assert value("dcocpp_ocpp_reconnects_total") == 0


def test_a_status_change_reaches_the_event_stream_at_once(station: ConsoleStation) -> None:
    plugged_at: float | None = None

    def until(kind: str, data: Any) -> bool:
        nonlocal plugged_at
        if kind != "snapshot":
            return False
        if plugged_at is None:
            station.post("/api/connectors/2/plug")
            plugged_at = time.monotonic()
            return False
        return gun(data, 2)["status"] == "Preparing"

    try:
        read_events(station, until, timeout=5)
        assert plugged_at is not None
        assert time.monotonic() - plugged_at < 1.0
    finally:
        station.post("/api/connectors/2/unplug")


def test_the_event_stream_starts_with_the_state_and_the_message_log(
    station: ConsoleStation,
) -> None:
    seen: dict[str, Any] = {}

    def until(kind: str, data: Any) -> bool:
        seen.setdefault(kind, data)
        return {"snapshot", "configuration", "frames", "trend"} <= set(seen)

    read_events(station, until, timeout=5)
    assert seen["snapshot"]["chargePoint"]["id"] == station.status()["chargePoint"]["id"]
    keys = {entry["key"] for entry in seen["configuration"]}
    assert "HeartbeatInterval" in keys
    assert "AuthorizationKey" not in keys  # write-only: never shown
    texts = [frame["text"] for frame in seen["frames"]["frames"]]
    assert any('"StartTransaction"' in text for text in texts)
    assert set(seen["trend"]) == {"1", "2"}
