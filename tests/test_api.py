"""The local HTTP API (dcocpp.api.server) and its command line client (dcocpp.cli.sim)."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from dcocpp.api.contract import FAULT_KINDS, parse_address
from dcocpp.api.feed import Feed
from dcocpp.api.server import MAX_REQUESTS, ApiError, StationView, create_app, serve_api
from dcocpp.cli import sim as simcli
from dcocpp.ocpp.traffic import LinkTraffic
from dcocpp.station.station import AUTHORIZATION_WAIT
from tests.csms import FakeCsms
from tests.station_harness import charger_config, running_station

JSON = {"Content-Type": "application/json"}


class FakeView:
    """An in-memory charger with two connectors, implementing StationView.

    Connector 3 is listed by connector_ids but the station "loses" it (KeyError), to cover a
    view that disagrees with itself.
    """

    def __init__(self) -> None:
        self.connectors = {cid: _connector(cid) for cid in (1, 2)}
        self.faults: dict[int, set[str]] = {1: set(), 2: set()}
        self.calls: list[tuple[Any, ...]] = []
        self.feed = Feed()

    def link_counters(self) -> dict[str, Any]:
        return LinkTraffic().counters()

    def configuration(self) -> list[dict[str, Any]]:
        return [{"key": "HeartbeatInterval", "readonly": False, "value": "60"}]

    async def transactions(self, limit: int) -> list[dict[str, Any]]:
        await trio.lowlevel.checkpoint()
        return []

    async def transaction_meter_values(self, session_id: int) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        raise KeyError(session_id)

    def snapshot(self) -> dict[str, Any]:
        return {
            "chargePoint": {
                "id": "CP-TEST",
                "connected": True,
                "registration": "Accepted",
                "outbox": {"queued": 0, "parked": 0},
                "hardware": {},
            },
            "connectors": [dict(c) for c in self.connectors.values()],
        }

    @property
    def connector_ids(self) -> Sequence[int]:
        return [1, 2, 3]

    def _get(self, connector_id: int) -> dict[str, Any]:
        return self.connectors[connector_id]  # KeyError for 3, as a station would

    async def plug(self, connector_id: int) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append(("plug", connector_id))
        connector = self._get(connector_id)
        if connector["plugged"]:
            raise ValueError(f"connector {connector_id} is already plugged")
        connector.update(plugged=True, status="Preparing")

    async def unplug(self, connector_id: int) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append(("unplug", connector_id))
        connector = self._get(connector_id)
        if not connector["plugged"]:
            raise ValueError(f"connector {connector_id} is not plugged")
        connector.update(plugged=False, status="Available", idTag=None)

    async def present_id(self, connector_id: int, id_tag: str) -> dict[str, Any]:
        """INVALID* tags are Invalid, a faulted gun's reader refuses every tag."""
        await trio.lowlevel.checkpoint()
        self.calls.append(("present_id", connector_id, id_tag))
        connector = self._get(connector_id)
        if self.faults[connector_id]:
            raise ValueError(f"connector {connector_id} refused {id_tag} at the reader: Faulted")
        status = "Invalid" if id_tag.startswith("INVALID") else "Accepted"
        if status == "Accepted":
            connector.update(idTag=id_tag)
        return _decision(id_tag, status)

    async def set_ev_suspended(self, connector_id: int, suspended: bool) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append(("set_ev_suspended", connector_id, suspended))
        self._get(connector_id).update(status="SuspendedEV" if suspended else "Charging")

    async def set_fault(self, connector_id: int, kind: str, active: bool) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append(("set_fault", connector_id, kind, active))
        connector = self._get(connector_id)
        faults = self.faults[connector_id]
        if active:
            faults.add(kind)
        else:
            faults.discard(kind)
        connector.update(
            status="Faulted" if faults else "Available",
            errorCode="OtherError" if faults else "NoError",
        )


