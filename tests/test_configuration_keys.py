"""The configuration-key store behind GetConfiguration / ChangeConfiguration."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import attrs
import pytest
from ocpp.v16.enums import ConfigurationStatus

from dcocpp.connector.metering import MEASURANDS
from dcocpp.ocpp.configuration import (
    SPECS,
    ConfigurationError,
    ConfigurationStore,
    KeySpec,
    KeyType,
)

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "configs" / "ocpp16-config.json"
PATCHES = {
    "ChargePointId": "CP-7",
    "CentralSystemURI": "ws://csms.test/ocpp/",
    "NumberOfConnectors": 3,
}
SECRET = "5ec2e7" * 10  # an AuthorizationKey as OCPP sends it: 30 bytes in hex

# OCPP 1.6 section 9: every required key of the profiles this charger supports, and whether
# it is read-only here.
REQUIRED_READONLY = {
    "AuthorizeRemoteTxRequests": False,
    "ClockAlignedDataInterval": False,
    "ConnectionTimeOut": False,
    "ConnectorPhaseRotation": False,
    "GetConfigurationMaxKeys": True,
    "HeartbeatInterval": False,
    "LocalAuthorizeOffline": False,
    "LocalPreAuthorize": False,
    "MeterValuesAlignedData": False,
    "MeterValuesSampledData": False,
    "MeterValueSampleInterval": False,
    "NumberOfConnectors": True,
    "ResetRetries": True,
    "StopTransactionOnEVSideDisconnect": False,
    "StopTransactionOnInvalidId": False,
    "StopTxnAlignedData": False,
    "StopTxnSampledData": False,
    "SupportedFeatureProfiles": True,
    "TransactionMessageAttempts": False,
    "TransactionMessageRetryInterval": False,
    "UnlockConnectorOnEVSideDisconnect": False,
    "LocalAuthListEnabled": False,
    "LocalAuthListMaxLength": True,
    "SendLocalListMaxLength": True,
    "ChargeProfileMaxStackLevel": True,
    "ChargingScheduleAllowedChargingRateUnit": True,
    "ChargingScheduleMaxPeriods": True,
    "MaxChargingProfilesInstalled": True,
}


@pytest.fixture
def user_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "config" / "user-config.json"


@pytest.fixture
def store(user_path: Path) -> ConfigurationStore:
    return ConfigurationStore.load(BASE, user_path, patches=PATCHES)


def reload(user_path: Path) -> ConfigurationStore:
    return ConfigurationStore.load(BASE, user_path, patches=PATCHES)


def base_with(tmp_path: Path, **changes: Any) -> Path:
    """The shipped base file with keys replaced; a value of ... removes the key."""
    document = json.loads(BASE.read_text())
    for key, value in changes.items():
        group = document[SPECS[key].profile]
        if value is ...:
            del group[key]
        else:
            group[key] = value
    path = tmp_path / "base.json"
    path.write_text(json.dumps(document))
    return path


def as_dict(entries: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    return {entry["key"]: entry for entry in entries}


# -- loading ----------------------------------------------------------------------------------


def test_shipped_config_loads_with_patches(store: ConfigurationStore) -> None:
    assert store.get("ChargePointId") == "CP-7"
    assert store.get("CentralSystemURI") == "ws://csms.test/ocpp/"
    assert store.get_int("NumberOfConnectors") == 3
    assert store.get_int("HeartbeatInterval") == 300
    assert store.get_int("MeterValueSampleInterval") == 60
    assert store.get_int("ClockAlignedDataInterval") == 900
    assert store.get_int("ConnectionTimeOut") == 60
    assert store.get_int("GetConfigurationMaxKeys") == 100
    assert store.get_int("WebSocketPingInterval") == 30
    assert store.get_int("TransactionMessageAttempts") == 3
    assert store.get_int("TransactionMessageRetryInterval") == 30
    assert store.get_int("SecurityProfile") == 0
    assert store.get("AuthorizationKey") is None
    assert store.get_list("MeterValuesSampledData") == [
        "Energy.Active.Import.Register",
        "Power.Active.Import",
        "Current.Import",
        "Voltage",
        "SoC",
    ]
    # Only the profiles that are implemented; later issues add theirs.
    assert store.get_list("SupportedFeatureProfiles") == [
        "Core",
        "FirmwareManagement",
        "LocalAuthListManagement",
        "RemoteTrigger",
        "Reservation",
        "SmartCharging",
    ]
    assert store.get_list("StopTxnAlignedData") == []
    assert store.get_bool("StopTransactionOnInvalidId") is True
    assert (store.get_int("RetryBackoffWaitMinimum"), store.get_int("RetryBackoffWaitMaximum")) == (
        1,
        30,
    )
    assert store.get_int("ResponseTimeout") == 30
    assert store.get_int("LogMessagesMaxFileSize") == 10485760
    assert store.get_int("LogMessagesBackupCount") == 5
    assert "SoC" in store.get_list("SupportedMeasurands")


def test_shipped_base_file_groups_like_libocpp() -> None:
    document = json.loads(BASE.read_text())
    assert list(document) == [
        "Internal",
        "Core",
        "FirmwareManagement",
        "LocalAuthListManagement",
        "Reservation",
        "SmartCharging",
        "Security",
    ]
    assert "AuthorizationKey" not in document["Security"]
    for group, keys in document.items():
        for key in keys:
            assert SPECS[key].profile == group


def test_internal_keys_are_read_only() -> None:
    internal = [spec for spec in SPECS.values() if spec.profile == "Internal"]
    assert {spec.name for spec in internal} >= {
        "ChargePointId",
        "CentralSystemURI",
        "RetryBackoffWaitMinimum",
        "RetryBackoffWaitMaximum",
        "ResponseTimeout",
        "LogMessagesMaxFileSize",
        "LogMessagesBackupCount",
        "SupportedMeasurands",
    }
    assert all(spec.readonly for spec in internal)


def test_bad_base_file_lists_every_problem(tmp_path: Path, user_path: Path) -> None:
    document = json.loads(BASE.read_text())
    document["Core"]["HeartbeatInterval"] = "300"
    document["Core"]["LocalPreAuthorize"] = 1
    document["Core"]["Heartbeat"] = 5
    document["Core"]["SecurityProfile"] = 0
    document["Extra"] = {}
    del document["Core"]["ResetRetries"]
    path = tmp_path / "base.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigurationError) as info:
        ConfigurationStore.load(path, user_path, patches=PATCHES)
    text = str(info.value)
    assert len(info.value.problems) == 6
    assert "Core.HeartbeatInterval: must be an integer, not a string" in text
    assert "Core.LocalPreAuthorize: must be true or false, not a number" in text
    assert "Core.Heartbeat: unknown configuration key" in text
    assert "Core.SecurityProfile: belongs in Security" in text
    assert "Extra: unknown feature profile" in text
    assert "Core.ResetRetries: required key is missing" in text


def test_base_file_cross_key_checks(tmp_path: Path, user_path: Path) -> None:
    path = base_with(
        tmp_path,
        MeterValuesSampledData="Energy.Active.Import.Register,Temperature",
        RetryBackoffWaitMinimum=60,
    )
    with pytest.raises(ConfigurationError) as info:
        ConfigurationStore.load(path, user_path, patches=PATCHES)
    text = str(info.value)
    assert "MeterValuesSampledData: 'Temperature' is not in SupportedMeasurands" in text
    assert "RetryBackoffWaitMinimum: must not exceed RetryBackoffWaitMaximum" in text


def test_a_key_file_promising_what_the_meter_cannot_measure_is_refused(
    tmp_path: Path, user_path: Path
) -> None:
    """SupportedMeasurands bounds the measurand keys: a key file (libocpp's lists Frequency)
    that promises what this charger cannot measure is refused, naming each one."""
    shipped = json.loads(BASE.read_text())["Internal"]["SupportedMeasurands"]
    supported = f"{shipped},Frequency,Energy.Active.Import.Interval"
    path = base_with(tmp_path, SupportedMeasurands=supported)
    with pytest.raises(ConfigurationError) as info:
        ConfigurationStore.load(path, user_path, patches=PATCHES, measurable=MEASURANDS)
    (problem,) = info.value.problems
    assert problem.startswith(
        f"{path}: Internal.SupportedMeasurands: Frequency, Energy.Active.Import.Interval"
        " cannot be measured by this charger (it measures Current.Import, "
    )


MEASURAND_KEYS = (
    "MeterValuesSampledData",
    "MeterValuesAlignedData",
    "StopTxnSampledData",
    "StopTxnAlignedData",
)


@pytest.mark.parametrize("key", MEASURAND_KEYS)
def test_measurand_keys_refuse_what_the_meter_cannot_measure(user_path: Path, key: str) -> None:
    store = ConfigurationStore.load(BASE, user_path, patches=PATCHES, measurable=MEASURANDS)
    for value in ("Frequency", "Energy.Active.Import.Register,Frequency", "Temperature"):
        assert store.change(key, value) == ConfigurationStatus.rejected
        assert "Frequency" not in store.get_list(key)
    assert store.change(key, "SoC,Energy.Active.Import.Register") == ConfigurationStatus.accepted


def test_required_keys_only_for_supported_profiles(tmp_path: Path, user_path: Path) -> None:
    path = base_with(
        tmp_path,
        SupportedFeatureProfiles="Core,RemoteTrigger",
        LocalAuthListMaxLength=...,
        ChargeProfileMaxStackLevel=...,
    )
    store = ConfigurationStore.load(path, user_path, patches=PATCHES)
    assert store.get("LocalAuthListMaxLength") is None


def test_bad_base_json_reports_position(tmp_path: Path, user_path: Path) -> None:
    path = tmp_path / "base.json"
    path.write_text('{"Core": {\n"HeartbeatInterval": 1,,}}')
    with pytest.raises(ConfigurationError, match="line 2 column"):
        ConfigurationStore.load(path, user_path, patches=PATCHES)


def test_missing_base_file(tmp_path: Path, user_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="file not found"):
        ConfigurationStore.load(tmp_path / "nope.json", user_path, patches=PATCHES)


def test_bad_patch(user_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        ConfigurationStore.load(BASE, user_path, patches={"NumberOfConnectors": 0, "Nope": 1})
    assert info.value.problems == [
        "patch NumberOfConnectors: must be between 1 and 2147483647",
        "patch Nope: unknown configuration key",
    ]


# -- GetConfiguration -------------------------------------------------------------------------


@pytest.mark.tc("TC_019")
def test_tc_019_get_all_keys_readonly_flags(store: ConfigurationStore) -> None:
    entries, unknown = store.get_configuration(None)
    assert unknown == []
    by_key = as_dict(entries)
    for key, readonly in REQUIRED_READONLY.items():
        assert by_key[key]["readonly"] is readonly, key
        assert isinstance(by_key[key]["value"], str), key
    assert all(set(entry) == {"key", "readonly", "value"} for entry in entries)
    assert len(entries) <= store.get_int("GetConfigurationMaxKeys")
    assert store.get_configuration([]) == (entries, [])


def test_spec_read_only_flags() -> None:
    readonly = {
        "ConnectorPhaseRotationMaxLength",
        "MeterValuesAlignedDataMaxLength",
        "MeterValuesSampledDataMaxLength",
        "StopTxnAlignedDataMaxLength",
        "StopTxnSampledDataMaxLength",
        "SupportedFeatureProfilesMaxLength",
        "ReserveConnectorZeroSupported",
        "ConnectorSwitch3to1PhaseSupported",
        "SupportedFileTransferProtocols",
        "AdditionalRootCertificateCheck",
        "CertificateSignedMaxChainSize",
        "CertificateStoreMaxLength",
    }
    writable = {"CpoName", "SecurityProfile", "WebSocketPingInterval", "AuthorizationKey"}
    assert all(SPECS[key].readonly for key in readonly)
    assert not any(SPECS[key].readonly for key in writable)
    assert not SPECS["SecurityProfile"].reboot_required
    assert not SPECS["WebSocketPingInterval"].reboot_required


def test_get_requested_keys_and_unknown_keys(store: ConfigurationStore) -> None:
    entries, unknown = store.get_configuration(
        ["HeartbeatInterval", "NoSuchKey", "NumberOfConnectors", "BlinkRepeat", "NoSuchKey"]
    )
    assert entries == [
        {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
        {"key": "NumberOfConnectors", "readonly": True, "value": "3"},
    ]
    # BlinkRepeat is a standard key, but this charger's base file does not support it.
    assert unknown == ["NoSuchKey", "BlinkRepeat"]


def test_key_names_are_case_insensitive_and_answered_in_the_canonical_spelling(
    store: ConfigurationStore, user_path: Path
) -> None:
    """OCPP 1.6 keys are CiString50: `ConnectionTimeout` is `ConnectionTimeOut` (EVerest's
    integration tests change it so; it was NotSupported)."""
    assert store.canonical("connectiontimeout") == "ConnectionTimeOut"
    assert store.canonical("NoSuchKey") is None
    assert store.change("ConnectionTimeout", "30") == ConfigurationStatus.accepted
    assert store.get_int("ConnectionTimeOut") == 30
    assert store.change("NUMBEROFCONNECTORS", "4") == ConfigurationStatus.rejected  # read-only
    assert store.change("blinkrepeat", "1") == ConfigurationStatus.not_supported  # not here
    entries, unknown = store.get_configuration(
        ["CONNECTIONTIMEOUT", "heartbeatInterval", "ConnectionTimeOut", "noSuchKey"]
    )
    assert entries == [
        {"key": "ConnectionTimeOut", "readonly": False, "value": "30"},
        {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
    ]
    assert unknown == ["noSuchKey"]  # as asked
    assert store.get_configuration(["authorizationkey"]) == ([], ["authorizationkey"])
    # The overlay holds the canonical spelling, whatever the central system wrote.
    assert json.loads(user_path.read_text()) == {"ConnectionTimeOut": "30"}


def test_key_files_name_keys_in_any_letters(
    tmp_path: Path, user_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    document = json.loads(BASE.read_text())
    document["Core"]["heartbeatinterval"] = document["Core"].pop("HeartbeatInterval")
    base = tmp_path / "base.json"
    base.write_text(json.dumps(document))
    user_path.parent.mkdir(parents=True)
    user_path.write_text(json.dumps({"connectionTIMEOUT": "45", "METERVALUESAMPLEINTERVAL": 20}))
    with caplog.at_level(logging.WARNING):
        store = ConfigurationStore.load(base, user_path, patches=PATCHES)
    assert store.get_int("HeartbeatInterval") == 300
    assert store.get_int("ConnectionTimeOut") == 45
    assert store.get_int("MeterValueSampleInterval") == 20
    assert caplog.records == []
    assert as_dict(store.get_configuration(["HeartbeatInterval"])[0]) == {
        "HeartbeatInterval": {"key": "HeartbeatInterval", "readonly": False, "value": "300"}
    }
    # The same key twice in a key file is a mistake, whatever the letters.
    document["Core"]["HeartbeatInterval"] = 60
    base.write_text(json.dumps(document))
    with pytest.raises(ConfigurationError) as info:
        ConfigurationStore.load(base, user_path, patches=PATCHES)
    assert info.value.problems == [
        f"{base}: Core.HeartbeatInterval: also set as Core.heartbeatinterval "
        "(key names are case-insensitive)"
    ]


def test_values_are_ocpp_strings(store: ConfigurationStore) -> None:
    by_key = as_dict(store.get_configuration(None)[0])
    assert by_key["LocalAuthListEnabled"]["value"] == "true"
    assert by_key["AllowOfflineTxForUnknownId"]["value"] == "false"
    assert by_key["StopTxnAlignedData"]["value"] == ""


# -- ChangeConfiguration ----------------------------------------------------------------------


@pytest.mark.tc("TC_040_1")
def test_tc_040_1_change_unknown_key_not_supported(store: ConfigurationStore) -> None:
    assert store.change("NoSuchKey", "1") == ConfigurationStatus.not_supported
    # A standard key this charger does not offer (not in its base file) is not supported either.
    assert store.change("LightIntensity", "50") == ConfigurationStatus.not_supported


@pytest.mark.tc("TC_040_2")
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MeterValueSampleInterval", "-1"),
        ("MeterValueSampleInterval", "1.5"),
        ("MeterValueSampleInterval", ""),
        ("MeterValueSampleInterval", "abc"),
        ("MeterValueSampleInterval", "+5"),
        ("MeterValueSampleInterval", "1_000"),
        ("MeterValueSampleInterval", "99999999999"),
        ("HeartbeatInterval", "0x10"),
        ("LocalPreAuthorize", "yes"),
        ("LocalPreAuthorize", "1"),
        ("MeterValuesSampledData", "Energy.Active.Import.Register,Bogus"),
        ("MeterValuesSampledData", "Energy.Active.Import.Register,,SoC"),
        ("MeterValuesSampledData", "SoC,SoC"),
        ("MeterValuesSampledData", "Temperature"),  # an OCPP measurand this charger lacks
        ("ConnectorPhaseRotation", "1.XYZ"),
        ("ConnectorPhaseRotation", "RST"),
        ("SecurityProfile", "4"),
        ("AuthorizationKey", "x" * 501),
    ],
)
def test_tc_040_2_change_invalid_value_rejected(
    store: ConfigurationStore, key: str, value: str
) -> None:
    before = store.get(key)
    assert store.change(key, value) == ConfigurationStatus.rejected
    assert store.get(key) == before


@pytest.mark.tc("TC_021")
def test_tc_021_change_meter_value_sample_interval_read_back(
    store: ConfigurationStore, user_path: Path
) -> None:
    assert store.change("MeterValueSampleInterval", "15") == ConfigurationStatus.accepted
    entries, _ = store.get_configuration(["MeterValueSampleInterval"])
    assert entries == [{"key": "MeterValueSampleInterval", "readonly": False, "value": "15"}]
    assert store.get_int("MeterValueSampleInterval") == 15
    assert json.loads(user_path.read_text()) == {"MeterValueSampleInterval": "15"}


def test_values_are_normalised(store: ConfigurationStore) -> None:
    assert store.change("LocalPreAuthorize", "TRUE") == ConfigurationStatus.accepted
    assert store.get("LocalPreAuthorize") == "true"
    assert store.get_bool("LocalPreAuthorize") is True
    assert store.change("HeartbeatInterval", " 0060 ") == ConfigurationStatus.accepted
    assert store.get("HeartbeatInterval") == "60"
    assert store.change("MeterValuesAlignedData", " SoC , Voltage ") == ConfigurationStatus.accepted
    assert store.get("MeterValuesAlignedData") == "SoC,Voltage"
    assert store.change("StopTxnSampledData", "") == ConfigurationStatus.accepted
    assert store.get_list("StopTxnSampledData") == []
    assert store.change("ConnectorPhaseRotation", "0.RST,1.NotApplicable") == (
        ConfigurationStatus.accepted
    )


@pytest.mark.parametrize(
    "key",
    [
        "NumberOfConnectors",
        "GetConfigurationMaxKeys",
        "SupportedFeatureProfiles",
        "MeterValuesSampledDataMaxLength",
        "ChargePointId",
        "SupportedMeasurands",
    ],
)
def test_change_read_only_key_rejected(store: ConfigurationStore, key: str) -> None:
    before = store.get(key)
    assert store.change(key, before or "1") == ConfigurationStatus.rejected
    assert store.get(key) == before


def test_reboot_required_key(tmp_path: Path, user_path: Path) -> None:
    specs = {
        **SPECS,
        "ConnectionTimeOut": attrs.evolve(SPECS["ConnectionTimeOut"], reboot_required=True),
    }
    store = ConfigurationStore.load(BASE, user_path, patches=PATCHES, specs=specs)
    assert store.change("ConnectionTimeOut", "90") == ConfigurationStatus.reboot_required
    assert store.get_int("ConnectionTimeOut") == 90
    assert store.change("ConnectionTimeOut", "x") == ConfigurationStatus.rejected


def test_csl_max_length_enforced(tmp_path: Path, user_path: Path) -> None:
    path = base_with(tmp_path, MeterValuesSampledDataMaxLength=2)
    with pytest.raises(ConfigurationError, match="has 5 items; MeterValuesSampledDataMaxLength"):
        ConfigurationStore.load(path, user_path, patches=PATCHES)
    path = base_with(
        tmp_path, MeterValuesSampledDataMaxLength=2, MeterValuesSampledData="SoC,Voltage"
    )
    store = ConfigurationStore.load(path, user_path, patches=PATCHES)
    assert store.change("MeterValuesSampledData", "SoC,Voltage,Power.Offered") == (
        ConfigurationStatus.rejected
    )
    assert store.change("MeterValuesSampledData", "Power.Offered") == ConfigurationStatus.accepted


@pytest.mark.tc("TC_084")
def test_security_profile_cannot_decrease(store: ConfigurationStore) -> None:
    assert store.change("SecurityProfile", "1") == ConfigurationStatus.accepted
    assert store.change("SecurityProfile", "0") == ConfigurationStatus.rejected
    assert store.get_int("SecurityProfile") == 1
    assert store.change("SecurityProfile", "1") == ConfigurationStatus.accepted
    assert store.change("SecurityProfile", "3") == ConfigurationStatus.accepted
    # The charger itself may fall back after a failed upgrade.
    store.set_value("SecurityProfile", 1)
    assert store.get_int("SecurityProfile") == 1


def test_change_is_logged(store: ConfigurationStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dcocpp.ocpp.configuration")
    store.change("HeartbeatInterval", "60")
    assert "configuration key HeartbeatInterval changed to 60" in caplog.messages


# -- AuthorizationKey -------------------------------------------------------------------------


def test_authorization_key_is_write_only(
    store: ConfigurationStore, user_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert store.change("AuthorizationKey", SECRET) == ConfigurationStatus.accepted
    assert store.get("AuthorizationKey") == SECRET  # for the transport's Basic auth

    entries, unknown = store.get_configuration(None)
    assert "AuthorizationKey" not in as_dict(entries)
    assert SECRET not in repr(entries)
    entries, unknown = store.get_configuration(["AuthorizationKey", "HeartbeatInterval"])
    assert [e["key"] for e in entries] == ["HeartbeatInterval"]
    assert unknown == ["AuthorizationKey"]

    assert "configuration key AuthorizationKey changed (value hidden)" in caplog.messages
    assert SECRET not in caplog.text
    assert str(len(SECRET)) not in caplog.text

    # It must survive a reboot: Basic auth needs it before any CSMS could set it again.
    assert json.loads(user_path.read_text())["AuthorizationKey"] == SECRET
    assert reload(user_path).get("AuthorizationKey") == SECRET
    if os.name == "posix":
        assert user_path.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    "value",
    [
        "short-key",
        "k" * 41,
        "sixteen-chars-é!",
        "tab\tseparated-key!",
    ],
)
def test_invalid_authorization_key_is_rejected_without_echo(
    store: ConfigurationStore, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    caplog.set_level(logging.DEBUG)
    assert store.change("AuthorizationKey", value) == ConfigurationStatus.rejected
    assert value not in caplog.text
    with pytest.raises(ConfigurationError) as info:
        store.set_value("AuthorizationKey", value)
    assert value not in str(info.value)
    assert str(len(value)) not in str(info.value)
    assert store.get("AuthorizationKey") is None


@pytest.mark.parametrize(
    "value",
    [
        "legacy-text-passwd",  # the files may hold one (see authkey); OCPP may not set one
        "ab" * 19,  # 19 bytes
        "ab" * 41,  # 41 bytes
        "a" * 41,  # an odd number of digits
        "0x" + "ab" * 20,
        "zz" * 20,
    ],
)
def test_authorization_key_set_over_ocpp_must_be_20_to_40_bytes_in_hex(
    store: ConfigurationStore, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    caplog.set_level(logging.DEBUG)
    assert store.change("AuthorizationKey", value) == ConfigurationStatus.rejected
    with pytest.raises(ConfigurationError) as info:
        store.set_value("AuthorizationKey", value)
    # The rule, nothing of the value.
    assert str(info.value) == "AuthorizationKey: must be 40 to 80 hex digits (20 to 40 bytes)"
    assert value not in caplog.text
    assert store.get("AuthorizationKey") is None
    assert store.change("AuthorizationKey", "AB" * 40) == ConfigurationStatus.accepted


# -- persistence ------------------------------------------------------------------------------


def test_changes_persist_and_reload(store: ConfigurationStore, user_path: Path) -> None:
    assert not user_path.exists()
    store.change("HeartbeatInterval", "120")
    store.change("MeterValuesSampledData", "SoC")
    store.set_value("ConnectionTimeOut", 45)
    assert json.loads(user_path.read_text()) == {
        "ConnectionTimeOut": "45",
        "HeartbeatInterval": "120",
        "MeterValuesSampledData": "SoC",
    }
    # No temporary files are left beside the overlay.
    assert sorted(p.name for p in user_path.parent.iterdir()) == [user_path.name]

    again = reload(user_path)
    assert again.get_int("HeartbeatInterval") == 120
    assert again.get_list("MeterValuesSampledData") == ["SoC"]
    assert again.get_int("ConnectionTimeOut") == 45
    # The patches still come from charger.json.
    assert again.get("ChargePointId") == "CP-7"


def test_write_is_atomic(
    store: ConfigurationStore, user_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.change("HeartbeatInterval", "120")
    calls: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def failing_replace(src: Any, dst: Any) -> None:
        calls.append("replace")
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", failing_replace)
    assert store.change("HeartbeatInterval", "60") == ConfigurationStatus.rejected
    assert calls == ["fsync", "replace"]  # flushed to disk before it takes the file's place
    assert store.get_int("HeartbeatInterval") == 120
    assert json.loads(user_path.read_text()) == {"HeartbeatInterval": "120"}
    assert [p.name for p in user_path.parent.iterdir()] == [user_path.name]
    with pytest.raises(ConfigurationError, match="disk gone"):
        store.set_value("HeartbeatInterval", 30)


def test_a_value_set_again_unchanged_is_no_news(
    store: ConfigurationStore, user_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """BootNotification.conf brings the same HeartbeatInterval at every boot: one line when it
    changes, none (and no write) when it is the value in force."""
    caplog.set_level(logging.INFO, logger="dcocpp.ocpp.configuration")
    heard: list[str] = []
    store.subscribe("HeartbeatInterval", lambda key, value: heard.append(value))
    for _ in range(3):
        store.set_value("HeartbeatInterval", 30)
    changed = [r.getMessage() for r in caplog.records if "changed" in r.getMessage()]
    assert changed == ["configuration key HeartbeatInterval changed to 30"]
    assert heard == ["30"]
    assert json.loads(user_path.read_text()) == {"HeartbeatInterval": "30"}


def test_read_only_set_value_is_not_persisted(store: ConfigurationStore, user_path: Path) -> None:
    store.set_value("NumberOfConnectors", 4)
    assert store.get_int("NumberOfConnectors") == 4
    assert reload(user_path).get_int("NumberOfConnectors") == 3


def test_corrupt_overlay_entries_are_skipped(
    user_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    user_path.parent.mkdir(parents=True)
    user_path.write_text(
        json.dumps(
            {
                "HeartbeatInterval": "abc",
                "RemovedKey": "1",
                "NumberOfConnectors": "9",
                "MeterValueSampleInterval": "30",
                "LocalPreAuthorize": True,
                "ConnectionTimeOut": 90,
                "AuthorizationKey": "too-short",
            }
        )
    )
    with caplog.at_level(logging.WARNING):
        store = reload(user_path)
    assert store.get_int("HeartbeatInterval") == 300
    assert store.get_int("NumberOfConnectors") == 3
    assert store.get_int("MeterValueSampleInterval") == 30
    assert store.get_bool("LocalPreAuthorize") is True
    assert store.get_int("ConnectionTimeOut") == 90
    assert store.get("AuthorizationKey") is None
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for key in ("HeartbeatInterval", "RemovedKey", "NumberOfConnectors", "AuthorizationKey"):
        assert key in warnings
    assert "too-short" not in caplog.text

    # The next change rewrites the overlay without the bad entries.
    store.change("HeartbeatInterval", "120")
    assert json.loads(user_path.read_text()) == {
        "ConnectionTimeOut": "90",
        "HeartbeatInterval": "120",
        "LocalPreAuthorize": "true",
        "MeterValueSampleInterval": "30",
    }


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_unreadable_overlay_is_ignored(
    user_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    user_path.parent.mkdir(parents=True)
    user_path.write_text(text)
    with caplog.at_level(logging.WARNING):
        store = reload(user_path)
    assert store.get_int("HeartbeatInterval") == 300
    assert "ignoring user configuration" in caplog.text


# -- internal updates and subscriptions -------------------------------------------------------


def test_set_value_validates(store: ConfigurationStore) -> None:
    with pytest.raises(ConfigurationError, match="HeartbeatInterval: must be between"):
        store.set_value("HeartbeatInterval", -1)
    with pytest.raises(ConfigurationError, match="not a boolean"):
        store.set_value("HeartbeatInterval", True)
    with pytest.raises(ConfigurationError, match="unknown configuration key"):
        store.set_value("NoSuchKey", 1)
    store.set_value("HeartbeatInterval", "900")
    assert store.get_int("HeartbeatInterval") == 900


def test_subscribe_callbacks_fire_with_new_value(store: ConfigurationStore) -> None:
    seen: list[tuple[str, str]] = []
    unsubscribe = store.subscribe("HeartbeatInterval", lambda k, v: seen.append((k, v)))
    store.subscribe("MeterValueSampleInterval", lambda k, v: seen.append((k, v)))

    store.change("HeartbeatInterval", "60")
    store.change("HeartbeatInterval", "nope")  # rejected: no callback
    store.set_value("HeartbeatInterval", 90)  # from BootNotification.conf
    store.change("MeterValueSampleInterval", "5")
    unsubscribe()
    unsubscribe()
    store.change("HeartbeatInterval", "30")
    assert seen == [
        ("HeartbeatInterval", "60"),
        ("HeartbeatInterval", "90"),
        ("MeterValueSampleInterval", "5"),
    ]


def test_subscribe_to_unknown_key_is_a_bug(store: ConfigurationStore) -> None:
    with pytest.raises(KeyError):
        store.subscribe("NoSuchKey", lambda k, v: None)


def test_typed_getters_check_the_key_type(store: ConfigurationStore) -> None:
    with pytest.raises(TypeError):
        store.get_int("LocalPreAuthorize")
    with pytest.raises(KeyError):
        store.get_int("BlinkRepeat")  # not configured on this charger
    assert store.get("NoSuchKey") is None


def test_keys_lists_supported_keys(store: ConfigurationStore) -> None:
    keys = store.keys
    assert "AuthorizationKey" in keys
    assert "HeartbeatInterval" in keys
    assert "BlinkRepeat" not in keys


def test_spec_types() -> None:
    assert SPECS["MeterValuesSampledData"].type is KeyType.CSL
    assert SPECS["AuthorizationKey"] == KeySpec(
        name="AuthorizationKey",
        profile="Security",
        type=KeyType.STRING,
        readonly=False,
        write_only=True,
        min_length=16,
        max_length=80,
        printable_ascii=True,
        hex_key=True,
    )
