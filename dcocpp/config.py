"""charger.json -> typed, validated attrs objects.

`load_charger_config` reads the file, checks every field and raises one `ConfigError` listing
every problem it found (a charger is configured on site: one round trip per typo is too many).
The OCPP configuration keys (ocpp16-config.json) are loaded by `dcocpp.ocpp.configuration`;
this module only finds that file.

Relative paths in the file resolve against the directory holding the file, so a config can be
moved together with its neighbours. Defaults: ``dataDir`` = ``<config dir>/../data``,
``logDir`` = ``<config dir>/../logs``, ``ocppConfig`` = ``<config dir>/ocpp16-config.json``.
Overrides given on the command line (``--csms``, ``--data-dir``, ``--log-dir``) replace the file's
values; relative override paths resolve against the current directory, as a shell user expects.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import can

from dcocpp.jsontypes import json_type

__all__ = [
    "ChargePointConfig",
    "ChargerConfig",
    "ConfigError",
    "ConfigProblem",
    "ConnectorConfig",
    "FirmwareConfig",
    "SecurityConfig",
    "load_charger_config",
]

# BootNotification CiString limits (OCPP 1.6 section 6.1).
_VENDOR_MAX = 20
_MODEL_MAX = 20
_FIRMWARE_MAX = 50
_SERIAL_MAX = 25
_CHARGE_POINT_ID_MAX = 48
_PLC_ID_MAX = 15  # the low nibble of the PLC's CAN ids
_INSTALL_TIMEOUT = 600.0  # firmware.installTimeoutSeconds' default

# Fields an older charger.json may still carry, with what replaced them. Still errors (a
# field nothing reads must not pass silently), but not "unknown": the operator set them on
# purpose and needs to know where the setting lives now.
_RETIRED_CONNECTOR_FIELDS = {
    "meterSampleIntervalSeconds": "no longer used (it never set anything): the sample interval "
    "of MeterValues is the OCPP key MeterValueSampleInterval in ocpp16-config.json (which the "
    "central system may change); remove this field and set that key instead",
}


@attrs.frozen
class ConfigProblem:
    path: str
    reason: str


class ConfigError(Exception):
    """The configuration cannot be used. `problems` lists everything that is wrong, not just the
    first thing; `str()` gives one ``<field path>: <reason>`` line per problem."""

    def __init__(self, problems: Iterable[ConfigProblem]):
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{p.path}: {p.reason}" for p in self.problems)


@attrs.frozen
class ChargePointConfig:
    id: str
    vendor: str
    model: str
    firmware_version: str
    central_system_uri: str
    use_plc: bool
    can_interface: str  # the bus's channel, e.g. the OS interface "can0"
    serial_number: str | None = None
    # python-can's interface type: "socketcan" on a charger; "virtual" runs the PLC emulators
    # in-process (development, demos, tests); any other python-can interface by name.
    can_interface_type: str = "socketcan"


@attrs.frozen
class ConnectorConfig:
    id: int
    plc_id: int
    label: str
    max_current_a: float
    max_power_w: float
    fixed_cable: bool = True


@attrs.frozen
class SecurityConfig:
    csms_ca_bundle: Path  # the CAs that may sign the central system's certificate (wss://)
    # Where the charge point's own TLS client certificate and its private key live (see
    # `dcocpp.station.station.client_ssl_context`); kept apart so the key directory can be
    # locked down.
    client_cert_dir: Path
    key_dir: Path


@attrs.frozen
class FirmwareConfig:
    """How a downloaded firmware is installed (charger.json's optional `firmware`): the
    integrator's command, or (None) the built-in installer of dcocpp images."""

    install_command: tuple[str, ...] | None = None
    install_timeout: float = _INSTALL_TIMEOUT


@attrs.frozen
class ChargerConfig:
    path: Path
    charge_point: ChargePointConfig
    connectors: tuple[ConnectorConfig, ...]
    security: SecurityConfig
    data_dir: Path
    log_dir: Path
    ocpp_config_path: Path
    firmware: FirmwareConfig = FirmwareConfig()


def load_charger_config(
    path: str | Path,
    *,
    csms: str | None = None,
    data_dir: str | Path | None = None,
    log_dir: str | Path | None = None,
) -> ChargerConfig:
    """Load and validate a charger.json; raise `ConfigError` listing every problem."""
    file_label = str(path)
    file_path = Path(path).resolve()
    try:
        text = file_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(file_label, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([ConfigProblem(file_label, f"cannot read file: {err}")]) from None
    try:
        document = json.loads(text, object_pairs_hook=_JsonObject.from_pairs)
    except json.JSONDecodeError as err:
        reason = f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        raise ConfigError([ConfigProblem(file_label, reason)]) from None

    checker = _Checker()
    config = checker.charger(document, file_label, file_path, csms, data_dir, log_dir)
    if checker.problems:
        raise ConfigError(checker.problems)
    assert config is not None
    return config


class _JsonObject(dict[str, Any]):
    """A JSON object that remembers keys the file repeated: json.loads keeps the last one
    silently, which hides exactly the copy-paste mistakes validation is for."""

    duplicates: list[str]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _JsonObject:
        obj = cls()
        obj.duplicates = []
        for key, value in pairs:
            if key in obj:
                obj.duplicates.append(key)
            obj[key] = value
        return obj


_MISSING = object()


class _Checker:
    """Walks the parsed document, recording problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[ConfigProblem] = []

    def problem(self, path: str, reason: str) -> None:
        self.problems.append(ConfigProblem(path, reason))

    # -- generic field access -------------------------------------------------------------

    def fields(
        self,
        value: Any,
        path: str,
        required: Iterable[str],
        optional: Iterable[str],
        retired: Mapping[str, str] | None = None,
    ) -> dict[str, Any] | None:
        """Check that `value` is an object with exactly these fields; return it or None.
        A `retired` field is refused with its own reason instead of "unknown field"."""
        if not isinstance(value, dict):
            self.problem(path, f"must be an object, not {json_type(value)}")
            return None
        required = list(required)
        known = set(required) | set(optional)
        prefix = f"{path}." if path else ""
        for key in getattr(value, "duplicates", ()):
            self.problem(f"{prefix}{key}", "duplicate field; only the last value would be used")
        for key in value:
            if key not in known:
                self.problem(f"{prefix}{key}", (retired or {}).get(key, "unknown field"))
        for key in required:
            if key not in value:
                self.problem(f"{prefix}{key}", "required field is missing")
        return value

    def string(
        self,
        obj: dict[str, Any],
        path: str,
        key: str,
        *,
        non_empty: bool = True,
        max_length: int | None = None,
        default: Any = _MISSING,
    ) -> Any:
        value = obj.get(key, default)
        if value is _MISSING or (value is default and key not in obj):
            return value
        where = _join(path, key)
        if not isinstance(value, str):
            self.problem(where, f"must be a string, not {json_type(value)}")
            return _MISSING
        if non_empty and not value.strip():
            self.problem(where, "must not be empty")
            return _MISSING
        if max_length is not None and len(value) > max_length:
            self.problem(where, f"must be at most {max_length} characters (OCPP limit)")
            return _MISSING
        return value

    def boolean(self, obj: dict[str, Any], path: str, key: str, default: Any = _MISSING) -> Any:
        value = obj.get(key, default)
        if value is _MISSING or (value is default and key not in obj):
            return value
        if not isinstance(value, bool):
            self.problem(_join(path, key), f"must be true or false, not {json_type(value)}")
            return _MISSING
        return value

    def integer(
        self,
        obj: dict[str, Any],
        path: str,
        key: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        default: Any = _MISSING,
    ) -> Any:
        value = obj.get(key, default)
        if value is _MISSING or (value is default and key not in obj):
            return value
        where = _join(path, key)
        # bool is an int subclass in Python but `true` is not a number in a config file.
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(where, f"must be an integer, not {json_type(value)}")
            return _MISSING
        if minimum is not None and maximum is not None and not minimum <= value <= maximum:
            self.problem(where, f"must be between {minimum} and {maximum}, not {value}")
            return _MISSING
        if minimum is not None and value < minimum:
            self.problem(where, f"must be >= {minimum}, not {value}")
            return _MISSING
        return value

    def positive_number(self, obj: dict[str, Any], path: str, key: str) -> Any:
        value = obj.get(key, _MISSING)
        if value is _MISSING:
            return value
        where = _join(path, key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(where, f"must be a number, not {json_type(value)}")
            return _MISSING
        # json accepts NaN and Infinity; neither is a current or power limit.
        if not math.isfinite(value) or value <= 0:
            self.problem(where, f"must be a positive number, not {value}")
            return _MISSING
        return float(value)

    def file_path(self, obj: dict[str, Any], path: str, key: str, base: Path) -> Any:
        value = self.string(obj, path, key)
        if value is _MISSING:
            return value
        return (base / value).resolve()

    def central_system_uri(self, value: str, where: str) -> bool:
        reason = _uri_problem(value)
        if reason is not None:
            self.problem(where, reason)
            return False
        return True

    # -- the document -----------------------------------------------------------------------

    def charger(
        self,
        document: Any,
        file_label: str,
        file_path: Path,
        csms: str | None,
        data_dir: str | Path | None,
        log_dir: str | Path | None,
    ) -> ChargerConfig | None:
        if not isinstance(document, dict):
            self.problem(file_label, f"must be a JSON object, not {json_type(document)}")
            return None
        top = self.fields(
            document, "", ["chargePoint", "connectors", "security"], ["paths", "firmware"]
        )
        assert top is not None
        base = file_path.parent

        charge_point = None
        if "chargePoint" in top:
            charge_point = self.charge_point(top["chargePoint"], csms)
        elif csms is not None:
            self.central_system_uri(csms, "chargePoint.centralSystemURI")
        cp_can = charge_point.can_interface if charge_point is not None else None
        connectors = self.connectors(top["connectors"], cp_can) if "connectors" in top else None
        security = self.security(top["security"], base) if "security" in top else None
        paths = self.paths(top.get("paths", {}), base, data_dir, log_dir)
        firmware = self.firmware(top.get("firmware", {}))

        if (
            charge_point is None
            or connectors is None
            or security is None
            or paths is None
            or firmware is None
        ):
            return None
        return ChargerConfig(file_path, charge_point, connectors, security, *paths, firmware)

    def charge_point(self, value: Any, csms: str | None) -> ChargePointConfig | None:
        path = "chargePoint"
        required = ["id", "vendor", "model", "firmwareVersion", "usePLC", "canInterface"]
        optional = ["serialNumber", "canInterfaceType"]
        # With --csms the file's URI is being overridden, so it need not be there (or be right).
        (optional if csms is not None else required).append("centralSystemURI")
        obj = self.fields(value, path, required, optional)
        if obj is None:
            if csms is not None:
                self.central_system_uri(csms, f"{path}.centralSystemURI")
            return None

        cp_id = self.string(obj, path, "id", max_length=_CHARGE_POINT_ID_MAX)
        if isinstance(cp_id, str):
            reason = _charge_point_id_problem(cp_id)
            if reason is not None:
                self.problem(f"{path}.id", reason)
                cp_id = _MISSING
        vendor = self.string(obj, path, "vendor", max_length=_VENDOR_MAX)
        model = self.string(obj, path, "model", max_length=_MODEL_MAX)
        firmware = self.string(
            obj, path, "firmwareVersion", non_empty=False, max_length=_FIRMWARE_MAX
        )
        serial = self.string(obj, path, "serialNumber", max_length=_SERIAL_MAX, default=None)
        use_plc = self.boolean(obj, path, "usePLC")
        can_interface = self.string(obj, path, "canInterface")
        can_type = self.string(obj, path, "canInterfaceType", default="socketcan")
        if isinstance(can_type, str) and can_type not in can.VALID_INTERFACES:
            self.problem(
                f"{path}.canInterfaceType",
                f"{can_type!r} is not a python-can interface (one of: "
                f"{', '.join(sorted(can.VALID_INTERFACES))})",
            )
            can_type = _MISSING

        uri: Any
        if csms is not None:
            self.string(obj, path, "centralSystemURI", non_empty=False, default=None)
            uri = csms if self.central_system_uri(csms, f"{path}.centralSystemURI") else _MISSING
        else:
            uri = self.string(obj, path, "centralSystemURI")
            if isinstance(uri, str) and not self.central_system_uri(
                uri, f"{path}.centralSystemURI"
            ):
                uri = _MISSING

        values = (cp_id, vendor, model, firmware, uri, use_plc, can_interface, serial, can_type)
        if any(v is _MISSING for v in values):
            return None
        return ChargePointConfig(*values)

    def connectors(self, value: Any, cp_can: str | None) -> tuple[ConnectorConfig, ...] | None:
        if not isinstance(value, list):
            self.problem("connectors", f"must be a list, not {json_type(value)}")
            return None
        if not value:
            self.problem("connectors", "at least one connector is required")
            return None

        parsed: list[ConnectorConfig | None] = [
            self.connector(item, f"connectors[{i}]", cp_can) for i, item in enumerate(value)
        ]
        ok = all(c is not None for c in parsed)
        ok &= self.unique(value, "id")
        ok &= self.unique(value, "plcId")
        ok &= self.contiguous_ids(value)
        if not ok:
            return None
        return tuple(sorted((c for c in parsed if c is not None), key=lambda c: c.id))

    def connector(self, value: Any, path: str, cp_can: str | None) -> ConnectorConfig | None:
        required = ["id", "plcId", "label", "maxCurrentA", "maxPowerW"]
        optional = ["canInterface", "fixedCable"]
        obj = self.fields(value, path, required, optional, _RETIRED_CONNECTOR_FIELDS)
        if obj is None:
            return None
        connector_id = self.integer(obj, path, "id", minimum=1)
        plc_id = self.integer(obj, path, "plcId", minimum=0, maximum=_PLC_ID_MAX)
        label = self.string(obj, path, "label")
        max_current = self.positive_number(obj, path, "maxCurrentA")
        max_power = self.positive_number(obj, path, "maxPowerW")
        # Only a check (nothing else reads it): a config that names each gun's bus must name
        # the charger's one bus.
        can_interface = self.string(obj, path, "canInterface", default=None)
        if isinstance(can_interface, str) and cp_can is not None and can_interface != cp_can:
            self.problem(
                f"{path}.canInterface",
                f"must equal chargePoint.canInterface ({cp_can!r}): the host drives every PLC"
                " through one CAN interface, told apart by plcId",
            )
            can_interface = _MISSING
        fixed_cable = self.boolean(obj, path, "fixedCable", default=True)

        values = (connector_id, plc_id, label, max_current, max_power, fixed_cable)
        if can_interface is _MISSING or any(v is _MISSING for v in values):
            return None
        return ConnectorConfig(*values)

    def unique(self, items: list[Any], key: str) -> bool:
        first_index: dict[int, int] = {}
        ok = True
        for i, item in enumerate(items):
            value = item.get(key) if isinstance(item, dict) else None
            if not isinstance(value, int) or isinstance(value, bool):
                continue  # already reported by the type check
            if value in first_index:
                self.problem(
                    f"connectors[{i}].{key}",
                    f"must be unique; connectors[{first_index[value]}].{key} is also {value}",
                )
                ok = False
            else:
                first_index[value] = i
        return ok

    def contiguous_ids(self, items: list[Any]) -> bool:
        count = len(items)
        ids = {
            item["id"]
            for item in items
            if isinstance(item, dict)
            and isinstance(item.get("id"), int)
            and not isinstance(item["id"], bool)
        }
        missing = sorted(set(range(1, count + 1)) - ids)
        if not missing:
            return True
        # OCPP addresses connectors as 1..NumberOfConnectors; a gap would be a gun the
        # central system can see but never use (or the other way round).
        self.problem(
            "connectors",
            f"connector ids must be 1..{count} without gaps; missing: "
            + ", ".join(str(m) for m in missing),
        )
        return False

    def security(self, value: Any, base: Path) -> SecurityConfig | None:
        path = "security"
        keys = ["csmsCaBundle", "clientCertDir", "keyDir"]
        obj = self.fields(value, path, keys, [])
        if obj is None:
            return None
        values = [self.file_path(obj, path, key, base) for key in keys]
        if any(v is _MISSING for v in values):
            return None
        return SecurityConfig(*values)

    def firmware(self, value: Any) -> FirmwareConfig | None:
        path = "firmware"
        obj = self.fields(value, path, [], ["installCommand", "installTimeoutSeconds"])
        if obj is None:
            return None
        command = obj.get("installCommand")
        if command is not None and (
            not isinstance(command, list)
            or not command
            or not all(isinstance(arg, str) for arg in command)
            or not command[0].strip()
        ):
            self.problem(
                f"{path}.installCommand",
                "must be a non-empty list of strings, the program first"
                ' (e.g. ["/usr/local/bin/install-firmware"])',
            )
            return None
        timeout = _INSTALL_TIMEOUT
        if "installTimeoutSeconds" in obj:
            timeout = self.positive_number(obj, path, "installTimeoutSeconds")
            if timeout is _MISSING:
                return None
        return FirmwareConfig(None if command is None else tuple(command), timeout)

    def paths(
        self,
        value: Any,
        base: Path,
        data_dir: str | Path | None,
        log_dir: str | Path | None,
    ) -> tuple[Path, Path, Path] | None:
        path = "paths"
        obj = self.fields(value, path, [], ["dataDir", "logDir", "ocppConfig"])
        if obj is None:
            return None
        data = self.override_or_file(obj, "dataDir", data_dir, base, base.parent / "data")
        logs = self.override_or_file(obj, "logDir", log_dir, base, base.parent / "logs")
        ocpp = self.override_or_file(obj, "ocppConfig", None, base, base / "ocpp16-config.json")
        if data is _MISSING or logs is _MISSING or ocpp is _MISSING:
            return None
        return data, logs, ocpp

    def override_or_file(
        self,
        obj: dict[str, Any],
        key: str,
        override: str | Path | None,
        base: Path,
        default: Path,
    ) -> Any:
        from_file = self.string(obj, "paths", key, default=None)
        if override is not None:
            if str(override).strip() == "":
                self.problem(f"paths.{key}", "override must not be empty")
                return _MISSING
            return Path(override).resolve()
        if from_file is _MISSING:
            return _MISSING
        if from_file is None:
            return default.resolve()
        return (base / from_file).resolve()


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _charge_point_id_problem(cp_id: str) -> str | None:
    # The id becomes the last path segment of the WebSocket URL and, with security profiles 1
    # and 2, the HTTP Basic auth user name, where a ':' would end the user name early.
    if not all(0x21 <= ord(c) <= 0x7E for c in cp_id):
        return "must be printable ASCII without whitespace"
    bad = sorted(set(cp_id) & set("/?#:"))
    if bad:
        return "must not contain " + " ".join(repr(c) for c in bad) + " (it is a URL path segment)"
    return None


def _uri_problem(uri: str) -> str | None:
    """Why `uri` cannot be a central system URI, or None if it can."""
    if any(c.isspace() for c in uri):
        return "must not contain whitespace"
    try:
        parts = urllib.parse.urlsplit(uri)
        parts.port  # noqa: B018 -- evaluated only for its ValueError on a bad port
    except ValueError as err:
        return f"not a valid URL: {err}"
    if parts.scheme not in ("ws", "wss"):
        return f"must be a ws:// or wss:// URL: {uri!r}"
    if not parts.hostname:
        return f"must name a host: {uri!r}"
    if parts.fragment:
        return f"must not have a #fragment: {uri!r}"
    return None
