"""The demo: an embedded central system, the charger on simulated hardware, a scripted session
on every gun, shown live, then the central system's record of the transactions.

    run_demo()
    └── nursery (the central system's lifetime)
        ├── DemoCentralSystem.run        ws://127.0.0.1:<free port>/ocpp (or in memory)
        └── nursery (the charger's lifetime, ended first so that it closes its WebSocket
            │        while the central system still listens)
            ├── Station.run              simulated guns, OCPP session, local API
            ├── DemoView.run             the live table (a TTY only)
            └── one task per gun         plug, authorize, charge, suspend, resume, stop, unplug

Each step waits for the charger to get where the step leads (Charging, SuspendedEV, ...),
bounded by STEP_TIMEOUT, so the script keeps in step with the charger whatever the pace or the
machine's load; only the pauses between steps are divided by `speed`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO, cast

import attrs
import trio
from ocpp.v16.enums import Reason

from dcocpp import defaults
from dcocpp.api.contract import DEFAULT_API, ApiError, format_address, parse_address
from dcocpp.clock import WallClock
from dcocpp.config import ChargerConfig, ConfigError, load_charger_config
from dcocpp.connector import events as ev
from dcocpp.demo import MIN_SPEED
from dcocpp.demo.central_system import DemoCentralSystem
from dcocpp.demo.view import DemoView, format_summary
from dcocpp.ocpp.configuration import ConfigurationError
from dcocpp.station.station import Station
from dcocpp.storage.asyncdb import Runner
from dcocpp.storage.database import StorageError

__all__ = [
    "DEFAULT_API_ADDRESS",
    "REJECTED_TAG",
    "SHIPPED_CONFIGS",
    "DemoError",
    "DemoResult",
    "GunSession",
    "default_script",
    "demo_config",
    "run_demo",
]

# Where `dcocpp status` and `dcocpp sim` look by default.
DEFAULT_API_ADDRESS = parse_address(DEFAULT_API)
REJECTED_TAG = "UNKNOWN-TAG"
# How long one step may take the charger (real or virtual seconds, whatever the speed).
STEP_TIMEOUT = 30.0
POLL_INTERVAL = 0.02
# MeterValueSampleInterval during the demo (the shipped 60 s would send none), at speed 1.
METER_SAMPLE_INTERVAL = 5
# Meter registers count whole Wh: wait for this much before stopping, so energy is never 0.
MIN_SESSION_ENERGY_WH = 2.0
FINAL_PAUSE = 1.0
STOP_TIMEOUT = 5.0  # for the StopTransactions of an interrupted demo

_REPO = Path(__file__).resolve().parents[2]
MEMORY_CSMS_URL = "ws://demo-csms.invalid/ocpp"


def _shipped_configs() -> Path | None:
    """The repository's configs/ when the package runs from a checkout, else None."""
    configs = _REPO / "configs"
    if (
        (configs / "charger.json").is_file()
        and (configs / "ocpp16-config.json").is_file()
        and (_REPO / "pyproject.toml").is_file()
    ):
        return configs
    return None


SHIPPED_CONFIGS = _shipped_configs()


class DemoError(Exception):
    """The demo could not run or the charger did not do what the script expected."""


@attrs.frozen
class GunSession:
    """The scripted session at one gun; durations are seconds at speed 1."""

    connector_id: int
    id_tag: str
    start_after: float = 0.0  # staggers the guns
    rejected_tag: str | None = None  # presented first: unknown to the CSMS, starts nothing
    charge: float = 12.0
    suspended: float = 4.0  # the EV pauses (SuspendedEV), then resumes
    charge_after_resume: float = 8.0
    pause: float = 2.0  # between the driver's steps


def default_script(connector_ids: Sequence[int]) -> list[GunSession]:
    """One session per gun, 3.5 s apart; the first gun first shows an unknown tag refused.
    About 33 s for two guns at speed 1."""
    return [
        GunSession(
            connector_id=cid,
            id_tag=f"DEMO-TAG-{cid}",
            start_after=0.5 + 3.5 * index,
            rejected_tag=REJECTED_TAG if index == 0 else None,
        )
        for index, cid in enumerate(connector_ids)
    ]


@attrs.frozen
class DemoResult:
    csms: DemoCentralSystem
    summary: str
    interrupted: bool
    api_address: tuple[str, int] | None
    reader_gone: bool = False  # the output's reader went away (`dcocpp demo | head`)


