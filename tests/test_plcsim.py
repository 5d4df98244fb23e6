"""`dcocpp plc-sim`: the console's parsing and line framing, the emulators driven from the
console against the real PLC driver on a virtual bus (in-process, autojump clock), and the
command as a process of its own (stdin/stdout, exit statuses)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from dcocpp.cli import commands as cli
from dcocpp.cli.plcsim import (
    MAX_LINE,
    BusOpenError,
    ConsoleError,
    Fault,
    Help,
    Lie,
    LineBuffer,
    LineReader,
    Plug,
    Quit,
    Register,
    Status,
    Suspend,
    Unplug,
    open_input,
    parse_command,
    serve,
)
from dcocpp.config import ConnectorConfig, load_charger_config
from dcocpp.hardware.interface import (
    CablePlugged,
    CableUnplugged,
    EvDemand,
    FaultCleared,
    FaultKind,
    FaultRaised,
    HardwareEvent,
    RelayState,
)
from dcocpp.hardware.plc.driver import PlcBackend
from dcocpp.hardware.plc.emulated import EmulatedPlcs
from dcocpp.hardware.plc.virtualbus import SelectableVirtualBus
from dcocpp.hardware.registercheck import SETTLE_S

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "configs" / "charger.json"
PROCESS_WAIT = 30.0  # a child's start (imports) on a loaded machine


# --- console parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("plug 1", Plug(1)),
        ("plug 2 40", Plug(2, 40.0)),
        ("plug 1 40%", Plug(1, 40.0)),
        ("plug 1 0", Plug(1, 0.0)),
        ("plug 1 100", Plug(1, 100.0)),
        ("plug 1 55.5", Plug(1, 55.5)),
        ("  PLUG   1  \r", Plug(1)),
        ("plug 1 # the red car", Plug(1)),
        ("unplug 2", Unplug(2)),
        ("suspend 1", Suspend(1, True)),
        ("resume 1", Suspend(1, False)),
        ("fault 1 estop on", Fault(1, FaultKind.EMERGENCY_STOP, True)),
        ("fault 1 earth off", Fault(1, FaultKind.EARTH_FAULT, False)),
        ("fault 2 comm on", Fault(2, FaultKind.COMMUNICATION, True)),
        ("fault 2 meter on", Fault(2, FaultKind.METER, True)),
        ("Fault 1 RELAY ON", Fault(1, FaultKind.POWER_SWITCH, True)),
        ("register 1 0", Register(1, 0)),
        ("register 2 1500000", Register(2, 1_500_000)),
        ("overrange 1 on", Lie(1, "overrange", True)),
        ("WELD 2 off", Lie(2, "weld", False)),
        ("status", Status()),
        ("status 2", Status(2)),
        ("help", Help()),
        ("quit", Quit()),
    ],
)
def test_parse_commands(line: str, command: object) -> None:
    assert parse_command(line) == command


@pytest.mark.parametrize("line", ["", "   ", "\t", "# a comment", "  # indented comment"])
def test_blank_lines_and_comments_are_no_command(line: str) -> None:
    assert parse_command(line) is None


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("bogus", "unknown command 'bogus' (try: help)"),
        ("plug", "usage: plug N [SOC%]"),
        ("plug 1 40 x", "usage: plug N [SOC%]"),
        ("plug x", "connector must be a number from 1, not 'x'"),
        ("plug 0", "connector must be a number from 1, not '0'"),
        ("plug -1", "connector must be a number from 1, not '-1'"),
        ("plug 1.5", "connector must be a number from 1, not '1.5'"),
        ("plug 1_0", "connector must be a number from 1, not '1_0'"),
        ("plug 1 101", "SoC must be a percentage from 0 to 100, not '101'"),
        ("plug 1 -5", "SoC must be a percentage from 0 to 100, not '-5'"),
        ("plug 1 nan", "SoC must be a percentage from 0 to 100, not 'nan'"),
        ("plug 1 1e2", "SoC must be a percentage from 0 to 100, not '1e2'"),
        ("plug 1 full", "SoC must be a percentage from 0 to 100, not 'full'"),
        ("unplug", "usage: unplug N"),
        ("unplug 1 2", "usage: unplug N"),
        ("unplug one", "connector must be a number from 1"),
        ("suspend", "usage: suspend N"),
        ("resume 1 now", "usage: resume N"),
        ("fault 1 estop", "usage: fault N estop|earth|comm|meter|relay on|off"),
        ("fault 1 estop on now", "usage: fault N"),
        ("fault 1 lock on", "unknown fault 'lock' (one of: estop, earth, comm, meter, relay)"),
        ("fault 1 estop maybe", "expected on or off, not 'maybe'"),
        ("fault x estop on", "connector must be a number from 1, not 'x'"),
        ("register 1", "usage: register N WH"),
        ("register 1 -5", "register must be a number of Wh from 0, not '-5'"),
        ("register 1 1e6", "register must be a number of Wh from 0, not '1e6'"),
        ("overrange 1", "usage: overrange N on|off"),
        ("weld 1 stuck", "expected on or off, not 'stuck'"),
        ("status 1 2", "usage: status [N]"),
        ("status all", "connector must be a number from 1, not 'all'"),
        ("help me", "usage: help"),
        ("quit now", "usage: quit"),
        ("plug 1 " + "9" * MAX_LINE, f"line longer than {MAX_LINE} characters"),
    ],
)
def test_parse_errors(line: str, error: str) -> None:
    with pytest.raises(ConsoleError) as info:
        parse_command(line)
    assert str(info.value).startswith(error)


# --- line framing ---------------------------------------------------------------------------------


def test_line_buffer_splits_lines_across_chunks() -> None:
    buffer = LineBuffer()
    assert buffer.feed(b"plug 1\nstat") == ["plug 1"]
    assert buffer.feed(b"us 1\r\n\n") == ["status 1", ""]
    assert buffer.feed(b"quit") == []
    assert buffer.finish() == ["quit"]
    assert buffer.finish() == []


def test_line_buffer_replaces_undecodable_bytes() -> None:
    assert LineBuffer().feed(b"plug \xff1\n") == ["plug \ufffd1"]


def test_line_buffer_bounds_an_overlong_line() -> None:
    buffer = LineBuffer(max_line=8)
    # Handed on once, cut after max_line + 1 bytes (the parser refuses it), the rest dropped.
    assert buffer.feed(b"0123456789") == ["012345678"]
    assert buffer.feed(b"abcdefghijklmnop") == []
    assert buffer.feed(b"xyz\nstatus\n") == ["status"]
    assert buffer.feed(b"0123456789abc\nhelp\n") == ["012345678", "help"]
    assert buffer.feed(b"0123456789") == ["012345678"]
    assert buffer.finish() == []  # the rest of an over-long line, not a line of its own


async def test_line_reader_on_a_memory_stream() -> None:
    send, receive = trio.testing.memory_stream_one_way_pair()
    lines = LineReader(receive)
    await send.send_all(b"plug 1\nstat")
    assert await anext(lines) == "plug 1"
    await send.send_all(b"us\nquit")
    assert await anext(lines) == "status"
    await send.aclose()
    assert [line async for line in lines] == ["quit"]


@pytest.mark.parametrize("thread", [False, True], ids=["fdstream", "thread"])
async def test_open_input_reads_a_pipe(thread: bool) -> None:
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, b"plug 1 40\nstatus\n")
        os.close(write_fd)
        write_fd = -1
        async with open_input(read_fd, thread=thread) as stream:
            assert [line async for line in LineReader(stream)] == ["plug 1 40", "status"]
        # The caller's descriptor stays open and blocking (FdStream had a duplicate).
        assert os.get_blocking(read_fd)
        os.fstat(read_fd)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


# --- in-process: plc-sim's serve against the real driver ----------------------------------------


@attrs.define
class Rig:
    """serve() and the host's PlcBackend on one virtual channel."""

    channel: str
    connectors: tuple[ConnectorConfig, ...]
    plcs: EmulatedPlcs
    backend: PlcBackend
    ready: dict[str, Any]
    events: dict[int, list[HardwareEvent]]
    served: trio.Event  # serve() returned
    _lines: trio.MemorySendChannel[str]
    _answers: trio.MemoryReceiveChannel[str]

    def send(self, line: str) -> None:
        self._lines.send_nowait(line)

    async def ask(self, line: str, answers: int = 1) -> list[str]:
        """Send one console line; its answer lines."""
        self.send(line)
        with trio.fail_after(5):
            return [await self._answers.receive() for _ in range(answers)]

    async def status(self, cid: int) -> dict[str, Any]:
        (line,) = await self.ask(f"status {cid}")
        status: dict[str, Any] = json.loads(line)
        return status

    def end_input(self) -> None:
        self._lines.close()

    def no_answer_pending(self) -> bool:
        try:
            self._answers.receive_nowait()
        except trio.WouldBlock:
            return True
        return False

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        with trio.fail_after(10):
            while not condition():  # noqa: ASYNC110 -- other tasks change the state
                await trio.sleep(0.01)

    async def wait_event(self, cid: int, event: HardwareEvent) -> None:
        await self.wait_until(lambda: event in self.events[cid])

    async def wait_fault(self, cid: int, kind: FaultKind) -> FaultRaised:
        def raised() -> list[FaultRaised]:
            return [e for e in self.events[cid] if isinstance(e, FaultRaised) and e.kind is kind]

        await self.wait_until(lambda: bool(raised()))
        return raised()[0]


