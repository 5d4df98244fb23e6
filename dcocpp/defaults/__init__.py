"""The default configuration, shipped with the package (`dcocpp init` writes it out:
`dcocpp.cli.init`).

`charger.json` and `ocpp16-config.json` here are the repository's `configs/` (a test keeps them
equal), so that a charger installed with pip, without the repository, can start:
`dcocpp init DIR` writes both into DIR, laid out for an installed charger: its state in
DIR/data (where it creates the database, with the record that the directory holds one) and its
logs in DIR/logs, beside the configuration (the repository's `configs/` keep
them one level up, in the checkout's data/ and logs/). The demo reads them here too when it
runs without the repository.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from dcocpp.storage.database import DATABASE_NAME, Database, StorageError

__all__ = [
    "CHARGER_JSON",
    "OCPP_CONFIG_JSON",
    "ConfigurationExists",
    "InitError",
    "create_database",
    "installed_charger_json",
    "read_text",
    "write_configuration",
]

CHARGER_JSON = "charger.json"
OCPP_CONFIG_JSON = "ocpp16-config.json"

# Relative to DIR; every path field of charger.json (security and paths) is set.
_INSTALLED_LAYOUT = {
    "security": {
        "csmsCaBundle": "data/certs/ca/csms-ca.pem",
        "clientCertDir": "data/certs/client",
        "keyDir": "data/keys",
    },
    "paths": {"dataDir": "data", "logDir": "logs", "ocppConfig": OCPP_CONFIG_JSON},
}


class InitError(Exception):
    """The configuration was not written (nothing was): what to tell the operator."""


class ConfigurationExists(InitError):
    """A file to write is already there and `force` was not given."""


def read_text(name: str) -> str:
    """A shipped default file (CHARGER_JSON or OCPP_CONFIG_JSON), from the installed package."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def installed_charger_json() -> str:
    """The default charger.json with its paths laid out for a directory of its own."""
    document = json.loads(read_text(CHARGER_JSON))
    document.update(_INSTALLED_LAYOUT)
    return json.dumps(document, indent=2) + "\n"


def write_configuration(directory: Path, *, force: bool = False) -> list[Path]:
    """Write the default charger.json and ocpp16-config.json into `directory` (created if
    needed); the paths written. Existing files are replaced only with `force`: else
    `ConfigurationExists`, and nothing is written."""
    contents = {
        directory / CHARGER_JSON: installed_charger_json(),
        directory / OCPP_CONFIG_JSON: read_text(OCPP_CONFIG_JSON),
    }
    existing = [path for path in contents if path.exists()]
    if existing and not force:
        names = " and ".join(str(path) for path in existing)
        verb = "exists" if len(existing) == 1 else "exist"
        raise ConfigurationExists(f"{names} {verb}: not overwriting (--force replaces)")
    created: list[Path] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path, text in contents.items():
            new = not path.exists()
            # "x": never clobber a file that appeared since the check above.
            with path.open("w" if force else "x", encoding="utf-8") as file:
                if new:
                    created.append(path)
                file.write(text)
    except OSError as exc:
        # Half a configuration is worse than none: take back the files this call created.
        for path in created:
            path.unlink(missing_ok=True)
        raise InitError(f"cannot write the configuration into {directory}: {exc}") from exc
    return list(contents)


def create_database(directory: Path) -> Path | None:
    """Create the database in `directory`'s data directory (with the directory's record of
    it, dcocpp/storage/datarecord.py), unless one is there; its path, None when there was one."""
    data_dir = directory / _INSTALLED_LAYOUT["paths"]["dataDir"]
    if (data_dir / DATABASE_NAME).exists():
        return None
    try:
        Database.open(data_dir).close()
    except StorageError as exc:
        raise InitError(str(exc)) from exc
    return data_dir / DATABASE_NAME