# --- configuration ------------------------------------------------------------------------------


def demo_config(
    data_dir: Path, csms_url: str, shipped: Path | None, *, plc: bool = False
) -> ChargerConfig:
    """The charger for the demo: the shipped configs/charger.json (without the repository, the
    package's copy, `dcocpp.defaults`) with the embedded central system's URL, its state and
    logs under `data_dir`. The file is written to `data_dir/charger.json` and loaded (and
    validated) like any charger.json.
    With `plc`, the guns are the PLC backend on emulated PLCs on a python-can virtual bus of
    the demo's own; else the simulated guns."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if shipped is not None:
        source = shipped / "charger.json"
        try:
            document = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DemoError(f"cannot read {source}: {exc}") from exc
        ocpp_config = shipped / "ocpp16-config.json"
    else:
        document = json.loads(defaults.read_text(defaults.CHARGER_JSON))
        # Package data need not be a file on disk: the key file goes beside the demo's.
        ocpp_config = data_dir / defaults.OCPP_CONFIG_JSON
        ocpp_config.write_text(defaults.read_text(defaults.OCPP_CONFIG_JSON), encoding="utf-8")
    if not isinstance(document, dict) or not isinstance(document.get("chargePoint"), dict):
        raise DemoError("charger.json must be an object with a chargePoint object")
    document["chargePoint"]["centralSystemURI"] = csms_url
    # Never the configured bus: the demo drives no real hardware.
    document["chargePoint"]["usePLC"] = plc
    if plc:
        document["chargePoint"]["canInterfaceType"] = "virtual"
        document["chargePoint"]["canInterface"] = f"dcocpp-demo-{uuid.uuid4().hex[:12]}"
    document["security"] = {
        "csmsCaBundle": str(data_dir / "certs" / "csms-ca.pem"),
        "clientCertDir": str(data_dir / "certs" / "client"),
        "keyDir": str(data_dir / "keys"),
    }
    document["paths"] = {
        "dataDir": str(data_dir / "data"),
        "logDir": str(data_dir / "logs"),
        "ocppConfig": str(ocpp_config),
    }
    path = data_dir / "charger.json"
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    try:
        return load_charger_config(path)
    except ConfigError as exc:
        raise DemoError(f"the demo configuration is invalid:\n{exc}") from exc


def _api_address(wanted: tuple[str, int]) -> tuple[tuple[str, int], bool]:
    """`wanted`, or an ephemeral port on the same host when that port is taken; and whether
    it was taken."""
    host, port = wanted
    if port == 0:
        return wanted, False
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            # As the API binds: a port in TIME_WAIT is free, a listening one is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise DemoError(
                f"cannot serve the local API on {format_address(host, port)}: {exc}"
            ) from exc
        return (host, 0), True
    return wanted, False


# --- the script -------------------------------------------------------------------------------


class _Player:
    """Plays the sessions against the station, reporting each step to the view."""

    def __init__(
        self, station: Station, csms: DemoCentralSystem, view: DemoView, speed: float
    ) -> None:
        self.station = station
        self.csms = csms
        self.view = view
        self.speed = speed

    async def pause(self, seconds: float) -> None:
        await trio.sleep(seconds / self.speed)

    def entry(self, connector_id: int) -> dict[str, Any]:
        for entry in self.station.snapshot()["connectors"]:
            if entry["id"] == connector_id:
                return dict(entry)
        raise DemoError(f"the charger has no connector {connector_id}")

    async def until(
        self, connector_id: int, what: str, predicate: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """Until the connector's snapshot satisfies `predicate`; DemoError after STEP_TIMEOUT."""
        entry = self.entry(connector_id)
        with trio.move_on_after(STEP_TIMEOUT):
            while not predicate(entry):
                await trio.sleep(POLL_INTERVAL)
                entry = self.entry(connector_id)
            return entry
        raise DemoError(
            f"connector {connector_id} did not {what} within {STEP_TIMEOUT:g} s "
            f"(it is {entry['status']})"
        )

    async def until_status(self, connector_id: int, status: str) -> dict[str, Any]:
        return await self.until(connector_id, f"become {status}", lambda e: e["status"] == status)

    async def until_registered(self) -> None:
        """Until the central system has accepted the charger: a tag presented before that is
        decided offline, and the central system never sees it (at a fast pace the script's
        first tag comes before the BootNotification is answered)."""

        def registered() -> bool:
            session = self.station.session
            return session is not None and session.registration.accepted

        # Checked at every message the central system hears: the charger's first ones once
        # accepted are its StatusNotifications.
        await self.until_csms("the charger registered", registered)

    async def until_reported(self) -> None:
        """Until the central system has heard every connector's status as it is now: the
        charger sends a few StatusNotifications a second at most, so at a fast pace the last
        ones follow the script."""

        def reported() -> bool:
            heard = dict(self.csms.status_history)
            return all(
                heard.get(cid) == self.entry(cid)["status"] for cid in self.station.connectors
            )

        await self.until_csms("every connector's status", reported)

    async def until_csms(self, what: str, predicate: Callable[[], bool]) -> None:
        with trio.move_on_after(STEP_TIMEOUT):
            await self.csms.wait_for(predicate)
            return
        raise DemoError(f"the central system did not see {what} within {STEP_TIMEOUT:g} s")

    async def present(self, connector_id: int, id_tag: str) -> None:
        """A tag at the gun's reader. The connector refuses one while it is still waiting for
        the answer to the previous tag; the driver then simply tries again."""
        task = self.station.connectors[connector_id]
        with trio.move_on_after(STEP_TIMEOUT):
            while True:
                if await task.ask(ev.IdPresented(id_tag)):
                    return
                await trio.sleep(POLL_INTERVAL)
        raise DemoError(f"connector {connector_id} kept refusing tag {id_tag}")

    async def play(self, session: GunSession) -> None:
        cid, tag, step = session.connector_id, session.id_tag, self.view.step
        await self.pause(session.start_after)

        step(cid, "plugs in the EV")
        await self.station.plug(cid)
        await self.until_status(cid, "Preparing")
        await self.pause(session.pause)

        rejected = session.rejected_tag
        if rejected is not None:
            step(cid, f"presents unknown tag {rejected}")
            await self.present(cid, rejected)
            await self.until_csms(
                f"Authorize for {rejected}",
                lambda: any(a.id_tag == rejected for a in self.csms.authorizations),
            )
            step(cid, f"{rejected} refused, waiting for a valid tag")
            await self.pause(session.pause)

        step(cid, f"presents tag {tag}")
        await self.present(cid, tag)
        await self.until_status(cid, "Charging")
        entry = await self.until(
            cid, "get a transaction id", lambda e: e["transactionId"] is not None
        )
        transaction_id: int = entry["transactionId"]
        record = self.csms.transaction(transaction_id)
        if record is None:
            raise DemoError(f"the central system does not know transaction {transaction_id}")
        step(cid, f"charging, transaction {transaction_id}")
        await self.pause(session.charge)

        step(cid, "EV pauses charging")
        await self.station.set_ev_suspended(cid, True)
        await self.until_status(cid, "SuspendedEV")
        await self.pause(session.suspended)

        step(cid, "EV resumes charging")
        await self.station.set_ev_suspended(cid, False)
        await self.until_status(cid, "Charging")
        await self.pause(session.charge_after_resume)
        await self.until(
            cid,
            "deliver energy",
            lambda e: e["energyWh"] - record.meter_start >= MIN_SESSION_ENERGY_WH,
        )

        step(cid, f"presents {tag} again to stop")
        await self.present(cid, tag)
        await self.until_status(cid, "Finishing")
        await self.until_csms(
            f"StopTransaction {transaction_id}", lambda: record.meter_stop is not None
        )
        step(cid, f"stopped: {record.energy_wh} Wh")
        await self.pause(session.pause)

        step(cid, "unplugs")
        await self.station.unplug(cid)
        await self.until_status(cid, "Available")
        step(cid, "done", announce=False)


