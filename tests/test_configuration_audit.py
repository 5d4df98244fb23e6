"""No dead configuration: every field of charger.json and every OCPP key the charger ships is
read by code that acts on it, or is a description of the charger that is true.

Static scans of the package with `ast` (no import side effects, no running charger):

- a field of the configuration classes (`dcocpp.config`) counts as read when some module other
  than config.py loads an attribute of that name. By name only, so a field whose name another
  object also uses (`id`, `path`) can hide; a field with its own name cannot.
- an OCPP key counts as read when its name is a string literal argument of a call that reads or
  watches a key (`READERS`), or when the key store itself enforces it (a list's `*MaxLength`,
  the `SupportedMeasurands` a measurand list must stay within). The keys that only describe the
  charger to the central system are listed in `REPORT_ONLY`, each with why its value is true.

Each scan is shown to catch a planted dead field or key, so a passing audit means something.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs
import pytest
from ocpp.v16.enums import ReadingContext

from dcocpp.config import (
    ChargePointConfig,
    ChargerConfig,
    ConnectorConfig,
    SecurityConfig,
    load_charger_config,
)
from dcocpp.connector.metering import MEASURANDS, meter_value
from dcocpp.hardware.interface import MeterReading
from dcocpp.ocpp.configuration import SPECS, ConfigurationError
from dcocpp.ocpp.transfer import SUPPORTED_PROTOCOLS
from dcocpp.station.station import load_configuration_store

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "dcocpp"
CONFIG_MODULE = PACKAGE / "config.py"
# The key files the charger ships: the one beside charger.json, and the demo's packaged copy.
KEY_FILES = (REPO / "configs" / "ocpp16-config.json", PACKAGE / "defaults" / "ocpp16-config.json")
CONFIG_CLASSES = (ChargerConfig, ChargePointConfig, ConnectorConfig, SecurityConfig)

# Calls that read a key's value or react to its changes (`_flag` is the authorizer's reader
# of optional boolean keys; `_sleep_unless_changed` the connector's wait that a new interval
# cuts short).
READERS = frozenset(
    {"get", "get_int", "get_bool", "get_list", "subscribe", "_flag", "_sleep_unless_changed"}
)

# Keys that act on nothing inside the charger: they tell the central system what the charger is.
# Each must be true for this charger, for the reason given.
REPORT_ONLY: Mapping[str, str] = {
    # Patched from charger.json at every start (station.load_configuration_store), so the key
    # file cannot disagree with what the charger connects as (checked below).
    "ChargePointId": "chargePoint.id, the id appended to the URL and sent as the Basic-auth user",
    "CentralSystemURI": "chargePoint.centralSystemURI (or --csms), the URL connected to",
    "NumberOfConnectors": "the number of connectors[] in charger.json",
    "SupportedFileTransferProtocols": "what dcocpp.ocpp.transfer downloads and uploads"
    " (SUPPORTED_PROTOCOLS)",
    # A DC gun has no AC phases.
    "ConnectorPhaseRotation": "0.NotApplicable: no phase rotation on a DC charger",
    "ConnectorSwitch3to1PhaseSupported": "false: a DC charger switches no phases",
    # Read-only 0: a reset restarts the process (in place, or by its supervisor); dcocpp has no
    # reset to retry.
    "ResetRetries": "0 retries: nothing is retried",
}


# --- the scans -------------------------------------------------------------------------------


def _trees(root: Path, exclude: Iterable[Path] = ()) -> list[ast.Module]:
    skipped = set(exclude)
    return [
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for path in sorted(root.rglob("*.py"))
        if path not in skipped
    ]


def attributes_loaded(trees: Iterable[ast.Module]) -> set[str]:
    """Every attribute name the code reads (`x.name` in a load context)."""
    return {
        node.attr
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)
    }


def keys_read(trees: Iterable[ast.Module]) -> set[str]:
    """Every string literal passed to a key reader (`store.get_int("HeartbeatInterval")`)."""
    found = set()
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name not in READERS:
                continue
            found |= {
                arg.value
                for arg in node.args
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            }
    return found


def unread_fields(classes: Iterable[type], loaded: set[str]) -> list[str]:
    return [
        f"{cls.__name__}.{field.name}"
        for cls in classes
        for field in attrs.fields(cls)
        if field.name not in loaded
    ]


def keys_acted_on_by_the_store() -> set[str]:
    """Keys the store itself enforces while validating another key's value."""
    return {
        key
        for spec in SPECS.values()
        for key in (spec.max_items_key, spec.allowed_key)
        if key is not None
    }


def dead_keys(shipped: Iterable[str], read: set[str]) -> list[str]:
    acted_on = read | keys_acted_on_by_the_store() | set(REPORT_ONLY)
    return [key for key in shipped if key not in acted_on]


def shipped_keys(path: Path) -> list[str]:
    document = json.loads(path.read_text(encoding="utf-8"))
    return [key for group in document.values() for key in group]


@pytest.fixture(scope="module")
def package_trees() -> list[ast.Module]:
    return _trees(PACKAGE, exclude=[CONFIG_MODULE])


# --- charger.json ------------------------------------------------------------------------------


def test_every_charger_json_field_is_read_outside_the_loader(
    package_trees: list[ast.Module],
) -> None:
    assert unread_fields(CONFIG_CLASSES, attributes_loaded(package_trees)) == []