def _connector(cid: int) -> dict[str, Any]:
    return {
        "id": cid,
        "status": "Available",
        "errorCode": "NoError",
        "transactionId": None,
        "idTag": None,
        "plugged": False,
        "relayClosed": False,
        "energyWh": 0.0,
        "powerW": 0.0,
        "currentA": 0.0,
        "voltageV": 0.0,
        "soc": None,
        "faults": [],
        "currentLimitA": None,
    }


def _decision(id_tag: str, status: str) -> dict[str, Any]:
    return {
        "idTag": id_tag,
        "status": status,
        "source": "central system",
        "taken": status == "Accepted",
        "detail": None,
    }


def test_fake_view_is_a_station_view() -> None:
    view: StationView = FakeView()  # mypy checks the protocol here
    assert list(view.connector_ids) == [1, 2, 3]


@pytest.fixture
def view() -> FakeView:
    return FakeView()


@pytest.fixture
async def client(view: FakeView) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(view))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


# --- the routes ------------------------------------------------------------------------------


async def test_status_is_the_snapshot(client: httpx.AsyncClient, view: FakeView) -> None:
    response = await client.get("/api/status")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == view.snapshot()
    assert response.json()["connectors"][1] == _connector(2)


async def test_plug_and_unplug(client: httpx.AsyncClient, view: FakeView) -> None:
    response = await client.post("/api/connectors/1/plug", json={})
    assert response.status_code == 200
    expected = _connector(1) | {"plugged": True, "status": "Preparing"}
    assert response.json() == {"ok": True, "connector": expected}

    response = await client.post("/api/connectors/1/unplug", json={})
    assert response.status_code == 200
    assert response.json() == {"ok": True, "connector": _connector(1)}
    assert view.calls == [("plug", 1), ("unplug", 1)]


async def test_action_that_does_not_fit_the_state_is_422(
    client: httpx.AsyncClient, view: FakeView
) -> None:
    await client.post("/api/connectors/2/plug", json={})
    response = await client.post("/api/connectors/2/plug", json={})
    assert response.status_code == 422
    assert response.json() == {"error": "connector 2 is already plugged"}
    response = await client.post("/api/connectors/1/unplug", json={})
    assert response.status_code == 422
    assert response.json() == {"error": "connector 1 is not plugged"}


@pytest.mark.parametrize("id_tag", ["A", "TAG-0001", "X" * 20, "ÄÖÜ-tag"])
async def test_authorize(client: httpx.AsyncClient, view: FakeView, id_tag: str) -> None:
    response = await client.post("/api/connectors/2/authorize", json={"idTag": id_tag})
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "connector": _connector(2) | {"idTag": id_tag},
        "authorization": _decision(id_tag, "Accepted"),
    }
    assert view.calls == [("present_id", 2, id_tag)]


@pytest.mark.parametrize(
    ("id_tag", "reason"),
    [
        ("", "idTag must be 1 to 20 characters, got 0"),
        ("X" * 21, "idTag must be 1 to 20 characters, got 21"),
    ],
)
async def test_authorize_id_tag_length(
    client: httpx.AsyncClient, view: FakeView, id_tag: str, reason: str
) -> None:
    response = await client.post("/api/connectors/1/authorize", json={"idTag": id_tag})
    assert response.status_code == 422
    assert response.json() == {"error": reason}
    assert view.calls == []


async def test_ev_suspend_and_resume(client: httpx.AsyncClient, view: FakeView) -> None:
    response = await client.post("/api/connectors/1/ev", json={"suspended": True})
    assert response.status_code == 200
    assert response.json()["connector"]["status"] == "SuspendedEV"
    response = await client.post("/api/connectors/1/ev", json={"suspended": False})
    assert response.status_code == 200
    assert response.json() == {"ok": True, "connector": _connector(1) | {"status": "Charging"}}
    assert view.calls == [("set_ev_suspended", 1, True), ("set_ev_suspended", 1, False)]