# --- the whole demo ---------------------------------------------------------------------------


async def run_demo(
    *,
    guns_script: Sequence[GunSession] | None = None,
    speed: float = 1.0,
    api: tuple[str, int] | None = DEFAULT_API_ADDRESS,
    data_dir: Path,
    out: TextIO | None = None,
    live: bool = True,
    capture_logs: bool = True,
    in_memory: bool = False,
    shipped_configs: Path | None = SHIPPED_CONFIGS,
    clock: WallClock | None = None,
    stop_on_signals: bool = False,
    plc: bool = False,
    database_runner: Runner | None = None,
) -> DemoResult:
    """Run the embedded central system and the charger, play `guns_script` (default: one
    session per gun, `default_script`), show it on `out` and return what the central system
    recorded, with the summary that was printed.

    `live` redraws a table in place when `out` is a terminal (else one line per event); with
    `capture_logs`, dcocpp's warnings then show among the table's events instead of stderr.
    `in_memory` connects the charger to the central system without sockets (for tests on a
    virtual clock; `api` should then be None). With `stop_on_signals`, SIGINT/SIGTERM end the
    script early and the summary still prints. With `plc` the charger runs its PLC backend
    against emulated PLCs on a virtual CAN bus instead of the simulated guns.
    `database_runner` is where the charger's database statements run (default: a worker
    thread; a test on a virtual clock runs them on the loop, see `dcocpp.storage.asyncdb`).
    Everything started is stopped before it returns; `DemoError` says what went wrong otherwise.
    """
    if not (math.isfinite(speed) and speed >= MIN_SPEED):
        raise ValueError(f"speed must be a number from {MIN_SPEED:g} up, not {speed}")
    out = out if out is not None else sys.stdout
    live = live and out.isatty()
    data_dir = Path(data_dir)
    try:
        return await _run(
            guns_script=guns_script,
            speed=speed,
            api=api,
            data_dir=data_dir,
            out=out,
            live=live,
            capture_logs=capture_logs,
            in_memory=in_memory,
            shipped_configs=shipped_configs,
            clock=clock,
            stop_on_signals=stop_on_signals,
            plc=plc,
            database_runner=database_runner,
        )
    except* DemoError as group:
        raise _leaf(group) from None
    except* (ApiError, StorageError, ConfigurationError) as group:
        raise DemoError(str(_leaf(group))) from _leaf(group)


