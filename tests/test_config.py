"""charger.json loading: every rule reports the field it is about, all at once."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dcocpp.config import ConfigError, ConfigProblem, load_charger_config

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "configs" / "charger.json"

VALID: dict[str, Any] = {
    "chargePoint": {
        "id": "CP-1",
        "vendor": "dcocpp",
        "model": "DC-2G-150",
        "firmwareVersion": "0.1.0",
        "centralSystemURI": "wss://csms.example.com/ocpp/",
        "usePLC": True,
        "canInterface": "can0",
    },
    "connectors": [
        {"id": 1, "plcId": 0, "label": "A", "maxCurrentA": 200, "maxPowerW": 75000},
        {"id": 2, "plcId": 1, "label": "B", "maxCurrentA": 200.5, "maxPowerW": 75000},
    ],
    "security": {
        "csmsCaBundle": "certs/ca.pem",
        "clientCertDir": "certs/client",
        "keyDir": "/etc/dcocpp/keys",
    },
}


def write(tmp_path: Path, document: Any, name: str = "charger.json") -> Path:
    path = tmp_path / "etc" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    text = document if isinstance(document, str) else json.dumps(document)
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, document: Any, **overrides: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_charger_config(write(tmp_path, document), **overrides)
    return {p.path: p.reason for p in info.value.problems}


def changed(**sections: Any) -> dict[str, Any]:
    """VALID with some fields replaced; a value of ... deletes the field."""
    document = copy.deepcopy(VALID)
    for dotted, value in sections.items():
        *parents, last = dotted.split("__")
        target: Any = document
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return document


def test_shipped_charger_json_loads() -> None:
    config = load_charger_config(SHIPPED)
    cp = config.charge_point
    assert (cp.id, cp.vendor, cp.model, cp.firmware_version) == (
        "DCOCPP-001",
        "dcocpp",
        "DC-2G-150",
        "0.1.0",
    )
    assert cp.central_system_uri == "ws://127.0.0.1:8180/steve/websocket/CentralSystemService/"
    assert cp.use_plc is False
    assert cp.can_interface == "can0"
    assert [(c.id, c.plc_id, c.label) for c in config.connectors] == [
        (1, 0, "Gun A"),
        (2, 1, "Gun B"),
    ]
    assert all(c.max_current_a == 200 and c.max_power_w == 75000 for c in config.connectors)
    assert all(c.fixed_cable for c in config.connectors)
    assert config.path == SHIPPED
    assert config.data_dir == REPO / "data"
    assert config.log_dir == REPO / "logs"
    assert config.ocpp_config_path == REPO / "configs" / "ocpp16-config.json"
    assert config.ocpp_config_path.is_file()
    assert config.security.csms_ca_bundle == REPO / "data" / "certs" / "ca" / "csms-ca.pem"
    assert config.security.client_cert_dir == REPO / "data" / "certs" / "client"
    assert config.security.key_dir == REPO / "data" / "keys"


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = load_charger_config(write(tmp_path, VALID))
    etc = tmp_path / "etc"
    assert config.data_dir == tmp_path / "data"
    assert config.log_dir == tmp_path / "logs"
    assert config.ocpp_config_path == etc / "ocpp16-config.json"
    assert config.security.csms_ca_bundle == etc / "certs" / "ca.pem"
    assert config.security.client_cert_dir == etc / "certs" / "client"
    assert config.security.key_dir == Path("/etc/dcocpp/keys")
    c1, c2 = config.connectors
    assert c1.fixed_cable is True
    assert c2.max_current_a == 200.5
    assert config.charge_point.serial_number is None


def test_defaults_follow_the_config_not_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run from another directory: nothing may default to the cwd (or /tmp): every default
    # path follows the configuration file, wherever the repository was cloned.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_charger_config(SHIPPED)
    for path in (config.data_dir, config.log_dir, config.ocpp_config_path):
        assert path.is_relative_to(REPO)
        assert not path.is_relative_to(elsewhere)


def test_paths_section_resolves_against_the_file(tmp_path: Path) -> None:
    document = changed(paths={"dataDir": "state", "logDir": "/var/log/x", "ocppConfig": "o.json"})
    config = load_charger_config(write(tmp_path, document))
    assert config.data_dir == tmp_path / "etc" / "state"
    assert config.log_dir == Path("/var/log/x")
    assert config.ocpp_config_path == tmp_path / "etc" / "o.json"


def test_overrides_replace_file_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_charger_config(
        write(tmp_path, changed(paths={"dataDir": "state"})),
        csms="ws://10.0.0.5:9000/ocpp",
        data_dir="here/data",
        log_dir=tmp_path / "l",
    )
    assert config.charge_point.central_system_uri == "ws://10.0.0.5:9000/ocpp"
    assert config.data_dir == tmp_path / "here" / "data"
    assert config.log_dir == tmp_path / "l"


def test_csms_override_is_validated(tmp_path: Path) -> None:
    found = problems(tmp_path, VALID, csms="http://csms.example.com/")
    assert list(found) == ["chargePoint.centralSystemURI"]
    assert "ws:// or wss:// URL" in found["chargePoint.centralSystemURI"]


def test_csms_override_stands_in_for_a_bad_file_value(tmp_path: Path) -> None:
    document = changed(chargePoint__centralSystemURI="ftp://nope")
    config = load_charger_config(write(tmp_path, document), csms="ws://h/ocpp")
    assert config.charge_point.central_system_uri == "ws://h/ocpp"


def test_empty_override_is_refused(tmp_path: Path) -> None:
    assert "paths.dataDir" in problems(tmp_path, VALID, data_dir="")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load_charger_config(missing)
    assert info.value.problems == [ConfigProblem(str(missing), "file not found")]


def test_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '{\n  "chargePoint": {\n    "id": "x",,\n  }\n}\n')
    with pytest.raises(ConfigError) as info:
        load_charger_config(path)
    [problem] = info.value.problems
    assert problem.path == str(path)
    assert "line 3 column" in problem.reason


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    path = write(tmp_path, [1, 2])
    with pytest.raises(ConfigError) as info:
        load_charger_config(path)
    assert info.value.problems[0].path == str(path)


def test_error_str_has_one_line_per_problem(tmp_path: Path) -> None:
    document = changed(chargePoint__vendor="", connectors__1__plcId=0)
    with pytest.raises(ConfigError) as info:
        load_charger_config(write(tmp_path, document))
    assert str(info.value).splitlines() == [
        "chargePoint.vendor: must not be empty",
        "connectors[1].plcId: must be unique; connectors[0].plcId is also 0",
    ]


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    document = changed(
        chargePoint__id="a/b",
        chargePoint__usePLC=1,
        chargePoint__centralSystemURI="http://x",
        connectors__0__maxPowerW=-1,
        connectors__1__plcId=16,
        security__keyDir=...,
        extra=True,
    )
    assert set(problems(tmp_path, document)) == {
        "chargePoint.id",
        "chargePoint.usePLC",
        "chargePoint.centralSystemURI",
        "connectors[0].maxPowerW",
        "connectors[1].plcId",
        "security.keyDir",
        "extra",
    }


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("id", "", "must not be empty"),
        ("id", "has space", "printable ASCII without whitespace"),
        ("id", "a/b", "'/'"),
        ("id", "a:b", "':'"),
        ("id", "x" * 49, "at most 48"),
        ("vendor", "", "must not be empty"),
        ("vendor", "v" * 21, "at most 20"),
        ("model", "   ", "must not be empty"),
        ("model", "m" * 21, "at most 20"),
        ("firmwareVersion", "f" * 51, "at most 50"),
        ("serialNumber", "s" * 26, "at most 25"),
        ("serialNumber", 12, "must be a string"),
        ("usePLC", "yes", "must be true or false"),
        ("usePLC", 1, "must be true or false"),
        ("canInterface", "", "must not be empty"),
        ("centralSystemURI", "http://csms/", "ws:// or wss:// URL"),
        ("centralSystemURI", "ws:///path", "must name a host"),
        ("centralSystemURI", "ws://host:99999/", "not a valid URL"),
        ("centralSystemURI", "ws://host/a b", "whitespace"),
        ("centralSystemURI", "ws://host/#x", "fragment"),
        ("centralSystemURI", "csms.example.com", "ws:// or wss:// URL"),
    ],
)
def test_charge_point_fields(tmp_path: Path, field: str, value: Any, reason: str) -> None:
    found = problems(tmp_path, changed(**{f"chargePoint__{field}": value}))
    assert list(found) == [f"chargePoint.{field}"]
    assert reason in found[f"chargePoint.{field}"]


def test_serial_number_is_optional_and_kept(tmp_path: Path) -> None:
    document = changed(chargePoint__serialNumber="SN-42")
    assert load_charger_config(write(tmp_path, document)).charge_point.serial_number == "SN-42"


@pytest.mark.parametrize(
    "field", ["id", "vendor", "model", "firmwareVersion", "centralSystemURI", "usePLC"]
)
def test_required_charge_point_fields(tmp_path: Path, field: str) -> None:
    found = problems(tmp_path, changed(**{f"chargePoint__{field}": ...}))
    assert found == {f"chargePoint.{field}": "required field is missing"}


@pytest.mark.parametrize("section", ["chargePoint", "connectors", "security"])
def test_required_sections(tmp_path: Path, section: str) -> None:
    assert problems(tmp_path, changed(**{section: ...})) == {section: "required field is missing"}


def test_unknown_fields_are_typos(tmp_path: Path) -> None:
    document = changed(
        chargePoint__centralSystemUri="ws://x/",
        connectors__0__maxCurrent=10,
        security__caBundle="x",
        paths={"datadir": "x"},
    )
    found = problems(tmp_path, document)
    assert found == {
        "chargePoint.centralSystemUri": "unknown field",
        "connectors[0].maxCurrent": "unknown field",
        "security.caBundle": "unknown field",
        "paths.datadir": "unknown field",
    }


def test_duplicate_json_keys_are_reported(tmp_path: Path) -> None:
    text = json.dumps(VALID).replace('"vendor": "dcocpp"', '"vendor": "a", "vendor": "b"')
    found = problems(tmp_path, text)
    assert list(found) == ["chargePoint.vendor"]
    assert "duplicate" in found["chargePoint.vendor"]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("plcId", 16, "between 0 and 15"),
        ("plcId", -1, "between 0 and 15"),
        ("plcId", True, "must be an integer, not a boolean"),
        ("plcId", 1.0, "must be an integer"),
        ("label", "", "must not be empty"),
        ("maxCurrentA", 0, "positive"),
        ("maxCurrentA", -5.5, "positive"),
        ("maxCurrentA", True, "must be a number, not a boolean"),
        ("maxCurrentA", "200", "must be a number"),
        ("maxPowerW", 0.0, "positive"),
        ("fixedCable", "no", "must be true or false"),
        ("canInterface", 0, "must be a string"),
    ],
)
def test_connector_fields(tmp_path: Path, field: str, value: Any, reason: str) -> None:
    found = problems(tmp_path, changed(**{f"connectors__0__{field}": value}))
    assert list(found) == [f"connectors[0].{field}"]
    assert reason in found[f"connectors[0].{field}"]


def test_non_finite_numbers_are_refused(tmp_path: Path) -> None:
    text = json.dumps(VALID).replace('"maxCurrentA": 200,', '"maxCurrentA": Infinity,')
    assert "connectors[0].maxCurrentA" in problems(tmp_path, text)


def test_optional_connector_fields(tmp_path: Path) -> None:
    document = changed(connectors__0__canInterface="can0", connectors__0__fixedCable=False)
    c1 = load_charger_config(write(tmp_path, document)).connectors[0]
    assert c1.fixed_cable is False


def test_meter_sample_interval_field_is_refused_and_says_where_the_interval_is(
    tmp_path: Path,
) -> None:
    # It was documented but never read: the OCPP key is what sets the interval. A config that
    # still carries it must learn that (and stop believing in its value), not read "unknown".
    found = problems(
        tmp_path,
        changed(
            connectors__0__meterSampleIntervalSeconds=10,
            connectors__1__meterSampleIntervalSeconds=10,
        ),
    )
    assert list(found) == [
        "connectors[0].meterSampleIntervalSeconds",
        "connectors[1].meterSampleIntervalSeconds",
    ]
    reason = found["connectors[0].meterSampleIntervalSeconds"]
    assert reason.startswith("no longer used")
    assert "MeterValueSampleInterval in ocpp16-config.json" in reason
    assert "unknown" not in reason


def test_one_can_interface_per_charger(tmp_path: Path) -> None:
    found = problems(tmp_path, changed(connectors__1__canInterface="can1"))
    assert list(found) == ["connectors[1].canInterface"]
    assert "must equal chargePoint.canInterface ('can0')" in found["connectors[1].canInterface"]


def test_plc_ids_are_unique(tmp_path: Path) -> None:
    found = problems(tmp_path, changed(connectors__1__plcId=0))
    assert found == {"connectors[1].plcId": "must be unique; connectors[0].plcId is also 0"}


def test_connector_ids_may_come_in_any_order(tmp_path: Path) -> None:
    document = changed(connectors__0__id=2, connectors__1__id=1)
    config = load_charger_config(write(tmp_path, document))
    assert [(c.id, c.label) for c in config.connectors] == [(1, "B"), (2, "A")]


def test_connector_ids_duplicate(tmp_path: Path) -> None:
    found = problems(tmp_path, changed(connectors__1__id=1))
    assert found["connectors[1].id"] == "must be unique; connectors[0].id is also 1"
    assert "missing: 2" in found["connectors"]


def test_connector_ids_gap(tmp_path: Path) -> None:
    found = problems(tmp_path, changed(connectors__1__id=3))
    assert found == {"connectors": "connector ids must be 1..2 without gaps; missing: 2"}


def test_connector_ids_start_at_one(tmp_path: Path) -> None:
    found = problems(tmp_path, changed(connectors__0__id=0))
    assert found["connectors[0].id"] == "must be >= 1, not 0"


@pytest.mark.parametrize(("value", "reason"), [([], "at least one"), ({}, "must be a list")])
def test_connectors_list(tmp_path: Path, value: Any, reason: str) -> None:
    found = problems(tmp_path, changed(connectors=value))
    assert reason in found["connectors"]


def test_connector_must_be_an_object(tmp_path: Path) -> None:
    document = changed()
    document["connectors"][1] = 7
    found = problems(tmp_path, document)
    assert found["connectors[1]"] == "must be an object, not a number"


def test_security_paths_must_be_strings(tmp_path: Path) -> None:
    found = problems(tmp_path, changed(security__csmsCaBundle=None))
    assert found == {"security.csmsCaBundle": "must be a string, not null"}
