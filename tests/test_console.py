"""The console's pieces in one process: the event feed (bounded, never blocking the station),
the session history (figures, rows that cannot be read), and who may open the page."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dcocpp.api.console import CONSOLE_HEADER, COOKIE
from dcocpp.api.feed import HISTORY, STREAM_BUFFER, TREND_POINTS, Feed
from dcocpp.api.server import create_app
from dcocpp.ocpp.traffic import ROUND_TRIP_BUCKETS, LinkTraffic
from dcocpp.station import history
from dcocpp.storage.database import DATABASE_NAME, Database, SessionRow
from tests.test_api import FakeView

TOKEN = "console-token-0123456789abcdef"


# --- the feed ----------------------------------------------------------------------------------


def test_a_slow_stream_loses_its_oldest_frames_and_is_told_how_many() -> None:
    feed = Feed()
    with feed.stream() as stream:
        for n in range(STREAM_BUFFER + 25):
            feed.frame(">>", f"frame {n}")
        frames, dropped = stream.take_frames()
    assert dropped == 25
    assert [f["text"] for f in frames] == [f"frame {n}" for n in range(25, STREAM_BUFFER + 25)]
    assert feed.streams == 0  # closed with its page


def test_changes_coalesce_into_one_flag_per_stream() -> None:
    feed = Feed()
    with feed.stream() as first, feed.stream() as second:
        for _ in range(100):
            feed.changed()
        assert first.take_changed() and second.take_changed()
        assert not first.take_changed()


def test_a_page_opened_later_gets_the_last_frames_and_an_hour_of_measurements() -> None:
    feed = Feed()
    for n in range(HISTORY + 10):
        feed.frame("<<", f"frame {n}")
    assert [f["seq"] for f in feed.history()] == list(range(11, HISTORY + 11))
    gun = {"id": 1, "powerW": 50000.0, "currentA": 125.0, "currentLimitA": 200.0, "soc": 40.0}
    for second in range(TREND_POINTS + 5):
        feed.sample({"connectors": [gun]}, float(second))
    points = feed.trend()["1"]
    assert len(points) == TREND_POINTS
    assert points[-1] == [float(TREND_POINTS + 4), 50.0, 125.0, 200.0, 40.0]


def test_round_trips_are_a_cumulative_histogram() -> None:
    traffic = LinkTraffic()
    for seconds in (0.001, 0.02, 0.02, 7.0, 99.0):
        traffic.round_trips.observe(seconds)
    buckets = dict(traffic.counters()["roundTrip"]["buckets"])
    assert buckets[ROUND_TRIP_BUCKETS[0]] == 1
    assert buckets[0.025] == 3
    assert buckets[10.0] == 4
    assert buckets[float("inf")] == 5
    assert traffic.round_trips.total == pytest.approx(106.041)


# --- the session history -----------------------------------------------------------------------


def _session(**changes: Any) -> SessionRow:
    fields: dict[str, Any] = {
        "id": 7,
        "local_id": 1,
        "connector_id": 2,
        "id_tag": "TAG",
        "transaction_id": 42,
        "started_at": "2025-01-01T10:00:00Z",
        "meter_start": 1000,
        "stopped_at": "2025-01-01T10:30:00Z",
        "meter_stop": 31000,
        "reason": None,
    }
    return SessionRow(**(fields | changes))


def _sample(at: str, **values: str) -> dict[str, Any]:
    measurands = {
        "power": ("Power.Active.Import", "kW"),
        "energy": ("Energy.Active.Import.Register", "kWh"),
        "soc": ("SoC", "Percent"),
    }
    return {
        "timestamp": at,
        "sampled_value": [
            {"value": v, "measurand": measurands[k][0], "unit": measurands[k][1]}
            for k, v in values.items()
        ],
    }


def test_a_sessions_energy_duration_peak_and_average() -> None:
    row = _session()
    samples = [
        _sample("2025-01-01T10:10:00Z", power="75.5", energy="11.0", soc="40"),
        _sample("2025-01-01T10:20:00Z", power="50", energy="22.0"),
        {"timestamp": "not a time", "sampled_value": [{"value": "1"}]},  # left out
        _sample("2025-01-01T10:25:00Z", power="NaN"),  # not a number: left out
    ]
    points = history.points(row, samples)
    assert points == [
        {"at": "2025-01-01T10:00:00Z", "energyWh": 1000.0},
        {"at": "2025-01-01T10:10:00Z", "powerW": 75500.0, "energyWh": 11000.0, "soc": 40.0},
        {"at": "2025-01-01T10:20:00Z", "powerW": 50000.0, "energyWh": 22000.0},
        {"at": "2025-01-01T10:30:00Z", "energyWh": 31000.0},
    ]
    summary = history.summary(row, points)
    assert summary["energyWh"] == 30000
    assert summary["durationS"] == 1800
    assert summary["averageKw"] == 60.0  # 30 kWh in half an hour
    assert summary["peakKw"] == 75.5
    assert summary["reason"] == "Local"  # StopTransaction without a reason


def test_without_power_samples_the_peak_is_the_steepest_rise_of_the_register() -> None:
    row = _session()
    points = history.points(row, [_sample("2025-01-01T10:06:00Z", energy="11")])
    # 10 kWh in 6 minutes = 100 kW, then 20 kWh in 24 minutes = 50 kW.
    assert history.summary(row, points)["peakKw"] == 100.0


def test_a_running_session_has_no_stop_figures() -> None:
    row = _session(stopped_at=None, meter_stop=None)
    summary = history.summary(row, history.points(row, []))
    assert (summary["reason"], summary["energyWh"], summary["averageKw"]) == (None, None, None)


def test_a_history_row_that_cannot_be_read_is_dropped_with_an_error_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database.open(tmp_path)
    fields = {
        "connector_id": 1,
        "id_tag": "TAG",
        "meter_start": 5,
        "started_at": "2025-01-01T10:00:00Z",
        "reservation_id": None,
        "last_meter_wh": 5,
        "last_meter_at": "2025-01-01T10:00:00Z",
    }
    for _ in range(3):
        local_id, _seq = db.begin_transaction(fields, {"connector_id": 1}, "TAG")
        db.queue_message(
            "StopTransaction",
            local_id,
            {"meter_stop": 50, "timestamp": "2025-01-01T10:05:00Z", "reason": "EVDisconnected"},
            stops=True,
        )
    db.close()
    raw = sqlite3.connect(tmp_path / DATABASE_NAME)
    with raw:
        raw.execute("UPDATE session_history SET meter_stop = 'lots' WHERE id = 2")
    raw.close()
    db = Database.open(tmp_path)
    try:
        rows = db.sessions(10)
    finally:
        db.close()
    assert [(r.id, r.meter_stop, r.reason) for r in rows] == [
        (3, 50, "EVDisconnected"),
        (1, 50, "EVDisconnected"),
    ]
    assert "session_history row id 2 cannot be read: meter_stop 'lots'" in caplog.text


# --- access ------------------------------------------------------------------------------------


@pytest.fixture
async def guarded() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(FakeView(), token=TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


async def test_the_token_in_the_address_once_becomes_an_http_only_cookie(
    guarded: httpx.AsyncClient,
) -> None:
    answer = await guarded.get(f"/?token={TOKEN}")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/"  # the token leaves the address bar
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = await guarded.get("/")  # the client keeps the cookie, as a browser does
    assert page.status_code == 200
    assert '<script src="/static/console.js">' in page.text
    assert (await guarded.get("/metrics")).status_code == 200
    assert (await guarded.get("/static/console.js")).status_code == 200


async def test_a_post_with_the_cookie_needs_the_consoles_header(guarded: httpx.AsyncClient) -> None:
    guarded.cookies.set(COOKIE, TOKEN)
    # What a page elsewhere could make the browser send: refused.
    refused = await guarded.post("/api/connectors/1/plug")
    assert refused.status_code == 401
    assert CONSOLE_HEADER in refused.json()["error"]
    done = await guarded.post("/api/connectors/1/plug", headers={CONSOLE_HEADER: "1"}, json={})
    assert done.status_code == 200


async def test_without_the_token_the_page_asks_for_it(guarded: httpx.AsyncClient) -> None:
    browser = await guarded.get("/", headers={"Accept": "text/html"})
    assert browser.status_code == 401
    assert '<input name="token" type="password"' in browser.text
    wrong = await guarded.get("/?token=not-the-token-at-all", headers={"Accept": "text/html"})
    assert wrong.status_code == 401 and "wrong API token" in wrong.text
    for path in ("/metrics", "/api/events", "/api/transactions", "/static/console.js"):
        answer = await guarded.get(path)
        assert answer.status_code == 401, path
        assert answer.json() == {"error": "missing API token: send Authorization: Bearer <token>"}


async def test_the_history_limit_and_format_are_checked() -> None:
    transport = httpx.ASGITransport(app=create_app(FakeView()))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for query, reason in [
            ("limit=0", "limit must be a whole number from 1 to 1000, got '0'"),
            ("limit=x", "limit must be a whole number from 1 to 1000, got 'x'"),
            ("format=xml", "format must be json or csv"),
        ]:
            answer = await client.get(f"/api/transactions?{query}")
            assert (answer.status_code, answer.json()) == (422, {"error": reason})
        missing = await client.get("/api/transactions/99/meter-values")
        assert missing.status_code == 404
        assert (await client.get("/api/transactions")).json() == []