def _leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


async def _run(
    *,
    guns_script: Sequence[GunSession] | None,
    speed: float,
    api: tuple[str, int] | None,
    data_dir: Path,
    out: TextIO,
    live: bool,
    capture_logs: bool,
    in_memory: bool,
    shipped_configs: Path | None,
    clock: WallClock | None,
    stop_on_signals: bool,
    plc: bool,
    database_runner: Runner | None,
) -> DemoResult:
    stop = _OnSignal()
    # Whoever reads the output may go (`dcocpp demo | head`) while any task is writing, the
    # embedded central system's handlers included: the demo then ends as if interrupted.
    output = ReaderAwareOutput(out, on_gone=stop.interrupt)
    out = cast(TextIO, output)  # a TextIOBase: what print and the view use of a TextIO

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    csms = DemoCentralSystem([], clock=clock)
    interrupted = False
    api_address: tuple[str, int] | None = None
    async with trio.open_nursery() as csms_nursery:
        if stop_on_signals:
            await csms_nursery.start(stop.watch)
        # A signal while starting: nothing has been played, the demo ends at once.
        with stop.cancels() as starting:
            if in_memory:
                csms_url = MEMORY_CSMS_URL
                open_stream = csms.memory_network(csms_nursery)
            else:
                port = await csms_nursery.start(csms.run, "127.0.0.1", 0)
                csms_url = f"ws://127.0.0.1:{port}/ocpp"
                open_stream = None
            config = demo_config(data_dir, csms_url, shipped_configs, plc=plc)
            connector_ids = [c.id for c in config.connectors]
            script = list(guns_script) if guns_script is not None else default_script(connector_ids)
            unknown = sorted({s.connector_id for s in script} - set(connector_ids))
            if unknown:
                raise DemoError(f"the script names connectors the charger lacks: {unknown}")
            csms.accepted_tags = frozenset(s.id_tag for s in script)
            busy_port = api[1] if api is not None else 0
            if api is not None:
                api, busy = _api_address(api)
                busy_port = busy_port if busy else 0

            station = Station(
                config,
                open_stream=open_stream,
                clock=clock,
                api_address=api,
                database_runner=database_runner,
            )
            view = DemoView(
                station,
                csms,
                out,
                live=live,
                labels={c.id: c.label for c in config.connectors},
                headline="dcocpp demo",
            )
            csms.observer = view.csms_event  # held back until the heading is out
            guns = ", ".join(
                f"{c.id} {c.label} {c.max_power_w / 1000:g} kW" for c in config.connectors
            )
            hardware = "emulated PLCs on a virtual CAN bus" if plc else "simulated hardware"
            say(f"dcocpp demo: a DC charger on {hardware} and an embedded central system")
            say(f"  central system  {'in memory' if in_memory else csms_url}")
            say(f"                  accepts {', '.join(sorted(csms.accepted_tags))}")
            say(f"  charger         {config.charge_point.id}, guns {guns}")
            async with trio.open_nursery() as station_nursery:
                await station_nursery.start(station.run)
                assert station.store is not None
                station.store.set_value(
                    "MeterValueSampleInterval", max(1, round(METER_SAMPLE_INTERVAL / speed))
                )
                api_address = (api[0], station.api_port or api[1]) if api is not None else None
                if api_address is not None:
                    where = format_address(*api_address)
                    hint = "" if api_address == DEFAULT_API_ADDRESS else f" --api {where}"
                    say(f"  local API       http://{where}  (try `dcocpp status{hint}`)")
                    if busy_port:
                        say(f"                  port {busy_port} was busy, so it took a free one")
                say(f"  pace            {speed:g}x; Ctrl-C stops the demo")
                say("")
                player = _Player(station, csms, view, speed)
                with view.capturing_logs() if capture_logs else contextlib.nullcontext():
                    view.release()
                    station_nursery.start_soon(view.run)
                    # A signal now ends the script; the summary is still printed.
                    with stop.cancels() as script_scope:
                        await player.until_registered()
                        async with trio.open_nursery() as players:
                            for session in script:
                                players.start_soon(player.play, session)
                        await trio.sleep(FINAL_PAUSE / speed)
                        await player.until_reported()
                    interrupted = script_scope.cancelled_caught
                    if interrupted:
                        view.note("interrupted: stopping the running transactions")
                        await _stop_transactions(station, csms)
                    view.draw()
                    station_nursery.cancel_scope.cancel()
        interrupted = interrupted or starting.cancelled_caught
        csms_nursery.cancel_scope.cancel()
    summary = format_summary(csms)
    say("")
    say(summary)
    return DemoResult(csms, summary, interrupted, api_address, reader_gone=output.gone)


