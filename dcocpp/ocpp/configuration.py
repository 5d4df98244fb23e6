"""The OCPP 1.6 configuration keys behind GetConfiguration and ChangeConfiguration.

Three layers make up a key's value, later ones winning:

1. the base file (ocpp16-config.json): JSON values grouped by feature profile, like libocpp's
   v16 config. It also decides which optional keys this charger supports: a key of `SPECS` that
   the file leaves out is unknown to the central system (NotSupported / unknownKey). A bad
   base file is a `ConfigurationError` naming every problem.
2. patches from charger.json (ChargePointId, CentralSystemURI, NumberOfConnectors), so the two
   files cannot disagree about the charger's identity or size. The charger also says what its
   meter can measure (`measurable`): SupportedMeasurands must not list more, so that no
   measurand key can be set to something that would give empty meter values.
3. the user overlay: a flat JSON object ``key -> string`` of every writable key changed at run
   time, rewritten atomically before a change is acknowledged. A bad overlay entry is skipped
   with a warning: an old data directory must not brick the charger.

Key names are CiString50 and so compared case-insensitively wherever they come from outside
(GetConfiguration, ChangeConfiguration, both files): `ConnectionTimeout` is `ConnectionTimeOut`,
and every answer, log line and file written uses the spelling of `SPECS`.

Readonly keys are never taken from the overlay (they belong to the files an integrator edits),
so `set_value` on a readonly key changes it for this run only.

AuthorizationKey is write-only: GetConfiguration never reports it, and no log line or
exception text contains its value (or its length). `get` still returns it, for the transport.
Set over OCPP (ChangeConfiguration, `set_value`) it must be hex digits (`authkey`); the files
may also hold a legacy text key, which loads with a warning.

Pure synchronous code: callers in trio tasks call it directly; a change costs one fsync.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from ocpp.v16.enums import ConfigurationStatus, Measurand

from dcocpp.jsontypes import json_type
from dcocpp.ocpp import authkey
from dcocpp.ocpp.errors import OcppError
from dcocpp.storage.atomicfile import replace_file

__all__ = [
    "SPECS",
    "ConfigurationError",
    "ConfigurationStore",
    "KeySpec",
    "KeyType",
]

logger = logging.getLogger(__name__)

# ChangeConfiguration.req carries the value as CiString500.
_MAX_VALUE_LENGTH = 500
# Integers travel to timers, SQL and other peers; keep them in the signed 32-bit range.
_INT_MAX = 2**31 - 1
_INTEGER = re.compile(r"-?[0-9]+")  # not int(): it also takes "1_000", "+5" and "١٢"

# Feature profiles whose required keys must be configured whatever SupportedFeatureProfiles says.
_ALWAYS_REQUIRED_PROFILES = frozenset({"Internal", "Core", "Security"})


class ConfigurationError(OcppError):
    """A configuration file is unusable, or an internal `set_value` was refused.

    `problems` holds one ``<where>: <reason>`` line per problem found."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class KeyType(enum.Enum):
    BOOLEAN = "boolean"
    INTEGER = "integer"
    STRING = "string"
    CSL = "csl"  # comma-separated list


@attrs.frozen
class KeySpec:
    name: str
    profile: str
    type: KeyType
    readonly: bool
    reboot_required: bool = False
    write_only: bool = False
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None
    min_length: int | None = None
    allowed: frozenset[str] | None = None
    max_items_key: str | None = None
    only_increase: bool = False
    # Must the base file set it? Only enforced for a feature profile the charger supports.
    required: bool = False
    # CSL members must also be in the list held by this key (the measurands this charger has).
    allowed_key: str | None = None
    # Every CSL member must match this regular expression.
    item_pattern: str | None = None
    # STRING must be printable ASCII (it ends up in an HTTP header).
    printable_ascii: bool = False
    # Set over OCPP it must be an `authkey` hex key; the files may hold a legacy text key.
    hex_key: bool = False


def _spec(name: str, profile: str, type_: KeyType, readonly: bool, **kw: Any) -> KeySpec:
    return KeySpec(name=name, profile=profile, type=type_, readonly=readonly, **kw)


_B, _I, _S, _L = KeyType.BOOLEAN, KeyType.INTEGER, KeyType.STRING, KeyType.CSL
_R, _RW = True, False

