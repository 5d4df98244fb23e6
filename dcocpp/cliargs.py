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


def log_level_argument(parser: argparse.ArgumentParser, *, default: str | None, help: str) -> None:
    parser.add_argument("--log-level", default=default, choices=LOG_LEVELS, help=help)