@pytest.mark.parametrize("kind", FAULT_KINDS)
async def test_faults(client: httpx.AsyncClient, view: FakeView, kind: str) -> None:
    response = await client.post(f"/api/connectors/2/faults/{kind}", json={"active": True})
    assert response.status_code == 200
    faulted = _connector(2) | {"status": "Faulted", "errorCode": "OtherError"}
    assert response.json() == {"ok": True, "connector": faulted}
    response = await client.post(f"/api/connectors/2/faults/{kind}", json={"active": False})
    assert response.json() == {"ok": True, "connector": _connector(2)}
    assert view.calls == [("set_fault", 2, kind, True), ("set_fault", 2, kind, False)]


def test_fault_kinds() -> None:
    assert FAULT_KINDS == ("estop", "earth", "comm", "meter", "lock")


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("plug", None),
        ("unplug", None),
        ("authorize", {"idTag": "T"}),
        ("ev", {"suspended": True}),
        ("faults/estop", {"active": True}),
    ],
)
@pytest.mark.parametrize("raw_id", ["9", "0", "abc", "1.0", "-1", "%201", "00000000001"])
async def test_unknown_connector_is_404(
    client: httpx.AsyncClient, view: FakeView, path: str, body: Any, raw_id: str
) -> None:
    response = await client.post(f"/api/connectors/{raw_id}/{path}", json=body)
    assert response.status_code == 404
    shown = raw_id.replace("%20", " ")
    assert response.json() == {"error": f"unknown connector {shown!r}"}
    assert view.calls == []


async def test_key_error_from_the_view_is_404(client: httpx.AsyncClient, view: FakeView) -> None:
    response = await client.post("/api/connectors/3/plug", json={})
    assert response.status_code == 404
    assert response.json() == {"error": "unknown connector '3'"}
    assert view.calls == [("plug", 3)]


async def test_a_failing_view_is_500_json(view: FakeView) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("station bug")

    view.snapshot = broken  # type: ignore[method-assign]
    transport = httpx.ASGITransport(app=create_app(view), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/api/status")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error: RuntimeError"}


async def test_unknown_fault_kind_is_404(client: httpx.AsyncClient, view: FakeView) -> None:
    response = await client.post("/api/connectors/1/faults/fire", json={"active": True})
    assert response.status_code == 404
    assert response.json() == {
        "error": "unknown fault kind 'fire' (one of: estop, earth, comm, meter, lock)"
    }
    # The connector is checked first.
    response = await client.post("/api/connectors/7/faults/fire", json={"active": True})
    assert response.json() == {"error": "unknown connector '7'"}
    assert view.calls == []


