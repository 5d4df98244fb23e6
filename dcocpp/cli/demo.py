"""`dcocpp demo`: the command line of the demo (`dcocpp.demo`).

`add_subcommands` registers the command; the demo itself (`run_demo`) lives in
`dcocpp.demo.run`, its central system in `dcocpp.demo.central_system`. Both are imported only
when the command runs, so the command line stays quick to start.
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import sys
import tempfile
from functools import partial
from pathlib import Path

from dcocpp.api.contract import DEFAULT_API, is_loopback
from dcocpp.cli import sim as simcli
from dcocpp.cli.args import log_level_argument
from dcocpp.demo import MIN_SPEED

__all__ = ["add_subcommands", "main"]

EXIT_OK = 0
EXIT_FAILED = 1

_DESCRIPTION = """\
Run a complete charging demo with nothing else installed. An embedded central system (a small
OCPP 1.6J CSMS that accepts the charger's boot, authorizes the demo's tags and records the
transactions) and the charger on simulated hardware run in this process. On every gun a
scripted session plays, the guns a few seconds apart: plug in, present an RFID tag (on the
first gun an unknown tag first, which the central system refuses), charge, the EV pauses and
resumes, the driver presents the tag again to stop, unplug. The connectors' states, power and
energy show live (a table redrawn in place on a terminal, one line per event otherwise);
at the end the transactions the central system recorded are printed with the energy of each.
It takes about half a minute (--speed 5: about 7 s). While it runs the charger's local API answers,
so `dcocpp status` and `dcocpp sim ...` work from another terminal. Ctrl-C (or SIGTERM, or a
hangup) stops it cleanly (exit status 0) and still prints the summary.

Logging: only warnings are shown, inside the live view. --log-level prints log lines at that
level on stderr (best together with --no-live). The charger's state, its configuration and
the OCPP message log of both sides go to a temporary directory, removed at the end unless
--keep-data."""


def add_subcommands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `demo` on the program's subcommands; it sets `func`."""
    demo = commands.add_parser(
        "demo",
        help="run a scripted charging demo against an embedded central system",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        metavar="FACTOR",
        help="pace of the script: 2 is twice as fast, from 0.01 up (default: 1; the charging "
        "itself runs in real time, so a faster demo delivers less energy)",
    )
    demo.add_argument(
        "--api",
        type=_loopback_address,
        default=DEFAULT_API,
        metavar="HOST:PORT",
        help=f"serve the charger's local API there (default: {DEFAULT_API}; a free port "
        "if that one is busy)",
    )
    demo.add_argument(
        "--plc",
        action="store_true",
        help="run the charger's PLC backend (CAN driver and codec) against emulated PLCs on a "
        "python-can virtual bus instead of the simulated guns",
    )
    demo.add_argument(
        "--no-live",
        action="store_true",
        help="print one line per event instead of the live table (the default off a terminal)",
    )
    demo.add_argument(
        "--keep-data",
        action="store_true",
        help="keep the demo's data directory (charger.json, database, OCPP message log) and "
        "print where it is",
    )
    log_level_argument(
        demo,
        default=None,
        help="print log lines at this level on stderr (default: warnings only, in the view)",
    )
    demo.set_defaults(func=_demo)


def _loopback_address(text: str) -> tuple[str, int]:
    # The demo's API has no token: dcocpp.api.server serves that on loopback only.
    address = simcli.address_argument(text)
    if not is_loopback(address[0]):
        raise argparse.ArgumentTypeError(
            f"{text}: the demo serves its API on loopback only (127.0.0.1, ::1, localhost)"
        )
    return address


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= MIN_SPEED):
        raise argparse.ArgumentTypeError(
            f"must be a number from {MIN_SPEED:g} up (slower, the simulated EV's battery is "
            f"full before the script pauses it), not {text}"
        )
    return value


def _demo(args: argparse.Namespace) -> int:
    # Until the demo's own signal handling takes over (`stop_on_signals`), a hangup (the
    # terminal was closed) or SIGTERM stops it as Ctrl-C does, so that its temporary data is
    # removed on the way out: by default both would just end the process.
    previous = {sig: signal.signal(sig, _as_ctrl_c) for sig in (signal.SIGHUP, signal.SIGTERM)}
    try:
        return _demo_in_temporary_data(args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _as_ctrl_c(signum: int, frame: object) -> None:
    # Through SIGINT: Python's KeyboardInterrupt, or inside trio its safe delivery of it.
    signal.raise_signal(signal.SIGINT)


def _demo_in_temporary_data(args: argparse.Namespace) -> int:
    import trio

    from dcocpp.cli.logs import LoggingSetup
    from dcocpp.demo.run import DemoError, run_demo
    from dcocpp.ocpp.messagelog import close_message_file, open_message_file

    data_dir = Path(tempfile.mkdtemp(prefix="dcocpp-demo-"))
    logging_setup = LoggingSetup()
    logging_setup.start(args.log_level or "WARNING", None)
    open_message_file(
        data_dir / "logs" / "ocpp-messages.log", max_bytes=10 * 1024 * 1024, backup_count=1
    )
    status = EXIT_OK
    try:
        result = trio.run(
            partial(
                run_demo,
                speed=args.speed,
                api=args.api,
                data_dir=data_dir,
                live=not args.no_live,
                capture_logs=args.log_level is None,
                stop_on_signals=True,
                plc=args.plc,
            )
        )
        if result.reader_gone:
            status = EXIT_FAILED  # `dcocpp demo | head`: ended quietly, but not played out
    except DemoError as exc:
        print(f"dcocpp demo: {exc}", file=sys.stderr)
        status = EXIT_FAILED
    except KeyboardInterrupt:
        # Ctrl-C before the script (and its signal handling) started: nothing to summarise.
        print("dcocpp demo: interrupted", file=sys.stderr)
    finally:
        close_message_file()
        logging_setup.stop()
        if args.keep_data:
            print(f"\nThe demo's data is in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    return status


def main(argv: list[str] | None = None) -> int:
    """Just this subcommand (tests, and use without the rest of the command line)."""
    parser = argparse.ArgumentParser(prog="dcocpp")
    add_subcommands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status
