"""`dcocpp demo`: the embedded central system, the scripted sessions, the output."""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, Any

import pytest
import trio
import trio.testing
from ocpp.v16 import call
from ocpp.v16.enums import Action, AuthorizationStatus, ChargePointStatus
from trio_websocket import wrap_client_stream

from dcocpp import defaults
from dcocpp.cli import demo
from dcocpp.clock.stationclock import TrioWallClock
from dcocpp.demo import MIN_SPEED
from dcocpp.demo.central_system import CsmsEvent, DemoCentralSystem
from dcocpp.demo.run import REJECTED_TAG, GunSession, default_script, run_demo
from dcocpp.ocpp.messagelog import MessageLog
from dcocpp.ocpp.rpc import RpcConnection
from dcocpp.ocpp.statuses import allowed_transitions
from dcocpp.ocpp.wire import SUBPROTOCOL
from tests.loop_database import on_the_loop

REPO = Path(__file__).resolve().parents[1]
TAGS = ("DEMO-TAG-1", "DEMO-TAG-2")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _summary_rows(text: str) -> tuple[list[list[str]], str]:
    """The summary's transaction rows (split on whitespace) and its total."""
    summary = text[text.index("Transactions recorded by the central system") :]
    rows = [line.split() for line in summary.splitlines() if re.match(r"\s+\d+\s+\d+\s", line)]
    total = re.search(r"^\s+total\s+([0-9.]+) kWh$", summary, re.MULTILINE)
    assert total is not None, summary
    return rows, total.group(1)


# --- the whole demo ------------------------------------------------------------------------------


@pytest.mark.parametrize("plc", [False, True], ids=["simulated", "plc"])
async def test_demo_plays_every_gun_and_summarises_the_transactions(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, plc: bool
) -> None:
    out = io.StringIO()
    clock = TrioWallClock(datetime(2025, 6, 1, 12, 0, tzinfo=UTC))
    result = await run_demo(
        speed=1.0,
        api=None,
        data_dir=tmp_path,
        out=out,
        live=False,
        in_memory=True,
        database_runner=on_the_loop,
        clock=clock,
        plc=plc,
    )
    text = out.getvalue()
    csms = result.csms
    assert not result.interrupted
    hardware = "emulated PLCs on a virtual CAN bus" if plc else "simulated hardware"
    assert f"a DC charger on {hardware}" in text

    # Every gun went through the whole session, in the order the script plays it.
    for cid in (1, 2):
        seen = [status for c, status in csms.status_history if c == cid]
        expected = ["Available", "Preparing", "Charging", "SuspendedEV", "Charging"]
        expected += ["Finishing", "Available"]
        assert seen == expected, (cid, seen)
        assert f"connector {cid}: Charging" in text

    # The unknown tag was refused and started nothing.
    assert [(a.id_tag, a.status) for a in csms.authorizations if a.id_tag == REJECTED_TAG] == [
        (REJECTED_TAG, AuthorizationStatus.invalid)
    ]
    assert f"Authorize {REJECTED_TAG} -> Invalid" in text
    assert f"Refused: {REJECTED_TAG}" in text

    # Exactly one transaction per gun, stopped locally with the driver's tag, energy delivered.
    transactions = sorted(csms.transactions, key=lambda t: t.connector_id)
    assert [(t.connector_id, t.id_tag, t.reason) for t in transactions] == [
        (1, "DEMO-TAG-1", "Local"),
        (2, "DEMO-TAG-2", "Local"),
    ]
    for tx in transactions:
        assert tx.status == AuthorizationStatus.accepted
        assert tx.energy_wh is not None and tx.energy_wh > 0
        # 20 s at about 75 kW (virtual time is exact): some 400 Wh.
        assert 300 < tx.energy_wh < 500, tx.energy_wh
        assert tx.meter_value_messages >= 3  # every 5 s while the transaction runs
        assert tx.last_energy_wh is not None and tx.last_energy_wh > tx.meter_start
    assert {t.transaction_id for t in transactions} == {1, 2}

    # The summary lists them with the right total.
    rows, total = _summary_rows(text)
    assert [(r[0], r[1], r[2], r[5], r[6]) for r in rows] == [
        (
            str(t.transaction_id),
            str(t.connector_id),
            t.id_tag,
            "Local",
            f"{(t.energy_wh or 0) / 1000:.3f}",
        )
        for t in csms.transactions
    ]
    energies = [t.energy_wh for t in transactions]
    assert total == f"{sum(e for e in energies if e is not None) / 1000:.3f}"
    assert result.summary in text
    assert "(times UTC, 2025-06-01)" in text
    assert [(r[3], r[4]) for r in rows] == [("12:00:04", "12:00:28"), ("12:00:06", "12:00:30")]

    # The pace: about half a minute at speed 1.
    assert 30 < trio.current_time() < 40


