"""`dcocpp` / `python -m dcocpp`: the operator's entry point.

Exit status: 0 after a clean stop (Ctrl-C, SIGTERM, SIGPWR: the transactions are stopped
first), 2 for a usage or configuration error, 1 for a runtime error, EXIT_HARD_RESET after the
central system asked for a hard reset (so that a supervisor such as systemd with
`Restart=on-failure` starts the charger again).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from dcocpp import __version__
from dcocpp.api import contract
from dcocpp.api.contract import ApiError
from dcocpp.cli import args as cliargs
from dcocpp.cli import demo, init, plcsim, statecharts
from dcocpp.cli import sim as simcli
from dcocpp.cli.args import DEFAULT_CONFIG, config_argument, log_level_argument
from dcocpp.cli.logs import LoggingError, LoggingSetup
from dcocpp.config import ChargerConfig, ConfigError, load_charger_config
from dcocpp.hardware.interface import HardwareError
from dcocpp.ocpp.configuration import ConfigurationError, ConfigurationStore
from dcocpp.ocpp.transport import endpoint_url
from dcocpp.storage import datalock
from dcocpp.storage.database import ACCEPT_DATA_LOSS, Database, StorageError, prepare_data_dir

if TYPE_CHECKING:
    from dcocpp.station.station import Station

log = logging.getLogger("dcocpp")

EXIT_OK = 0
EXIT_RUNTIME_ERROR = 1
EXIT_USAGE = 2
EXIT_HARD_RESET = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcocpp",
        description="Controller of a multi-gun DC fast charger: OCPP 1.6J to the central "
        "system, CAN to the relay/meter PLCs, one state machine per gun.",
    )
    parser.add_argument("--version", action="version", version=f"dcocpp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the charger",
        description="Run the charger: connect to the central system and keep serving it "
        "(reconnecting forever) until Ctrl-C or SIGTERM. Exits with status "
        f"{EXIT_HARD_RESET} after a hard Reset from the central system.",
    )
    _config_argument(run)
    run.add_argument(
        "--csms",
        metavar="URL",
        help="central system URL (ws:// or wss://), "
        "overrides chargePoint.centralSystemURI; the charge point id is appended",
    )
    run.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        help="directory for persistent state (database, changed OCPP keys)",
    )
    run.add_argument(
        "--log-dir", metavar="DIR", type=Path, help="directory for the OCPP message log"
    )
    run.add_argument(
        ACCEPT_DATA_LOSS,
        action="store_true",
        help="start although the database lacks data its directory records (missing, its -wal "
        "file lost, an older copy, damaged: then kept aside), going on with what is there or a "
        "new database; give it once, after deciding so",
    )
    log_level_argument(run, default="INFO", help="console log level")
    run.add_argument(
        "--api",
        metavar="HOST:PORT",
        type=simcli.address_argument,
        help=f"serve the local HTTP API there, e.g. {simcli.DEFAULT_API} (off when not given); "
        "an address that is not loopback needs a token",
    )
    simcli.api_token_argument(run, "required on every request when given, and off loopback")

    check = commands.add_parser(
        "check-config",
        help="validate a configuration and print every problem",
        description="Validate charger.json and the OCPP key file it names; print every "
        "problem with its field path and exit non-zero if there is any.",
    )
    check.add_argument(
        "config",
        nargs="?",
        type=Path,
        default=DEFAULT_CONFIG,
        metavar="PATH",
        help=f"charger.json (default: {DEFAULT_CONFIG})",
    )

    charts = commands.add_parser(
        "statecharts",
        help="export the state machine diagrams",
        description="Write every state machine as Mermaid (.mmd) and, when Graphviz is "
        "installed, SVG. With --check, write nothing and fail if a committed diagram is stale.",
    )
    charts.add_argument(
        "--output",
        type=Path,
        default=Path("statecharts"),
        metavar="DIR",
        help="where the diagrams go (default: ./statecharts)",
    )
    charts.add_argument(
        "--check",
        action="store_true",
        help="exit 1 and name the file when a diagram is missing or stale",
    )
    dbc = commands.add_parser(
        "plc-dbc",
        help="write a DBC for cantools' own tools (every message for all 16 plcIds)",
        description="Write a companion of the shipped CAN contract for cantools' tools: every "
        "PLC message once per plcId 0..15, named like RelayStatus_3. Default: for `candump ... "
        "| cantools decode` and `cantools plot`; --extended-ids: for `cantools monitor`. "
        "See docs/can-bus.md.",
    )
    dbc.add_argument("output", type=Path, metavar="OUTPUT", help="the DBC file to write")
    dbc.add_argument(
        "--extended-ids",
        action="store_true",
        help="keep the messages extended frames (for cantools monitor)",
    )
    dbc.set_defaults(func=_plc_dbc)
    simcli.add_subcommands(commands)
    demo.add_subcommands(commands)
    init.add_subcommands(commands)
    plcsim.add_subcommands(commands)
    return parser


def _plc_dbc(args: argparse.Namespace) -> int:
    from dcocpp.hardware.plc.dbctools import write_tools_dbc

    try:
        write_tools_dbc(args.output, extended_ids=args.extended_ids)
    except OSError as exc:
        print(f"dcocpp plc-dbc: cannot write {args.output}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    print(args.output)
    return EXIT_OK


def _config_argument(parser: argparse.ArgumentParser) -> None:
    config_argument(parser)


def _load(args: argparse.Namespace) -> ChargerConfig:
    return load_charger_config(
        args.config,
        csms=getattr(args, "csms", None),
        data_dir=getattr(args, "data_dir", None),
        log_dir=getattr(args, "log_dir", None),
    )


def _check_config(args: argparse.Namespace) -> int:
    from dcocpp.station.station import load_configuration_store

    if (hint := cliargs.missing_default_config(args.config, "dcocpp check-config")) is not None:
        print(hint, file=sys.stderr)
        return EXIT_USAGE
    try:
        config = _load(args)
        load_configuration_store(config)
    except (ConfigError, ConfigurationError) as exc:
        print(f"{args.config}: invalid configuration", file=sys.stderr)
        for line in str(exc).splitlines():
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    cp = config.charge_point
    print(
        f"{args.config}: OK ({len(config.connectors)} connectors, "
        f"central system {endpoint_url(cp.central_system_uri, cp.id)})"
    )
    return EXIT_OK


def _statecharts(args: argparse.Namespace) -> int:
    if args.check:
        problems = statecharts.stale(args.output)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else EXIT_OK
    for path in statecharts.export(args.output):
        print(path)
    return EXIT_OK


async def _serve(
    config: ChargerConfig,
    keys: ConfigurationStore,
    api_address: tuple[str, int] | None,
    api_token: str | None,
) -> None:
    from dcocpp.station.station import Station

    station = Station(config, api_address=api_address, api_token=api_token, store=keys)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signals, station, nursery.cancel_scope)
        await station.run()
        nursery.cancel_scope.cancel()


async def _stop_on_signals(station: Station, scope: trio.CancelScope) -> None:
    """SIGTERM, SIGINT or SIGHUP (systemctl stop/restart, Ctrl-C, the terminal of a foreground
    run closed): a planned stop, every transaction
    stopped with reason Reboot and delivered within a short grace (`Station.shut_down`).
    SIGPWR (a UPS daemon: mains lost, on backup power): the same with reason PowerLoss, for as
    long as the backup is trusted to last (`Station.power_failure`). Then the process ends
    (`scope`). Another of these while stopping (but SIGPWR) ends the delivery at once: what was
    not delivered is stored and goes out after the next start."""
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPWR)
    with trio.open_signal_receiver(*stops) as signals:
        async with trio.open_nursery() as nursery:
            stopping = False
            async for signum in signals:
                name = signal.Signals(signum).name
                if not stopping:
                    stopping = True
                    nursery.start_soon(_stop, station, signum, scope)
                elif signum == signal.SIGPWR:
                    log.info("%s received while stopping: the stop goes on", name)
                else:
                    log.warning(
                        "%s received again: exiting without waiting for the central system", name
                    )
                    station.end_delivery()


async def _stop(station: Station, signum: int, scope: trio.CancelScope) -> None:
    if signum == signal.SIGPWR:
        await station.power_failure()
        log.warning("power failure: transactions stopped, shutting down")
    else:
        log.info("%s received: stopping", signal.Signals(signum).name)
        await station.shut_down()
    scope.cancel()


def _api_access_problem(args: argparse.Namespace) -> str | None:
    """Why `run` must not serve the API as asked (a usage error), or None."""
    if args.api is None:
        return None
    token = simcli.api_token(args)
    if token is None:
        if contract.is_loopback(args.api[0]):
            return None
        return f"--api {contract.format_address(*args.api)}: {contract.NEEDS_TOKEN}"
    problem = contract.token_problem(token)
    source = "--api-token" if args.api_token is not None else contract.TOKEN_ENV
    return None if problem is None else f"{source}: the API token {problem}"


def _run(args: argparse.Namespace) -> int:
    from dcocpp.station.station import load_configuration_store

    if (hint := cliargs.missing_default_config(args.config, "dcocpp run --config")) is not None:
        print(hint, file=sys.stderr)
        return EXIT_USAGE
    refusal = _api_access_problem(args)
    if refusal is not None:
        print(f"dcocpp run: {refusal}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = _load(args)
    except ConfigError as exc:
        return _invalid_configuration(args.config, exc)
    logging_setup = LoggingSetup()
    logging_setup.start(args.log_level, None)  # the console first: it tells what goes wrong
    lock = contextlib.ExitStack()
    try:
        # Before anything reads or writes there (the OCPP keys changed by the central system
        # are the first): a data directory that cannot be used is one line, not a warning.
        prepare_data_dir(config.data_dir)
        lock.enter_context(datalock.held(config.data_dir))  # one charger per data directory
        if args.accept_data_loss:
            # The operator's decision, taken once here: the station's own opens check as usual.
            Database.open(config.data_dir, accept_data_loss=True).close()
        try:
            keys = load_configuration_store(config)
        except ConfigurationError as exc:
            return _invalid_configuration(args.config, exc)
        logging_setup.open_message_log(
            config.log_dir,
            max_bytes=keys.get_int("LogMessagesMaxFileSize"),
            backup_count=keys.get_int("LogMessagesBackupCount"),
        )
        log.info("dcocpp %s starting with %s", __version__, config.path)
        trio.run(_serve, config, keys, args.api, simcli.api_token(args))
        log.info("stopped")
        return EXIT_OK
    except BaseException as error:
        return _ended_by(error, debug=args.log_level == "DEBUG")
    finally:
        lock.close()
        logging_setup.stop()


def _invalid_configuration(path: Path, error: ConfigError | ConfigurationError) -> int:
    print(f"{path}: invalid configuration, not starting", file=sys.stderr)
    for line in str(error).splitlines():
        print(f"  {line}", file=sys.stderr)
    return EXIT_USAGE


# The layers' exception roots: what they raise is a message for the operator, not a bug; each
# names the thing (path, address, channel) and the cause.
_OPERATOR_ERRORS = (ApiError, StorageError, HardwareError, LoggingError, ConfigurationError)


def _ended_by(error: BaseException, *, debug: bool) -> int:
    """The exit status for the exception that ended a command, and what the operator is told:
    the one place where the exception groups of trio's nurseries are taken apart. A layer's
    error is one line (its traceback only at DEBUG); anything else is a bug and is raised."""
    from dcocpp.station.station import HardReset

    leaves = _leaves(error)
    if any(isinstance(leaf, BrokenPipeError) for leaf in leaves):
        # Whoever read stdout has gone (`dcocpp demo | head`): stop quietly. Python would
        # report the broken pipe once more when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_RUNTIME_ERROR
    if not all(
        isinstance(leaf, (*_OPERATOR_ERRORS, HardReset, KeyboardInterrupt)) for leaf in leaves
    ):
        raise error
    if debug:
        log.debug("the exception that ended it:", exc_info=error)
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        # Ctrl-C before the signal handling took over: a stop like any other.
        log.info("interrupted")
        return EXIT_OK
    errors = [leaf for leaf in leaves if not isinstance(leaf, HardReset)]
    if not errors:
        log.warning("exiting with status %d for the hard reset", EXIT_HARD_RESET)
        return EXIT_HARD_RESET
    # One line per distinct error: several tasks may have run into the same one.
    for line in dict.fromkeys(_describe(leaf) for leaf in errors):
        log.error("%s", line)
    if any(isinstance(leaf, ConfigurationError) for leaf in errors):
        return EXIT_USAGE
    return EXIT_RUNTIME_ERROR


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiError):
        return f"--api {error.address}: {error.reason}"
    if isinstance(error, ConfigurationError):
        # Only possible when the key file was edited into a bad state before a soft reset.
        return f"invalid OCPP configuration, stopping:\n{error}"
    return str(error)


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, parsed; a bad one exits with status 2 and says why (argparse)."""
    return _parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "run":
        return _run(args)
    try:
        if args.command == "check-config":
            return _check_config(args)
        if args.command == "statecharts":
            return _statecharts(args)
        status: int = args.func(args)
        return status
    except BaseException as error:
        return _ended_by(error, debug=getattr(args, "log_level", None) == "DEBUG")
