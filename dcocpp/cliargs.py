"""Command-line options shared by several subcommands (run, plc-sim, demo, ...)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CONFIG = Path("configs/charger.json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


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


def log_level_argument(parser: argparse.ArgumentParser, *, default: str | None, help: str) -> None:
    parser.add_argument("--log-level", default=default, choices=LOG_LEVELS, help=help)
