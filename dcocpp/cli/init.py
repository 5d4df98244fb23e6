"""`dcocpp init DIR`: write the default configuration (`dcocpp.defaults`) into DIR, create the
database, and say what to edit first."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from dcocpp.defaults import (
    CHARGER_JSON,
    ConfigurationExists,
    InitError,
    create_database,
    write_configuration,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def add_subcommands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `init` on the program's subcommands; it sets `func`."""
    init = commands.add_parser(
        "init",
        help="write the default configuration into a directory",
        description="Write the default charger.json and ocpp16-config.json (a 2-gun DC "
        "charger) into DIR, creating it; the charger's state goes to DIR/data and its logs to "
        "DIR/logs. Prints what to edit first and how to check and run it.",
    )
    init.add_argument("directory", type=Path, metavar="DIR", help="where the files go")
    init.add_argument(
        "--force", action="store_true", help="replace charger.json and ocpp16-config.json there"
    )
    init.set_defaults(func=_init)


def _init(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    try:
        written = write_configuration(directory, force=args.force)
        database = create_database(directory)
    except InitError as exc:
        print(f"dcocpp init: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigurationExists) else EXIT_FAILED
    config = shlex.quote(str(directory / CHARGER_JSON))
    for path in written:
        print(f"wrote {path}")
    if database is not None:
        print(f"created {database}")
    print(
        f"""
Edit first, in {directory / CHARGER_JSON}:
  chargePoint.id                the id the central system knows this charger by
  chargePoint.centralSystemURI  ws:// or wss:// URL of the central system
  connectors                    one entry per gun: plcId, label, maxCurrentA, maxPowerW
  chargePoint.usePLC            true drives the guns' PLCs over CAN (chargePoint.canInterface,
                                e.g. can0); false runs simulated guns
State goes to {directory / "data"}, logs to {directory / "logs"}.

Then check it and run the charger:
  dcocpp check-config {config}
  dcocpp run --config {config}"""
    )
    return EXIT_OK
