"""Command-line options shared by several subcommands (run, plc-sim, demo, ...)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CONFIG = Path("configs/charger.json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# What -v and -q stand for.
VERBOSE = "DEBUG"
QUIET = "WARNING"
_LEVEL_ALIASES = {"WARN": "WARNING"}


def config_argument(parser: argparse.ArgumentParser, what: str = "charger.json") -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        metavar="PATH",
        help=f"{what} (default: {DEFAULT_CONFIG})",
    )


def missing_default_config(path: Path, command: str) -> str | None:
    """What to tell a user whose `command` (e.g. `dcocpp run --config`) fell back on
    DEFAULT_CONFIG where there is none (an installed charger, outside the repository); None when
    `path` is another file or exists."""
    if path != DEFAULT_CONFIG or path.exists():
        return None
    return (
        f"{path}: file not found (the default when no configuration is given)\n"
        f"  write one with `dcocpp init DIR`, then `{command} DIR/charger.json`"
    )


def log_level(text: str) -> str:
    """A log level as scripts write it: any case, WARN for WARNING."""
    level = text.strip().upper()
    level = _LEVEL_ALIASES.get(level, level)
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"unknown level {text!r}: one of {', '.join(LOG_LEVELS)} (any case; WARN works too)"
        )
    return level


def log_level_argument(parser: argparse.ArgumentParser, *, default: str | None, help: str) -> None:
    """--log-level LEVEL, with -v (DEBUG) and -q (WARNING) as its short forms; at most one."""
    levels = parser.add_mutually_exclusive_group()
    levels.add_argument(
        "--log-level",
        type=log_level,
        default=default,
        metavar="LEVEL",
        help=f"{help}; one of {', '.join(LOG_LEVELS)}, in any case",
    )
    levels.add_argument(
        "-v",
        "--verbose",
        dest="log_level",
        action="store_const",
        const=VERBOSE,
        help=f"the same as --log-level {VERBOSE}",
    )
    levels.add_argument(
        "-q",
        "--quiet",
        dest="log_level",
        action="store_const",
        const=QUIET,
        help=f"the same as --log-level {QUIET}: warnings and errors only",
    )
