"""`dcocpp plc-sim`: every PLC of a charger, emulated, as a process of its own (bench setups).

The charger runs `dcocpp run` with `"usePLC": true` on a CAN bus (a vcan or a real one); this
process plays the PLC of every configured gun on the same bus: one `PlcEmulator` per connector,
at the connector's plcId, each on its own bus object (`EmulatedPlcs`). A console on stdin stands
in for the physical world, one command per line, one answer line per command on stdout:

    plug N [SOC%]   unplug N   suspend N   resume N   fault N KIND on|off   register N WH
    overrange N on|off   weld N on|off   status [N]   help   quit

Answers are `ok: ...`, `error: ...` (bad input; the console keeps running) or, for `status`, one
JSON object per gun. A JSON line `{"event": "ready", ...}` is printed once every emulator runs,
so that a script can wait for it. Logs go to stderr. The process stops at `quit`, at the end of
stdin (`--no-console`: stdin is not read) and on SIGINT/SIGTERM.

python-can's `virtual` interface only reaches the process itself (tests); between two processes
use socketcan on a vcan. Answers are written synchronously: a script that never reads stdout
would, once the pipe is full, stall the emulators (and the charger would see them fall silent).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
from collections import deque
from collections.abc import AsyncIterable, Callable, Collection, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import can
import trio

from dcocpp.cli.args import config_argument, log_level_argument, missing_default_config
from dcocpp.config import ConfigError, ConnectorConfig, load_charger_config
from dcocpp.hardware.ev import EvModel
from dcocpp.hardware.interface import FaultKind, HardwareError

if TYPE_CHECKING:
    from dcocpp.hardware.plc.emulated import EmulatedPlcs
    from dcocpp.hardware.plc.emulator import PlcState

__all__ = [
    "BusOpenError",
    "Command",
    "Console",
    "ConsoleError",
    "Fault",
    "Help",
    "LineBuffer",
    "LineReader",
    "PlcSimError",
    "Plug",
    "Quit",
    "Reply",
    "Status",
    "Suspend",
    "Unplug",
    "add_subcommands",
    "open_bus_factory",
    "open_input",
    "parse_command",
    "serve",
]

log = logging.getLogger(__name__)

# The same statuses as `dcocpp.cli.commands` (which imports this module, so it cannot be
# imported here).
EXIT_OK = 0
EXIT_RUNTIME_ERROR = 1
EXIT_USAGE = 2
MAX_LINE = 1024  # characters in a console line; longer input is refused, not buffered
READ_SIZE = 4096

# The faults a PLC gun can have (FaultKind.LOCK cannot: the CAN contract has no lock).
FAULTS: dict[str, FaultKind] = {
    kind.value: kind
    for kind in (
        FaultKind.EMERGENCY_STOP,
        FaultKind.EARTH_FAULT,
        FaultKind.COMMUNICATION,
        FaultKind.METER,
        FaultKind.POWER_SWITCH,
    )
}
USAGE: dict[str, str] = {
    "plug": "plug N [SOC%]",
    "unplug": "unplug N",
    "suspend": "suspend N",
    "resume": "resume N",
    "fault": f"fault N {'|'.join(FAULTS)} on|off",
    "register": "register N WH",
    "overrange": "overrange N on|off",
    "weld": "weld N on|off",
    "status": "status [N]",
    "help": "help",
    "quit": "quit",
}
# RelayStatus FAULT_REASON (see hardware/plc/README.md).
FAULT_REASONS = {
    0: "none",
    1: "relay timeout",
    2: "bus off",
    3: "CRC failure",
    4: "estop",
    5: "earth fault",
    6: "remote force-off",
    7: "relay feedback mismatch",
}
_NUMBER = re.compile(r"[0-9]+")
_PERCENT = re.compile(r"[0-9]+(\.[0-9]+)?%?")


class PlcSimError(Exception):
    """What stops plc-sim with a one-line message on stderr (exit status 1)."""


class BusOpenError(PlcSimError):
    """A PLC's CAN bus cannot be opened (`__cause__` is what python-can raised)."""


class ConsoleError(ValueError):
    """A console line that cannot be carried out; its text is the answer after `error: `."""


# --- console commands (pure) ---------------------------------------------------------------------


