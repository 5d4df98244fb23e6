"""OCPP-J RPC over trio-websocket: framing, validation error codes, concurrency, timeouts."""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from ocpp.messages import Call
from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action, AuthorizationStatus
from trio_websocket import WebSocketConnection, wrap_client_stream, wrap_server_stream

from dcocpp.cli.logs import LoggingSetup
from dcocpp.ocpp import messagelog, wire
from dcocpp.ocpp.errors import CallError, ConnectionLost, InvalidPayload, UnsendablePayload
from dcocpp.ocpp.messagelog import MessageLog, redact
from dcocpp.ocpp.rpc import RpcConnection


@asynccontextmanager
async def ws_pair() -> AsyncIterator[tuple[WebSocketConnection, WebSocketConnection]]:
    """A connected (charge point, central system) WebSocket pair over memory streams."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        request_box: list[Any] = []

        async def server_side() -> None:
            request = await wrap_server_stream(nursery, server_stream)
            request_box.append(await request.accept(subprotocol="ocpp1.6"))

        nursery.start_soon(server_side)
        client = await wrap_client_stream(
            nursery,
            client_stream,
            "csms",
            "/ocpp/CP1",
            subprotocols=["ocpp1.6"],  # type: ignore[arg-type]
        )
        while not request_box:
            await trio.lowlevel.checkpoint()
        yield client, request_box[0]
        nursery.cancel_scope.cancel()


class CentralSystem:
    """Handlers of the central-system side used by these tests."""

    def __init__(self) -> None:
        self.peer: RpcConnection | None = None
        self.authorized: list[str] = []

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str, **_: Any) -> Any:
        self.authorized.append(id_tag)
        return call_result.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time="2026-11-23T10:00:00Z")

    @on(Action.boot_notification)
    def on_boot(self, **_: Any) -> Any:
        # A deliberately broken answer: status is not a RegistrationStatus.
        return call_result.BootNotification(
            current_time="2026-11-23T10:00:00Z",
            interval=10,
            status="Maybe",  # type: ignore[arg-type]
        )

    @on(Action.data_transfer)
    async def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        # Calls the charge point back while the charge point's own CALL is outstanding.
        assert self.peer is not None
        answer = await self.peer.call(call.GetConfiguration(key=["HeartbeatInterval"]))
        return call_result.DataTransfer(
            status="Accepted", data=json.dumps(answer.configuration_key)
        )


class ChargePoint:
    def __init__(self) -> None:
        self.gate = trio.Event()

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> Any:
        return call_result.GetConfiguration(
            configuration_key=[{"key": "HeartbeatInterval", "readonly": False, "value": "300"}]
        )

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str, **_: Any) -> Any:
        if key == "Explode":
            raise RuntimeError("handler bug")
        return call_result.ChangeConfiguration(status="Accepted")

    @on(Action.change_availability)
    def on_change_availability(self, **_: Any) -> Any:
        return call_result.ChangeAvailability(status="Accepted")

    @on(Action.clear_cache)
    async def on_clear_cache(self, **_: Any) -> Any:
        await self.gate.wait()
        return call_result.ClearCache(status="Accepted")

    @on(Action.reset)
    def on_reset(self, **_: Any) -> Any:
        return call_result.Reset(status="Later")  # type: ignore[arg-type]  # invalid on purpose


@asynccontextmanager
async def rpc_pair() -> AsyncIterator[tuple[RpcConnection, RpcConnection, CentralSystem]]:
    csms_handlers = CentralSystem()
    async with ws_pair() as (cp_ws, csms_ws), trio.open_nursery() as nursery:
        cp = RpcConnection(cp_ws, ChargePoint(), message_log=MessageLog("csms"))
        csms = RpcConnection(csms_ws, csms_handlers, message_log=MessageLog("cp"))
        csms_handlers.peer = csms
        await nursery.start(cp.run)
        await nursery.start(csms.run)
        yield cp, csms, csms_handlers
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def rpc_and_raw_peer() -> AsyncIterator[tuple[RpcConnection, WebSocketConnection]]:
    """Our RPC as the charge point against a raw WebSocket that the test drives by hand."""
    async with ws_pair() as (cp_ws, raw), trio.open_nursery() as nursery:
        cp = RpcConnection(cp_ws, ChargePoint(), message_log=MessageLog("csms"))
        await nursery.start(cp.run)
        yield cp, raw
        nursery.cancel_scope.cancel()


async def exchange(raw: WebSocketConnection, frame: Any) -> list[Any]:
    await raw.send_message(frame if isinstance(frame, str) else json.dumps(frame))
    return json.loads(await raw.get_message())  # type: ignore[no-any-return]


async def test_call_round_trip_exact_json(autojump_clock: Any) -> None:
    async with rpc_and_raw_peer() as (cp, raw):
        async with trio.open_nursery() as nursery:
            results: list[Any] = []

            async def do_call() -> None:
                results.append(await cp.call(call.Authorize(id_tag="TAG-1")))

            nursery.start_soon(do_call)
            frame = json.loads(await raw.get_message())
            assert frame[0] == 2 and frame[2:] == ["Authorize", {"idTag": "TAG-1"}]
            await raw.send_message(json.dumps([3, frame[1], {"idTagInfo": {"status": "Accepted"}}]))
        assert results == [call_result.Authorize(id_tag_info={"status": "Accepted"})]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ([2, "u1", "FooBar", {}], "NotSupported"),
        (
            [2, "u2", "UpdateFirmware", {"location": "x", "retrieveDate": "2026-01-01T00:00:00Z"}],
            "NotImplemented",
        ),
        (
            [2, "u3", "ChangeConfiguration", {"key": "HeartbeatInterval"}],
            "OccurenceConstraintViolation",
        ),
        (
            [2, "u4", "ChangeConfiguration", {"key": "HeartbeatInterval", "value": 60}],
            "TypeConstraintViolation",
        ),
        (
            [2, "u5", "ChangeConfiguration", {"key": "K", "value": "1", "extra": 1}],
            "FormationViolation",
        ),
        (
            [2, "u6", "ChangeAvailability", {"connectorId": 1, "type": "Sideways"}],
            "PropertyConstraintViolation",
        ),
        (
            [2, "u7", "ChangeConfiguration", {"key": "K" * 51, "value": "1"}],
            "TypeConstraintViolation",
        ),
        ([2, "u8", "ChangeConfiguration"], "FormationViolation"),
        ([2, "u9", "ChangeConfiguration", []], "FormationViolation"),
        ([7, "u10", "Heartbeat", {}], "FormationViolation"),
        ([2, "u11", "ChangeConfiguration", {"key": "Explode", "value": "1"}], "InternalError"),
        ([2, "u12", "Reset", {"type": "Soft"}], "InternalError"),
    ],
)
async def test_invalid_calls_get_ocpp16_callerror_codes(
    autojump_clock: Any, frame: list[Any], code: str
) -> None:
    async with rpc_and_raw_peer() as (_cp, raw):
        reply = await exchange(raw, frame)
        assert reply[:3] == [4, frame[1], code]
        assert isinstance(reply[3], str) and isinstance(reply[4], dict)
        # The session survives: a valid CALL right after is answered normally.
        ok = await exchange(raw, [2, "next", "GetConfiguration", {}])
        assert ok[0] == 3 and ok[1] == "next"


DEEP = "[" * (wire.MAX_NESTING + 1) + "]" * (wire.MAX_NESTING + 1)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        # Refused before json.loads (which recursed until RecursionError): the head says CALL.
        (f'[2,"n1","ChangeConfiguration",{{"key":{"[" * 2000}', "FormationViolation"),
        (
            f'[2,"n2","ChangeConfiguration",{{"key":"K","value":"1","x":{DEEP}}}]',
            "FormationViolation",
        ),
        (
            '[2,"n3","DataTransfer",{"vendorId":"V","data":"%s"}]' % ("x" * wire.MAX_FRAME_BYTES),
            "FormationViolation",
        ),
        # Not JSON, though Python's json.loads takes it.
        (
            '[2,"n4","ChangeAvailability",{"connectorId":NaN,"type":"Operative"}]',
            "FormationViolation",
        ),
        (
            '[2,"n5","ChangeAvailability",{"connectorId":-Infinity,"type":"Operative"}]',
            "FormationViolation",
        ),
        (
            '[2,"n6","ChangeAvailability",{"connectorId":%s,"type":"Operative"}]' % ("9" * 5000),
            "FormationViolation",
        ),
        ('[2,"n7","Heartbeat",{', "FormationViolation"),
        # JSON, but a string no UTF-8 can carry (the answer could not be sent).
        ('[2,"n8","ChangeConfiguration",{"key":"\\ud800","value":"1"}]', "FormationViolation"),
        # OCPP-J 1.6 integers are 32-bit.
        (
            '[2,"n9","ChangeAvailability",{"connectorId":2147483648,"type":"Operative"}]',
            "TypeConstraintViolation",
        ),
        (
            '[2,"n10","ChangeAvailability",{"connectorId":-2147483649,"type":"Operative"}]',
            "TypeConstraintViolation",
        ),
        (
            '[2,"n11","ChangeAvailability",{"connectorId":1e20,"type":"Operative"}]',
            "TypeConstraintViolation",
        ),
        (
            '[2,"n12","ChangeAvailability",{"connectorId":1e400,"type":"Operative"}]',
            "TypeConstraintViolation",
        ),
        ('[2,"n13","ChangeAvailability",{"connectorId":2147483647,"type":"Operative"}]', None),
        ('[2,"n14","ChangeAvailability",{"connectorId":-2147483648,"type":"Operative"}]', None),
    ],
)
async def test_frames_the_charger_cannot_take_are_answered_and_the_session_survives(
    autojump_clock: Any, frame: str, code: str | None
) -> None:
    """Each of these once escaped the reader (RecursionError, UnicodeEncodeError) or its
    handler (InternalError); `None`: an ordinary answer."""
    async with rpc_and_raw_peer() as (cp, raw):
        reply = await exchange(raw, frame)
        unique_id = frame.split('"')[1]
        if code is None:
            assert reply[:2] == [3, unique_id]
        else:
            assert reply[:3] == [4, unique_id, code]
        ok = await exchange(raw, [2, "next", "GetConfiguration", {}])
        assert ok[:2] == [3, "next"]
        assert not cp.closed


@pytest.mark.parametrize(
    "answer",
    [
        '[3,"%s",{"currentTime":' + DEEP + "}]",
        '[3,"%s",[]]',
        '[4,"%s","GenericError"]',
        '[3,"%s",{"currentTime":"\\udc00"}]',
        '[3,"%s",{"currentTime":"' + "x" * wire.MAX_FRAME_BYTES + '"}]',
    ],
)
async def test_an_answer_that_is_no_frame_fails_our_call_at_once(
    autojump_clock: Any, answer: str
) -> None:
    """Not at the response timeout, which would cost the connection."""
    async with rpc_and_raw_peer() as (cp, raw), trio.open_nursery() as nursery:

        async def answer_badly() -> None:
            frame = json.loads(await raw.get_message())
            await raw.send_message(answer % frame[1])

        nursery.start_soon(answer_badly)
        start = trio.current_time()
        with pytest.raises(InvalidPayload, match="FormationViolation"):
            await cp.call(call.Heartbeat())
        assert trio.current_time() == start
        assert not cp.closed


def test_nesting_is_counted_outside_strings_only() -> None:
    limit = wire.MAX_NESTING
    inner = "[" * (limit - 1) + "]" * (limit - 1)  # inside the CALL's own array
    assert isinstance(wire.decode_frame(f'[2,"a","X",{{"k":{inner[1:-1]}}}]'), Call)
    with pytest.raises(wire.FrameError, match="nested deeper"):
        wire.decode_frame(f'[2,"a","X",{{"k":{inner}}}]')
    # Brackets in strings, also after escaped quotes and backslashes, are text.
    text = '"' + "[" * 100 + '\\"' + "{" * 100 + '\\\\"'
    assert isinstance(wire.decode_frame(f'[2,"a","X",{{"k":{text}}}]'), Call)


async def test_garbage_frames_are_logged_and_session_survives(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with rpc_and_raw_peer() as (cp, raw):
        for garbage in [
            "not json",
            "{}",
            "[]",
            "[2]",
            '[2, 5, "Heartbeat", {}]',
            '"x"',
            '[3, "nobody-asked", {}]',
            '[4, "nobody", "GenericError", "", {}]',
        ]:
            await raw.send_message(garbage)
        ok = await exchange(raw, [2, "after-garbage", "GetConfiguration", {}])
        assert ok[:2] == [3, "after-garbage"]
        assert not cp.closed
    assert "malformed OCPP-J frame" in caplog.text
    assert "unknown or expired CALL" in caplog.text


async def test_binary_frame_with_valid_json_is_accepted(autojump_clock: Any) -> None:
    async with rpc_and_raw_peer() as (_cp, raw):
        await raw.send_message(b'[2,"b1","GetConfiguration",{}]')
        reply = json.loads(await raw.get_message())
        assert reply[:2] == [3, "b1"]


async def test_one_outstanding_call_at_a_time(autojump_clock: Any) -> None:
    async with rpc_and_raw_peer() as (cp, raw), trio.open_nursery() as nursery:
        nursery.start_soon(cp.call, call.Heartbeat())
        nursery.start_soon(cp.call, call.Heartbeat())
        first = json.loads(await raw.get_message())
        # The second CALL must not be on the wire before the first is answered.
        with trio.move_on_after(5) as scope:
            await raw.get_message()
        assert scope.cancelled_caught
        await raw.send_message(json.dumps([3, first[1], {"currentTime": "2026-01-01T00:00:00Z"}]))
        second = json.loads(await raw.get_message())
        assert second[1] != first[1]
        await raw.send_message(json.dumps([3, second[1], {"currentTime": "2026-01-01T00:00:00Z"}]))


async def test_incoming_call_handled_while_our_call_is_outstanding(autojump_clock: Any) -> None:
    """The CSMS's DataTransfer handler calls GetConfiguration back on the charge point while the
    charge point's DataTransfer is still waiting: no deadlock in either direction."""
    async with rpc_pair() as (cp, _csms, _):
        with trio.fail_after(5):
            answer = await cp.call(call.DataTransfer(vendor_id="x"))
        assert answer.status == "Accepted"
        assert json.loads(answer.data)[0]["key"] == "HeartbeatInterval"