@pytest.mark.parametrize(
    ("path", "content", "reason"),
    [
        ("authorize", b"{", "body is not JSON: Expecting property name enclosed in double quotes"),
        ("authorize", b"\xff\xfe{}", "body is not JSON: "),
        ("authorize", b"[]", "body must be a JSON object, got a list"),
        ("authorize", b'"TAG"', "body must be a JSON object, got a string"),
        ("authorize", b"null", "body must be a JSON object, got null"),
        ("authorize", b"", "missing field: idTag"),
        ("authorize", b"{}", "missing field: idTag"),
        ("authorize", b'{"idtag": "T"}', "unexpected field(s): idtag"),
        ("authorize", b'{"idTag": "T", "x": 1}', "unexpected field(s): x"),
        ("authorize", b'{"idTag": true}', "idTag must be a string, got a boolean"),
        ("authorize", b'{"idTag": 12}', "idTag must be a string, got a number"),
        ("authorize", b'{"idTag": null}', "idTag must be a string, got null"),
        ("ev", b'{"suspended": 1}', "suspended must be true or false, got a number"),
        ("ev", b'{"suspended": "true"}', "suspended must be true or false, got a string"),
        ("ev", b"{}", "missing field: suspended"),
        ("faults/lock", b'{"active": 0}', "active must be true or false, got a number"),
        ("faults/lock", b'{"active": {}}', "active must be true or false, got an object"),
        ("faults/lock", b'{"on": true}', "unexpected field(s): on"),
        ("plug", b'{"connector": 1}', "unexpected field(s): connector"),
        ("unplug", b"[]", "body must be a JSON object, got a list"),
        ("unplug", b"nope", "body is not JSON: Expecting value: line 1 column 1 (char 0)"),
        # Valid JSON, one character, but no Unicode: it would end in a frame or a database.
        ("authorize", b'{"idTag": "\\ud800"}', "body has text that is not valid Unicode"),
    ],
)
async def test_bad_body_is_422(
    client: httpx.AsyncClient, view: FakeView, path: str, content: bytes, reason: str
) -> None:
    response = await client.post(
        f"/api/connectors/1/{path}", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"].startswith(reason)
    assert view.calls == []


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        # What a page on another site can make a browser POST without a CORS preflight.
        (None, b""),
        ("text/plain", b'{"idTag": "T"}'),
        ("text/plain;charset=UTF-8", b'{"idTag": "T"}'),
        ("application/x-www-form-urlencoded", b"idTag=T"),
        ("multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-data; name="idTag"'),
        # Nor anything else that is not JSON.
        ("application/jsonx", b'{"idTag": "T"}'),
    ],
)
async def test_a_post_not_declared_json_is_refused_415_before_anything_happens(
    view: FakeView, content_type: str | None, content: bytes
) -> None:
    transport = httpx.ASGITransport(app=create_app(view))
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in ("plug", "authorize", "faults/estop"):
            response = await client.post(
                f"/api/connectors/1/{path}", content=content, headers=headers
            )
            assert response.status_code == 415, path
            said = "no Content-Type" if content_type is None else repr(content_type)
            assert response.json() == {
                "error": f"send the body as JSON (Content-Type: application/json), got {said}"
            }
    assert view.calls == []


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
async def test_a_post_declared_json_is_served(view: FakeView, content_type: str) -> None:
    transport = httpx.ASGITransport(app=create_app(view))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        plug = await client.post("/api/connectors/1/plug", headers={"Content-Type": content_type})
        tag = await client.post(
            "/api/connectors/1/authorize",
            content=b'{"idTag": "T"}',
            headers={"Content-Type": content_type},
        )
    assert (plug.status_code, tag.status_code) == (200, 200)
    assert view.calls == [("plug", 1), ("present_id", 1, "T")]