@attrs.frozen
class Plug:
    connector: int
    soc: float | None = None  # None: the EvModel default


@attrs.frozen
class Unplug:
    connector: int


@attrs.frozen
class Suspend:
    connector: int
    suspended: bool  # False: resume


@attrs.frozen
class Fault:
    connector: int
    kind: FaultKind
    active: bool


@attrs.frozen
class Register:
    """The meter's import register jumps to `energy_wh` (reset, replaced, corrupted)."""

    connector: int
    energy_wh: int


@attrs.frozen
class Lie:
    """The meter over range, or the relay's contacts welded (`what`), from now or no more."""

    connector: int
    what: str  # "overrange" or "weld"
    active: bool


@attrs.frozen
class Status:
    connector: int | None = None  # None: every gun


@attrs.frozen
class Help:
    pass


@attrs.frozen
class Quit:
    pass


Command = Plug | Unplug | Suspend | Fault | Register | Lie | Status | Help | Quit
Action = Plug | Unplug | Suspend | Fault | Register | Lie


def parse_command(line: str) -> Command | None:
    """One console line -> its command; None for a blank line or a `#` comment. Raises
    ConsoleError saying what is wrong. Command words, fault kinds and on/off ignore case."""
    if len(line) > MAX_LINE:
        raise ConsoleError(f"line longer than {MAX_LINE} characters")
    words = line.split("#", 1)[0].split()
    if not words:
        return None
    name, args = words[0].lower(), words[1:]
    if name not in USAGE:
        raise ConsoleError(f"unknown command {words[0]!r} (try: help)")
    match name, args:
        case "plug", [n]:
            return Plug(_connector(n))
        case "plug", [n, soc]:
            return Plug(_connector(n), _soc(soc))
        case "unplug", [n]:
            return Unplug(_connector(n))
        case "suspend" | "resume", [n]:
            return Suspend(_connector(n), name == "suspend")
        case "fault", [n, kind, state]:
            return Fault(_connector(n), _fault(kind), _on_off(state))
        case "register", [n, wh]:
            if not _NUMBER.fullmatch(wh):
                raise ConsoleError(f"register must be a number of Wh from 0, not {wh!r}")
            return Register(_connector(n), int(wh))
        case "overrange" | "weld", [n, state]:
            return Lie(_connector(n), name, _on_off(state))
        case "status", []:
            return Status()
        case "status", [n]:
            return Status(_connector(n))
        case "help", []:
            return Help()
        case "quit", []:
            return Quit()
    raise ConsoleError(f"usage: {USAGE[name]}")


def _connector(text: str) -> int:
    if not _NUMBER.fullmatch(text) or int(text) < 1:
        raise ConsoleError(f"connector must be a number from 1, not {text!r}")
    return int(text)


def _soc(text: str) -> float:
    # A pattern rather than float(): that would take "nan", "inf", "1e2" and "1_0".
    if not _PERCENT.fullmatch(text) or float(text.removesuffix("%")) > 100:
        raise ConsoleError(f"SoC must be a percentage from 0 to 100, not {text!r}")
    return float(text.removesuffix("%"))


def _fault(text: str) -> FaultKind:
    try:
        return FAULTS[text.lower()]
    except KeyError:
        raise ConsoleError(f"unknown fault {text!r} (one of: {', '.join(FAULTS)})") from None


def _on_off(text: str) -> bool:
    if text.lower() not in ("on", "off"):
        raise ConsoleError(f"expected on or off, not {text!r}")
    return text.lower() == "on"


# --- answers -------------------------------------------------------------------------------------


@attrs.frozen
class Reply:
    """The answer to one console line: its output lines (none for a blank line) and whether
    the console stops."""

    lines: tuple[str, ...] = ()
    quit: bool = False


def ready_line(interface: str, channel: str, connectors: Sequence[ConnectorConfig]) -> str:
    plcs = [{"connector": c.id, "plcId": c.plc_id, "label": c.label} for c in connectors]
    return _json({"event": "ready", "interface": interface, "channel": channel, "plcs": plcs})