async def test_slow_handler_does_not_block_our_own_calls(autojump_clock: Any) -> None:
    async with rpc_pair() as (cp, csms, _), trio.open_nursery() as nursery:
        cleared: list[Any] = []

        async def clear() -> None:
            cleared.append(await csms.call(call.ClearCache()))

        nursery.start_soon(clear)
        await trio.sleep(1)
        # The charge point's ClearCache handler is still waiting; its own CALLs go on.
        result = await cp.call(call.Authorize(id_tag="T1"))
        assert result.id_tag_info["status"] == "Accepted"
        assert not cleared
        nursery.cancel_scope.cancel()


async def test_response_timeout_is_the_callers_cancel_scope(autojump_clock: Any) -> None:
    async with rpc_and_raw_peer() as (cp, raw):
        start = trio.current_time()
        with trio.move_on_after(30) as scope:
            await cp.call(call.Heartbeat())
        assert scope.cancelled_caught
        assert trio.current_time() - start == pytest.approx(30)
        late = json.loads(await raw.get_message())
        # The late answer is dropped; the next CALL gets its own answer.
        await raw.send_message(json.dumps([3, late[1], {"currentTime": "2026-01-01T00:00:00Z"}]))
        async with trio.open_nursery() as nursery:
            results: list[Any] = []

            async def again() -> None:
                results.append(await cp.call(call.Heartbeat()))

            nursery.start_soon(again)
            frame = json.loads(await raw.get_message())
            assert frame[1] != late[1]
            await raw.send_message(
                json.dumps([3, frame[1], {"currentTime": "2026-02-02T00:00:00Z"}])
            )
        assert results[0].current_time == "2026-02-02T00:00:00Z"