_MEASURANDS = frozenset(m.value for m in Measurand)
_FEATURE_PROFILES = frozenset(
    {
        "Core",
        "FirmwareManagement",
        "LocalAuthListManagement",
        "Reservation",
        "SmartCharging",
        "RemoteTrigger",
    }
)
_PHASE_ROTATION = r"[0-9]+\.(NotApplicable|Unknown|RST|RTS|SRT|STR|TRS|TSR)"


def _measurand_list(name: str) -> KeySpec:
    return _spec(
        name,
        "Core",
        _L,
        _RW,
        required=True,
        allowed_key="SupportedMeasurands",
        max_items_key=f"{name}MaxLength",
    )


def _max_length(name: str, profile: str = "Core") -> KeySpec:
    return _spec(name, profile, _I, _R, minimum=0)


_ALL_SPECS = [
    # dcocpp's own keys; readonly because they describe this build and installation.
    _spec("ChargePointId", "Internal", _S, _R, required=True, min_length=1, max_length=48),
    _spec("CentralSystemURI", "Internal", _S, _R, required=True, min_length=1),
    _spec("RetryBackoffWaitMinimum", "Internal", _I, _R, required=True, minimum=0),
    _spec("RetryBackoffWaitMaximum", "Internal", _I, _R, required=True, minimum=0),
    _spec("ResponseTimeout", "Internal", _I, _R, required=True, minimum=1),
    _spec("LogMessagesMaxFileSize", "Internal", _I, _R, required=True, minimum=1),
    _spec("LogMessagesBackupCount", "Internal", _I, _R, required=True, minimum=0),
    _spec("SupportedMeasurands", "Internal", _L, _R, required=True, allowed=_MEASURANDS),
    # OCPP 1.6 section 9.1, Core profile.
    _spec("AllowOfflineTxForUnknownId", "Core", _B, _RW),
    _spec("AuthorizationCacheEnabled", "Core", _B, _RW),
    _spec("AuthorizeRemoteTxRequests", "Core", _B, _RW, required=True),
    _spec("BlinkRepeat", "Core", _I, _RW, minimum=0),
    _spec("ClockAlignedDataInterval", "Core", _I, _RW, required=True, minimum=0),
    _spec("ConnectionTimeOut", "Core", _I, _RW, required=True, minimum=0),
    _spec(
        "ConnectorPhaseRotation",
        "Core",
        _L,
        _RW,
        required=True,
        item_pattern=_PHASE_ROTATION,
        max_items_key="ConnectorPhaseRotationMaxLength",
    ),
    _max_length("ConnectorPhaseRotationMaxLength"),
    _spec("GetConfigurationMaxKeys", "Core", _I, _R, required=True, minimum=1),
    _spec("HeartbeatInterval", "Core", _I, _RW, required=True, minimum=0),
    _spec("LightIntensity", "Core", _I, _RW, minimum=0, maximum=100),
    _spec("LocalAuthorizeOffline", "Core", _B, _RW, required=True),
    _spec("LocalPreAuthorize", "Core", _B, _RW, required=True),
    _spec("MaxEnergyOnInvalidId", "Core", _I, _RW, minimum=0),
    _measurand_list("MeterValuesAlignedData"),
    _max_length("MeterValuesAlignedDataMaxLength"),
    _measurand_list("MeterValuesSampledData"),
    _max_length("MeterValuesSampledDataMaxLength"),
    _spec("MeterValueSampleInterval", "Core", _I, _RW, required=True, minimum=0),
    _spec("MinimumStatusDuration", "Core", _I, _RW, minimum=0),
    _spec("NumberOfConnectors", "Core", _I, _R, required=True, minimum=1),
    # Read-only here: a reset restarts the process (in place, or by its supervisor), which
    # either happens or exits for the supervisor to restart; there is nothing to retry, so
    # the value is 0 and a central system that asks for retries is told Rejected.
    _spec("ResetRetries", "Core", _I, _R, required=True, minimum=0),
    _spec("StopTransactionOnEVSideDisconnect", "Core", _B, _RW, required=True),
    _spec("StopTransactionOnInvalidId", "Core", _B, _RW, required=True),
    _measurand_list("StopTxnAlignedData"),
    _max_length("StopTxnAlignedDataMaxLength"),
    _measurand_list("StopTxnSampledData"),
    _max_length("StopTxnSampledDataMaxLength"),
    _spec(
        "SupportedFeatureProfiles",
        "Core",
        _L,
        _R,
        required=True,
        allowed=_FEATURE_PROFILES,
        max_items_key="SupportedFeatureProfilesMaxLength",
    ),
    _max_length("SupportedFeatureProfilesMaxLength"),
    _spec("TransactionMessageAttempts", "Core", _I, _RW, required=True, minimum=0),
    _spec("TransactionMessageRetryInterval", "Core", _I, _RW, required=True, minimum=0),
    _spec("UnlockConnectorOnEVSideDisconnect", "Core", _B, _RW, required=True),
    _spec("WebSocketPingInterval", "Core", _I, _RW, minimum=0),
    # 9.2 Local Auth List Management.
    _spec("LocalAuthListEnabled", "LocalAuthListManagement", _B, _RW, required=True),
    _spec("LocalAuthListMaxLength", "LocalAuthListManagement", _I, _R, required=True, minimum=0),
    _spec("SendLocalListMaxLength", "LocalAuthListManagement", _I, _R, required=True, minimum=0),
    # 9.3 Reservation.
    _spec("ReserveConnectorZeroSupported", "Reservation", _B, _R),
    # 9.4 Smart Charging.
    _spec("ChargeProfileMaxStackLevel", "SmartCharging", _I, _R, required=True, minimum=0),
    _spec(
        "ChargingScheduleAllowedChargingRateUnit",
        "SmartCharging",
        _L,
        _R,
        required=True,
        allowed=frozenset({"Current", "Power"}),
    ),
    _spec("ChargingScheduleMaxPeriods", "SmartCharging", _I, _R, required=True, minimum=1),
    _spec("ConnectorSwitch3to1PhaseSupported", "SmartCharging", _B, _R),
    _spec("MaxChargingProfilesInstalled", "SmartCharging", _I, _R, required=True, minimum=0),
    # Firmware Management (listed by libocpp and the OCTT for FTP/HTTP(S) downloads).
    _spec(
        "SupportedFileTransferProtocols",
        "FirmwareManagement",
        _L,
        _R,
        allowed=frozenset({"FTP", "FTPS", "HTTP", "HTTPS", "SFTP"}),
    ),
    # OCPP 1.6 security whitepaper.
    _spec("AdditionalRootCertificateCheck", "Security", _B, _R),
    _spec(
        "AuthorizationKey",
        "Security",
        _S,
        _RW,
        write_only=True,
        # What the files may hold: a legacy text key (16 to 40) or the hex digits (40 to 80).
        min_length=16,
        max_length=2 * authkey.MAX_OCTETS,
        printable_ascii=True,
        hex_key=True,
    ),
    _spec("CertificateSignedMaxChainSize", "Security", _I, _R, minimum=0, maximum=10000),
    _spec("CertificateStoreMaxLength", "Security", _I, _R, minimum=0),
    _spec("CpoName", "Security", _S, _RW),
    # A new profile takes effect by reconnecting, not by rebooting; going down is refused
    # (OCTT TC_084) because it would let anyone on the path weaken the connection.
    _spec(
        "SecurityProfile",
        "Security",
        _I,
        _RW,
        required=True,
        minimum=0,
        maximum=3,
        only_increase=True,
    ),
]