@asynccontextmanager
async def rig() -> AsyncIterator[Rig]:
    channel = f"plcsim-{uuid.uuid4().hex}"
    connectors = load_charger_config(SHIPPED).connectors
    send_lines, lines = trio.open_memory_channel[str](math.inf)
    send_answers, answers = trio.open_memory_channel[str](math.inf)
    backend = PlcBackend(connectors, bus_factory=lambda: SelectableVirtualBus(channel=channel))
    events: dict[int, list[HardwareEvent]] = {c.id: [] for c in connectors}
    served = trio.Event()

    async def run_serve(*, task_status: trio.TaskStatus[EmulatedPlcs]) -> None:
        await serve(
            connectors, "virtual", channel, lines, send_answers.send_nowait, task_status=task_status
        )
        served.set()

    async with trio.open_nursery() as nursery:
        plcs = await nursery.start(run_serve)
        ready = json.loads(answers.receive_nowait())  # written before serve() started
        senders = {}
        for c in connectors:
            send, receive = trio.open_memory_channel[HardwareEvent](64)
            senders[c.id] = send
            nursery.start_soon(collect, receive, events[c.id])
        await nursery.start(backend.run, senders)
        yield Rig(channel, connectors, plcs, backend, ready, events, served, send_lines, answers)
        nursery.cancel_scope.cancel()