async def test_connection_closed_while_waiting_raises_connection_lost(autojump_clock: Any) -> None:
    async with rpc_and_raw_peer() as (cp, raw):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(raw_closer, raw)
            with pytest.raises(ConnectionLost):
                await cp.call(call.Heartbeat())
        with pytest.raises(ConnectionLost):
            await cp.call(call.Heartbeat())


async def raw_closer(raw: WebSocketConnection) -> None:
    await raw.get_message()
    await raw.aclose()


async def test_callerror_answer_raises_call_error(autojump_clock: Any) -> None:
    async with rpc_and_raw_peer() as (cp, raw):
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                frame = json.loads(await raw.get_message())
                await raw.send_message(json.dumps([4, frame[1], "GenericError", "nope", {"a": 1}]))

            nursery.start_soon(answer)
            with pytest.raises(CallError) as info:
                await cp.call(call.Heartbeat())
        assert (info.value.code, info.value.description, info.value.details) == (
            "GenericError",
            "nope",
            {"a": 1},
        )


async def test_invalid_payloads_are_refused_in_both_directions(autojump_clock: Any) -> None:
    async with rpc_pair() as (cp, _csms, _):
        with pytest.raises(InvalidPayload):  # ours: idTag longer than CiString20
            await cp.call(call.Authorize(id_tag="X" * 21))
        # A handler's own invalid answer never reaches the wire: the peer gets InternalError.
        with pytest.raises(CallError, match="InternalError"):
            await cp.call(call.BootNotification(charge_point_model="m", charge_point_vendor="v"))
    async with rpc_and_raw_peer() as (cp, raw), trio.open_nursery() as nursery:

        async def answer_badly() -> None:
            frame = json.loads(await raw.get_message())
            await raw.send_message(json.dumps([3, frame[1], {"status": "Maybe"}]))

        nursery.start_soon(answer_badly)
        with pytest.raises(InvalidPayload):  # theirs
            await cp.call(call.BootNotification(charge_point_model="m", charge_point_vendor="v"))