@attrs.frozen
class _PlantedConfig:
    vendor: str  # read by the station (BootNotification)
    planted_sample_interval_s: int  # like meterSampleIntervalSeconds was: read by nothing


def test_the_field_audit_catches_a_dead_field(package_trees: list[ast.Module]) -> None:
    loaded = attributes_loaded(package_trees)
    assert unread_fields([_PlantedConfig], loaded) == ["_PlantedConfig.planted_sample_interval_s"]


# --- ocpp16-config.json ------------------------------------------------------------------------


@pytest.mark.parametrize("path", KEY_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_ocpp_key_is_read_or_a_true_description(
    package_trees: list[ast.Module], path: Path
) -> None:
    assert dead_keys(shipped_keys(path), keys_read(package_trees)) == []


def test_the_key_audit_catches_a_dead_key() -> None:
    read = keys_read(_trees(PACKAGE))
    assert dead_keys(["HeartbeatInterval", "PlantedNobodyReadsThis"], read) == [
        "PlantedNobodyReadsThis"
    ]
    # A key only written (here: "Written") is not read.
    tree = ast.parse('store.set_value("Written", 1)\nstore.get_int("Read")')
    assert keys_read([tree]) == {"Read"}


def test_report_only_keys_are_shipped_and_not_also_read() -> None:
    # The allow-list must not grow stale: every entry is in the shipped file, and none is a
    # key that code reads after all (it would then need no excuse).
    read = keys_read(_trees(PACKAGE))
    for key in REPORT_ONLY:
        assert key in shipped_keys(KEY_FILES[0]), key
        assert key not in read, key


def test_the_shipped_key_files_are_the_same() -> None:
    first, demo = (json.loads(path.read_text(encoding="utf-8")) for path in KEY_FILES)
    assert first == demo


def test_patched_keys_describe_the_shipped_charger(tmp_path: Path) -> None:
    config = load_charger_config(
        REPO / "configs" / "charger.json", data_dir=tmp_path / "data", log_dir=tmp_path / "logs"
    )
    store = load_configuration_store(config)
    assert store.get("ChargePointId") == config.charge_point.id
    assert store.get("CentralSystemURI") == config.charge_point.central_system_uri
    assert store.get_int("NumberOfConnectors") == len(config.connectors)
    # And the file itself does not say otherwise (someone reading it would believe it).
    document = json.loads(KEY_FILES[0].read_text(encoding="utf-8"))
    assert document["Internal"]["ChargePointId"] == config.charge_point.id
    assert document["Core"]["NumberOfConnectors"] == len(config.connectors)
    protocols = ",".join(SUPPORTED_PROTOCOLS)
    assert store.get("SupportedFileTransferProtocols") == protocols
    assert document["FirmwareManagement"]["SupportedFileTransferProtocols"] == protocols


def test_supported_measurands_are_the_ones_the_meter_values_carry() -> None:
    """SupportedMeasurands bounds what the central system may configure: each one listed must
    give a sampled value (a measurand the meter cannot give would be silently left out, and
    a sample of nothing else would be no message at all)."""
    document = json.loads(KEY_FILES[0].read_text(encoding="utf-8"))
    measurands = document["Internal"]["SupportedMeasurands"].split(",")
    assert set(measurands) <= MEASURANDS
    # SoC only while the EV tells it: this one does.
    reading = MeterReading(
        energy_wh=1000.0, power_w=50_000.0, current_a=120.0, voltage_v=400.0, soc=50.0
    )
    for measurand in measurands:
        sample = meter_value(
            reading, [measurand], ReadingContext.sample_periodic, "2026-01-01T00:00:00Z"
        )
        assert sample is not None
        assert [v["measurand"] for v in sample["sampled_value"]] == [measurand]


def test_the_station_refuses_a_key_file_promising_what_the_meter_cannot_measure(
    tmp_path: Path,
) -> None:
    document = json.loads(KEY_FILES[0].read_text(encoding="utf-8"))
    document["Internal"]["SupportedMeasurands"] += ",Frequency"
    key_file = tmp_path / "ocpp16-config.json"
    key_file.write_text(json.dumps(document), encoding="utf-8")
    charger = json.loads((REPO / "configs" / "charger.json").read_text(encoding="utf-8"))
    charger["paths"] = {"ocppConfig": str(key_file)}
    for key, value in charger["security"].items():
        charger["security"][key] = str((REPO / "configs" / value).resolve())
    (tmp_path / "charger.json").write_text(json.dumps(charger), encoding="utf-8")
    config = load_charger_config(
        tmp_path / "charger.json", data_dir=tmp_path / "data", log_dir=tmp_path / "logs"
    )
    with pytest.raises(ConfigurationError, match="Frequency cannot be measured by this charger"):
        load_configuration_store(config)


def test_no_key_of_an_unsupported_feature_profile_is_shipped() -> None:
    """A key of a profile the charger does not implement would tell the central system it
    can (e.g. SupportedFileTransferProtocols without FirmwareManagement)."""
    document = json.loads(KEY_FILES[0].read_text(encoding="utf-8"))
    supported = set(document["Core"]["SupportedFeatureProfiles"].split(","))
    for group, keys in document.items():
        for key in keys:
            profile = SPECS[key].profile
            assert profile in supported | {"Internal", "Core", "Security"}, (group, key)