async def test_unknown_route_is_404_json(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/nothing-here"),
        ("GET", "/api"),
        ("GET", "/api/connectors/1"),
        ("POST", "/api/connectors/1/explode"),
        ("POST", "/api/connectors/1/faults"),
        ("POST", "/api/connectors/1/faults/estop/now"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 404, path
        assert response.json() == {"error": f"no such route: {method} {path}"}


async def test_wrong_method_is_405_json(client: httpx.AsyncClient, view: FakeView) -> None:
    response = await client.post("/api/status")
    assert response.status_code == 405
    assert response.json() == {"error": "method not allowed: POST /api/status"}
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD"}

    response = await client.get("/api/connectors/1/plug")
    assert response.status_code == 405
    assert response.json() == {"error": "method not allowed: GET /api/connectors/1/plug"}
    assert response.headers["allow"] == "POST"

    response = await client.delete("/api/connectors/1/faults/estop")
    assert response.status_code == 405
    assert view.calls == []


async def test_oversized_body_is_413_json(client: httpx.AsyncClient, view: FakeView) -> None:
    body = json.dumps({"idTag": "X" * 20_000}).encode()
    response = await client.post("/api/connectors/1/authorize", content=body, headers=JSON)
    assert response.status_code == 413
    assert response.json() == {"error": "request body larger than 16384 bytes"}

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(20):
            yield b" " * 1000

    response = await client.post("/api/connectors/1/plug", content=chunked(), headers=JSON)
    assert response.status_code == 413
    assert response.json() == {"error": "request body larger than 16384 bytes"}
    assert view.calls == []


# --- addresses -------------------------------------------------------------------------------


async def test_requests_beyond_the_limit_are_answered_503_at_once(view: FakeView) -> None:
    """Requests that wait (an authorization waits for the central system) hold their slots;
    one more is refused at once instead of piling up, and the API serves again afterwards."""
    release, all_waiting = trio.Event(), trio.Event()
    waiting = 0

    async def slow_present_id(connector_id: int, id_tag: str) -> dict[str, Any]:
        nonlocal waiting
        waiting += 1
        if waiting == MAX_REQUESTS:
            all_waiting.set()
        await release.wait()
        return _decision(id_tag, "Accepted")

    view.present_id = slow_present_id  # type: ignore[method-assign]
    transport = httpx.ASGITransport(app=create_app(view))
    answers: list[int] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

        async def authorize(tag: str) -> None:
            response = await client.post("/api/connectors/1/authorize", json={"idTag": tag})
            answers.append(response.status_code)

        async with trio.open_nursery() as nursery:
            for n in range(MAX_REQUESTS):
                nursery.start_soon(authorize, f"TAG-{n}")
            with trio.fail_after(5):
                await all_waiting.wait()
            busy = await client.get("/api/status")
            assert busy.status_code == 503
            assert busy.json() == {"error": f"busy: {MAX_REQUESTS} requests in progress; try again"}
            assert answers == []
            release.set()
        assert answers == [200] * MAX_REQUESTS
        assert (await client.get("/api/status")).status_code == 200


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:8765", ("127.0.0.1", 8765)),
        (":8765", ("127.0.0.1", 8765)),
        ("[::1]:8765", ("::1", 8765)),
        ("localhost:0", ("localhost", 0)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ],
)
def test_parse_address(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8765", "bad address '8765': expected HOST:PORT"),
        ("127.0.0.1", "bad address '127.0.0.1': expected HOST:PORT"),
        ("127.0.0.1:", "bad port '' in '127.0.0.1:': must be a number 0..65535"),
        ("127.0.0.1:http", "bad port 'http' in '127.0.0.1:http'"),
        ("127.0.0.1:65536", "bad port '65536'"),
        ("127.0.0.1:-1", "bad port '-1'"),
        ("::1:8765", "bad address '::1:8765': put an IPv6 address in brackets"),
        ("[::1]8765", "bad address '[::1]8765': expected HOST:PORT"),
        ("[::1", "bad address '[::1': expected HOST:PORT"),
        ("[]:8765", "bad address '[]:8765': empty IPv6 address in brackets"),
        ("", "bad address '': expected HOST:PORT"),
    ],
)
def test_parse_address_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + _re_escape(message)):
        parse_address(text)


def _re_escape(text: str) -> str:
    import re

    return re.escape(text)


# --- the client's output ---------------------------------------------------------------------


def test_status_table() -> None:
    snapshot = FakeView().snapshot()
    snapshot["connectors"][1].update(
        status="Charging",
        transactionId=42,
        idTag="TAG-0001",
        plugged=True,
        relayClosed=True,
        energyWh=12345.6,
        powerW=50210.0,
        currentA=120.5,
        voltageV=416.7,
        soc=63.4,
    )
    assert simcli.format_status(snapshot).splitlines() == [
        "charge point CP-TEST: connected, registration Accepted",
        "",
        "id  status     errorCode  transactionId  idTag     plugged  relay     kW    kWh"
        "      A      V  SoC",
        " 1  Available  NoError                -  -         no       open     0.0   0.00"
        "    0.0    0.0    -",
        " 2  Charging   NoError               42  TAG-0001  yes      closed  50.2  12.35"
        "  120.5  416.7  63%",
    ]


def test_status_line_shows_queued_and_parked_transaction_messages() -> None:
    snapshot = FakeView().snapshot()
    snapshot["chargePoint"]["outbox"] = {"queued": 3, "parked": 1}
    assert simcli.format_status(snapshot).splitlines()[0] == (
        "charge point CP-TEST: connected, registration Accepted, 3 transaction message(s)"
        " queued (1 PARKED: refused by the central system)"
    )
    snapshot["chargePoint"]["outbox"] = {"queued": 0, "parked": 0}
    assert simcli.format_status(snapshot).splitlines()[0] == (
        "charge point CP-TEST: connected, registration Accepted"
    )