async def test_demo_without_the_repository_uses_the_packaged_configuration(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    out = io.StringIO()
    script = [GunSession(2, "TAG-B", charge=2, suspended=1, charge_after_resume=1, pause=0.5)]
    result = await run_demo(
        guns_script=script,
        speed=4.0,
        api=None,
        data_dir=tmp_path,
        out=out,
        live=False,
        in_memory=True,
        database_runner=on_the_loop,
        shipped_configs=None,
    )
    config = json.loads((tmp_path / "charger.json").read_text())
    assert config["paths"]["ocppConfig"] == str(tmp_path / "ocpp16-config.json")
    assert (tmp_path / "ocpp16-config.json").read_text() == defaults.read_text(
        defaults.OCPP_CONFIG_JSON
    )
    assert [(t.connector_id, t.id_tag, t.reason) for t in result.csms.transactions] == [
        (2, "TAG-B", "Local")
    ]
    assert "gun 1" not in out.getvalue()


async def test_demo_live_view_redraws_in_place(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    out = _Tty()
    script = [GunSession(1, "TAG-A", charge=2, suspended=1, charge_after_resume=1, pause=0.5)]
    await run_demo(
        guns_script=script,
        speed=1.0,
        api=None,
        data_dir=tmp_path,
        out=out,
        in_memory=True,
        database_runner=on_the_loop,
    )
    text = out.getvalue()
    assert "\x1b[?25l" in text and text.count("\x1b[?25h") == 1  # cursor hidden, then back
    frames = text.count("dcocpp demo   t=")
    assert frames >= 10  # about twice a second
    assert text.count("\x1b[11F") == frames - 1  # each redraw goes back over the last frame
    assert "SuspendedEV" in text and "TAG-A" in text
    assert "Transactions recorded by the central system" in text


async def test_ctrl_c_stops_the_transactions_and_still_prints_the_summary(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    out = io.StringIO()
    result: Any = None

    async def demo() -> None:
        nonlocal result
        result = await run_demo(
            api=None,
            data_dir=tmp_path,
            out=out,
            live=False,
            in_memory=True,
            database_runner=on_the_loop,
            stop_on_signals=True,
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(demo)
        await trio.sleep(8)  # both guns charge from about 6 s on
        assert out.getvalue().count("charging, transaction") == 2
        signal.raise_signal(signal.SIGINT)
    assert result.interrupted
    assert [(t.connector_id, t.reason) for t in result.csms.transactions] == [
        (1, "Other"),
        (2, "Other"),
    ]
    assert "interrupted" in out.getvalue()
    rows, _ = _summary_rows(out.getvalue())
    assert len(rows) == 2


async def test_demo_over_tcp_with_the_api_on_a_busy_port(tmp_path: Path) -> None:
    """Real sockets, real time, a fast pace: the demo as the command line runs it."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    out = io.StringIO()
    script = [
        GunSession(1, "TAG-A", rejected_tag="NOPE", charge=1, suspended=1, charge_after_resume=1),
        GunSession(2, "TAG-B", start_after=0.5, charge=1, suspended=1, charge_after_resume=1),
    ]
    try:
        with trio.fail_after(20):
            result = await run_demo(
                guns_script=script,
                speed=20.0,
                api=("127.0.0.1", port),
                data_dir=tmp_path,
                out=out,
                live=False,
            )
    finally:
        busy.close()
    text = out.getvalue()
    assert f"port {port} was busy, so it took a free one" in text
    assert result.api_address is not None and result.api_address[1] not in (0, port)
    assert re.search(r"central system  ws://127\.0\.0\.1:\d+/ocpp", text)
    transactions = result.csms.transactions
    assert sorted((t.connector_id, t.reason) for t in transactions) == [(1, "Local"), (2, "Local")]
    assert all(t.energy_wh is not None and t.energy_wh > 0 for t in transactions)
    assert "NOPE" not in {t.id_tag for t in transactions}


def test_default_script_staggers_the_guns_and_rejects_one_tag() -> None:
    script = default_script([1, 2, 3])
    assert [s.connector_id for s in script] == [1, 2, 3]
    assert [s.rejected_tag for s in script] == [REJECTED_TAG, None, None]
    assert script[0].start_after < script[1].start_after < script[2].start_after
    assert len({s.id_tag for s in script}) == 3


# --- the central system alone -------------------------------------------------------------------


async def _websocket(nursery: trio.Nursery, csms: DemoCentralSystem) -> Any:
    """A charge point's WebSocket (id CP-1) to `csms` over the in-memory network."""
    stream: Any = await csms.memory_network(nursery)("csms.test", 80)
    return await wrap_client_stream(
        nursery, stream, "csms.test", "/ocpp/CP-1", subprotocols=[SUBPROTOCOL]
    )


async def _charge_point(nursery: trio.Nursery, csms: DemoCentralSystem) -> RpcConnection:
    """A charger-side RpcConnection to `csms`."""
    rpc = RpcConnection(await _websocket(nursery, csms), object(), message_log=MessageLog("csms"))
    nursery.start_soon(rpc.run)
    return rpc


async def test_central_system_authorizes_and_records_transactions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[CsmsEvent] = []
    csms = DemoCentralSystem(["GOOD"], heartbeat_interval=90, observer=events.append)
    async with trio.open_nursery() as nursery:
        cp = await _charge_point(nursery, csms)

        boot = await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
        assert (boot.status, boot.interval) == ("Accepted", 90)
        assert csms.charge_point_id == "CP-1" and csms.connected
        assert (await cp.call(call.Heartbeat())).current_time.endswith("Z")

        await cp.call(
            call.StatusNotification(
                connector_id=1, error_code="NoError", status=ChargePointStatus.preparing
            )
        )
        assert csms.statuses[1].status == "Preparing"

        good = await cp.call(call.Authorize(id_tag="GOOD"))
        bad = await cp.call(call.Authorize(id_tag="BAD"))
        assert good.id_tag_info["status"] == "Accepted"
        assert bad.id_tag_info["status"] == "Invalid"
        assert [(a.id_tag, a.status) for a in csms.authorizations] == [
            ("GOOD", AuthorizationStatus.accepted),
            ("BAD", AuthorizationStatus.invalid),
        ]

        start = await cp.call(
            call.StartTransaction(
                connector_id=1, id_tag="GOOD", meter_start=1000, timestamp="2025-01-01T10:00:00Z"
            )
        )
        assert start.transaction_id == 1 and start.id_tag_info["status"] == "Accepted"
        second = await cp.call(
            call.StartTransaction(
                connector_id=2, id_tag="BAD", meter_start=5, timestamp="2025-01-01T10:00:01Z"
            )
        )
        assert second.transaction_id == 2 and second.id_tag_info["status"] == "Invalid"

        await cp.call(
            call.MeterValues(
                connector_id=1,
                transaction_id=1,
                meter_value=[
                    {
                        "timestamp": "2025-01-01T10:00:05Z",
                        "sampled_value": [
                            {"value": "1.2", "measurand": "Energy.Active.Import.Register",
                             "unit": "kWh"},
                            {"value": "50000.5", "measurand": "Power.Active.Import", "unit": "W"},
                        ],
                    }
                ],
            )
        )  # fmt: skip
        record = csms.transaction(1)
        assert record is not None and record.active
        assert (record.last_energy_wh, record.last_power_w) == (1200.0, 50000.5)

        stop = await cp.call(
            call.StopTransaction(
                meter_stop=1500,
                timestamp="2025-01-01T10:10:00Z",
                transaction_id=1,
                id_tag="GOOD",
            )
        )
        assert stop.id_tag_info["status"] == "Accepted"
        assert not record.active
        assert (record.meter_stop, record.stopped_at, record.energy_wh) == (
            1500,
            "2025-01-01T10:10:00Z",
            500,
        )
        assert record.reason == "Local"  # absent means Local
        assert (record.connector_id, record.id_tag, record.meter_start) == (1, "GOOD", 1000)
        assert record.started_at == "2025-01-01T10:00:00Z"

        # An unknown transaction is answered all the same (the charger must empty its queue).
        unknown = await cp.call(
            call.StopTransaction(
                meter_stop=1, timestamp="2025-01-01T10:10:00Z", transaction_id=99, reason="Other"
            )
        )
        assert unknown.id_tag_info is None
        assert len(csms.transactions) == 2

        actions = [e.action for e in events]
        for action in (Action.boot_notification, Action.authorize, Action.stop_transaction):
            assert action.value in actions
        nursery.cancel_scope.cancel()


async def test_central_system_validates_what_it_receives(
    autojump_clock: trio.testing.MockClock,
) -> None:
    csms = DemoCentralSystem(["GOOD"])
    async with trio.open_nursery() as nursery:
        ws = await _websocket(nursery, csms)
        await ws.send_message(json.dumps([2, "a-1", "Authorize", {"idTag": "X" * 21}]))
        answer = json.loads(await ws.get_message())
        assert answer[:3] == [4, "a-1", "TypeConstraintViolation"]
        await ws.send_message(json.dumps([2, "a-2", "StartTransaction", {"connectorId": 1}]))
        answer = json.loads(await ws.get_message())
        assert answer[:3] == [4, "a-2", "OccurenceConstraintViolation"]
        assert csms.authorizations == [] and csms.transactions == []
        nursery.cancel_scope.cancel()


async def test_central_system_serves_tcp(tmp_path: Path) -> None:
    from dcocpp.ocpp import transport

    csms = DemoCentralSystem(["GOOD"])
    async with trio.open_nursery() as nursery:
        port = await nursery.start(csms.run)
        async with trio.open_nursery() as client:
            ws = await client.start(
                partial(
                    transport.run_client,
                    f"ws://127.0.0.1:{port}/ocpp",
                    charge_point_id="CP-TCP",
                )
            )
            rpc = RpcConnection(ws, object(), message_log=MessageLog("csms"))
            client.start_soon(rpc.run)
            answer = await rpc.call(call.Authorize(id_tag="GOOD"))
            assert answer.id_tag_info["status"] == "Accepted"
            client.cancel_scope.cancel()
        assert csms.charge_point_id == "CP-TCP"
        nursery.cancel_scope.cancel()


# --- the command line -----------------------------------------------------------------------------


def test_demo_help_explains_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        demo.main(["demo", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for text in (
        "embedded central system",
        "scripted session",
        "--speed",
        "--api",
        "--no-live",
        "--keep-data",
        "--log-level",
        "dcocpp status",
        "Ctrl-C",
    ):
        assert text in out, text


def test_python_m_dcocpp_demo_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dcocpp", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "invalid choice: 'demo'" in done.stderr:
        pytest.skip("dcocpp/cli/commands.py does not register `demo` yet")
    assert done.returncode == 0, done.stderr
    assert "embedded central system" in done.stdout


# --- every pace, any end ------------------------------------------------------------------------


@pytest.mark.parametrize("speed", [MIN_SPEED, 1e9], ids=["slowest", "fastest"])
async def test_every_accepted_pace_plays_the_whole_script(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, speed: float
) -> None:
    result = await run_demo(
        speed=speed,
        api=None,
        data_dir=tmp_path,
        out=io.StringIO(),
        live=False,
        in_memory=True,
        database_runner=on_the_loop,
    )
    csms = result.csms
    assert not result.interrupted
    table = allowed_transitions("connector")
    for cid in (1, 2):
        seen = [status for c, status in csms.status_history if c == cid]
        expected = ["Available", "Preparing", "Charging", "SuspendedEV", "Charging"]
        if speed == MIN_SPEED:
            assert seen == [*expected, "Finishing", "Available"], (cid, seen)
        else:
            # Faster than the charger sends StatusNotifications (a few a second): what came
            # and went before it was sent is coalesced, through allowed steps, to the end.
            assert seen[: len(expected)] == expected and seen[-1] == "Available", (cid, seen)
            assert all(b in table[ChargePointStatus(a)] for a, b in itertools.pairwise(seen))
    assert [(a.id_tag, a.status) for a in csms.authorizations if a.id_tag == REJECTED_TAG] == [
        (REJECTED_TAG, AuthorizationStatus.invalid)
    ]
    transactions = sorted(csms.transactions, key=lambda t: t.connector_id)
    assert [(t.connector_id, t.reason) for t in transactions] == [(1, "Local"), (2, "Local")]
    assert all(t.energy_wh is not None and t.energy_wh > 0 for t in transactions)


@pytest.mark.parametrize("speed", ["0", "-1", "nan", "inf", "fast", "0.009"])
def test_demo_refuses_a_pace_it_cannot_play(speed: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        demo.main(["demo", "--speed", speed])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --speed: " in err
    if speed != "fast":
        assert "must be a number from 0.01 up" in err


def _demo_process(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    """`python -m dcocpp demo --no-live` with its temporary directory under `tmp_path`."""
    return subprocess.Popen(
        [sys.executable, "-m", "dcocpp", "demo", "--no-live", "--api", "127.0.0.1:0", *args],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(stream: IO[str], marker: str) -> list[str]:
    """Lines of `stream` up to the first containing `marker` (the process's output is bounded:
    it ends, and the test's hang guard bounds the whole test)."""
    lines = []
    for line in stream:
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"no {marker!r} in:\n{''.join(lines)}")


def _temporary_data(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("dcocpp-demo-*"))


@pytest.mark.process
def test_demo_at_500_times_the_pace_plays_the_whole_script(tmp_path: Path) -> None:
    """At a fast pace the first tag used to come before the central system had accepted the
    charger: decided offline, it never reached the central system and the demo failed after
    30 s. The script now starts once the charger is registered."""
    with _demo_process(tmp_path, "--speed", "500") as process:
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    rows, _ = _summary_rows(out)
    assert sorted((r[1], r[5]) for r in rows) == [("1", "Local"), ("2", "Local")], out
    assert f"Refused: {REJECTED_TAG}" in out
    assert _temporary_data(tmp_path) == []


@pytest.mark.process
@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGHUP, signal.SIGTERM], ids=["SIGINT", "SIGHUP", "SIGTERM"]
)
def test_an_interrupted_demo_removes_its_temporary_data(tmp_path: Path, signum: int) -> None:
    with _demo_process(tmp_path, "--speed", "5") as process:
        assert process.stdout is not None
        _read_until(process.stdout, "charging, transaction")
        assert len(_temporary_data(tmp_path)) == 1
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "interrupted: stopping the running transactions" in out
    assert "Transactions recorded by the central system" in out
    assert "Traceback" not in err
    assert _temporary_data(tmp_path) == []


@pytest.mark.process
def test_a_hangup_while_the_demo_starts_removes_its_temporary_data(tmp_path: Path) -> None:
    with _demo_process(tmp_path) as process:
        assert process.stdout is not None
        _read_until(process.stdout, "dcocpp demo: a DC charger")  # its first line
        process.send_signal(signal.SIGHUP)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert _temporary_data(tmp_path) == []


@pytest.mark.process
@pytest.mark.parametrize("lines", [3, 20, 40])
def test_demo_into_a_pipe_closed_early_ends_quietly(tmp_path: Path, lines: int) -> None:
    """`dcocpp demo | head -N`: no BrokenPipeError traceback, whichever task writes when the
    reader goes (the heading, the view, the embedded central system's handlers), no hang, and
    the temporary data removed."""
    with _demo_process(tmp_path, "--speed", "5") as process:
        assert process.stdout is not None and process.stderr is not None
        head = [process.stdout.readline() for _ in range(lines)]
        process.stdout.close()  # as `head` exits
        err = process.stderr.read()
        assert process.wait(timeout=30) == 1
    assert head[0].startswith("dcocpp demo: a DC charger")
    assert err == ""
    assert _temporary_data(tmp_path) == []