SPECS: Mapping[str, KeySpec] = {spec.name: spec for spec in _ALL_SPECS}


def _names(specs: Mapping[str, KeySpec]) -> dict[str, str]:
    """Key names as OCPP compares them (CiString50: case-insensitive) -> their spelling here."""
    return {name.casefold(): name for name in specs}


class _Invalid(Exception):
    """A value a key cannot take. The reason never quotes the whole value (it may be secret)."""


Lookup = Callable[[str], str | None]


def _no_lookup(key: str) -> str | None:
    return None


def _validate(spec: KeySpec, text: str, lookup: Lookup = _no_lookup) -> str:
    """Check `text` against `spec`; return its canonical OCPP string form or raise `_Invalid`.

    Checks that depend on another key's value (list length, allowed members) use `lookup`
    and are skipped while that key is unset."""
    if len(text) > _MAX_VALUE_LENGTH:
        raise _Invalid(f"must be at most {_MAX_VALUE_LENGTH} characters")
    if spec.type is KeyType.BOOLEAN:
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise _Invalid("must be true or false")
        return lowered
    if spec.type is KeyType.INTEGER:
        return str(_validate_integer(spec, text))
    if spec.type is KeyType.STRING:
        _validate_string(spec, text)
        return text
    return ",".join(_validate_list(spec, text, lookup))