def test_status_shows_the_hardware_counters_when_there_are_any() -> None:
    snapshot = FakeView().snapshot()
    snapshot["chargePoint"]["hardware"] = {"rxFrames": 1200, "crcErrors": 2}
    assert simcli.format_status(snapshot).splitlines()[:2] == [
        "charge point CP-TEST: connected, registration Accepted",
        "hardware: rxFrames 1200, crcErrors 2",
    ]
    snapshot["chargePoint"]["hardware"] = {}
    assert simcli.format_status(snapshot).splitlines()[1] == ""


def test_status_shows_the_last_connection_failure_and_every_fault() -> None:
    snapshot = FakeView().snapshot()
    snapshot["chargePoint"].update(
        connected=False,
        registration="Disconnected",
        url="wss://csms.example/ocpp/CP-TEST",
        lastConnectionFailure={
            "url": "wss://csms.example/ocpp/CP-TEST",
            "reason": "the central system refused the WebSocket upgrade: HTTP 404 Not Found",
            "at": "2026-11-24T08:00:30.000Z",
            "since": "2026-11-24T08:00:00.000Z",
            "attempts": 4,
        },
    )
    snapshot["connectors"][0].update(
        status="Faulted",
        errorCode="OtherError",
        faults=[
            {
                "kind": "estop",
                "errorCode": "OtherError",
                "vendorErrorCode": "EmergencyStop",
                "detail": "PLC 0: emergency stop",
            },
            {
                "kind": "comm",
                "errorCode": "InternalError",
                "vendorErrorCode": "PLC 0 communication lost",
                "detail": "PLC 0 communication lost",
            },
        ],
    )
    lines = simcli.format_status(snapshot).splitlines()
    assert lines[:2] == [
        "charge point CP-TEST: not connected, registration Disconnected",
        "last connection failure 2026-11-24T08:00:30.000Z (4 failure(s) since "
        "2026-11-24T08:00:00.000Z), wss://csms.example/ocpp/CP-TEST: the central system "
        "refused the WebSocket upgrade: HTTP 404 Not Found",
    ]
    assert lines[-2:] == [
        "connector 1: fault estop (OtherError, EmergencyStop): PLC 0: emergency stop",
        "connector 1: fault comm (InternalError): PLC 0 communication lost",
    ]
    assert simcli.describe_connector(snapshot["connectors"][0]) == (
        "connector 1: Faulted, error OtherError, fault estop (OtherError, EmergencyStop): "
        "PLC 0: emergency stop, fault comm (InternalError): PLC 0 communication lost, "
        "unplugged, relay open"
    )


def test_describe_connector() -> None:
    connector = _connector(1) | {
        "status": "Faulted",
        "errorCode": "GroundFailure",
        "plugged": True,
        "transactionId": 7,
        "idTag": "T",
        "powerW": 1500.0,
        "energyWh": 250.0,
        "soc": 80.0,
    }
    assert simcli.describe_connector(connector) == (
        "connector 1: Faulted, error GroundFailure, plugged, relay open, transaction 7, "
        "idTag T, 1.5 kW, 0.25 kWh, SoC 80%"
    )
    assert simcli.describe_connector(_connector(2)) == (
        "connector 2: Available, unplugged, relay open"
    )


def test_bad_api_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        simcli.main(["status", "--api", "localhost"])
    assert exit_.value.code == 2
    assert "bad address 'localhost': expected HOST:PORT" in capsys.readouterr().err


# --- over real HTTP --------------------------------------------------------------------------


async def _cli(*argv: str) -> int:
    return await trio.to_thread.run_sync(simcli.main, list(argv))