def test_decimal_keeps_its_precision() -> None:
    text = wire.encode_call(
        "1", "SetChargingProfile", {"limit": Decimal("16.25"), "n": Decimal("6")}
    )
    assert text == '[2,"1","SetChargingProfile",{"limit":16.25,"n":6}]'


def test_camel_and_snake_conversion_matches_the_package() -> None:
    payload = call.MeterValues(
        connector_id=1,
        transaction_id=7,
        meter_value=[{"timestamp": "t", "sampled_value": [{"value": "1", "measurand": "SoC"}]}],
    )
    assert wire.to_camel(payload) == {
        "connectorId": 1,
        "transactionId": 7,
        "meterValue": [{"timestamp": "t", "sampledValue": [{"value": "1", "measurand": "SoC"}]}],
    }
    assert wire.to_snake({"idTagInfo": {"expiryDate": "x"}}) == {
        "id_tag_info": {"expiry_date": "x"}
    }


def test_message_log_redacts_the_authorization_key() -> None:
    frame = '[2,"1","ChangeConfiguration",{"key":"AuthorizationKey","value":"s3cr3t-password-123"}]'
    assert "s3cr3t" not in redact(frame)
    assert redact('[2,"1","Heartbeat",{}]') == '[2,"1","Heartbeat",{}]'