def status_line(config: ConnectorConfig, state: PlcState, faults: Collection[FaultKind]) -> str:
    """One gun as one JSON object: what its PLC reports (relay, EV, limits, meter, safety
    flags) and `faults`, the faults injected from this console (the PLC's own view of an
    estop or earth fault, `estop` / `earthFault`, follows 20 ms later: its debounce)."""
    meter = state.meter
    return _json(
        {
            "event": "status",
            "connector": config.id,
            "plcId": state.plc_id,
            "label": config.label,
            "relayClosed": state.relay_closed,
            "plugged": state.plugged,
            "evRequesting": state.ev_requesting,
            "soc": None if state.soc is None else round(state.soc, 2),
            "currentLimitA": round(state.current_limit_a, 1),
            "powerLimitW": round(state.power_limit_w, 1),
            "energyWh": round(meter.energy_wh, 1),
            "powerW": round(meter.power_w, 1),
            "currentA": round(meter.current_a, 2),
            "voltageV": round(meter.voltage_v, 1),
            "faults": [name for name, kind in FAULTS.items() if kind in faults],
            "safetyOk": state.safety_ok,
            "estop": state.estop,
            "earthFault": state.earth_fault,
            "commFault": state.comm_fault,
            "forceOff": state.force_off_active,
            "faultReason": state.fault_reason,
            "faultReasonText": FAULT_REASONS.get(state.fault_reason, "unknown"),
            "lastCmdSeq": state.last_cmd_seq_applied,
            "meterOverrange": state.meter_overrange,
            "relayWelded": state.relay_welded,
        }
    )