async def test_served_over_http_and_driven_by_the_cli(
    view: FakeView, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_api, view, "127.0.0.1", 0)
        assert host == "127.0.0.1"
        assert port > 0
        api = f"127.0.0.1:{port}"

        assert await _cli("sim", "plug", "1", "--api", api) == 0
        assert capsys.readouterr().out == "connector 1: Preparing, plugged, relay open\n"

        assert await _cli("sim", "authorize", "1", "TAG-0001", "--api", api) == 0
        assert capsys.readouterr().out == (
            "TAG-0001: Accepted (central system)\n"
            "connector 1: Preparing, plugged, relay open, idTag TAG-0001\n"
        )
        assert await _cli("sim", "ev", "1", "suspend", "--api", api) == 0
        assert capsys.readouterr().out.startswith("connector 1: SuspendedEV,")
        assert await _cli("sim", "fault", "2", "estop", "on", "--api", api) == 0
        assert capsys.readouterr().out == (
            "connector 2: Faulted, error OtherError, unplugged, relay open\n"
        )
        assert await _cli("sim", "fault", "2", "estop", "off", "--api", api) == 0
        capsys.readouterr()
        assert view.calls == [
            ("plug", 1),
            ("present_id", 1, "TAG-0001"),
            ("set_ev_suspended", 1, True),
            ("set_fault", 2, "estop", True),
            ("set_fault", 2, "estop", False),
        ]

        # Refused by the API: its message, exit 2, nothing on stdout.
        assert await _cli("sim", "plug", "1", "--api", api) == 2
        assert capsys.readouterr() == ("", "error: connector 1 is already plugged\n")
        assert await _cli("sim", "unplug", "5", "--api", api) == 2
        assert capsys.readouterr() == ("", "error: unknown connector '5'\n")
        assert await _cli("sim", "authorize", "2", "X" * 21, "--api", api) == 2
        assert capsys.readouterr().err == "error: idTag must be 1 to 20 characters, got 21\n"

        assert await _cli("status", "--json", "--api", api) == 0
        assert json.loads(capsys.readouterr().out) == view.snapshot()
        assert await _cli("status", "--api", api) == 0
        out = capsys.readouterr().out
        assert out == simcli.format_status(view.snapshot()) + "\n"
        assert out.startswith("charge point CP-TEST: connected, registration Accepted\n")

        # The real HTTP path answers errors as JSON too.
        async with _http_client(f"http://{api}") as client:
            response = await client.get("/nowhere")
            assert (response.status_code, response.json()) == (
                404,
                {"error": "no such route: GET /nowhere"},
            )
            assert "server" not in response.headers
        nursery.cancel_scope.cancel()

    # The operator's console gets one line, not Hypercorn's own chatter nor an access log.
    messages = [
        (r.name, r.levelno, r.getMessage())
        for r in caplog.records
        if r.name.startswith(("dcocpp", "hypercorn"))
    ]
    assert messages == [("dcocpp.api.server", logging.INFO, f"local API on http://{api}")]

    # Stopped: the port no longer answers.
    assert await _cli("status", "--api", api) == 1


async def test_cli_without_an_api(capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    api = f"127.0.0.1:{port}"
    for argv in (["status"], ["status", "--json"], ["sim", "plug", "1"]):
        assert await _cli(*argv, "--api", api) == 1
        assert capsys.readouterr() == (
            "",
            f"no dcocpp API at {api} (start it with `dcocpp run --api {api}` or `dcocpp demo`)\n",
        )


async def test_serve_api_on_a_busy_port_is_an_api_error(view: FakeView) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ApiError, match=f"^cannot serve the API on 127.0.0.1:{port}: "):
            await serve_api(view, "127.0.0.1", port)


async def test_serve_api_on_ipv6_loopback(view: FakeView) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_api, view, "::1", 0)
        assert host == "::1"
        assert await _cli("sim", "plug", "1", "--api", f"[::1]:{port}") == 0
        async with _http_client(f"http://[::1]:{port}") as client:
            response = await client.post("/api/connectors/2/plug", json={})
        assert response.json()["connector"]["plugged"] is True
        nursery.cancel_scope.cancel()


