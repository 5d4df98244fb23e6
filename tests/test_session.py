"""The OCPP session through the whole station, against an in-test central system, on virtual
time. Tests are named after the OCTT conformance cases they cover (docs/conformance.md)."""

from __future__ import annotations

import itertools
import json
import logging
import re
from pathlib import Path
from typing import Any

import attrs
import hypothesis
import hypothesis.strategies as st
import pytest
import trio
from ocpp.v16 import call
from ocpp.v16.enums import ChargePointErrorCode, ChargePointStatus, RegistrationStatus

from dcocpp.ocpp.control import ConnectorStatus
from dcocpp.ocpp.errors import CallError
from dcocpp.ocpp.session import MAX_BOOT_RETRY, _coalesced
from dcocpp.ocpp.statuses import allowed_transitions
from dcocpp.ocpp.wire import MAX_WEBSOCKET_MESSAGE_BYTES
from dcocpp.station.station import HardReset, Station
from tests.csms import FakeCsms, MemoryNetwork
from tests.loop_database import on_the_loop
from tests.station_harness import charger_config, preset_keys, running_station
from tests.test_configuration_keys import REQUIRED_READONLY

NEXT_ATTEMPT = re.compile(r"; next attempt in \d+\.\d s")
ACCEPTED, PENDING, REJECTED = (
    RegistrationStatus.accepted,
    RegistrationStatus.pending,
    RegistrationStatus.rejected,
)


def statuses(csms: FakeCsms) -> list[tuple[int, str, str]]:
    return [
        (p["connector_id"], p["status"], p["error_code"])
        for p in csms.received("StatusNotification")
    ]


# --- boot --------------------------------------------------------------------------------------


async def test_tc_001_cold_boot_rejected_then_accepted(autojump_clock: Any, tmp_path: Path) -> None:
    csms = FakeCsms(boot_statuses=[REJECTED, ACCEPTED], interval=30)
    async with running_station(charger_config(tmp_path), csms) as h:
        await csms.wait_for_calls("Heartbeat", 3)
    boots = csms.times("BootNotification")
    assert len(boots) == 2
    assert boots[1] - boots[0] == pytest.approx(30)  # retried after `interval`, not before
    # Nothing but BootNotification while Rejected.
    assert [a for t, a, _ in csms.calls if t < boots[1]] == ["BootNotification"]
    boot = csms.received("BootNotification")[0]
    assert boot == {
        "charge_point_vendor": "dcocpp",
        "charge_point_model": "DC-2G-150",
        "firmware_version": "0.1.0",
    }
    assert statuses(csms) == [
        (0, "Available", "NoError"),
        (1, "Available", "NoError"),
        (2, "Available", "NoError"),
    ]
    beats = csms.times("Heartbeat")
    assert [b - a for a, b in zip([boots[1], *beats], beats, strict=False)] == pytest.approx(
        [30, 30, 30]
    )
    assert h.store.get_int("HeartbeatInterval") == 30