async def test_message_log_file_has_timestamps_and_rotates(
    autojump_clock: Any, tmp_path: Any
) -> None:
    setup = LoggingSetup()
    setup.start("WARNING", tmp_path, max_bytes=2000, backup_count=2, console=False)
    try:
        async with rpc_pair() as (cp, _csms, _):
            for _ in range(10):
                await cp.call(call.Heartbeat())
                messagelog._file.flush()  # type: ignore[union-attr]  # a batch per round trip
            await cp.call(call.Authorize(id_tag="SECRET-CHECK"))
            await cp.call(call.DataTransfer(vendor_id="x"))
    finally:
        setup.stop()  # writes what is still queued
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["ocpp-messages.log", "ocpp-messages.log.1", "ocpp-messages.log.2"]
    lines = (tmp_path / "ocpp-messages.log").read_text().splitlines()
    # "<ISO timestamp>.<ms>Z <peer> <direction> <frame>"
    stamp, _peer, direction, frame = lines[-1].split(" ", 3)
    assert stamp[4] == "-" and stamp[10] == "T" and stamp.endswith("Z")
    assert direction in (">>", "<<") and json.loads(frame)[0] in (2, 3)
    assert any('"Authorize"' in line and line.split(" ")[1] == "csms" for line in lines)


def test_message_log_lines_waiting_for_a_stuck_disk_are_bounded(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """While nothing reaches the disk (frozen, or slower than a peer's flood), at most
    MAX_QUEUED_CHARS wait in memory; the file says how many lines were dropped, where."""
    sink = messagelog.MessageFile(tmp_path / "frames.log", max_bytes=10**9, backup_count=0)
    line = "x" * 999
    try:
        for n in range(10_000):  # ~10 MB, more than twice the bound
            sink.write(f"{n:05d}{line}")
            assert sink.queued_chars <= messagelog.MAX_QUEUED_CHARS
        sink.flush()  # the disk is back
        sink.write("after")
    finally:
        sink.close()
    lines = (tmp_path / "frames.log").read_text().splitlines()
    kept = messagelog.MAX_QUEUED_CHARS // 1004
    assert [text[:5] for text in lines[:kept]] == [f"{n:05d}" for n in range(kept)]
    assert lines[kept].endswith(
        f" log -- {10_000 - kept} frame line(s) dropped: the message log could not be written"
        " fast enough"
    )
    assert lines[kept + 1 :] == ["after"]
    assert any("frame line(s) dropped" in m for m in caplog.messages)


class _FullDisk:
    """A file whose every write fails as on a full disk."""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def tell(self) -> int:
        return 0

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_message_log_on_a_full_disk_is_said_once_not_a_traceback_per_batch(
    tmp_path: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = messagelog.MessageFile(tmp_path / "frames.log", max_bytes=10**9, backup_count=0)
    stream = sink._handler.stream
    sink._handler.stream = _FullDisk()
    try:
        for batch in range(5):
            for n in range(3):
                sink.write(f"lost {batch}.{n}")
            sink.flush()
        sink._handler.stream = stream  # space again
        sink.write("kept")
        sink.flush()
    finally:
        sink.close()
    said = [m for m in caplog.messages if "frames.log" in m]
    assert said == [
        f"{tmp_path / 'frames.log'}: cannot write ([Errno 28] No space left on device): frame"
        " lines are lost until it can again",
        f"{tmp_path / 'frames.log'}: written again; 15 frame line(s) were lost",
    ]
    assert "Logging error" not in capsys.readouterr().err
    assert (tmp_path / "frames.log").read_text().splitlines() == ["kept"]


@pytest.mark.parametrize(
    ("message_type", "action", "payload"),
    [
        (2, "Heartbeat", {}),
        (2, "Heartbeat", {"x": 1}),
        (2, "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"}),
        (2, "BootNotification", {"chargePointVendor": "v" * 21, "chargePointModel": "m"}),
        (2, "BootNotification", {"chargePointVendor": 5, "chargePointModel": "m"}),
        (2, "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}),
        (2, "StatusNotification", {"connectorId": 1, "errorCode": "Oops", "status": "Charging"}),
        (2, "MeterValues", {"connectorId": 1, "meterValue": []}),
        (
            2,
            "MeterValues",
            {
                "connectorId": 1,
                "meterValue": [
                    {
                        "timestamp": "t",
                        "sampledValue": [
                            {
                                "value": "1",
                                "measurand": "SoC",
                                "unit": "Percent",
                                "context": "Sample.Clock",
                            }
                        ],
                    }
                ],
            },
        ),
        (
            2,
            "MeterValues",
            {
                "connectorId": 1,
                "meterValue": [
                    {"timestamp": "t", "sampledValue": [{"value": "1", "measurand": "Banana"}]}
                ],
            },
        ),
        (3, "StartTransaction", {"transactionId": 1, "idTagInfo": {"status": "Accepted"}}),
        (3, "StartTransaction", {"transactionId": "1", "idTagInfo": {"status": "Accepted"}}),
        (3, "GetConfiguration", {"configurationKey": [{"key": "k", "readonly": True}]}),
        (2, "ChangeAvailability", {"connectorId": 0, "type": "Inoperative"}),
        (
            2,
            "RemoteStartTransaction",
            {
                "idTag": "T",
                "chargingProfile": {
                    "chargingProfileId": 1,
                    "stackLevel": 0,
                    "chargingProfilePurpose": "TxProfile",
                    "chargingProfileKind": "Absolute",
                    "chargingSchedule": {
                        "chargingRateUnit": "A",
                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 21.4}],
                    },
                },
            },
        ),
    ],
)
def test_compiled_schemas_agree_with_the_packages_validators(
    message_type: int, action: str, payload: dict[str, Any]
) -> None:
    """wire.validate compiles the ocpp package's schemas; within the int32 range it adds
    (tests/test_hostile_csms.py), it must accept exactly what the package's own validators
    accept."""
    from ocpp.messages import get_validator

    if action == "RemoteStartTransaction":  # the package validates multipleOf on Decimals
        validator = get_validator(message_type, action, "1.6", parse_float=Decimal)
        package_ok = validator.is_valid(json.loads(json.dumps(payload), parse_float=Decimal))
    else:
        package_ok = get_validator(message_type, action, "1.6").is_valid(payload)
    try:
        wire.validate(message_type, action, payload)
        ours_ok = True
    except CallError:
        ours_ok = False
    assert ours_ok == package_ok