def _validate_hex_key(spec: KeySpec, text: str) -> None:
    """What OCPP sets must be hex (the files may hold a legacy text key, see `authkey`)."""
    if spec.hex_key and not authkey.is_hex_key(text):
        low, high = 2 * authkey.MIN_OCTETS, 2 * authkey.MAX_OCTETS
        raise _Invalid(
            f"must be {low} to {high} hex digits"
            f" ({authkey.MIN_OCTETS} to {authkey.MAX_OCTETS} bytes)"
        )


def _validate_integer(spec: KeySpec, text: str) -> int:
    stripped = text.strip()
    if not _INTEGER.fullmatch(stripped):
        raise _Invalid("must be a decimal integer")
    number = int(stripped)
    low = spec.minimum if spec.minimum is not None else -_INT_MAX - 1
    high = spec.maximum if spec.maximum is not None else _INT_MAX
    if not low <= number <= high:
        raise _Invalid(f"must be between {low} and {high}")
    return number


def _validate_string(spec: KeySpec, text: str) -> None:
    low, high = spec.min_length, spec.max_length
    too_short = low is not None and len(text) < low
    too_long = high is not None and len(text) > high
    if too_short or too_long:
        if low is not None and high is not None:
            raise _Invalid(f"must be {low} to {high} characters")
        if low is not None:
            raise _Invalid(f"must be at least {low} characters")
        raise _Invalid(f"must be at most {high} characters")
    if spec.printable_ascii and not (text.isascii() and text.isprintable()):
        raise _Invalid("must be printable ASCII")


def _validate_list(spec: KeySpec, text: str, lookup: Lookup) -> list[str]:
    items = _split(text)
    if any(not item for item in items):
        raise _Invalid("must not contain an empty item")
    seen: set[str] = set()
    for item in items:
        if item in seen:
            raise _Invalid(f"lists {item!r} twice")
        seen.add(item)
        if spec.allowed is not None and item not in spec.allowed:
            raise _Invalid(f"{item!r} is not one of {', '.join(sorted(spec.allowed))}")
        if spec.item_pattern is not None and not re.fullmatch(spec.item_pattern, item):
            raise _Invalid(f"{item!r} does not match {spec.item_pattern}")
    if spec.allowed_key is not None and (supported := lookup(spec.allowed_key)) is not None:
        unsupported = [item for item in items if item not in _split(supported)]
        if unsupported:
            raise _Invalid(f"{unsupported[0]!r} is not in {spec.allowed_key} ({supported})")
    limit = lookup(spec.max_items_key) if spec.max_items_key is not None else None
    if limit is not None and len(items) > int(limit):
        raise _Invalid(f"has {len(items)} items; {spec.max_items_key} is {limit}")
    return items


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",")] if text.strip() else []


def _to_text(spec: KeySpec, value: str | int | bool) -> str:
    """A typed value (from code or a hand-edited overlay) in the OCPP string form."""
    if isinstance(value, bool):
        if spec.type is not KeyType.BOOLEAN:
            raise _Invalid(f"must be {_type_name(spec.type)}, not a boolean")
        return "true" if value else "false"
    if isinstance(value, int):
        if spec.type is not KeyType.INTEGER:
            raise _Invalid(f"must be {_type_name(spec.type)}, not an integer")
        return str(value)
    if isinstance(value, str):
        return value
    raise _Invalid(f"must be {_type_name(spec.type)}, not {type(value).__name__}")


def _from_json(spec: KeySpec, value: Any) -> str:
    """A base-file value: the JSON type must match the key type exactly."""
    if spec.type is KeyType.BOOLEAN:
        ok = isinstance(value, bool)
    elif spec.type is KeyType.INTEGER:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise _Invalid(f"must be {_type_name(spec.type)}, not {json_type(value)}")
    return _to_text(spec, value)


def _type_name(key_type: KeyType) -> str:
    return {
        KeyType.BOOLEAN: "true or false",
        KeyType.INTEGER: "an integer",
        KeyType.STRING: "a string",
        KeyType.CSL: "a comma-separated string",
    }[key_type]


def _shown(spec: KeySpec, value: str) -> str:
    return "(value hidden)" if spec.write_only else f"to {value}"