def _http_client(base_url: str) -> httpx.AsyncClient:
    # trust_env=False: never through a proxy from the environment.
    return httpx.AsyncClient(base_url=base_url, trust_env=False)


def _free_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --- the charger's decision about a tag (a real station) --------------------------------------


async def test_sim_authorize_prints_what_the_charger_decided(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over real HTTP to a real station (simulated guns, an in-memory central system): the
    decision, who made it and what the gun did; exit 0 when the gun took the tag, 2 else."""
    csms = FakeCsms(id_tags={"INVALID-1": "Invalid", "BLOCKED-1": "Blocked"})
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        _, port = await h.nursery.start(serve_api, h.station, "127.0.0.1", 0)
        api = ("--api", f"127.0.0.1:{port}")

        async def authorize(cid: int, tag: str) -> tuple[int, list[str], str]:
            status = await _cli("sim", "authorize", str(cid), tag, *api)
            out, err = capsys.readouterr()
            return status, out.splitlines(), err

        assert await _cli("sim", "plug", "1", *api) == 0
        capsys.readouterr()
        status, out, _ = await authorize(1, "INVALID-1")
        assert (status, out[0]) == (2, "INVALID-1: Invalid (central system)")
        assert out[1].startswith("connector 1: Preparing, plugged, relay open")
        status, out, _ = await authorize(1, "BLOCKED-1")
        assert (status, out[0]) == (2, "BLOCKED-1: Blocked (central system)")

        status, out, _ = await authorize(1, "TAG-OK")
        assert (status, out[0]) == (0, "TAG-OK: Accepted (central system)")
        assert "idTag TAG-OK" in out[1]
        await h.wait_status(1, "Charging")
        status, out, _ = await authorize(1, "TAG-OK")
        assert (status, out[0]) == (
            0,
            "TAG-OK: Accepted (the transaction's own tag), stops the transaction",
        )

        # Refused at the reader: nobody is asked.
        asked = h.csms.authorize_count()
        await h.wait_machine_status(1, "Finishing")
        status, out, err = await authorize(1, "TAG-NEXT")
        assert (status, out) == (2, [])
        assert err == (
            "error: connector 1 refused TAG-NEXT at the reader: the gun is Finishing "
            "(unplug the EV first)\n"
        )
        assert await _cli("sim", "fault", "2", "estop", "on", *api) == 0
        capsys.readouterr()
        status, out, err = await authorize(2, "TAG-OK")
        assert (status, out) == (2, [])
        assert err.startswith("error: connector 2 refused TAG-OK at the reader: the gun is Faulted")
        assert h.csms.authorize_count() == asked
        h.nursery.cancel_scope.cancel()


async def test_a_decision_that_does_not_come_in_time_is_said_so(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await h.hardware.plug(1)
        h.network.freeze()  # the central system does not answer the Authorize.req
        started = trio.current_time()
        answer = await h.station.present_id(1, "TAG-SLOW")
        assert trio.current_time() - started == pytest.approx(AUTHORIZATION_WAIT)
        assert answer == {
            "idTag": "TAG-SLOW",
            "status": None,
            "source": None,
            "taken": False,
            "detail": f"no decision within {AUTHORIZATION_WAIT:g} s",
        }
        assert simcli.describe_authorization(answer) == "TAG-SLOW: no decision within 5 s"


async def test_another_tag_stops_only_a_transaction_of_its_group(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms(parent_id_tags={"TAG-A": "FLEET-1", "TAG-B": "FLEET-2", "TAG-C": "FLEET-1"})
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        await h.start_charging(1, "TAG-A")
        other = await h.station.present_id(1, "TAG-B")
        assert other == {
            "idTag": "TAG-B",
            "status": "Accepted",
            "source": "central system",
            "taken": False,
            "detail": "but not of the transaction's group (parentIdTag): it goes on",
        }
        assert h.transaction_id(1) is not None
        same_group = await h.station.present_id(1, "TAG-C")
        assert (same_group["taken"], same_group["detail"]) == (True, "stops the transaction")
        assert h.transaction_id(1) is None