class ReaderAwareOutput(io.TextIOBase):
    """A text stream that survives its reader going away: the first BrokenPipeError sends
    everything after it to /dev/null (on the same file descriptor, so that Python's own flush
    at exit does not report it again) and calls `on_gone` once."""

    def __init__(self, target: TextIO, *, on_gone: Callable[[], None]) -> None:
        self._target: TextIO = target
        self._on_gone = on_gone
        self.gone = False

    def write(self, text: str) -> int:
        self._guarded(self._target.write, text)
        return len(text)

    def flush(self) -> None:
        self._guarded(self._target.flush)

    def isatty(self) -> bool:
        return self._target.isatty()

    def _guarded(self, operation: Callable[..., object], *args: str) -> None:
        if self.gone:
            return
        try:
            operation(*args)
        except BrokenPipeError:
            self.gone = True
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._target.fileno())
                os.close(devnull)
            self._on_gone()


async def _stop_transactions(station: Station, csms: DemoCentralSystem) -> None:
    """End the transactions still running (reason Other) and wait until the central system has
    their StopTransactions, so that its record is complete; bounded by STOP_TIMEOUT."""
    with trio.move_on_after(STOP_TIMEOUT):
        for task in station.connectors.values():
            await task.ask(ev.StopRequested(Reason.other))
        await csms.wait_for(lambda: not any(t.active for t in csms.transactions))


class _OnSignal:
    """SIGINT, SIGTERM or SIGHUP (Ctrl-C, `kill`, the terminal closed) cancel the innermost
    scope entered with `cancels()` at that moment, while `watch` runs; so does `interrupt()`."""

    def __init__(self) -> None:
        self._scopes: list[trio.CancelScope] = []

    def interrupt(self) -> None:
        """As if a signal came (the reader of the output has gone)."""
        if self._scopes:
            self._scopes[-1].cancel()

    @contextlib.contextmanager
    def cancels(self) -> Iterator[trio.CancelScope]:
        with trio.CancelScope() as scope:
            self._scopes.append(scope)
            try:
                yield scope
            finally:
                self._scopes.remove(scope)

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            task_status.started()
            async for _ in signals:
                self.interrupt()