class ConfigurationStore:
    """The current value of every configuration key, persisted across restarts.

    Build one with `load`. Not thread-safe; meant for a single trio thread."""

    def __init__(
        self,
        specs: Mapping[str, KeySpec],
        values: dict[str, str],
        overlay: dict[str, str],
        user_path: Path,
    ):
        self._specs = specs
        self._names = _names(specs)
        self._values = values
        self._overlay = overlay
        self._user_path = user_path
        self._subscribers: dict[str, list[Callable[[str, str], None]]] = {}

    @classmethod
    def load(
        cls,
        base_path: Path,
        user_path: Path,
        *,
        patches: Mapping[str, str | int | bool],
        specs: Mapping[str, KeySpec] = SPECS,
        measurable: Collection[str] | None = None,
    ) -> ConfigurationStore:
        """Read the base file, apply `patches`, then the user overlay at `user_path` (which
        need not exist yet; it is created on the first change). `measurable`: the measurands
        this charger's meter values can carry (None: not checked); SupportedMeasurands must
        stay within them. Raise `ConfigurationError` listing every problem of the base file
        or the patches."""
        values, mentioned, problems = _load_base(Path(base_path), specs)
        for key, value in patches.items():
            spec = specs.get(key)
            if spec is None:
                problems.append(f"patch {key}: unknown configuration key")
                continue
            try:
                values[key] = _validate(spec, _to_text(spec, value))
            except _Invalid as err:
                problems.append(f"patch {key}: {err}")
        problems += _check_together(values, mentioned | set(patches), specs, str(base_path))
        supported = values.get("SupportedMeasurands")
        if measurable is not None and supported is not None:
            promised = [m for m in _split(supported) if m not in measurable]
            if promised:
                problems.append(
                    f"{base_path}: Internal.SupportedMeasurands: {', '.join(promised)}"
                    f" cannot be measured by this charger (it measures"
                    f" {', '.join(sorted(measurable))})"
                )
        if problems:
            raise ConfigurationError(problems)

        overlay = _load_overlay(Path(user_path), specs, values)
        values.update(overlay)
        for spec in specs.values():
            text = values.get(spec.name)
            if spec.hex_key and text is not None and not authkey.is_hex_key(text):
                where = user_path if spec.name in overlay else base_path
                logger.warning(
                    "%s: %s is not %d to %d hex digits: taken as text, the UTF-8 bytes of which"
                    " are the Basic-auth password (as earlier dcocpp did); set it in hex",
                    where,
                    spec.name,
                    2 * authkey.MIN_OCTETS,
                    2 * authkey.MAX_OCTETS,
                )
        return cls(specs, values, overlay, Path(user_path))

    # -- reading ----------------------------------------------------------------------------

    @property
    def keys(self) -> list[str]:
        """Every key this charger supports: the ones with a value, plus write-only keys."""
        return [name for name in self._specs if self._supported(name)]

    def canonical(self, key: str) -> str | None:
        """The spelling of `key` here, whatever its letters (OCPP key names are CiString50);
        None for a key this charger does not know."""
        return self._names.get(key.casefold())

    def get(self, key: str) -> str | None:
        """The OCPP string form ("true", "300", "a,b"); None if the key is unset or unknown."""
        return self._values.get(key)

    def get_int(self, key: str) -> int:
        """The value of an INTEGER key; KeyError if it is unset (a base file bug)."""
        return int(self._require(key, KeyType.INTEGER))

    def get_bool(self, key: str) -> bool:
        return self._require(key, KeyType.BOOLEAN) == "true"

    def get_list(self, key: str) -> list[str]:
        return _split(self._require(key, KeyType.CSL))

    def get_configuration(
        self, keys: Sequence[str] | None
    ) -> tuple[list[dict[str, object]], list[str]]:
        """The ``configurationKey`` and ``unknownKey`` lists of a GetConfiguration.conf.

        No keys (None or empty) asks for every key that has a value. A key asked for in any
        letters is reported once, in its spelling here; an unknown one as asked. A write-only
        key is never reported: asked for by name, it goes to ``unknownKey``, so the answer
        does not even tell whether one is set. Limiting the request to
        GetConfigurationMaxKeys is the caller's job."""
        if not keys:
            names = [name for name in self._values if not self._specs[name].write_only]
            return [self._entry(name) for name in self._ordered(names)], []
        known: dict[str, dict[str, object]] = {}
        unknown: list[str] = []
        for asked in dict.fromkeys(keys):
            name = self.canonical(asked)
            if name is not None and not self._specs[name].write_only and name in self._values:
                known.setdefault(name, self._entry(name))
            else:
                unknown.append(asked)
        return list(known.values()), unknown

    # -- changing ---------------------------------------------------------------------------

    def change(self, key: str, value: str) -> ConfigurationStatus:
        """Apply a ChangeConfiguration.req; the new value is on disk before this returns
        Accepted or RebootRequired. `key` in any letters. Subscribers are called after
        storing; an exception from one propagates (the value stays changed)."""
        key = self.canonical(key) or key
        spec = self._specs.get(key)
        if spec is None or not self._supported(key):
            logger.info("configuration key %s: change refused, key not supported", key)
            return ConfigurationStatus.not_supported
        if spec.readonly:
            logger.info("configuration key %s: change refused, key is read-only", key)
            return ConfigurationStatus.rejected
        try:
            _validate_hex_key(spec, value)
            text = _validate(spec, value, self._values.get)
            current = self._values.get(key)
            if spec.only_increase and current is not None and int(text) < int(current):
                raise _Invalid(f"may only increase (currently {current})")
        except _Invalid as err:
            logger.info("configuration key %s: change rejected: %s", key, err)
            return ConfigurationStatus.rejected
        try:
            self._store(spec, text)
        except OSError as err:
            # Not on disk means not changed: the central system must not believe otherwise.
            logger.error("configuration key %s: change not stored: %s", key, err)
            return ConfigurationStatus.rejected
        self._notify(key, text)
        if spec.reboot_required:
            return ConfigurationStatus.reboot_required
        return ConfigurationStatus.accepted

    def set_value(self, key: str, value: str | int | bool) -> None:
        """Change a key from inside the charger (e.g. HeartbeatInterval from
        BootNotification.conf, or falling back to the previous SecurityProfile after a failed
        upgrade). Bypasses readonly and only_increase, but not type and range checks. Raises
        `ConfigurationError` for an unknown key, an invalid value or a failed write."""
        spec = self._specs.get(key)
        if spec is None:
            raise ConfigurationError([f"{key}: unknown configuration key"])
        try:
            _validate_hex_key(spec, _to_text(spec, value))
            text = _validate(spec, _to_text(spec, value), self._values.get)
        except _Invalid as err:
            raise ConfigurationError([f"{key}: {err}"]) from None
        if self._values.get(key) == text:
            return  # in force already (the same HeartbeatInterval at every boot): no news
        try:
            self._store(spec, text)
        except OSError as err:
            raise ConfigurationError([f"{key}: cannot store {self._user_path}: {err}"]) from err
        self._notify(key, text)

    def subscribe(self, key: str, callback: Callable[[str, str], None]) -> Callable[[], None]:
        """Call ``callback(key, new_value)`` after every successful change of `key`.
        Returns a function that unsubscribes (calling it twice is harmless)."""
        if key not in self._specs:
            raise KeyError(key)
        callbacks = self._subscribers.setdefault(key, [])
        callbacks.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                callbacks.remove(callback)

        return unsubscribe

    # -- internals --------------------------------------------------------------------------

    def _supported(self, key: str) -> bool:
        spec = self._specs.get(key)
        return spec is not None and (key in self._values or spec.write_only)

    def _require(self, key: str, key_type: KeyType) -> str:
        spec = self._specs[key]
        if spec.type is not key_type:
            raise TypeError(f"{key} is {spec.type.name}, not {key_type.name}")
        return self._values[key]

    def _ordered(self, names: Iterable[str]) -> list[str]:
        wanted = set(names)
        return [name for name in self._specs if name in wanted]

    def _entry(self, name: str) -> dict[str, object]:
        return {"key": name, "readonly": self._specs[name].readonly, "value": self._values[name]}

    def _store(self, spec: KeySpec, text: str) -> None:
        if not spec.readonly:
            overlay = {**self._overlay, spec.name: text}
            _write_atomically(self._user_path, overlay)
            self._overlay = overlay
        self._values[spec.name] = text
        logger.info("configuration key %s changed %s", spec.name, _shown(spec, text))

    def _notify(self, key: str, text: str) -> None:
        for callback in list(self._subscribers.get(key, ())):
            callback(key, text)