def _json(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


# --- the console ---------------------------------------------------------------------------------


class Console:
    """Carries out console lines on running `EmulatedPlcs`; never raises for bad input."""

    def __init__(self, plcs: EmulatedPlcs, connectors: Sequence[ConnectorConfig]):
        self._plcs = plcs
        self._connectors = {c.id: c for c in connectors}
        self._faults: dict[int, set[FaultKind]] = {c.id: set() for c in connectors}

    async def execute(self, line: str) -> Reply:
        try:
            command = parse_command(line)
            if command is None:
                return Reply()
            reply = await self._run(command)
        except ConsoleError as exc:
            log.debug("%r: error: %s", line, exc)
            return Reply((f"error: {exc}",))
        log.debug("%r: %s", line, reply.lines)
        return reply

    async def _run(self, command: Command) -> Reply:
        match command:
            case Help():
                return Reply((f"ok: commands: {'; '.join(USAGE.values())}",))
            case Quit():
                return Reply(("ok: quit",), quit=True)
            case Status(connector=None):
                return Reply(tuple(self._status(cid) for cid in self._connectors))
            case Status(connector=int(cid)):
                self._check(cid)
                return Reply((self._status(cid),))
            case Plug() | Unplug() | Suspend() | Fault() | Register() | Lie():
                self._check(command.connector)
                answer = await self._act(command)
                log.info("%s", answer)
                return Reply((f"ok: {answer}",))
        raise AssertionError(f"unhandled command {command!r}")

    async def _act(self, command: Action) -> str:
        """Carry out one action; the emulators' refusals become ConsoleError."""
        cid = command.connector
        try:
            match command:
                case Plug(soc=soc):
                    ev = EvModel() if soc is None else EvModel(soc=soc)
                    await self._plcs.plug(cid, ev)
                    return f"connector {cid} plugged, EV at {ev.soc:g}% SoC"
                case Unplug():
                    await self._plcs.unplug(cid)
                    return f"connector {cid} unplugged"
                case Suspend(suspended=suspended):
                    await self._plcs.set_ev_suspended(cid, suspended)
                    return f"connector {cid} EV {'suspended' if suspended else 'resumed'}"
                case Fault(kind=kind, active=active):
                    await self._plcs.set_fault(cid, kind, active)
                    if active:
                        self._faults[cid].add(kind)
                    else:
                        self._faults[cid].discard(kind)
                    return f"connector {cid} fault {kind.value} {'on' if active else 'off'}"
                case Register(energy_wh=wh):
                    self._plcs.emulator(cid).set_register(wh)
                    return f"connector {cid} meter register at {wh} Wh"
                case Lie(what="overrange", active=active):
                    self._plcs.emulator(cid).set_meter_overrange(active)
                    return f"connector {cid} meter over range {'on' if active else 'off'}"
                case Lie(what="weld", active=active):
                    self._plcs.emulator(cid).set_relay_welded(active)
                    return f"connector {cid} relay welded {'on' if active else 'off'}"
        except (ValueError, RuntimeError, HardwareError) as exc:
            # ValueError: what the physical world cannot do (plugging a plugged gun).
            raise ConsoleError(f"connector {cid}: {exc}") from None
        raise AssertionError(f"unhandled action {command!r}")

    def _check(self, cid: int) -> None:
        if cid not in self._connectors:
            known = ", ".join(str(c) for c in self._connectors)
            raise ConsoleError(f"unknown connector {cid} (configured: {known})")

    def _status(self, cid: int) -> str:
        return status_line(self._connectors[cid], self._plcs.state(cid), self._faults[cid])


# --- input lines ---------------------------------------------------------------------------------


class LineBuffer:
    """Bytes in, complete lines out (without their `\\n` or `\\r\\n`); pure, so the framing is
    testable without I/O. A line longer than `max_line` bytes is handed on once, cut after
    `max_line + 1` bytes (the parser refuses it), and the rest of it is dropped: memory stays
    bounded whatever comes in. Undecodable bytes become U+FFFD."""

    def __init__(self, max_line: int = MAX_LINE):
        self._max = max_line
        self._pending = bytearray()
        self._skipping = False  # inside an over-long line: drop up to its newline

    def feed(self, data: bytes | bytearray) -> list[str]:
        lines: list[str] = []
        self._pending += data
        while (end := self._pending.find(b"\n")) >= 0:
            raw = bytes(self._pending[:end])
            del self._pending[: end + 1]
            if self._skipping:
                self._skipping = False
            else:
                lines.append(self._decode(raw[: self._max + 1]))
        if len(self._pending) > self._max:
            if not self._skipping:
                lines.append(self._decode(bytes(self._pending[: self._max + 1])))
                self._skipping = True
            self._pending.clear()
        return lines

    def finish(self) -> list[str]:
        """At the end of the input: the last line, if it had no newline."""
        rest, skipping = bytes(self._pending), self._skipping
        self._pending.clear()
        self._skipping = False
        return [self._decode(rest)] if rest and not skipping else []

    @staticmethod
    def _decode(raw: bytes) -> str:
        return raw.decode("utf-8", errors="replace").removesuffix("\r")


class LineReader:
    """The lines of a trio byte stream as an async iterator of str; ends with the stream. A
    stream that breaks (a terminal hung up) counts as ended. Never closes the stream."""

    def __init__(self, stream: trio.abc.ReceiveStream, *, max_line: int = MAX_LINE):
        self._stream = stream
        self._buffer = LineBuffer(max_line)
        self._ready: deque[str] = deque()
        self._ended = False

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> str:
        while not self._ready:
            if self._ended:
                raise StopAsyncIteration
            try:
                data = await self._stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, OSError) as exc:
                log.warning("input failed, treating it as ended: %r", exc)
                data = b""
            if data:
                self._ready.extend(self._buffer.feed(data))
            else:
                self._ended = True
                self._ready.extend(self._buffer.finish())
        # A checkpoint per line, buffered or not: a burst of input cannot starve the emulators.
        await trio.lowlevel.checkpoint()
        return self._ready.popleft()


class _ThreadedReader(trio.abc.ReceiveStream):
    """Reads a file descriptor in a worker thread; leaves the descriptor open (it is stdin).

    For a terminal: FdStream would put the terminal's open file description in non-blocking
    mode, and stdout and stderr usually share it, so prints and log lines could then fail with
    BlockingIOError. A read blocked when the console is cancelled is abandoned (the process
    is ending); os.read holds no lock of sys.stdin's, so the interpreter can still exit."""

    def __init__(self, fd: int):
        self._fd = fd

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await trio.to_thread.run_sync(
            os.read, self._fd, max_bytes or READ_SIZE, abandon_on_cancel=True
        )

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def open_input(fd: int, *, thread: bool | None = None) -> trio.abc.ReceiveStream:
    """A trio stream reading `fd` (stdin): a worker thread for a terminal (see
    `_ThreadedReader`), else `FdStream` on a duplicate, which `aclose` closes, restoring the
    blocking mode. `thread` forces one or the other (tests). Raises OSError if `fd` is closed."""
    if thread is None:
        thread = os.isatty(fd)
    if thread:
        return _ThreadedReader(fd)
    return trio.lowlevel.FdStream(os.dup(fd))


