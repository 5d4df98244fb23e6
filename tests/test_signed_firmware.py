"""SignedUpdateFirmware (OCPP 1.6 security whitepaper, edition 3, secure firmware update) on a
whole station against the FakeCsms: a test manufacturer PKI made with `cryptography` (key
identifiers on every certificate), the root installed over OCPP (InstallCertificate), the file
served by the in-process HTTP file server on loopback, installed by the built-in installer or
a hook; restarts are new Stations on the same data directory (a HardReset ends `Station.run`,
as it ends `dcocpp run` with status 3).

Real time, short (the bytes move through the kernel and worker threads), except the wait for
an install date, which runs on the autojump clock once the file is on disk.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from ocpp.v16 import call

from dcocpp.clock import ocpp_time
from dcocpp.ocpp.errors import CallError
from dcocpp.ocpp.firmware.signature import verify_signature
from tests.csms import FakeCsms
from tests.file_server import FileServer
from tests.pki import NOW, VALID_FROM, Issued, issue
from tests.station_harness import Harness, running_station
from tests.test_firmware import (
    IMAGE,
    LIMIT,
    NOT_AN_IMAGE,
    VERSION,
    config_for,
    firmware_files,
    http,
    http_url,
    next_boot,
    until_hard_reset,
    versions_booted,
)
from tests.test_security_profiles import logged_events

__all__ = ["http"]  # the file server fixture, shared with the UpdateFirmware tests

SIGNED = "SignedFirmwareStatusNotification"


def manufacturer_root() -> Issued:
    return issue("Manufacturer Root CA")


def signer(
    root: Issued, *, rsa_key: bool = False, not_after: Any = None, not_before: Any = None
) -> Issued:
    """A firmware signing certificate the manufacturer's root issued (codeSigning, no
    subjectAltName), with an EC P-256 key or an RSA 2048 one."""
    key = rsa.generate_private_key(65537, 2048) if rsa_key else None
    return issue(
        "Firmware Signer",
        root,
        ca=False,
        key=key,
        usage=ExtendedKeyUsageOID.CODE_SIGNING,
        not_after=not_after,
        not_before=not_before,
    )


def sign(signing: Issued, content: bytes) -> str:
    """The whitepaper's signature: SHA-256 over the whole file, RSA PKCS#1 v1.5 or DER ECDSA,
    in base64."""
    key = signing.key
    if isinstance(key, rsa.RSAPrivateKey):
        raw = key.sign(content, padding.PKCS1v15(), hashes.SHA256())
    else:
        raw = key.sign(content, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(raw).decode("ascii")


async def install_root(h: Harness, root: Issued) -> None:
    result = await h.csms_call(
        call.InstallCertificate(
            certificate_type="ManufacturerRootCertificate", certificate=root.pem
        )
    )
    assert result.status == "Accepted"


def signed_update(
    h: Harness,
    url: str,
    signing: Issued,
    signature: str,
    request_id: int,
    *,
    after: float = 0,
    install_after: float | None = None,
    **fields: Any,
) -> Any:
    now = h.station.clock.now()
    firmware = {
        "location": url,
        "retrieve_date_time": ocpp_time(now + timedelta(seconds=after)),
        "signing_certificate": signing.pem,
        "signature": signature,
    }
    if install_after is not None:
        firmware["install_date_time"] = ocpp_time(now + timedelta(seconds=install_after))
    return h.csms_call(
        call.SignedUpdateFirmware(request_id=request_id, firmware=firmware, **fields)
    )


def signed_statuses(csms: FakeCsms, request_id: int | None = None) -> list[str]:
    return [
        p["status"]
        for p in csms.received(SIGNED)
        if request_id is None or p.get("request_id") == request_id
    ]


async def wait_signed(h: Harness, *expected: str, limit: float = LIMIT) -> None:
    """Until the central system heard `expected` (of any request), in that order, and no more."""
    await h.wait_until(
        lambda: len(signed_statuses(h.csms)) >= len(expected), limit=limit, poll=0.02
    )
    assert signed_statuses(h.csms) == list(expected)


def security_events(csms: FakeCsms, kind: str) -> list[dict[str, Any]]:
    return [p for p in csms.received("SecurityEventNotification") if p["type"] == kind]


# --- TC_080: the whole flow ----------------------------------------------------------------------


@pytest.mark.tc("TC_080")
@pytest.mark.parametrize("algorithm", ["ecdsa", "rsa"])
async def test_tc_080_signed_firmware_is_verified_installed_and_reported_installed_once(
    algorithm: str, http: FileServer, tmp_path: Path
) -> None:
    config = config_for(tmp_path)
    csms = FakeCsms(security_events=True)
    root = manufacturer_root()
    signing = signer(root, rsa_key=algorithm == "rsa")
    url = http_url(http, IMAGE)

    async def update(h: Harness) -> None:
        await install_root(h, root)
        result = await signed_update(h, url, signing, sign(signing, IMAGE), 80, retries=1)
        assert result.status == "Accepted"
        await wait_signed(
            h, "Downloading", "Downloaded", "SignatureVerified", "Installing", "InstallRebooting"
        )

    await until_hard_reset(config, csms, update)
    assert firmware_files(config) == []
    await next_boot(config, csms)
    await next_boot(config, csms)  # and once more: nothing is told twice
    assert [(p["status"], p["request_id"]) for p in csms.received(SIGNED)] == [
        ("Downloading", 80),
        ("Downloaded", 80),
        ("SignatureVerified", 80),
        ("Installing", 80),
        ("InstallRebooting", 80),
        ("Installed", 80),  # after the BootNotification of the new firmware
    ]
    installed = csms.index_of(SIGNED, lambda p: p["status"] == "Installed")
    assert csms.index_of("BootNotification", lambda p: p["firmware_version"] == VERSION) < installed
    assert csms.received("FirmwareStatusNotification") == []  # UpdateFirmware's message
    assert versions_booted(csms) == [config.charge_point.firmware_version, VERSION, VERSION]
    assert len(security_events(csms, "FirmwareUpdated")) == 1
    assert security_events(csms, "InvalidFirmwareSignature") == []


# --- TC_081: a signature that does not match -----------------------------------------------------


@pytest.mark.tc("TC_081")
async def test_tc_081_a_bad_signature_is_invalid_signature_with_its_event_and_nothing_installed(
    http: FileServer, tmp_path: Path
) -> None:
    config = config_for(tmp_path)
    root = manufacturer_root()
    signing = signer(root)
    forged = sign(signing, IMAGE[:-1] + b"\x00")  # another file's
    async with running_station(config, FakeCsms(security_events=True)) as h:
        await h.booted()
        await install_root(h, root)
        result = await signed_update(h, http_url(http, IMAGE), signing, forged, 81)
        assert result.status == "Accepted"
        await wait_signed(h, "Downloading", "Downloaded", "InvalidSignature")
        await h.wait_until(lambda: bool(security_events(h.csms, "InvalidFirmwareSignature")))
        await trio.sleep(0.5)
        assert signed_statuses(h.csms, 81) == ["Downloading", "Downloaded", "InvalidSignature"]
        assert firmware_files(config) == []  # the file is gone
        assert [c.machine.status for c in h.station.connectors.values()] == ["Available"] * 2
        shown = h.station.snapshot()["chargePoint"]["firmware"]
        assert shown["version"] == config.charge_point.firmware_version
        assert shown["update"]["error"].startswith("invalid signature")
        assert logged_events(h, "InvalidFirmwareSignature")
    assert versions_booted(h.csms) == [config.charge_point.firmware_version]  # no reboot


# --- the signing certificate ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["no manufacturer root", "another manufacturer's root", "expired", "not yet valid"],
)
async def test_a_signing_certificate_not_chained_to_an_installed_root_is_invalid_certificate(
    case: str, http: FileServer, tmp_path: Path
) -> None:
    root = manufacturer_root()
    signing = {
        "no manufacturer root": lambda: signer(root),
        "another manufacturer's root": lambda: signer(manufacturer_root()),
        # Before, after the time of the station's clock and of the system's.
        "expired": lambda: signer(
            root, not_before=VALID_FROM - timedelta(days=400), not_after=VALID_FROM
        ),
        "not yet valid": lambda: signer(root, not_before=NOW + timedelta(days=30)),
    }[case]()
    async with running_station(config_for(tmp_path), FakeCsms(security_events=True)) as h:
        await h.booted()
        if case != "no manufacturer root":
            await install_root(h, root)
        result = await signed_update(h, http_url(http, IMAGE), signing, sign(signing, IMAGE), 5)
        assert result.status == "InvalidCertificate"
        await trio.sleep(0.5)
        assert http.requests == []  # nothing downloaded
        assert signed_statuses(h.csms) == []
        assert h.station.snapshot()["chargePoint"]["firmware"]["update"] is None
        # Logged, and not sent: not among the whitepaper's critical events.
        assert len(logged_events(h, "InvalidFirmwareSigningCertificate")) == 1
        assert security_events(h.csms, "InvalidFirmwareSigningCertificate") == []


async def test_a_signature_that_is_no_base64_is_rejected_at_once(
    http: FileServer, tmp_path: Path
) -> None:
    root = manufacturer_root()
    signing = signer(root)
    async with running_station(config_for(tmp_path)) as h:
        await h.booted()
        await install_root(h, root)
        result = await signed_update(h, http_url(http, IMAGE), signing, "not base64!", 6)
        assert result.status == "Rejected"
        await trio.sleep(0.3)
        assert http.requests == [] and signed_statuses(h.csms) == []


def test_signatures_are_checked_over_the_whole_file_with_the_certificate_key(
    tmp_path: Path,
) -> None:
    root = manufacturer_root()
    path = tmp_path / "image.bin"
    path.write_bytes(IMAGE)
    for signing in (signer(root), signer(root, rsa_key=True)):
        assert verify_signature(path, signing.pem, sign(signing, IMAGE)) is None
        other = signer(root, rsa_key=isinstance(signing.key, rsa.RSAPrivateKey))
        problem = verify_signature(path, other.pem, sign(signing, IMAGE))
        assert problem is not None and "does not match" in problem
        truncated = verify_signature(path, signing.pem, sign(signing, IMAGE[:-10]))
        assert truncated is not None
    assert "not base64" in str(verify_signature(path, signing.pem, "%%%"))


# --- the install date ----------------------------------------------------------------------------


def real_time(clock: trio.testing.MockClock) -> None:
    """The autojump clock as a real one: the bytes of a transfer take real time."""
    clock.autojump_threshold = math.inf
    clock.rate = 1.0


def jumping(clock: trio.testing.MockClock) -> None:
    clock.rate = 0.0
    clock.autojump_threshold = 0.0


async def test_an_install_date_ahead_is_install_scheduled_and_waited_for_across_a_restart(
    http: FileServer, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    real_time(autojump_clock)
    config = config_for(tmp_path)
    csms = FakeCsms(security_events=True)
    root = manufacturer_root()
    signing = signer(root)
    hours = 6 * 3600
    async with running_station(config, csms) as h:
        await h.booted()
        await install_root(h, root)
        began = trio.current_time()
        result = await signed_update(
            h, http_url(http, IMAGE), signing, sign(signing, IMAGE), 9, install_after=hours
        )
        assert result.status == "Accepted"
        await wait_signed(h, "Downloading", "Downloaded", "SignatureVerified", "InstallScheduled")
        jumping(autojump_clock)  # the file is on disk: what is left is waiting
        await trio.sleep(hours / 2)
        # Not held before its install date: the guns charge meanwhile.
        assert [c.machine.status for c in h.station.connectors.values()] == ["Available"] * 2
        since = h.csms.mark()
        trigger = call.ExtendedTriggerMessage(requested_message="FirmwareStatusNotification")
        assert (await h.csms_call(trigger)).status == "Accepted"
        await h.wait_calls(SIGNED, since=since)
        assert h.csms.received(SIGNED, since) == [{"status": "InstallScheduled", "request_id": 9}]
        assert h.station.snapshot()["chargePoint"]["firmware"]["update"]["phase"] == "verified"

    # Restarted while it waits: the rest of the wait, then the install, each step told once.
    async def wait(h: Harness) -> None:
        # (The harness's station clock starts again at WALL_START: the whole wait is ahead.)
        await trio.sleep(hours - 2)  # jumped over, up to just before the install date
        # The install reads the file in a worker thread: in real time, or the clock would
        # jump over the reboot's deadline while the thread works.
        real_time(autojump_clock)

    await until_hard_reset(config, csms, wait)
    assert trio.current_time() - began >= hours
    await next_boot(config, csms)
    assert signed_statuses(csms, 9) == [
        "Downloading",
        "Downloaded",
        "SignatureVerified",
        "InstallScheduled",
        "InstallScheduled",  # the triggered one
        "Installing",
        "InstallRebooting",
        "Installed",
    ]


async def test_a_retrieve_date_ahead_is_download_scheduled_and_trigger_tells_it(
    http: FileServer, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    root = manufacturer_root()
    signing = signer(root)
    async with running_station(config_for(tmp_path)) as h:
        await h.booted()
        await install_root(h, root)
        url = http_url(http, IMAGE)
        await signed_update(h, url, signing, sign(signing, IMAGE), 3, after=7200)
        await wait_signed(h, "DownloadScheduled", limit=60)
        since = h.csms.mark()
        assert (
            await h.csms_call(call.TriggerMessage(requested_message="FirmwareStatusNotification"))
        ).status == "Accepted"
        await h.wait_calls(SIGNED, since=since)
        assert h.csms.received(SIGNED, since) == [{"status": "DownloadScheduled", "request_id": 3}]
        assert h.csms.received("FirmwareStatusNotification") == []
        assert http.requests == []


# --- replacing, refusing, failing --------------------------------------------------------------


async def test_a_signed_update_replaces_one_not_installing_and_is_rejected_during_an_install(
    http: FileServer, tmp_path: Path
) -> None:
    config = config_for(tmp_path, hook=["/bin/sh", "-c", "sleep 2; exit 1", "hook"])
    root = manufacturer_root()
    signing = signer(root)
    url = http_url(http, IMAGE)
    signature = sign(signing, IMAGE)
    async with running_station(config) as h:
        await h.booted()
        await install_root(h, root)
        first = await signed_update(h, url, signing, signature, 1, after=3600)
        assert first.status == "Accepted"
        await wait_signed(h, "DownloadScheduled")
        second = await signed_update(h, url, signing, signature, 2)
        assert second.status == "AcceptedCanceled"
        await h.wait_until(lambda: "Installing" in signed_statuses(h.csms), limit=LIMIT)
        third = await signed_update(h, url, signing, signature, 3)
        assert third.status == "Rejected"  # the install is under way
        await h.wait_until(
            lambda: "InstallationFailed" in signed_statuses(h.csms), limit=LIMIT, poll=0.05
        )
        await trio.sleep(0.3)
        assert signed_statuses(h.csms, 1) == ["DownloadScheduled"]  # nothing more of it
        assert signed_statuses(h.csms, 2) == [
            "Downloading",
            "Downloaded",
            "SignatureVerified",
            "Installing",
            "InstallationFailed",  # the hook's exit status 1
        ]
        assert signed_statuses(h.csms, 3) == []
        assert len(http.requests_of("GET")) == 1


async def test_a_signed_file_that_is_no_image_is_install_verification_failed(
    http: FileServer, tmp_path: Path
) -> None:
    config = config_for(tmp_path)
    root = manufacturer_root()
    signing = signer(root)
    async with running_station(config) as h:
        await h.booted()
        await install_root(h, root)
        url = http_url(http, NOT_AN_IMAGE)
        await signed_update(h, url, signing, sign(signing, NOT_AN_IMAGE), 4)
        await wait_signed(
            h,
            "Downloading",
            "Downloaded",
            "SignatureVerified",
            "Installing",
            "InstallVerificationFailed",
        )
        for cid in (1, 2):
            await h.wait_machine_status(cid, "Available", limit=LIMIT)
        assert firmware_files(config) == []


async def test_an_update_firmware_keeps_its_own_status_message_beside_signed_ones(
    http: FileServer, tmp_path: Path
) -> None:
    async with running_station(config_for(tmp_path)) as h:
        await h.booted()
        when = ocpp_time(h.station.clock.now() + timedelta(hours=1))
        await h.csms_call(call.UpdateFirmware(location=http_url(http, IMAGE), retrieve_date=when))
        since = h.csms.mark()
        trigger = call.ExtendedTriggerMessage(requested_message="FirmwareStatusNotification")
        assert (await h.csms_call(trigger)).status == "Accepted"
        await h.wait_calls("FirmwareStatusNotification", since=since)
        assert h.csms.received(SIGNED) == []


# --- signed firmware only (whitepaper L01.FR.20) -------------------------------------------------


@pytest.mark.parametrize("firmware_management", [True, False])
async def test_a_plain_update_firmware_follows_supported_feature_profiles(
    http: FileServer,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    firmware_management: bool,
) -> None:
    """FirmwareManagement listed: UpdateFirmware is taken (as TC_044_1 shows). Left out of
    SupportedFeatureProfiles by the integrator: the charger takes signed firmware only, a plain
    UpdateFirmware is CALLERROR NotSupported and nothing is downloaded; SignedUpdateFirmware
    is taken in both modes."""
    config = config_for(tmp_path)
    document = json.loads(config.ocpp_config_path.read_text())
    profiles = document["Core"]["SupportedFeatureProfiles"].split(",")
    if not firmware_management:
        profiles.remove("FirmwareManagement")
    document["Core"]["SupportedFeatureProfiles"] = ",".join(profiles)
    key_file = tmp_path / "ocpp16-config.json"
    key_file.write_text(json.dumps(document))
    config = attrs.evolve(config, ocpp_config_path=key_file)
    root = manufacturer_root()
    signing = signer(root)
    async with running_station(config) as h:
        await h.booted()
        await install_root(h, root)
        plain = call.UpdateFirmware(
            location=http_url(http, IMAGE),
            retrieve_date=ocpp_time(h.station.clock.now() + timedelta(hours=1)),
        )
        if firmware_management:
            await h.csms_call(plain)
            assert h.station.snapshot()["chargePoint"]["firmware"]["update"] is not None
        else:
            with pytest.raises(CallError) as refused:
                await h.csms_call(plain)
            assert refused.value.code == "NotSupported"
            assert h.station.snapshot()["chargePoint"]["firmware"]["update"] is None
        # Signed firmware is taken either way (it replaces a plain plan not yet installing).
        result = await signed_update(
            h, http_url(http, IMAGE), signing, sign(signing, IMAGE), 5, after=3600
        )
        assert result.status == ("AcceptedCanceled" if firmware_management else "Accepted")
    assert http.requests == []  # both wait for their dates