async def collect(
    receive: trio.MemoryReceiveChannel[HardwareEvent], into: list[HardwareEvent]
) -> None:
    async with receive:
        async for event in receive:
            into.append(event)


async def test_console_drives_the_driver(autojump_clock: trio.testing.MockClock) -> None:
    async with rig() as r:
        assert r.ready == {
            "event": "ready",
            "interface": "virtual",
            "channel": r.channel,
            "plcs": [
                {"connector": 1, "plcId": 0, "label": "Gun A"},
                {"connector": 2, "plcId": 1, "label": "Gun B"},
            ],
        }
        status = await r.status(1)
        assert status["plugged"] is False and status["soc"] is None
        assert status["energyWh"] == 1_000_000.0  # the emulated register starts there

        assert await r.ask("plug 1 40") == ["ok: connector 1 plugged, EV at 40% SoC"]
        await r.wait_event(1, CablePlugged())
        await r.wait_event(1, EvDemand(True))
        status = await r.status(1)
        assert (status["plugged"], status["evRequesting"], status["soc"]) == (True, True, 40.0)
        assert (status["currentLimitA"], status["powerLimitW"]) == (200.0, 75000.0)

        # The charger's side closes the relay: the EV charges, the meter counts.
        gun = r.backend.gun(1)
        await gun.set_relay(True)
        await trio.sleep(60)
        status = await r.status(1)
        assert status["relayClosed"] is True and status["lastCmdSeq"] > 0
        assert status["powerW"] == pytest.approx(75_000, rel=0.01)  # the connector's cap
        assert status["energyWh"] > 1_001_000 and status["soc"] > 40
        assert gun.read_meter().energy_wh > 1_001_000

        assert await r.ask("suspend 1") == ["ok: connector 1 EV suspended"]
        await r.wait_event(1, EvDemand(False))
        assert (await r.status(1))["evRequesting"] is False
        assert await r.ask("resume 1") == ["ok: connector 1 EV resumed"]
        await r.wait_until(lambda: r.events[1].count(EvDemand(True)) == 2)

        assert await r.ask("fault 1 estop on") == ["ok: connector 1 fault estop on"]
        assert (await r.status(1))["faults"] == ["estop"]
        raised = await r.wait_fault(1, FaultKind.EMERGENCY_STOP)
        assert "emergency stop" in raised.detail
        await r.wait_event(1, RelayState(False))
        status = await r.status(1)
        assert status["estop"] is True and status["safetyOk"] is False
        assert (status["faultReason"], status["faultReasonText"]) == (4, "estop")
        assert status["relayClosed"] is False
        assert await r.ask("fault 1 estop off") == ["ok: connector 1 fault estop off"]
        await r.wait_event(1, FaultCleared(FaultKind.EMERGENCY_STOP))
        await r.wait_until(lambda: r.plcs.state(1).fault_reason == 0)  # the driver cleared it
        assert (await r.status(1))["faults"] == []

        # Gun 2 goes silent: the driver notices the lost PLC, and its return.
        assert await r.ask("fault 2 comm on") == ["ok: connector 2 fault comm on"]
        await r.wait_fault(2, FaultKind.COMMUNICATION)
        assert await r.ask("fault 2 comm off") == ["ok: connector 2 fault comm off"]
        await r.wait_event(2, FaultCleared(FaultKind.COMMUNICATION))
        assert CablePlugged() not in r.events[2]

        assert await r.ask("unplug 1") == ["ok: connector 1 unplugged"]
        await r.wait_event(1, CableUnplugged())
        both = [json.loads(line) for line in await r.ask("status", answers=2)]
        assert [(s["connector"], s["plcId"], s["plugged"]) for s in both] == [
            (1, 0, False),
            (2, 1, False),
        ]

        assert await r.ask("quit") == ["ok: quit"]
        with trio.fail_after(5):
            await r.served.wait()
        with pytest.raises(RuntimeError, match="not running"):
            r.plcs.state(1)  # the emulators stopped with serve()