async def test_calls_beyond_the_handler_slots_are_refused_and_the_reader_keeps_reading(
    autojump_clock: Any,
) -> None:
    """A peer that sends ten CALLs at once while eight handlers wait: the ninth and tenth are
    answered GenericError at once, and the reader goes on reading, so the answer to our own
    CALL (which a handler's follow-up may be waiting for) still arrives."""
    async with rpc_and_raw_peer() as (cp, raw), trio.open_nursery() as nursery:
        for n in range(10):
            await raw.send_message(json.dumps([2, f"slow-{n}", "ClearCache", {}]))
        refused = [json.loads(await raw.get_message()) for _ in range(2)]
        assert [frame[:3] for frame in refused] == [
            [4, "slow-8", "GenericError"],
            [4, "slow-9", "GenericError"],
        ]
        answers: list[Any] = []
        answered = trio.Event()

        async def ours() -> None:
            answers.append(await cp.call(call.Heartbeat()))
            answered.set()

        nursery.start_soon(ours)
        with trio.fail_after(1):
            ours_frame = json.loads(await raw.get_message())
            assert ours_frame[2] == "Heartbeat"
            await raw.send_message(
                json.dumps([3, ours_frame[1], {"currentTime": "2026-11-23T10:00:00Z"}])
            )
            await answered.wait()
        assert answers[0].current_time == "2026-11-23T10:00:00Z"
        nursery.cancel_scope.cancel()