async def test_tc_002_cold_boot_pending_answers_configuration_calls(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms(boot_statuses=[PENDING, PENDING, ACCEPTED], interval=40)
    async with running_station(charger_config(tmp_path), csms) as h:
        await csms.wait_for_calls("BootNotification", 1)
        result = await h.csms_call(call.GetConfiguration())
        assert len(result.configuration_key) > 30
        changed = await h.csms_call(
            call.ChangeConfiguration(key="MeterValueSampleInterval", value="15")
        )
        assert changed.status == "Accepted"
        await csms.wait_for_calls("StatusNotification", 3)
        assert h.station.session is not None and h.station.session.state == "Accepted"
    boots = csms.times("BootNotification")
    assert len(boots) == 3 and boots[2] - boots[1] == pytest.approx(40)
    first_status = csms.times("StatusNotification")[0]
    assert first_status >= boots[2]  # no other CALL of ours while Pending


async def test_trigger_boot_notification_while_pending_boots_at_once(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms(boot_statuses=[PENDING, ACCEPTED], interval=3600)
    async with running_station(charger_config(tmp_path), csms) as h:
        await csms.wait_for_calls("BootNotification", 1)
        await trio.sleep(5)
        result = await h.csms_call(call.TriggerMessage(requested_message="BootNotification"))
        assert result.status == "Accepted"
        await csms.wait_for_calls("StatusNotification", 3)
    boots = csms.times("BootNotification")
    assert boots[1] - boots[0] == pytest.approx(5)


async def test_boot_notification_carries_the_serial_number_in_both_fields(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """chargeBoxSerialNumber is deprecated in OCPP 1.6 but libocpp and many central systems
    still read it, so the configured serial number goes in both."""
    config = charger_config(tmp_path)
    config = attrs.evolve(
        config, charge_point=attrs.evolve(config.charge_point, serial_number="SN-0042")
    )
    csms = FakeCsms()
    async with running_station(config, csms):
        await csms.wait_for_calls("BootNotification", 1)
    boot = csms.received("BootNotification")[0]
    assert boot["charge_point_serial_number"] == "SN-0042"
    assert boot["charge_box_serial_number"] == "SN-0042"


@pytest.mark.parametrize(
    "keys",
    [
        {},  # AuthorizeRemoteTxRequests false: it used to start without asking anyone
        # Authorized first: while not Accepted that used to be decided by the offline rules.
        {"AuthorizeRemoteTxRequests": True, "AllowOfflineTxForUnknownId": True},
    ],
)
async def test_remote_start_while_pending_is_rejected(
    autojump_clock: Any, tmp_path: Path, keys: dict[str, Any]
) -> None:
    """OCPP 1.6 4.2: while Pending the central system may read and change the configuration,
    but RemoteStartTransaction is not allowed (EVerest's integration tests found it
    Accepted)."""
    csms = FakeCsms(boot_statuses=[PENDING], interval=3600)
    async with running_station(charger_config(tmp_path), csms, keys=keys) as h:
        await csms.wait_for_calls("BootNotification", 1)
        await h.station.plug(1)
        result = await h.csms_call(call.RemoteStartTransaction(id_tag="TAG-P", connector_id=1))
        anywhere = await h.csms_call(call.RemoteStartTransaction(id_tag="TAG-P"))
        changed = await h.csms_call(call.ChangeConfiguration(key="HeartbeatInterval", value="60"))
        await trio.sleep(60)
        assert h.connector(1).machine.truth.authorized is None
        assert h.connector(1).transaction is None
    assert (result.status, anywhere.status, changed.status) == ("Rejected", "Rejected", "Accepted")
    assert [a for _, a, _ in csms.calls] == ["BootNotification"]


async def test_remote_stop_while_pending_is_rejected(autojump_clock: Any, tmp_path: Path) -> None:
    csms = FakeCsms(interval=3600)
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-1")
        csms.boot_statuses = [PENDING]  # a later boot (triggered) is answered Pending
        result = await h.csms_call(call.TriggerMessage(requested_message="BootNotification"))
        assert result.status == "Accepted"
        session = h.station.session
        assert session is not None
        await h.wait_until(lambda: session.state == "Pending")
        stop = await h.csms_call(call.RemoteStopTransaction(transaction_id=tx_id))
        await trio.sleep(60)
        assert h.transaction_id(1) == tx_id
        assert h.relay_closed(1)
    assert stop.status == "Rejected"
    assert csms.received("StopTransaction") == []


async def test_central_system_calls_are_not_answered_while_rejected(
    autojump_clock: Any, tmp_path: Path, caplog: Any
) -> None:
    """OCPP 1.6 4.2: while Rejected the charge point does not respond to the central system
    (which should not send anything); after a later Accepted it answers again."""
    caplog.set_level(logging.WARNING, logger="dcocpp.session")
    csms = FakeCsms(boot_statuses=[REJECTED, ACCEPTED], interval=600)
    async with running_station(charger_config(tmp_path), csms) as h:
        await csms.wait_for_calls("BootNotification", 1)
        with trio.move_on_after(60) as unanswered:
            await h.csms_call(call.GetConfiguration(key=["HeartbeatInterval"]))
        assert unanswered.cancelled_caught
        await h.booted()
        answer = await h.csms_call(call.GetConfiguration(key=["HeartbeatInterval"]))
    assert answer.configuration_key == [
        {"key": "HeartbeatInterval", "readonly": False, "value": "600"}
    ]
    assert session_lines(caplog, logging.WARNING) == [
        "GetConfiguration from the central system not answered: the registration is "
        "Rejected (OCPP 1.6 4.2)"
    ]


async def test_heartbeat_interval_change_applies_at_once(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms(interval=24 * 3600)
    async with running_station(charger_config(tmp_path), csms) as h:
        await csms.wait_for_calls("StatusNotification", 3)
        start = trio.current_time()
        await trio.sleep(10)
        result = await h.csms_call(call.ChangeConfiguration(key="HeartbeatInterval", value="60"))
        assert result.status == "Accepted"
        await csms.wait_for_calls("Heartbeat", 2)
    beats = csms.times("Heartbeat")
    # The first heartbeat comes 60 s after boot, not 24 h: the new interval applied at once.
    assert beats[0] - start == pytest.approx(60, abs=0.01)
    assert beats[1] - beats[0] == pytest.approx(60)


async def test_heartbeat_once_a_day_runs_in_virtual_time(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms(interval=24 * 3600)
    async with running_station(charger_config(tmp_path), csms):
        await csms.wait_for_calls("Heartbeat", 3)
    beats = csms.times("Heartbeat")
    assert beats[2] - beats[0] == pytest.approx(2 * 24 * 3600)


# --- configuration ------------------------------------------------------------------------------


async def test_tc_019_get_all_keys_with_readonly_flags(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        result = await h.csms_call(call.GetConfiguration())
    keys = {k["key"]: k for k in result.configuration_key}
    for key, readonly in REQUIRED_READONLY.items():
        assert keys[key]["readonly"] is readonly, key
    assert keys["NumberOfConnectors"]["value"] == "2"
    assert "AuthorizationKey" not in keys


async def test_tc_019_get_configuration_honours_max_keys(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    async with running_station(config) as h:
        h.store.set_value("GetConfigurationMaxKeys", 2)
        result = await h.csms_call(call.GetConfiguration(key=["HeartbeatInterval", "Nope"]))
        assert [k["key"] for k in result.configuration_key] == ["HeartbeatInterval"]
        assert result.unknown_key == ["Nope"]
        with pytest.raises(CallError) as info:
            await h.csms_call(call.GetConfiguration(key=["A", "B", "C"]))
        assert info.value.code == "OccurenceConstraintViolation"


async def test_tc_021_change_meter_value_sample_interval_read_back(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    async with running_station(config) as h:
        result = await h.csms_call(
            call.ChangeConfiguration(key="MeterValueSampleInterval", value="30")
        )
        assert result.status == "Accepted"
        read = await h.csms_call(call.GetConfiguration(key=["MeterValueSampleInterval"]))
        assert read.configuration_key == [
            {"key": "MeterValueSampleInterval", "readonly": False, "value": "30"}
        ]
    # Persisted: a new start sees it.
    async with running_station(config) as h:
        assert h.store.get_int("MeterValueSampleInterval") == 30


async def test_tc_040_1_change_unknown_key_not_supported(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        result = await h.csms_call(call.ChangeConfiguration(key="NoSuchKey", value="1"))
    assert result.status == "NotSupported"


async def test_tc_040_2_change_invalid_value_rejected(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        for key, value in [
            ("HeartbeatInterval", "abc"),
            ("HeartbeatInterval", "-5"),
            ("NumberOfConnectors", "3"),
            ("MeterValuesSampledData", "Banana"),
        ]:
            result = await h.csms_call(call.ChangeConfiguration(key=key, value=value))
            assert result.status == "Rejected", (key, value)
        assert h.store.get_int("HeartbeatInterval") == 300


async def test_change_configuration_takes_key_names_in_any_letters(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """Keys are CiString50: EVerest's `ConnectionTimeout` is our `ConnectionTimeOut` (it was
    NotSupported); answers spell keys as the charger does."""
    async with running_station(charger_config(tmp_path)) as h:
        changed = await h.csms_call(call.ChangeConfiguration(key="ConnectionTimeout", value="33"))
        read = await h.csms_call(call.GetConfiguration(key=["connectiontimeout"]))
        assert h.store.get_int("ConnectionTimeOut") == 33
        key = "0123456789abcdef0123" * 2  # 20 bytes in hex
        result = await h.csms_call(call.ChangeConfiguration(key="authorizationkey", value=key))
        await h.wait_until(lambda: h.csms.connections == 2)  # it reconnected with the new key
    assert (changed.status, result.status) == ("Accepted", "Accepted")
    assert read.configuration_key == [
        {"key": "ConnectionTimeOut", "readonly": False, "value": "33"}
    ]
    assert read.unknown_key is None


async def test_tc_073_authorization_key_change_reconnects_with_its_bytes_as_password(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TC_073 / TC_085: the AuthorizationKey arrives in hex; its decoded bytes are the
    Basic-auth password from a reconnect at once on; it is never returned by GetConfiguration
    nor logged."""
    caplog.set_level(logging.DEBUG)
    passwords: list[bytes | None] = []

    def authenticate(cp_id: str, password: bytes | None) -> bool:
        passwords.append(password)
        return cp_id == "DCOCPP-001"

    csms = FakeCsms(authenticate=authenticate)
    key = "9f" * 8 + "00ff" + "3a" * 10  # 20 bytes, a NUL and ':' among them
    async with running_station(charger_config(tmp_path), csms) as h:
        await csms.wait_for_calls("StatusNotification", 3)
        refused = await h.csms_call(
            call.ChangeConfiguration(key="AuthorizationKey", value="ab" * 19)
        )
        result = await h.csms_call(call.ChangeConfiguration(key="AuthorizationKey", value=key))
        assert (refused.status, result.status) == ("Rejected", "Accepted")
        await csms.wait_connected(2)
        read = await h.csms_call(call.GetConfiguration(key=["AuthorizationKey"]))
    assert passwords == [None, bytes.fromhex(key)]
    assert len(csms.received("BootNotification")) == 1  # a reconnect, not a reboot
    assert read.configuration_key is None or read.configuration_key == []
    assert read.unknown_key == ["AuthorizationKey"]
    assert key not in caplog.text and key.upper() not in caplog.text


async def test_tc_085_wrong_password_is_refused_and_retried(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    wrong, right = "0a" * 20, "0b" * 20
    preset_keys(config, AuthorizationKey=wrong)
    csms = FakeCsms(authenticate=lambda cp, pw: pw == bytes.fromhex(right))
    async with running_station(config, csms) as h:
        await trio.sleep(120)
        assert csms.connections == 0
        assert len(h.network.attempts) >= 3
        h.store.set_value("AuthorizationKey", right)
        await csms.wait_for_calls("BootNotification", 1)


async def test_a_legacy_text_key_in_the_files_is_its_utf8_bytes(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A key an older dcocpp took as text keeps working after the update (with a warning),
    so the update does not cut the charger off from its central system."""
    config = charger_config(tmp_path)
    preset_keys(config, AuthorizationKey="legacy-password-1")
    csms = FakeCsms(authenticate=lambda cp, pw: pw == b"legacy-password-1")
    async with running_station(config, csms):
        await csms.wait_for_calls("BootNotification", 1)
    [warning] = [r.getMessage() for r in caplog.records if "AuthorizationKey" in r.getMessage()]
    assert "is not 40 to 80 hex digits: taken as text" in warning
    assert "legacy-password-1" not in caplog.text


# --- remote trigger, data transfer, cache, unknown actions ---------------------------------------


async def test_tc_054_trigger_heartbeat_status_and_boot(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        csms = h.csms
        await csms.wait_for_calls("StatusNotification", 3)
        for message, action in [
            ("Heartbeat", "Heartbeat"),
            ("BootNotification", "BootNotification"),
            ("DiagnosticsStatusNotification", "DiagnosticsStatusNotification"),
            ("FirmwareStatusNotification", "FirmwareStatusNotification"),
        ]:
            before = len(csms.received(action))
            result = await h.csms_call(call.TriggerMessage(requested_message=message))
            assert result.status == "Accepted"
            await csms.wait_for_calls(action, before + 1)
        result = await h.csms_call(
            call.TriggerMessage(requested_message="StatusNotification", connector_id=2)
        )
        assert result.status == "Accepted"
        await csms.wait_for_calls("StatusNotification", 4)
        assert statuses(csms)[-1] == (2, "Available", "NoError")
        assert csms.received("DiagnosticsStatusNotification") == [{"status": "Idle"}]
        assert csms.received("FirmwareStatusNotification") == [{"status": "Idle"}]


async def test_tc_055_trigger_for_unknown_connector_rejected(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        result = await h.csms_call(
            call.TriggerMessage(requested_message="StatusNotification", connector_id=7)
        )
    assert result.status == "Rejected"


async def test_tc_062_data_transfer_unknown_vendor(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        unknown = await h.csms_call(call.DataTransfer(vendor_id="com.example.other"))
        ours = await h.csms_call(call.DataTransfer(vendor_id="dcocpp", message_id="x"))
    assert unknown.status == "UnknownVendorId"
    assert ours.status == "UnknownMessageId"


async def test_clear_cache_accepted(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        assert h.station.session is not None
        await h.station.session.auth_cache.update("TAG", {"status": "Accepted"})
        result = await h.csms_call(call.ClearCache())
        assert result.status == "Accepted"
        assert len(h.station.session.auth_cache) == 0


async def test_unimplemented_and_unknown_actions_answer_callerror(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        with pytest.raises(CallError) as info:
            await h.csms_call(
                call.SignedUpdateFirmware(
                    request_id=1,
                    firmware={
                        "location": "https://x/fw.bin",
                        "retrieve_date_time": "2026-01-01T00:00:00Z",
                        "signing_certificate": "-",
                        "signature": "-",
                    },
                )
            )
        assert info.value.code == "NotImplemented"
        rpc = await h.csms.wait_connected()
        rpc._validate = False  # let the fake CSMS send an action OCPP 1.6 does not know
        with pytest.raises(CallError) as info:
            await rpc.call_raw("FooBar", {})
        assert info.value.code == "NotSupported"
        # The session is still up and answers.
        assert (await h.csms_call(call.ClearCache())).status == "Accepted"


# --- availability and reset ---------------------------------------------------------------------


async def test_change_availability_is_reported_and_survives_a_restart(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    async with running_station(config) as h:
        csms = h.csms
        await csms.wait_for_calls("StatusNotification", 3)
        result = await h.csms_call(call.ChangeAvailability(connector_id=1, type="Inoperative"))
        assert result.status == "Accepted"
        await csms.wait_for_calls("StatusNotification", 4)
        assert statuses(csms)[3] == (1, "Unavailable", "NoError")
        assert (
            await h.csms_call(call.ChangeAvailability(connector_id=9, type="Inoperative"))
        ).status == "Rejected"
    csms = FakeCsms()
    async with running_station(config, csms):
        await csms.wait_for_calls("StatusNotification", 3)
    assert statuses(csms) == [
        (0, "Available", "NoError"),
        (1, "Unavailable", "NoError"),
        (2, "Available", "NoError"),
    ]


async def test_change_availability_of_the_charge_point_covers_every_connector(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.csms.wait_for_calls("StatusNotification", 3)
        result = await h.csms_call(call.ChangeAvailability(connector_id=0, type="Inoperative"))
        assert result.status == "Accepted"
        await h.csms.wait_for_calls("StatusNotification", 6)
        assert sorted(statuses(h.csms)[3:]) == [
            (0, "Unavailable", "NoError"),
            (1, "Unavailable", "NoError"),
            (2, "Unavailable", "NoError"),
        ]


async def test_soft_reset_restarts_the_station_and_boots_again(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.csms.wait_for_calls("StatusNotification", 3)
        result = await h.csms_call(call.Reset(type="Soft"))
        assert result.status == "Accepted"
        await h.csms.wait_for_calls("StatusNotification", 6)
        assert len(h.csms.received("BootNotification")) == 2
        assert h.csms.connections == 2


async def test_hard_reset_ends_the_station_with_hard_reset(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    preset_keys(config, WebSocketPingInterval=0)
    csms = FakeCsms()
    with pytest.RaisesGroup(HardReset, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            network = MemoryNetwork(csms, nursery)
            station = Station(config, open_stream=network.open_stream, database_runner=on_the_loop)
            nursery.start_soon(station.run)
            rpc = await csms.wait_connected()
            await csms.wait_for_calls("StatusNotification", 3)
            result = await rpc.call(call.Reset(type="Hard"))
            assert result.status == "Accepted"
            await trio.sleep_forever()


# --- connection handling ------------------------------------------------------------------------


async def test_reconnects_with_capped_exponential_backoff_and_jitter(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms()
    async with running_station(charger_config(tmp_path), csms) as h:
        await csms.wait_for_calls("StatusNotification", 3)
        h.network.down = True
        await h.network.drop()
        await trio.sleep(600)
        attempts = h.network.attempts[1:]
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert all(0.5 <= gap <= 30.0 + 1e-6 for gap in gaps), gaps  # never a busy loop
        assert gaps[5] > gaps[0] * 4  # grows
        assert 20 <= len(gaps) <= 60  # about 600 s / 15-30 s once capped
        h.network.down = False
        await csms.wait_for_calls("StatusNotification", 3)


async def test_reconnect_resumes_the_accepted_registration_without_boot_notification(
    autojump_clock: Any, tmp_path: Path, caplog: Any
) -> None:
    """A reconnect is not a reboot (some central systems close a charger's open transactions
    on a BootNotification): the next connection resumes the Accepted registration with a
    Heartbeat and every connector's status, and the transaction goes on."""
    caplog.set_level(logging.INFO, logger="dcocpp.session")
    csms = FakeCsms(interval=300)
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-1")
        await trio.sleep(10)
        await h.network.drop()
        await csms.wait_connected(2)
        since = csms.mark()
        reconnected_at = trio.current_time()
        await h.wait_calls("Heartbeat", since=since)
        await h.wait_calls("StatusNotification", 3, since=since)
        assert csms.times("Heartbeat")[-1] == pytest.approx(reconnected_at, abs=0.01)
        await h.station.present_id(1, "TAG-1")
        await h.wait_calls("StopTransaction", since=since)
    assert len(csms.received("BootNotification")) == 1
    assert sorted(statuses(csms)[-4:-1]) == [
        (0, "Available", "NoError"),
        (1, "Charging", "NoError"),
        (2, "Available", "NoError"),
    ]
    assert csms.received("StopTransaction")[0]["transaction_id"] == tx_id
    accepted = [line for line in session_lines(caplog, logging.INFO) if "-> Accepted" in line]
    assert accepted[0] == "connection state Booting -> Accepted"
    assert accepted[1].startswith(
        "connection state Connecting -> Accepted: connected to ws://csms.test/ocpp/DCOCPP-001 "
        "after 1 failure(s) since "  # the lost connection
    )
    assert accepted[1].endswith("; registration resumed without BootNotification")
    assert len(accepted) == 2


async def test_a_central_system_that_forgot_the_charger_gets_a_boot_notification(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """A central system that lost its state refuses the resumed registration's Heartbeat
    (a CALLERROR): the charger boots again rather than stay unknown to it."""
    csms = FakeCsms(interval=300)
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        await trio.sleep(10)
        csms.answer("Heartbeat", error="SecurityError")
        await h.network.drop()
        await csms.wait_connected(2)
        with trio.fail_after(5):
            await csms.wait_for_calls("BootNotification", 2)
        (refused,) = [action for _, action, _ in csms.scripted]
        assert refused == "Heartbeat"
        # Once known again, heartbeats go on as usual.
        await trio.sleep(301)
        assert len(csms.received("BootNotification")) == 2


@pytest.mark.parametrize("answer", [PENDING, REJECTED])
async def test_boot_not_accepted_is_sent_again_on_the_next_connection_after_its_interval(
    autojump_clock: Any, tmp_path: Path, answer: RegistrationStatus
) -> None:
    csms = FakeCsms(boot_statuses=[answer, ACCEPTED], interval=120)
    async with running_station(charger_config(tmp_path), csms) as h:
        await csms.wait_for_calls("BootNotification", 1)
        booted_at = trio.current_time()
        await trio.sleep(10)
        await h.network.drop()
        await csms.wait_connected(2)
        await h.booted()
    boots = csms.times("BootNotification")
    assert len(boots) == 2
    # Not before the interval (4.2), though a new connection opened long before.
    assert boots[1] - booted_at == pytest.approx(120)
    assert [a for _, a, _ in csms.calls[:2]] == ["BootNotification", "BootNotification"]


async def test_a_boot_interval_of_68_years_is_waited_for_a_day(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rejected with interval 2^31-1 s: honoured up to MAX_BOOT_RETRY, said once; a day later
    the charger asks again rather than stay out of service until someone restarts it."""
    csms = FakeCsms(boot_statuses=[REJECTED, ACCEPTED], interval=2**31 - 1)
    async with running_station(charger_config(tmp_path), csms) as h:
        await csms.wait_for_calls("BootNotification", 1)
        first = trio.current_time()
        with trio.fail_after(MAX_BOOT_RETRY + 60):
            await csms.wait_for_calls("BootNotification", 2)
        session = h.station.session
        assert session is not None
        await h.wait_until(lambda: session.registration.accepted)
    boots = csms.times("BootNotification")
    assert boots[1] - first == pytest.approx(MAX_BOOT_RETRY)
    assert any("waiting 86400 s (at most a day)" in m for m in caplog.messages)


class HangingUpCsms(FakeCsms):
    """Accepts the WebSocket and closes it at once, once `hang_up` is set."""

    hang_up = False

    async def serve(self, charge_point_id: str, ws: Any) -> None:
        if not self.hang_up:
            await super().serve(charge_point_id, ws)
            return
        self.connections += 1
        self._notify()
        await ws.aclose()


async def test_central_system_closing_every_resumed_connection_backs_off(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """A resumed registration is Accepted without a word from the central system: only one
    that answers resets the backoff, else a hang-up right after the upgrade is retried at
    the shortest interval forever."""
    csms = HangingUpCsms()
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        csms.hang_up = True
        await h.network.drop()
        await h.wait_until(lambda: csms.connections >= 10)
    gaps = [b - a for a, b in itertools.pairwise(h.network.attempts[1:])]
    assert gaps[-1] > gaps[0] * 4, gaps  # grows
    assert len(csms.received("BootNotification")) == 1


async def test_central_system_hanging_up_before_the_upgrade_is_retried_with_the_backoff(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """A server that accepts the connection and closes it before the WebSocket upgrade fails
    the attempt at once (not at the 20 s connect timeout) and the backoff goes on."""
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        h.network.hang_up = True
        await h.network.drop()
        await h.wait_until(lambda: len(h.network.attempts) >= 1 + 6)
        failure = h.station.snapshot()["chargePoint"]["lastConnectionFailure"]
        h.network.hang_up = False
        await h.csms.wait_connected(2)
    assert failure["reason"] == (
        "the central system closed the connection without answering the upgrade"
    )
    gaps = [b - a for a, b in itertools.pairwise(h.network.attempts[1:7])]
    # Each is the backoff alone (RetryBackoffWaitMinimum 1 s, doubling, jitter [1/2, 1]).
    assert all(2**i / 2 <= gap <= 2**i + 0.01 for i, gap in enumerate(gaps)), gaps


async def test_status_notifications_again_after_every_reconnect(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms()
    async with running_station(charger_config(tmp_path), csms) as h:
        await csms.wait_for_calls("StatusNotification", 3)
        await h.network.drop()
        await csms.wait_for_calls("StatusNotification", 6)
    assert csms.connections == 2
    assert [s[0] for s in statuses(csms)] == [0, 1, 2, 0, 1, 2]


async def test_dead_connection_detected_by_missing_pong(
    autojump_clock: Any, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level("INFO", logger="dcocpp.session")
    csms = FakeCsms(interval=3600)
    async with running_station(charger_config(tmp_path), csms, ping=10) as h:
        await csms.wait_for_calls("StatusNotification", 3)
        frozen_at = trio.current_time()
        h.network.freeze()  # the CSMS stops answering but the stream stays open
        await csms.wait_for(lambda: csms.connections == 2)
        assert 10 <= trio.current_time() - frozen_at <= 10 + 10 + 30 + 1
    assert "no WebSocket pong within 10 s" in caplog.text


async def test_a_message_above_the_websocket_limit_is_logged_as_closed_by_the_charger(
    autojump_clock: Any, tmp_path: Path, caplog: Any
) -> None:
    """The WebSocket takes messages up to MAX_WEBSOCKET_MESSAGE_BYTES and closes the connection
    itself (code 1009) above: the log says that the charger closed it, and why, not that the
    central system did; a close of the central system's own says its code and reason."""
    url = "ws://csms.test/ocpp/DCOCPP-001"
    csms = FakeCsms()
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        rpc = await csms.wait_connected()
        data = "x" * MAX_WEBSOCKET_MESSAGE_BYTES
        await rpc.websocket.send_message(json.dumps([2, "big", "DataTransfer", {"data": data}]))
        rpc = await csms.wait_connected(2)
        await h.wait_until(lambda: h.station.session is not None and h.station.session.connected)
        # The close handshake is answered to the CSMS's connection task (MemoryNetwork),
        # which ends as the charger's side closes: not waited for here.
        with trio.move_on_after(1):
            await rpc.websocket.aclose(code=1009, reason="your frame is too big")
        await csms.wait_connected(3)
    lost = [NEXT_ATTEMPT.sub("", line) for line in session_lines(caplog, logging.WARNING)]
    assert lost == [
        f"connection state Accepted -> Disconnected: connection to {url} lost: the charger"
        f" closed it (WebSocket close 1009): a message from the central system exceeded"
        f" {MAX_WEBSOCKET_MESSAGE_BYTES} bytes",
        f"connection state Accepted -> Disconnected: connection to {url} lost: closed by the"
        " central system (WebSocket close 1009 MESSAGE_TOO_BIG: your frame is too big)",
    ]


async def test_connection_state_logged_one_line_per_change(
    autojump_clock: Any, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level("INFO", logger="dcocpp.session")
    csms = FakeCsms(boot_statuses=[PENDING, PENDING, ACCEPTED], interval=10)
    async with running_station(charger_config(tmp_path), csms):
        await csms.wait_for_calls("StatusNotification", 3)
    lines = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("connection state")
    ]
    # The URL actually connected to: the configured one with the charge point id. An attempt
    # is logged with its outcome, not on its own.
    assert lines == [
        "connection state Connecting -> Booting: connected to ws://csms.test/ocpp/DCOCPP-001",
        "connection state Booting -> Pending: retry in 10 s",
        "connection state Pending -> Accepted",
    ]


def session_lines(caplog: Any, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "dcocpp.session" and r.levelno == level
    ]


async def test_failed_reconnects_logged_once_per_reason_and_shown_in_the_status(
    autojump_clock: Any, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="dcocpp.session")
    allowed = [True]
    csms = FakeCsms(authenticate=lambda cp, pw: allowed[0])
    url = "ws://csms.test/ocpp/DCOCPP-001"
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        assert h.station.snapshot()["chargePoint"]["url"] == url
        assert h.station.snapshot()["chargePoint"]["lastConnectionFailure"] is None
        h.network.down = True  # the central system's host refuses connections
        await h.network.drop()
        await h.wait_until(lambda: len(h.network.attempts) >= 1 + 15)
        failure = h.station.snapshot()["chargePoint"]["lastConnectionFailure"]
        assert failure["url"] == url
        assert failure["reason"] == (
            "cannot connect to csms.test:80: connection refused "
            "(nothing accepts connections on port 80)"
        )
        refused_since = failure["since"]
        assert failure["attempts"] >= 15  # the lost connection and the refusals after it
        assert failure["at"] > refused_since

        h.network.down, allowed[0] = False, False  # up again, but refusing our credentials
        before = len(h.network.attempts)
        await h.wait_until(lambda: len(h.network.attempts) >= before + 15)
        failure = h.station.snapshot()["chargePoint"]["lastConnectionFailure"]
        assert failure["reason"] == (
            "the central system refused the WebSocket upgrade: HTTP 401 Unauthorized "
            "(wrong or missing AuthorizationKey?)"
        )
        assert failure["since"] == refused_since  # the same outage
        attempts = failure["attempts"]

        allowed[0] = True
        await h.wait_until(lambda: csms.connections == 2)
        # The last failure stays for the operator to read.
        assert h.station.snapshot()["chargePoint"]["lastConnectionFailure"] == failure

    warnings = session_lines(caplog, logging.WARNING)
    assert len(warnings) == 3, warnings  # 30 failed attempts: one line per change of reason
    assert warnings[0].startswith(
        f"connection state Accepted -> Disconnected: connection to {url} lost: "
    )
    assert warnings[1].startswith(
        f"connection state Connecting -> Disconnected: cannot connect to {url}: "
        "cannot connect to csms.test:80: connection refused"
    )
    assert warnings[2].startswith(
        f"connection state Connecting -> Disconnected: cannot connect to {url}: "
        "the central system refused the WebSocket upgrade: HTTP 401 Unauthorized"
    )
    assert all(NEXT_ATTEMPT.search(line) for line in warnings)
    retries = [line for line in session_lines(caplog, logging.DEBUG) if "cannot connect" in line]
    assert len(retries) == attempts - 2 - 1  # all but the first of each reason (and the drop)
    assert (
        f"connection state Connecting -> Accepted: connected to {url} after {attempts} "
        f"failure(s) since {refused_since}; registration resumed without BootNotification"
        in session_lines(caplog, logging.INFO)
    )


async def test_a_security_profile_without_its_prerequisites_is_rejected(
    autojump_clock: Any, tmp_path: Path, caplog: Any
) -> None:
    """Accepting SecurityProfile 1 or 2 without an AuthorizationKey, or 2/3 without a CSMS
    root, would be a promise the next connection breaks: Rejected, no reconnect; the profile
    in use is Rejected too (the whitepaper allows only a higher one; libocpp answers so)."""
    caplog.set_level(logging.WARNING, logger="dcocpp.session")
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        assert h.station.session is not None
        connection = h.station.session.connection_number
        for value in ("1", "2", "3", "0", "4", "x"):
            result = await h.csms_call(call.ChangeConfiguration(key="SecurityProfile", value=value))
            assert result.status == "Rejected", value
        await trio.sleep(5)
        assert h.station.session.connection_number == connection  # no reconnect
        assert h.store.get_int("SecurityProfile") == 0
    assert session_lines(caplog, logging.WARNING) == [
        "SecurityProfile 1 refused: no AuthorizationKey is set (Basic auth)",
        "SecurityProfile 2 refused: no AuthorizationKey is set (Basic auth)",
        "SecurityProfile 3 refused: no CentralSystemRootCertificate is installed"
        " (nor a csmsCaBundle configured)",
        "SecurityProfile 0 refused: it is not above the profile in use (0)",
        "SecurityProfile '4' refused: there are profiles 0 to 3",
        "SecurityProfile 'x' refused: there are profiles 0 to 3",
    ]


async def test_security_profile_reports_what_the_connection_uses(
    autojump_clock: Any, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="dcocpp.session")
    # ws:// without credentials is no profile; with an AuthorizationKey it is profile 1 (Basic
    # auth without TLS), whatever the shipped file says.
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        assert h.store.get_int("SecurityProfile") == 0
        key = "0123456789abcdef0123" * 2  # 20 bytes in hex
        result = await h.csms_call(call.ChangeConfiguration(key="AuthorizationKey", value=key))
        assert result.status == "Accepted"
        await h.csms.wait_connected(2)  # it reconnected with the key
        read = await h.csms_call(call.GetConfiguration(key=["SecurityProfile"]))
        # Reconnecting on purpose is no failure.
        assert h.station.snapshot()["chargePoint"]["lastConnectionFailure"] is None
    assert read.configuration_key == [{"key": "SecurityProfile", "readonly": False, "value": "1"}]
    assert session_lines(caplog, logging.WARNING) == []
    assert any(
        line.startswith("connection state Accepted -> Disconnected: reconnecting (")
        for line in session_lines(caplog, logging.INFO)
    )


async def test_message_log_is_schema_valid_json(autojump_clock: Any, tmp_path: Path) -> None:
    # Every CALL the charge point sent passed the fake CSMS's schema validation (it answers
    # a CALLERROR otherwise, which would have failed the calls above); spot-check the shapes.
    async with running_station(charger_config(tmp_path)) as h:
        await h.csms.wait_for_calls("StatusNotification", 3)
        result = await h.csms_call_raw("GetConfiguration", {"key": ["HeartbeatInterval"]})
    assert json.loads(json.dumps(result)) == {
        "configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "300"}]
    }


async def test_authorization_cache_expiry_follows_the_station_clock() -> None:
    from datetime import UTC, datetime

    from dcocpp.ocpp.authcache import AuthorizationCache

    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    cache = AuthorizationCache(clock=lambda: now)
    await cache.update("TAG", {"status": "Accepted", "expiry_date": "2026-11-24T12:30:00Z"})
    assert cache.lookup("TAG") == {"status": "Accepted", "expiry_date": "2026-11-24T12:30:00Z"}
    now = datetime(2026, 11, 24, 12, 31, tzinfo=UTC)
    assert cache.lookup("TAG")["status"] == "Expired"  # type: ignore[index]
    assert cache.lookup("OTHER") is None


# --- status coalescing -------------------------------------------------------------------------

_TABLE = allowed_transitions("connector")
_STATUSES = sorted(_TABLE)


@st.composite
def _walks(draw: st.DrawFn) -> tuple[ChargePointStatus, list[ChargePointStatus]]:
    """A status the central system has, and the statuses a connector then reports: each an
    allowed step from the one before, as the connector machine makes them."""
    start = draw(st.sampled_from(_STATUSES))
    walk, status = [], start
    for _ in range(draw(st.integers(1, 60))):
        status = draw(st.sampled_from(sorted(_TABLE[status])))
        walk.append(status)
    return start, walk


@hypothesis.given(_walks())
def test_coalesced_statuses_are_a_short_allowed_path_to_the_latest(
    walk: tuple[ChargePointStatus, list[ChargePointStatus]],
) -> None:
    """However a connector's statuses come before any goes out: the queue leads from the status
    the central system has to the latest one through allowed steps only, never names a status
    twice, and so never holds more statuses than there are."""
    sent, reported = walk
    queue: list[tuple[ConnectorStatus, float]] = []
    for t, status in enumerate(reported):
        queue = _coalesced(sent, queue, (ConnectorStatus(1, status), float(t)), _TABLE)
        path = [entry.status for entry, _ in queue]
        assert path[-1] == status
        assert len(set(path)) == len(path) <= len(_STATUSES)
        steps = zip([sent, *path], path, strict=False)
        assert all(after in _TABLE[before] or after == before == sent for before, after in steps)


def test_a_local_list_conflict_is_never_coalesced_away() -> None:
    """A conflict is an event: it goes out even when the charge point's own status follows
    before it was sent."""
    table = allowed_transitions("chargePoint")
    available = ConnectorStatus(0, ChargePointStatus.available)
    conflict = ConnectorStatus(
        0, ChargePointStatus.available, error_code=ChargePointErrorCode.local_list_conflict
    )
    queue = _coalesced(ChargePointStatus.available, [], (conflict, 0.0), table)
    queue = _coalesced(ChargePointStatus.available, queue, (available, 1.0), table)
    assert [entry for entry, _ in queue] == [conflict, available]