async def test_console_makes_the_meter_and_the_relay_lie(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig() as r:
        assert await r.ask("register 1 0") == ["ok: connector 1 meter register at 0 Wh"]
        raised = await r.wait_fault(1, FaultKind.METER)
        assert raised.detail == "PLC 0: meter register went back 1000000 Wh"
        assert (await r.status(1))["energyWh"] == 0.0  # what the PLC reports
        assert r.backend.gun(1).read_meter().energy_wh == 1_000_000  # what the host believes

        assert await r.ask("overrange 2 on") == ["ok: connector 2 meter over range on"]
        raised = await r.wait_fault(2, FaultKind.METER)
        assert raised.detail == "PLC 1: meter over range (OVERRANGE)"
        assert (await r.status(2))["meterOverrange"] is True
        assert await r.ask("overrange 2 off") == ["ok: connector 2 meter over range off"]
        await trio.sleep(SETTLE_S)  # believed again once consistent for that long
        await r.wait_event(2, FaultCleared(FaultKind.METER))

        assert await r.ask("weld 2 on") == ["ok: connector 2 relay welded on"]
        raised = await r.wait_fault(2, FaultKind.POWER_SWITCH)
        assert raised.detail == "PLC 1: relay reported closed, commanded open"
        await r.wait_until(lambda: r.plcs.state(2).force_off_active)
        assert (await r.status(2))["relayWelded"] is True
        assert await r.ask("weld 2 off") == ["ok: connector 2 relay welded off"]
        await r.wait_event(2, FaultCleared(FaultKind.POWER_SWITCH))
        assert await r.ask("register 7 0") == ["error: unknown connector 7 (configured: 1, 2)"]


async def test_bad_input_is_answered_and_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig() as r:
        assert await r.ask("plug 1") == ["ok: connector 1 plugged, EV at 20% SoC"]
        assert await r.ask("plug 1 50") == ["error: connector 1: PLC 0: already plugged"]
        assert await r.ask("plug 3") == ["error: unknown connector 3 (configured: 1, 2)"]
        assert await r.ask("status 9") == ["error: unknown connector 9 (configured: 1, 2)"]
        assert await r.ask("unplug 2") == ["error: connector 2: PLC 1: not plugged"]
        assert await r.ask("suspend 2") == ["error: connector 2: PLC 1: no EV plugged"]
        assert await r.ask("fault 1 lock on") == [
            "error: unknown fault 'lock' (one of: estop, earth, comm, meter, relay)"
        ]
        assert await r.ask("bogus") == ["error: unknown command 'bogus' (try: help)"]
        (help_line,) = await r.ask("help")
        assert help_line.startswith("ok: commands: plug N [SOC%]; unplug N;")
        # Blank lines and comments are no command: no answer.
        r.send("")
        r.send("# nothing")
        status = await r.status(1)
        assert r.no_answer_pending()
        assert (status["soc"], status["faults"]) == (20.0, [])
        assert r.events[2] == []


async def test_end_of_input_stops_serve(autojump_clock: trio.testing.MockClock) -> None:
    async with rig() as r:
        r.end_input()
        with trio.fail_after(5):
            await r.served.wait()
        with pytest.raises(RuntimeError, match="not running"):
            r.plcs.state(1)


async def test_a_bus_that_cannot_be_opened() -> None:
    # No such interface anywhere (too long for a Linux interface name): opening must fail.
    connectors = load_charger_config(SHIPPED).connectors
    out: list[str] = []
    send, lines = trio.open_memory_channel[str](0)
    with (
        send,
        lines,
        pytest.RaisesGroup(pytest.RaisesExc(BusOpenError, match="cannot open the CAN bus")),
    ):
        await serve(connectors, "socketcan", "dcocpp-no-such-bus", lines, out.append)
    assert out == []  # no ready line


# --- the command as a process --------------------------------------------------------------------


def config_copy(tmp_path: Path, **charge_point: Any) -> Path:
    document = json.loads(SHIPPED.read_text())
    document["chargePoint"].update({"usePLC": True, **charge_point})
    path = tmp_path / "charger.json"
    path.write_text(json.dumps(document))
    return path


@attrs.define
class Child:
    process: trio.Process
    stdin: trio.abc.SendStream
    stdout: LineReader
    stderr: list[bytes]

    async def line(self) -> str:
        with trio.fail_after(PROCESS_WAIT):
            try:
                return await anext(self.stdout)
            except StopAsyncIteration:
                raise AssertionError(f"stdout ended\n{self.describe()}") from None

    async def send(self, line: str) -> None:
        await self.stdin.send_all(line.encode() + b"\n")

    def describe(self) -> str:
        return "stderr:\n" + b"".join(self.stderr).decode(errors="replace")


@asynccontextmanager
async def plc_sim(*args: str) -> AsyncIterator[Child]:
    """`python -m dcocpp plc-sim ARGS` with pipes; killed if the test leaves it running."""
    argv = [sys.executable, "-m", "dcocpp", "plc-sim", *args]
    stderr: list[bytes] = []

    async def drain(stream: trio.abc.ReceiveStream) -> None:
        async with stream:
            async for chunk in stream:
                stderr.append(bytes(chunk))

    async with trio.open_nursery() as nursery:
        run = partial(
            trio.run_process,
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
            cwd=REPO,
        )
        process: trio.Process = await nursery.start(run)
        assert process.stdin and process.stdout and process.stderr
        nursery.start_soon(drain, process.stderr)
        async with process.stdin, process.stdout:
            yield Child(process, process.stdin, LineReader(process.stdout), stderr)
        nursery.cancel_scope.cancel()  # a no-op once the process has exited


async def test_process_console(tmp_path: Path) -> None:
    config = config_copy(tmp_path)  # socketcan/can0, overridden on the command line
    channel = f"plcsim-{uuid.uuid4().hex}"
    async with plc_sim(
        "--config", str(config), "--interface", "virtual", "--channel", channel
    ) as child:
        ready = json.loads(await child.line())
        assert ready == {
            "event": "ready",
            "interface": "virtual",
            "channel": channel,
            "plcs": [
                {"connector": 1, "plcId": 0, "label": "Gun A"},
                {"connector": 2, "plcId": 1, "label": "Gun B"},
            ],
        }
        await child.send("status")
        both = [json.loads(await child.line()), json.loads(await child.line())]
        assert [(s["connector"], s["plugged"], s["relayClosed"]) for s in both] == [
            (1, False, False),
            (2, False, False),
        ]
        await child.send("plug 1")
        assert await child.line() == "ok: connector 1 plugged, EV at 20% SoC"
        await child.send("status 1")
        status = json.loads(await child.line())
        assert (status["connector"], status["plugged"], status["soc"]) == (1, True, 20.0)
        await child.send("plug 7")
        assert await child.line() == "error: unknown connector 7 (configured: 1, 2)"
        await child.send("quit")
        assert await child.line() == "ok: quit"
        with trio.fail_after(PROCESS_WAIT):
            assert await child.process.wait() == cli.EXIT_OK, child.describe()
        assert [line async for line in child.stdout] == []
    assert "Traceback" not in child.describe()


@pytest.mark.parametrize("stop", ["end of stdin", "SIGTERM", "SIGINT"])
async def test_process_stops_cleanly(tmp_path: Path, stop: str) -> None:
    # The bus from the configuration this time: no --interface, no --channel.
    channel = f"plcsim-{uuid.uuid4().hex}"
    config = config_copy(tmp_path, canInterfaceType="virtual", canInterface=channel)
    async with plc_sim("--config", str(config)) as child:
        ready = json.loads(await child.line())
        assert (ready["interface"], ready["channel"]) == ("virtual", channel)
        if stop == "end of stdin":
            await child.stdin.aclose()
        else:
            child.process.send_signal(getattr(signal, stop))
        with trio.fail_after(PROCESS_WAIT):
            assert await child.process.wait() == cli.EXIT_OK, child.describe()
    assert "stopping" in child.describe() and "Traceback" not in child.describe()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dcocpp", "plc-sim", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PROCESS_WAIT,
        cwd=REPO,
    )