async def test_our_payload_with_text_that_is_not_unicode_is_not_sent(autojump_clock: Any) -> None:
    """A lone surrogate passes the schema (a string of 1 character) but no WebSocket can
    encode it: refused as our own payload, nothing sent, the connection intact."""
    async with rpc_pair() as (cp, _csms, handlers):
        with pytest.raises(UnsendablePayload):
            await cp.call_raw("Authorize", {"idTag": "\ud800"})
        answer = await cp.call(call.Authorize(id_tag="T1"))
    assert answer.id_tag_info["status"] == "Accepted"
    assert handlers.authorized == ["T1"]


async def answer_with(raw: WebSocketConnection, payload: dict[str, Any]) -> None:
    """Read one CALL on the raw peer and answer it with `payload` as it is."""
    frame = json.loads(await raw.get_message())
    await raw.send_message(json.dumps([3, frame[1], payload]))


async def test_an_answer_with_unknown_properties_is_used_without_them_and_said_once(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """OCPP 1.6's schemas forbid properties they do not list, but an answer whose known
    properties are valid is used without the others: refusing it would resend a message the
    central system has taken. One WARNING names the action and what was left out (per
    connection and set of properties: a central system that always adds one is said once)."""
    start_conf = {
        "transactionId": 5,
        "idTagInfo": {"status": "Accepted", "vendorFlag": True},
        "foo": 1,
    }
    async with rpc_and_raw_peer() as (cp, raw), trio.open_nursery() as nursery:
        request = call.StartTransaction(
            connector_id=1, id_tag="T1", meter_start=0, timestamp="2026-11-23T10:00:00Z"
        )
        for _ in range(2):
            nursery.start_soon(answer_with, raw, start_conf)
            result = await cp.call(request)
            assert result == call_result.StartTransaction(
                transaction_id=5, id_tag_info={"status": "Accepted"}
            )
        nursery.start_soon(answer_with, raw, {"extra": [1]})
        assert await cp.call(call.StopTransaction(1, "2026-11-23T10:00:00Z", 5)) == (
            call_result.StopTransaction()
        )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "StartTransaction.conf has properties OCPP 1.6 does not know, used without them:"
        " idTagInfo/vendorFlag, foo",
        "StopTransaction.conf has properties OCPP 1.6 does not know, used without them: extra",
    ]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"foo": 1}, "OccurenceConstraintViolation: payload: must contain ['currentTime']"),
        ({"currentTime": 5, "foo": 1}, "TypeConstraintViolation: currentTime: currentTime must"),
    ],
)
async def test_an_answer_still_invalid_without_its_unknown_properties_fails_the_call(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture, answer: dict[str, Any], error: str
) -> None:
    async with rpc_and_raw_peer() as (cp, raw), trio.open_nursery() as nursery:
        nursery.start_soon(answer_with, raw, answer)
        with pytest.raises(InvalidPayload) as caught:
            await cp.call(call.Heartbeat())
        assert not cp.closed
    message = str(caught.value)
    assert message.startswith(f"Heartbeat: {error}"), message
    assert message.endswith("(besides properties OCPP 1.6 does not know: foo)"), message
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_peer_closing_right_after_malformed_calls_ends_the_reader_quietly(
    autojump_clock: Any,
) -> None:
    """The reader answers a malformed CALL itself; a peer that closes the connection right
    after sending some leaves those answers nowhere to go: `run()` ends as on any close, it
    does not raise (which would end the session)."""
    async with rpc_and_raw_peer() as (cp, raw):
        for n in range(10):
            await raw.send_message(f'[2,"bad-{n}",5,{{}}]')  # an action that is no string
        with trio.move_on_after(1):  # the close handshake: our reader is gone by then
            await raw.aclose()
        with trio.fail_after(1):
            await cp.wait_ended()
        assert cp.closed and not cp.closed_here
        assert cp.close_reason is not None and cp.close_reason.code == 1000


async def test_a_message_above_the_websocket_limit_is_closed_here_with_1009(
    autojump_clock: Any,
) -> None:
    """trio-websocket closes the connection itself (1009) on a message above its limit:
    `run()` ends saying so (`closed_here`); a 1009 the peer sends is the peer's close."""
    async with rpc_and_raw_peer() as (cp, raw):
        await raw.send_message("[" + " " * wire.MAX_WEBSOCKET_MESSAGE_BYTES + "]")
        with trio.fail_after(1):
            await cp.wait_ended()
        assert cp.close_reason is not None and cp.close_reason.code == 1009
        assert cp.closed_here
    async with rpc_and_raw_peer() as (cp, raw):
        with trio.move_on_after(1):
            await raw.aclose(code=1009, reason="too big for me")
        with trio.fail_after(1):
            await cp.wait_ended()
        assert cp.close_reason is not None
        assert (cp.close_reason.code, cp.close_reason.reason) == (1009, "too big for me")
        assert not cp.closed_here
