"""ExtendedTriggerMessage (security whitepaper; issue 15, item 6) on a whole station against
the FakeCsms: each message it names is sent after the answer with the real current state,
Rejected for a connector the charger does not have or a certificate it cannot renew, and the
messages TriggerMessage also sends come from the same code (the same payloads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from cryptography import x509
from ocpp.v16 import call

from tests.station_harness import Harness, charger_config, running_station


async def extended_trigger(
    h: Harness, message: str, connector_id: int | None = None
) -> tuple[str, int]:
    """The answer, and the CSMS's mark from before it."""
    since = h.csms.mark()
    result = await h.csms_call(
        call.ExtendedTriggerMessage(requested_message=message, connector_id=connector_id)
    )
    return result.status, since


def statuses(h: Harness, since: int) -> list[tuple[int, str]]:
    return [(p["connector_id"], p["status"]) for p in h.csms.received("StatusNotification", since)]


def triggered_meter_values(h: Harness, since: int) -> list[int]:
    return [
        p["connector_id"]
        for p in h.csms.received("MeterValues", since)
        if {s.get("context") for mv in p["meter_value"] for s in mv["sampled_value"]} == {"Trigger"}
    ]


async def test_extended_trigger_sends_boot_heartbeat_firmware_and_log_status(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        for message in ("BootNotification", "Heartbeat", "FirmwareStatusNotification"):
            status, since = await extended_trigger(h, message)
            assert status == "Accepted"
            await h.wait_calls(message, since=since)
        status, since = await extended_trigger(h, "LogStatusNotification")
        assert status == "Accepted"
        assert await h.wait_calls("LogStatusNotification", since=since) == [{"status": "Idle"}]
        # TriggerMessage's FirmwareStatusNotification is the same (the firmware's state).
        since = h.csms.mark()
        result = await h.csms_call(
            call.TriggerMessage(requested_message="FirmwareStatusNotification")
        )
        assert result.status == "Accepted"
        await h.wait_calls("FirmwareStatusNotification", since=since)
        firmware = h.csms.received("FirmwareStatusNotification")
    assert len(firmware) == 2 and firmware[0] == firmware[1]


async def test_extended_trigger_status_notification_of_one_connector_or_all(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await h.hardware.plug(1)
        await h.wait_status(1, "Preparing")
        status, since = await extended_trigger(h, "StatusNotification")
        assert status == "Accepted"
        await h.wait_calls("StatusNotification", 3, since=since)
        everyone = statuses(h, since)
        status, since = await extended_trigger(h, "StatusNotification", 1)
        assert status == "Accepted"
        await h.wait_calls("StatusNotification", since=since)
        await trio.sleep(1)
        one = statuses(h, since)
    assert everyone == [(0, "Available"), (1, "Preparing"), (2, "Available")]
    assert one == [(1, "Preparing")]


async def test_extended_trigger_meter_values_of_one_connector_or_all(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        status, since = await extended_trigger(h, "MeterValues", 2)
        assert status == "Accepted"
        await h.wait_until(lambda: triggered_meter_values(h, since) == [2])
        status, since = await extended_trigger(h, "MeterValues")
        assert status == "Accepted"
        await h.wait_until(lambda: sorted(triggered_meter_values(h, since)) == [1, 2])


async def test_extended_trigger_for_an_unknown_connector_is_rejected(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        since = h.csms.mark()
        answers = [
            (await extended_trigger(h, message, 7))[0]
            for message in ("StatusNotification", "MeterValues", "Heartbeat")
        ]
        await trio.sleep(5)
        sent = h.csms.calls[since:]
    assert answers == ["Rejected"] * 3
    assert [action for _, action, _ in sent] == []


async def test_tc_074_extended_trigger_sign_charge_point_certificate_sends_a_new_csr(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """The trigger is answered first, then SignCertificate carries a CSR of a new key for
    this charge point; without the charge point certificate service it is Rejected."""
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        session = h.station.session
        assert session is not None
        status, since = await extended_trigger(h, "SignChargePointCertificate")
        assert status == "Accepted"
        first = await h.wait_calls("SignCertificate", since=since)
        status, since = await extended_trigger(h, "SignChargePointCertificate")
        second = await h.wait_calls("SignCertificate", since=since)
        certificates, session.charge_point_certificates = session.charge_point_certificates, None
        refused, since = await extended_trigger(h, "SignChargePointCertificate")
        await trio.sleep(1)
        assert h.csms.received("SignCertificate", since) == []
        session.charge_point_certificates = certificates
    assert refused == "Rejected"
    requests = [x509.load_pem_x509_csr(calls[0]["csr"].encode()) for calls in (first, second)]
    for request in requests:
        assert request.is_signature_valid
        common_name = request.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        assert common_name[0].value == h.station.config.charge_point.id
    # A new key pair for each request.
    assert requests[0].public_key() != requests[1].public_key()