# --- the emulators -------------------------------------------------------------------------------


def open_bus_factory(interface: str, channel: str) -> Callable[[], can.BusABC]:
    """Opens one bus per call on python-can `interface` (for `virtual`, a
    `SelectableVirtualBus`: read without a thread); failures raise BusOpenError."""

    def open_bus() -> can.BusABC:
        try:
            if interface == "virtual":
                from dcocpp.hardware.plc.virtualbus import SelectableVirtualBus

                return SelectableVirtualBus(channel=channel)
            return can.Bus(interface=interface, channel=channel)
        except Exception as exc:  # python-can's interfaces raise anything: OSError, CanError...
            raise BusOpenError(
                f"cannot open the CAN bus (interface {interface}, channel {channel!r}): {exc}"
            ) from exc

    return open_bus


async def serve(
    connectors: Sequence[ConnectorConfig],
    interface: str,
    channel: str,
    lines: AsyncIterable[str],
    out: Callable[[str], None],
    *,
    emulator_options: Mapping[str, Any] | None = None,
    task_status: trio.TaskStatus[EmulatedPlcs] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one emulated PLC per connector, each on its own bus on `interface`/`channel`,
    write the ready line to `out`, then carry out `lines` as console commands, writing every
    answer line to `out`, until `quit` or the end of `lines`.

    `task_status.started(plcs)` after the ready line. On the way out (returning, cancelled or
    failing) the emulators are stopped and every bus is shut down. Raises, inside an
    ExceptionGroup like any nursery: BusOpenError if a bus cannot be opened (nothing is left
    open), PlcEmulatorError (a HardwareError) if a bus fails while running.
    `emulator_options` go to every `PlcEmulator`."""
    from dcocpp.hardware.plc.emulated import EmulatedPlcs

    plcs = EmulatedPlcs(
        connectors, open_bus_factory(interface, channel), **dict(emulator_options or {})
    )
    console = Console(plcs, connectors)
    async with trio.open_nursery() as nursery:
        await nursery.start(plcs.run)
        log.info(
            "emulating %s on %s channel %s",
            ", ".join(f"connector {c.id} (plcId {c.plc_id})" for c in connectors),
            interface,
            channel,
        )
        out(ready_line(interface, channel, connectors))
        task_status.started(plcs)
        async for line in lines:
            reply = await console.execute(line)
            for text in reply.lines:
                out(text)
            if reply.quit:
                log.info("quit: stopping")
                break
        else:
            log.info("end of input: stopping")
        nursery.cancel_scope.cancel()


# --- the command ---------------------------------------------------------------------------------

_DESCRIPTION = """\
Emulate the relay/meter PLC of every configured gun on a CAN bus, for a bench: the charger runs
`dcocpp run` with "usePLC": true on the same bus, this process plays its PLCs. Connectors,
plcIds and limits come from the charger configuration, the bus from its chargePoint
canInterfaceType / canInterface unless --interface / --channel say otherwise. python-can's
virtual interface only reaches this process: between two processes use socketcan on a vcan
(ip link add dev vcan0 type vcan && ip link set up vcan0).

Console: one command per line on stdin, one answer line per command on stdout ("ok: ..." or
"error: ..."; bad input never stops it), except status: one JSON object per gun.
  plug N [SOC%]      plug an EV in (SoC 20 % unless given)
  unplug N           unplug it
  suspend N          the EV stops requesting power
  resume N           the EV requests power again
  fault N KIND on|off  raise or clear a fault; KIND: estop, earth (inputs, debounced 20 ms),
                     comm (the PLC stops transmitting), meter (stale data), relay (stuck)
  register N WH      the meter's register jumps to WH (reset, replaced, corrupted)
  overrange N on|off the meter reports current and power over range (OVERRANGE)
  weld N on|off      the relay's contacts weld shut (closed whatever the coil does)
  status [N]         the PLC's state: relay, EV, SoC, limits, meter, faults and flags
  help, quit
Once every PLC runs, a JSON line {"event": "ready", ...} is printed. Logs go to stderr.

Stops at quit, at the end of stdin (unless --no-console), on Ctrl-C and on SIGTERM: exit
status 0. Status 1 when a bus cannot be opened or fails, 2 for bad arguments or configuration."""


def add_subcommands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `plc-sim` on the program's subcommands; it sets `func`."""
    sim = commands.add_parser(
        "plc-sim",
        help="emulate the charger's PLCs on a CAN bus (bench setups)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_argument(sim, "charger.json: the connectors and the bus")
    sim.add_argument(
        "--interface",
        type=_interface_argument,
        metavar="NAME",
        help="python-can interface, e.g. socketcan (default: chargePoint.canInterfaceType)",
    )
    sim.add_argument(
        "--channel",
        metavar="CH",
        help="the bus's channel, e.g. vcan0 (default: chargePoint.canInterface)",
    )
    log_level_argument(sim, default="INFO", help="stderr log level (default: INFO)")
    sim.add_argument(
        "--no-console",
        action="store_true",
        help="do not read stdin; run until Ctrl-C or SIGTERM (background, systemd)",
    )
    sim.set_defaults(func=_plc_sim)


def _interface_argument(text: str) -> str:
    if text not in can.VALID_INTERFACES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a python-can interface (one of: "
            f"{', '.join(sorted(can.VALID_INTERFACES))})"
        )
    return text


def _plc_sim(args: argparse.Namespace) -> int:
    from dcocpp.cli.logs import LoggingSetup

    if (hint := missing_default_config(args.config, "dcocpp plc-sim --config")) is not None:
        print(hint, file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_charger_config(args.config)
    except ConfigError as exc:
        print(f"{args.config}: invalid configuration, not starting", file=sys.stderr)
        for line in str(exc).splitlines():
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    cp = config.charge_point
    interface = cp.can_interface_type if args.interface is None else args.interface
    channel = cp.can_interface if args.channel is None else args.channel
    logging_setup = LoggingSetup()
    logging_setup.start(args.log_level, None)
    if not cp.use_plc:
        log.warning("%s: usePLC is false, a charger run with it ignores PLCs", args.config)
    if interface == "virtual":
        log.warning("the virtual interface reaches no other process (use socketcan and a vcan)")
    status = EXIT_OK
    try:
        trio.run(partial(_main, config.connectors, interface, channel, console=not args.no_console))
        log.info("stopped")
    except* (PlcSimError, HardwareError) as group:
        for message in dict.fromkeys(str(failure) for failure in _leaves(group)):
            print(f"dcocpp plc-sim: {message}", file=sys.stderr)
        status = EXIT_RUNTIME_ERROR
    except* KeyboardInterrupt:
        # Ctrl-C before the signal handling started: a stop like any other.
        log.info("interrupted")
    finally:
        logging_setup.stop()
    return status


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


async def _main(
    connectors: Sequence[ConnectorConfig], interface: str, channel: str, *, console: bool
) -> None:
    """serve() on stdin and stdout until it ends or a signal arrives."""
    async with trio.open_nursery() as nursery:
        await nursery.start(_stop_on_signal, nursery.cancel_scope)
        stdout = _Stdout(nursery.cancel_scope)
        if console:
            try:
                stdin = open_input(0)
            except OSError as exc:
                raise PlcSimError(f"cannot read stdin ({exc}); use --no-console") from None
            async with stdin:
                await serve(connectors, interface, channel, LineReader(stdin), stdout.write)
        else:
            # A channel nobody sends on: no input until cancelled.
            never_send, never = trio.open_memory_channel[str](0)
            with never_send, never:
                await serve(connectors, interface, channel, never, stdout.write)
        nursery.cancel_scope.cancel()


async def _stop_on_signal(
    scope: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            log.info("%s received: stopping", signal.Signals(signum).name)
            scope.cancel()
            return


class _Stdout:
    """Answers on stdout, one flushed line each. When the reader has gone (broken pipe) there
    is nobody left to drive the console: stop, quietly."""

    def __init__(self, scope: trio.CancelScope):
        self._scope = scope
        self._closed = False

    def write(self, line: str) -> None:
        if self._closed:
            return
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            self._closed = True
            log.warning("stdout was closed: stopping")
            # Python flushes stdout once more at exit and would report the broken pipe again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            self._scope.cancel()