def test_process_refuses_an_unknown_interface(tmp_path: Path) -> None:
    result = run_cli("--config", str(config_copy(tmp_path)), "--interface", "can-o-matic")
    assert result.returncode == cli.EXIT_USAGE
    assert "'can-o-matic' is not a python-can interface (one of: " in result.stderr
    assert "socketcan" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_process_reports_a_bus_that_cannot_be_opened(tmp_path: Path) -> None:
    config = config_copy(tmp_path, canInterface="dcocpp-no-such-bus")
    result = run_cli("--config", str(config))  # socketcan from the configuration
    assert result.returncode == cli.EXIT_RUNTIME_ERROR
    errors = [line for line in result.stderr.splitlines() if line.startswith("dcocpp plc-sim:")]
    assert len(errors) == 1, result.stderr
    assert (
        "cannot open the CAN bus (interface socketcan, channel 'dcocpp-no-such-bus')" in (errors[0])
    )
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_invalid_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "charger.json"
    bad.write_text('{"chargePoint": ')
    assert cli.main(["plc-sim", "--config", str(bad)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "invalid configuration, not starting" in err and "invalid JSON" in err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    assert "plc-sim" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        cli.main(["plc-sim", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for text in ("--interface", "--channel", "--no-console", "plug N [SOC%]", '"event": "ready"'):
        assert text in out