def _load_base(
    path: Path, specs: Mapping[str, KeySpec]
) -> tuple[dict[str, str], set[str], list[str]]:
    """The valid values of the base file, every key it names, and its problems."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError([f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigurationError([f"{path}: cannot read file: {err}"]) from None
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        raise ConfigurationError([f"{path}: invalid JSON at {where}: {err.msg}"]) from None
    if not isinstance(document, dict):
        raise ConfigurationError([f"{path}: must be a JSON object of feature profiles"])

    profiles = {spec.profile for spec in specs.values()}
    names = _names(specs)
    values: dict[str, str] = {}
    mentioned: set[str] = set()
    seen: dict[str, dict[str, str]] = {}  # profile -> key -> as written there
    problems: list[str] = []
    for profile, group in document.items():
        if profile not in profiles:
            problems.append(f"{path}: {profile}: unknown feature profile")
            continue
        if not isinstance(group, dict):
            problems.append(f"{path}: {profile}: must be an object of configuration keys")
            continue
        for written, value in group.items():
            where = f"{path}: {profile}.{written}"
            key = names.get(written.casefold())
            if key is None:
                problems.append(f"{where}: unknown configuration key")
                continue
            if key in seen.get(profile, {}):
                first = seen[profile][key]
                problems.append(
                    f"{where}: also set as {profile}.{first} (key names are case-insensitive)"
                )
                continue
            mentioned.add(key)
            seen.setdefault(profile, {})[key] = written
            spec = specs[key]
            if spec.profile != profile:
                problems.append(f"{where}: belongs in {spec.profile}")
            else:
                try:
                    values[key] = _validate(spec, _from_json(spec, value))
                except _Invalid as err:
                    problems.append(f"{where}: {err}")
    return values, mentioned, problems


def _check_together(
    values: dict[str, str], mentioned: set[str], specs: Mapping[str, KeySpec], where: str
) -> list[str]:
    """Checks that need more than one key: required keys and limits set by other keys.
    A key that is `mentioned` but has no value was already reported as invalid."""
    problems = []
    supported = set(_split(values.get("SupportedFeatureProfiles", "")))
    for spec in specs.values():
        profile_used = spec.profile in _ALWAYS_REQUIRED_PROFILES or spec.profile in supported
        if spec.required and profile_used and spec.name not in mentioned:
            problems.append(f"{where}: {spec.profile}.{spec.name}: required key is missing")
        elif spec.name in values:
            try:
                _validate(spec, values[spec.name], values.get)
            except _Invalid as err:
                problems.append(f"{where}: {spec.profile}.{spec.name}: {err}")
    low, high = values.get("RetryBackoffWaitMinimum"), values.get("RetryBackoffWaitMaximum")
    if low is not None and high is not None and int(low) > int(high):
        problems.append(
            f"{where}: Internal.RetryBackoffWaitMinimum: must not exceed RetryBackoffWaitMaximum"
        )
    return problems


def _load_overlay(
    path: Path, specs: Mapping[str, KeySpec], values: Mapping[str, str]
) -> dict[str, str]:
    """The usable entries of the user overlay; anything else is skipped with a warning (and
    dropped from the file at the next change)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        logger.warning("ignoring user configuration %s: %s", path, err)
        return {}
    if not isinstance(document, dict):
        logger.warning("ignoring user configuration %s: not a JSON object", path)
        return {}

    names = _names(specs)
    overlay: dict[str, str] = {}
    for written, value in document.items():
        key = names.get(written.casefold())
        if key is None:
            logger.warning("user configuration %s: skipping unknown key %s", path, written)
            continue
        if key in overlay:
            logger.warning("user configuration %s: skipping %s: set twice", path, written)
            continue
        spec = specs[key]
        if spec.readonly:
            logger.warning("user configuration %s: skipping read-only key %s", path, key)
            continue
        try:
            if not isinstance(value, str | int | bool):
                raise _Invalid(f"must be {_type_name(spec.type)}")
            overlay[key] = _validate(spec, _to_text(spec, value), {**values, **overlay}.get)
        except _Invalid as err:
            logger.warning("user configuration %s: skipping %s: %s", path, key, err)
    return overlay


def _write_atomically(path: Path, overlay: Mapping[str, str]) -> None:
    """Replace `path` so that after a power cut it holds either the old or the new overlay."""
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, json.dumps(overlay, indent=2, sort_keys=True) + "\n")
