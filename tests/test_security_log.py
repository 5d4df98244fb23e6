"""The security log (security whitepaper; issue 15, item 7): every security event and every
change of the roots the charger trusts in `<logDir>/security.log`, with UTC times, rotated by
size, persisted across restarts; only the critical events (and those the OCTT checks for) go
to the central system as SecurityEventNotification.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from ocpp.v16 import call

from dcocpp.clock import parse_ocpp_time
from dcocpp.clock.stationclock import TrioWallClock
from dcocpp.ocpp.securitylog import SECURITY_LOG, SecurityLog
from dcocpp.ocpp.securitylog.events import (
    CRITICAL,
    EVENT_TYPES,
    OCTT_EXPECTED,
    sent_to_central_system,
)
from dcocpp.storage.asyncdb import WorkerThread
from tests.csms import FakeCsms
from tests.pki import issue
from tests.station_harness import (
    WALL_START,
    Harness,
    charger_config,
    preset_keys,
    running_station,
)
from tests.test_security_tls import HOST, install_csms_root, over_wss

AUTH_KEY = "00112233445566778899aabbccddeeff00112233"  # 20 bytes, hex
ENTRY = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z \S")


def entries(h: Harness) -> list[str]:
    path = h.station.config.log_dir / SECURITY_LOG
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def logged(h: Harness, text: str) -> list[str]:
    return [line for line in entries(h) if text in line]


def test_only_critical_events_and_those_the_octt_checks_are_sent() -> None:
    # The whitepaper's list, appendix 1: critical ones are sent, the rest only logged...
    assert sent_to_central_system("StartupOfTheDevice")
    assert sent_to_central_system("SettingSystemTime")
    assert not sent_to_central_system("FailedToAuthenticateAtCentralSystem")
    assert not sent_to_central_system("ReconfigurationOfSecurityParameters")
    assert not sent_to_central_system("InvalidTLSVersion")
    # ... but the OCTT expects these on the wire (TC_077, TC_078, TC_081).
    for kind in ("InvalidChargePointCertificate", "InvalidCentralSystemCertificate"):
        assert sent_to_central_system(kind)
    assert sent_to_central_system("InvalidFirmwareSignature")
    assert len(EVENT_TYPES) == 18 and CRITICAL < EVENT_TYPES and OCTT_EXPECTED < EVENT_TYPES
    assert not sent_to_central_system("CertificateInstalled")  # not an event of the list


async def test_security_events_and_trust_changes_are_logged_and_only_some_sent(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms(security_events=True)
    root = issue("CSMS Root for the log")
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        await h.wait_calls("SecurityEventNotification")  # StartupOfTheDevice
        # An invalid root: rejected, logged and sent (TC_078).
        invalid = issue("Not a CA", ca=False)
        result = await h.csms_call(
            call.InstallCertificate(
                certificate_type="CentralSystemRootCertificate", certificate=invalid.pem
            )
        )
        assert result.status == "Rejected"
        await h.wait_calls("SecurityEventNotification", 2)
        # A root installed and deleted: logged only (no event of the whitepaper's list).
        result = await h.csms_call(
            call.InstallCertificate(
                certificate_type="CentralSystemRootCertificate", certificate=root.pem
            )
        )
        assert result.status == "Accepted"
        listed = await h.csms_call_raw(
            "GetInstalledCertificateIds", {"certificateType": "CentralSystemRootCertificate"}
        )
        deleted = await h.csms_call_raw(
            "DeleteCertificate", {"certificateHashData": listed["certificateHashData"][0]}
        )
        assert deleted["status"] == "Accepted"
        # A new AuthorizationKey: ReconfigurationOfSecurityParameters, logged, not sent.
        changed = await h.csms_call(
            call.ChangeConfiguration(key="AuthorizationKey", value=AUTH_KEY)
        )
        assert changed.status == "Accepted"
        await h.wait_until(lambda: bool(logged(h, "ReconfigurationOfSecurityParameters")))
        await h.csms.wait_connected(2)  # the reconnect with the new key
        await trio.sleep(5)
        sent = [event["type"] for event in csms.received("SecurityEventNotification")]
    lines = entries(h)
    assert all(ENTRY.match(line) for line in lines), lines
    assert sent == ["StartupOfTheDevice", "InvalidCentralSystemCertificate"]
    assert len(logged(h, "SecurityEvent StartupOfTheDevice (sent)")) == 1
    [invalid_line] = logged(h, "SecurityEvent InvalidCentralSystemCertificate (sent): ")
    assert "not a CA" in invalid_line
    [installed] = logged(h, "CertificateInstalled: csms-root ")
    [removed] = logged(h, "CertificateDeleted: csms-root ")
    assert "CN=CSMS Root for the log" in installed and "CN=CSMS Root for the log" in removed
    [reconfigured] = logged(h, "SecurityEvent ReconfigurationOfSecurityParameters: ")
    assert "AuthorizationKey changed" in reconfigured and "(sent)" not in reconfigured
    assert AUTH_KEY not in "\n".join(lines)  # never a secret
    # In the order they happened, on the station's (UTC) clock.
    times = [line.split(" ", 1)[0] for line in lines]
    assert times == sorted(times)
    assert timedelta(0) <= parse_ocpp_time(times[0]) - WALL_START < timedelta(minutes=1)


async def test_a_reset_is_logged_and_the_log_survives_the_restart(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    async with running_station(config) as h:
        await h.booted()
        assert (await h.csms_call(call.Reset(type="Soft"))).status == "Accepted"
        await h.wait_calls("BootNotification", 2)
    async with running_station(config) as h:  # a new process on the same directories
        await h.booted()
        await h.wait_until(lambda: len(logged(h, "StartupOfTheDevice")) == 2)
    kinds = [line.split(" ")[2] for line in entries(h)]
    # The soft reset is no startup of the device; the new process is.
    assert kinds == ["StartupOfTheDevice", "ResetOrReboot", "StartupOfTheDevice"]


async def test_a_clock_step_is_logged_as_setting_system_time(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """The central system's time, an hour ahead: the station's clock follows it and logs the
    step (at its new time) as SettingSystemTime, a critical event that is sent too."""
    central = TrioWallClock(WALL_START)
    central.offset = timedelta(hours=1)
    csms = FakeCsms(clock=central, security_events=True)
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()

        def stepped() -> list[dict[str, Any]]:
            return [
                e
                for e in csms.received("SecurityEventNotification")
                if e["type"] == "SettingSystemTime"
            ]

        await h.wait_until(lambda: bool(stepped()))
        await h.wait_until(lambda: bool(logged(h, "SettingSystemTime")))
    [line] = logged(h, "SecurityEvent SettingSystemTime (sent): ")
    assert line.startswith(stepped()[0]["timestamp"])
    assert "central system" in line


async def test_the_log_rotates_by_size_and_a_window_is_cut_oldest_first(tmp_path: Path) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    security_log = SecurityLog(tmp_path / "logs" / SECURITY_LOG, max_bytes=400, backup_count=2)
    security_log.open()
    try:
        for n in range(40):
            await security_log.event(
                "InvalidMessages", f"entry {n:02d}", sent=False, at=start + timedelta(hours=n)
            )
        files = security_log.files()
        assert [p.name for p in files] == ["security.log.2", "security.log.1", "security.log"]
        assert all(p.stat().st_size <= 400 for p in files)
        window = tmp_path / "window.log"
        count = await trio.to_thread.run_sync(
            lambda: security_log.cut(
                window,
                start + timedelta(hours=34),
                start + timedelta(hours=37),
                title="the window",
            )
        )
    finally:
        security_log.close()
    lines = window.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# the window"
    assert [line.rsplit(" ", 1)[1] for line in lines[1:]] == ["34", "35", "36", "37"]
    assert count == 4
    assert lines[1] == "2026-12-02T10:00:00.000Z SecurityEvent InvalidMessages: entry 34"


async def test_a_detail_cannot_forge_an_entry(tmp_path: Path) -> None:
    security_log = SecurityLog(tmp_path / SECURITY_LOG, run=WorkerThread())
    security_log.open()
    try:
        forged = "bad\n2026-01-01T00:00:00.000Z SecurityEvent StartupOfTheDevice (sent)"
        await security_log.note("CertificateInstalled", forged)
    finally:
        security_log.close()
    [line] = (tmp_path / SECURITY_LOG).read_text(encoding="utf-8").splitlines()
    assert line.endswith(
        "CertificateInstalled: bad\\x0a2026-01-01T00:00:00.000Z SecurityEvent "
        "StartupOfTheDevice (sent)"
    )


async def test_a_log_directory_that_cannot_be_written_leaves_the_charger_running(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = charger_config(tmp_path)
    config.log_dir.parent.mkdir(parents=True, exist_ok=True)
    config.log_dir.write_text("a file where the directory should be")
    async with running_station(config) as h:
        await h.booted()
    assert any("security events go to this log only" in r.getMessage() for r in caplog.records)


async def test_an_untrusted_csms_certificate_is_one_event_per_change_not_per_attempt(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """A central system whose certificate chains to a root the charger does not trust: every
    attempt fails at once, the security event (sent: the OCTT's TC_078 kind) is raised once."""
    trusted, stranger = issue("CSMS Root"), issue("Another Root")
    server = issue(HOST, stranger, ca=False)
    config = charger_config(tmp_path)
    await install_csms_root(config, trusted)
    async with running_station(over_wss(config, tmp_path), tls=server.server_context()) as h:
        await trio.sleep(300)
        attempts = len(h.network.tls_failures)
        queued = h.station.snapshot()["chargePoint"]["outbox"]["queued"]
    assert attempts >= 3
    [line] = logged(h, "InvalidCentralSystemCertificate")
    assert "SecurityEvent InvalidCentralSystemCertificate (sent): " in line
    assert "not trusted" in line
    assert queued == 2  # this start's StartupOfTheDevice, and the event, for the next connection


async def test_a_refused_authorization_key_is_logged_once_and_not_sent(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    wrong, right = "0a" * 20, "0b" * 20
    preset_keys(config, AuthorizationKey=wrong)
    csms = FakeCsms(authenticate=lambda cp, pw: pw == bytes.fromhex(right), security_events=True)
    async with running_station(config, csms) as h:
        await trio.sleep(120)
        assert len(h.network.attempts) >= 3
        h.store.set_value("AuthorizationKey", right)
        await h.booted()
        await trio.sleep(10)
    [line] = logged(h, "FailedToAuthenticateAtCentralSystem")
    assert line.endswith("(wrong or missing AuthorizationKey?)") and "(sent)" not in line
    assert wrong not in "\n".join(entries(h)) and right not in "\n".join(entries(h))
    sent = [event["type"] for event in csms.received("SecurityEventNotification")]
    assert sent == ["StartupOfTheDevice"]
