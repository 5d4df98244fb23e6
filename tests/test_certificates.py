"""The certificate store and its OCPP 1.6 CALLs: InstallCertificate, GetInstalledCertificateIds,
DeleteCertificate (security whitepaper use cases M03-M05; OCTT TC_075 to TC_078)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography.hazmat.primitives import serialization
from ocpp.v16 import call

from dcocpp.ocpp.certificates import CertificateRejected
from dcocpp.ocpp.certificates.certid import CertId
from dcocpp.ocpp.certificates.store import CertificateStore, RootKind
from tests.csms import FakeCsms
from tests.pki import NOW, Issued, issue
from tests.station_harness import WALL_START, charger_config, running_station

CSMS_ROOT = RootKind.CENTRAL_SYSTEM


def new_store(tmp_path: Path) -> CertificateStore:
    store = CertificateStore(tmp_path / "certificates", clock=lambda: NOW)
    store.load()
    return store


def expected_cert_id(certificate: Issued, issuer: Issued) -> dict[str, str]:
    """RFC 6960 by hand: SHA-256 of the issuer's DER name and of its public key's BIT STRING
    contents (for an EC key, the X9.62 point), the serial in hex without leading zeros."""
    name = issuer.certificate.subject.public_bytes()
    key_bits = issuer.key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return {
        "hashAlgorithm": "SHA256",
        "issuerNameHash": hashlib.sha256(name).hexdigest(),
        "issuerKeyHash": hashlib.sha256(key_bits).hexdigest(),
        "serialNumber": format(certificate.certificate.serial_number, "x"),
    }


# --- the store ---------------------------------------------------------------------------------


def test_cert_id_of_a_root_is_rfc_6960_over_its_own_name_and_key(tmp_path: Path) -> None:
    root = issue("CSMS Root", serial=0x00_0A_BC_DE)
    installed = new_store(tmp_path).install(CSMS_ROOT, root.pem)
    got = installed.cert_id()
    assert got == CertId(*expected_cert_id(root, root).values())
    assert got.serial_number == "abcde"  # no leading zeros


def test_cert_id_of_a_root_signed_by_another_names_that_one(tmp_path: Path) -> None:
    old = issue("CSMS Root 1")
    new = issue("CSMS Root 2", old)
    store = new_store(tmp_path)
    store.install(CSMS_ROOT, old.pem)
    installed = store.install(CSMS_ROOT, new.pem)
    assert installed.cert_id() == CertId(*expected_cert_id(new, old).values())
    # Still known once the issuer is gone, and after a restart.
    store.delete(store.installed(CSMS_ROOT)[0])
    [reloaded] = new_store(tmp_path).installed(CSMS_ROOT)
    assert reloaded.cert_id() == installed.cert_id()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: issue("old", not_after=NOW - timedelta(days=1)).pem, "expired on "),
        (lambda: issue("early", not_before=NOW + timedelta(days=1)).pem, "not valid before "),
        (
            lambda: issue("leaf", ca=False).pem,
            "not a CA certificate (basicConstraints CA is false)",
        ),
        (
            lambda: issue("bare", basic_constraints=False).pem,
            "not a CA certificate (no basicConstraints)",
        ),
        (
            lambda: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "not a PEM certificate",
        ),
        (lambda: "hello", "not a PEM certificate that can be read"),
        (lambda: issue("a").pem + issue("b").pem, "one certificate expected, 2 given"),
        (
            lambda: issue("orphan", issue("unknown CA")).pem,
            "neither self-signed nor signed by an installed certificate",
        ),
        (
            # Names itself as issuer, but another key signed it.
            lambda: issue("forged", issue("other"), issuer_name="forged").pem,
            "neither self-signed",
        ),
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "not-a-ca",
        "no-constraints",
        "garbage",
        "no-pem",
        "two",
        "orphan",
        "bad-self-signature",
    ],
)
def test_what_is_no_acceptable_root_is_rejected_with_the_reason(
    tmp_path: Path, make: Any, reason: str
) -> None:
    store = new_store(tmp_path)
    with pytest.raises(CertificateRejected, match=re.escape(reason)):
        store.install(RootKind.MANUFACTURER, make())
    assert store.count() == 0
    assert not list(tmp_path.rglob("*.pem"))


def test_the_store_refuses_what_would_exceed_its_maximum(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    first, second = issue("one"), issue("two")
    store.install(CSMS_ROOT, first.pem, max_count=1)
    store.install(CSMS_ROOT, first.pem, max_count=1)  # installed already: nothing changes
    with pytest.raises(CertificateRejected, match="the store is full: it holds 1"):
        store.install(RootKind.MANUFACTURER, second.pem, max_count=1)
    assert store.count() == 1


def test_additional_root_certificate_check_replaces_the_root_that_signed_the_new_one(
    tmp_path: Path,
) -> None:
    store = new_store(tmp_path)
    old = issue("CSMS Root 1")
    store.install(CSMS_ROOT, old.pem, replace_signed=True)  # the first: nothing to check
    with pytest.raises(CertificateRejected, match="not signed by the installed"):
        store.install(CSMS_ROOT, issue("Stranger Root").pem, replace_signed=True)
    new = issue("CSMS Root 2", old)
    store.install(CSMS_ROOT, new.pem, replace_signed=True, max_count=1)  # replaces: fits
    assert [i.certificate for i in store.installed(CSMS_ROOT)] == [new.certificate]
    assert store.fallback is not None and store.fallback.certificate == old.certificate
    assert new_store(tmp_path).fallback is not None  # it survives a restart
    store.drop_fallback()
    assert store.fallback is None
    assert new_store(tmp_path).fallback is None


def test_certificates_persist_as_pem_named_by_their_sha256(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    root = issue("Manufacturer Root")
    store.install(RootKind.MANUFACTURER, root.pem)
    der = root.certificate.public_bytes(serialization.Encoding.DER)
    path = (
        tmp_path / "certificates" / "manufacturer-root" / f"{hashlib.sha256(der).hexdigest()}.pem"
    )
    assert path.read_text() == root.pem
    [reloaded] = new_store(tmp_path).installed(RootKind.MANUFACTURER)
    assert reloaded.certificate == root.certificate


def test_an_unreadable_file_is_logged_and_not_trusted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "certificates" / "csms-root"
    folder.mkdir(parents=True)
    (folder / "broken.pem").write_text("not a certificate")
    assert new_store(tmp_path).installed(CSMS_ROOT) == []
    assert f"{folder / 'broken.pem'} cannot be read, not trusted" in caplog.text


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_private_keys_are_written_mode_0600_in_a_0700_folder(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    key = issue("CP").key_pem
    path = store.write_private_key("charge-point.key", key)
    assert path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


# --- over OCPP ---------------------------------------------------------------------------------


async def install(h: Any, kind: str, pem: str) -> str:
    result = await h.csms_call(call.InstallCertificate(certificate_type=kind, certificate=pem))
    return str(result.status)


async def installed_ids(h: Any, kind: str) -> tuple[str, list[dict[str, str]]]:
    raw = await h.csms_call_raw("GetInstalledCertificateIds", {"certificateType": kind})
    return raw["status"], raw.get("certificateHashData", [])


@pytest.mark.parametrize(
    "kind",
    ["ManufacturerRootCertificate", "CentralSystemRootCertificate"],  # TC_075_1, TC_075_2
)
async def test_tc_075_1_and_2_install_a_root_then_read_back_its_hash_data(
    autojump_clock: Any, tmp_path: Path, kind: str
) -> None:
    root = issue(f"{kind} test")
    other = (
        "ManufacturerRootCertificate"
        if kind != "ManufacturerRootCertificate"
        else "CentralSystemRootCertificate"
    )
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        assert await installed_ids(h, kind) == ("NotFound", [])
        assert await install(h, kind, root.pem) == "Accepted"
        listed = await installed_ids(h, kind)
        assert await installed_ids(h, other) == ("NotFound", [])
    assert listed == ("Accepted", [expected_cert_id(root, root)])


@pytest.mark.tc("TC_076")
async def test_tc_076_delete_certificate_removes_it(autojump_clock: Any, tmp_path: Path) -> None:
    root = issue("Manufacturer Root", serial=0xABC123)
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await install(h, "ManufacturerRootCertificate", root.pem)
        _, [hash_data] = await installed_ids(h, "ManufacturerRootCertificate")
        # Hex in any case, the serial with a leading zero: the same certificate.
        asked = {
            **hash_data,
            "issuerKeyHash": hash_data["issuerKeyHash"].upper(),
            "serialNumber": "0" + hash_data["serialNumber"],
        }
        deleted = await h.csms_call_raw("DeleteCertificate", {"certificateHashData": asked})
        again = await h.csms_call_raw("DeleteCertificate", {"certificateHashData": hash_data})
        listed = await installed_ids(h, "ManufacturerRootCertificate")
    assert (deleted, again) == ({"status": "Accepted"}, {"status": "NotFound"})
    assert listed == ("NotFound", [])
    assert not list((tmp_path / "data" / "certificates").rglob("*.pem"))


@pytest.mark.tc("TC_078")
async def test_tc_078_an_invalid_csms_root_is_rejected_with_a_security_event(
    autojump_clock: Any, tmp_path: Path
) -> None:
    expired = issue("CSMS Root", not_after=WALL_START - timedelta(days=1))
    csms = FakeCsms(security_events=True)
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        since = csms.mark()
        assert await install(h, "CentralSystemRootCertificate", expired.pem) == "Rejected"
        [event] = await h.wait_calls("SecurityEventNotification", since=since)
        # A manufacturer root that is no CA is refused too, but it is not the central system's.
        leaf = issue("Manufacturer", ca=False)
        assert await install(h, "ManufacturerRootCertificate", leaf.pem) == "Rejected"
        listed = await installed_ids(h, "CentralSystemRootCertificate")
    assert event["type"] == "InvalidCentralSystemCertificate"
    assert event["tech_info"].startswith("expired on ")
    assert len(csms.received("SecurityEventNotification", since)) == 1
    assert listed == ("NotFound", [])


async def test_the_store_maximum_and_the_root_check_come_from_the_keys(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """CertificateStoreMaxLength and AdditionalRootCertificateCheck (read-only keys of the
    key file) hold over OCPP."""
    config = charger_config(tmp_path)
    key_file = tmp_path / "ocpp16-config.json"
    document = json.loads(config.ocpp_config_path.read_text())
    document["Security"].update(CertificateStoreMaxLength=1, AdditionalRootCertificateCheck=True)
    key_file.write_text(json.dumps(document))
    config = attrs.evolve(config, ocpp_config_path=key_file)
    old = issue("CSMS Root 1")
    async with running_station(config) as h:
        await h.booted()
        assert await install(h, "CentralSystemRootCertificate", old.pem) == "Accepted"
        full = await install(h, "ManufacturerRootCertificate", issue("M").pem)
        stranger = await install(h, "CentralSystemRootCertificate", issue("CSMS Root X").pem)
        successor = await install(h, "CentralSystemRootCertificate", issue("CSMS Root 2", old).pem)
        listed = await installed_ids(h, "CentralSystemRootCertificate")
    assert (full, stranger, successor) == ("Rejected", "Rejected", "Accepted")
    assert [d["issuerKeyHash"] for d in listed[1]] == [expected_cert_id(old, old)["issuerKeyHash"]]
