"""Security profiles switched over OCPP (whitepaper 2.4; OCTT TC_083, TC_084) and the charge
point certificate (SignCertificate / CertificateSigned; TC_074, TC_077, TC_087), against the
in-memory central system serving wss:// with a per-test PKI: CN-only certificates with key
identifiers, as central systems issue them."""

from __future__ import annotations

import hashlib
import json
import ssl
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from ocpp.v16 import call

from dcocpp.config import ChargerConfig
from dcocpp.ocpp.certificates.chargepoint import ChargePointCertificates
from dcocpp.ocpp.certificates.store import CertificateStore, RootKind
from dcocpp.ocpp.securitylog import SECURITY_LOG
from dcocpp.ocpp.securityprofile import FALLBACK_ATTEMPTS, STATE_FILE
from dcocpp.station.station import CERTIFICATES
from tests.csms import FakeCsms
from tests.pki import NOW, issue, pem_of, sign_csr
from tests.station_harness import WALL_START, Harness, charger_config, running_station

HOST = "csms.test"  # the harness's CSMS URL is ws://csms.test/ocpp
KEY = "0123456789abcdef0123" * 2  # an AuthorizationKey: 20 bytes in hex
CPO = "Example CPO"
CP_ID = "DCOCPP-001"


class Pki:
    """A central system's PKI: its root, an issuing CA under it, its CN-only server
    certificate."""

    def __init__(self) -> None:
        self.root = issue("CSMS Root")
        self.issuing = issue("CSMS Issuing CA", self.root)
        self.server = issue(HOST, self.root, ca=False)

    def tls(self, clients: ssl.VerifyMode = ssl.CERT_NONE) -> ssl.SSLContext:
        """The central system's side: wss://; `clients` CERT_REQUIRED asks for a client
        certificate its root signed (mutual TLS), CERT_OPTIONAL takes one if it comes."""
        context = self.server.server_context()
        if clients != ssl.CERT_NONE:
            context.verify_mode = clients
            context.load_verify_locations(cadata=self.root.pem)
        return context

    def sign(self, csr: str, **changes: Any) -> str:
        """CertificateSigned's chain for `csr`: the certificate, then the issuing CA."""
        return pem_of(sign_csr(csr, self.issuing, **changes)) + self.issuing.pem


def csms(*, basic_auth: bool = True) -> FakeCsms:
    """The central system; with `basic_auth` it lets in only the password of KEY (profiles 1
    and 2), else anyone (profile 3 authenticates with the certificate)."""
    check = (lambda cp, password: password == bytes.fromhex(KEY)) if basic_auth else None
    return FakeCsms(security_events=True, authenticate=check)


def provision(config: ChargerConfig, pki: Pki, *, profile: int | None = None) -> None:
    """What an earlier run would have left: the CSMS root installed, the profile set."""
    store = CertificateStore(config.data_dir / CERTIFICATES, clock=lambda: NOW)
    store.install(RootKind.CENTRAL_SYSTEM, pki.root.pem)
    if profile is not None:
        state = {"profile": profile, "previous": None}
        (config.data_dir / STATE_FILE).write_text(json.dumps(state))


def provision_certificate(config: ChargerConfig, pki: Pki, **changes: Any) -> x509.Certificate:
    """A charge point certificate signed earlier (its key in the store)."""
    store = CertificateStore(config.data_dir / CERTIFICATES, clock=lambda: WALL_START)
    store.load()
    certificates = ChargePointCertificates(
        store, charge_point_id=CP_ID, clock=lambda: WALL_START + timedelta(seconds=1)
    )
    certificates.load()
    installed = certificates.install_signed(pki.sign(certificates.new_request(), **changes))
    return installed.certificate


# CertificateSignedMaxChainSize (read-only: the key file's): a certificate and its issuing CA
# fit, one more CA does not.
CHAIN_LIMIT = 2000


def with_chain_limit(config: ChargerConfig, tmp_path: Path, limit: int) -> ChargerConfig:
    document = json.loads(config.ocpp_config_path.read_text())
    document["Security"]["CertificateSignedMaxChainSize"] = limit
    key_file = tmp_path / "ocpp16-config.json"
    key_file.write_text(json.dumps(document))
    return attrs.evolve(config, ocpp_config_path=key_file)


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


async def change_profile(h: Harness, value: int) -> str:
    result = await h.csms_call(call.ChangeConfiguration(key="SecurityProfile", value=str(value)))
    return str(result.status)


async def reported_profile(h: Harness) -> str:
    read = await h.csms_call(call.GetConfiguration(key=["SecurityProfile"]))
    return str(read.configuration_key[0]["value"])


def security_events(h: Harness, kind: str) -> list[dict[str, Any]]:
    return [p for p in h.csms.received("SecurityEventNotification") if p["type"] == kind]


def logged_events(h: Harness, kind: str) -> list[str]:
    """The details of the security log's `kind` events (sent to the central system or not:
    `dcocpp.ocpp.securitylog.events`)."""
    path = h.station.config.log_dir / SECURITY_LOG
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    marker = f" SecurityEvent {kind}"
    return [line.split(": ", 1)[1] for line in lines if marker in line and ": " in line]


async def signing_request(h: Harness) -> str:
    """Ask for a certificate (what ExtendedTriggerMessage(SignChargePointCertificate) does);
    the CSR the central system received."""
    session = h.station.session
    assert session is not None and session.charge_point_certificates is not None
    since = h.csms.mark()
    assert await session.charge_point_certificates.request_certificate()
    [request] = await h.wait_calls("SignCertificate", since=since)
    return str(request["csr"])


# --- switching profiles ---------------------------------------------------------------------


@pytest.mark.tc("TC_083")
async def test_tc_083_upgrade_1_to_2_reconnects_over_wss_and_never_over_ws_again(
    autojump_clock: Any, tmp_path: Path
) -> None:
    pki = Pki()
    config = charger_config(tmp_path)
    async with running_station(config, csms(), keys={"AuthorizationKey": KEY}) as h:
        await h.booted()
        assert await reported_profile(h) == "1"
        installed = await h.csms_call(
            call.InstallCertificate(
                certificate_type="CentralSystemRootCertificate", certificate=pki.root.pem
            )
        )
        assert installed.status == "Accepted"
        h.network.ssl_context = pki.tls()  # from now on a ws:// attempt fails its handshake
        assert await change_profile(h, 2) == "Accepted"
        await h.csms.wait_connected(2)
        assert await reported_profile(h) == "2"
        await h.wait_until(lambda: bool(logged_events(h, "ReconfigurationOfSecurityParameters")))
        [event] = logged_events(h, "ReconfigurationOfSecurityParameters")
        assert h.station.snapshot()["chargePoint"]["url"] == f"wss://{HOST}/ocpp/{CP_ID}"
        ports, failures = list(h.network.ports), list(h.network.tls_failures)
    assert ports == [80, 443]  # same host, port by scheme, same path
    assert failures == []  # no ws:// attempt after the change
    assert event == "SecurityProfile 1 -> 2"
    # A restart keeps the profile: straight to wss://.
    async with running_station(config, csms(), tls=pki.tls()) as h:
        await h.booted()
        assert await reported_profile(h) == "2"
        assert (h.network.ports, h.network.tls_failures) == ([443], [])


@pytest.mark.tc("TC_084")
async def test_tc_084_a_lower_or_the_same_profile_is_rejected(
    autojump_clock: Any, tmp_path: Path
) -> None:
    pki = Pki()
    config = charger_config(tmp_path)
    provision(config, pki, profile=2)
    async with running_station(config, csms(), keys={"AuthorizationKey": KEY}, tls=pki.tls()) as h:
        await h.booted()
        for value in (0, 1, 2):
            assert await change_profile(h, value) == "Rejected", value
        await trio.sleep(10)
        assert h.csms.connections == 1  # no reconnect
        assert await reported_profile(h) == "2"
    assert json.loads((config.data_dir / STATE_FILE).read_text()) == {
        "profile": 2,
        "previous": None,
    }


@pytest.mark.parametrize(
    ("server", "event", "why"),
    [
        ("plain", "ReconfigurationOfSecurityParameters", "the server does not speak TLS"),
        ("untrusted", "InvalidCentralSystemCertificate", "certificate is not trusted"),
    ],
)
async def test_a_profile_that_cannot_connect_falls_back_to_the_previous_one(
    autojump_clock: Any, tmp_path: Path, server: str, event: str, why: str
) -> None:
    """The central system accepts profile 2 but serves no wss:// it can verify (none at all,
    or with a certificate of another PKI): after FALLBACK_ATTEMPTS attempts the charger is
    back on profile 1 over ws://, says so in a security event and in its status, and keeps
    profile 1 after a restart."""
    pki = Pki()
    config = charger_config(tmp_path)
    provision(config, pki)
    async with running_station(config, csms(), keys={"AuthorizationKey": KEY}) as h:
        await h.booted()
        if server == "untrusted":
            h.network.ssl_context = Pki().tls()
        assert await change_profile(h, 2) == "Accepted"
        await h.wait_until(lambda: h.network.ports.count(443) == FALLBACK_ATTEMPTS)
        h.network.ssl_context = None  # ws:// works again
        await h.csms.wait_connected(2)
        assert await reported_profile(h) == "1"

        def fallbacks() -> list[str]:
            # (an untrusted certificate is also an event of its own at the first failure)
            return [
                detail
                for detail in logged_events(h, event)
                if detail.startswith("SecurityProfile 2 could not connect (")
            ]

        await h.wait_until(lambda: bool(fallbacks()))
        [raised] = fallbacks()
        status = h.station.snapshot()["chargePoint"]["security"]
        ports = list(h.network.ports)
    assert ports == [80] + [443] * FALLBACK_ATTEMPTS + [80]
    assert raised.endswith("); back to 1")
    fallback = status["lastFallback"]
    assert (status["securityProfile"], status["configuredProfile"], status["onTrial"]) == (
        1,
        1,
        False,
    )
    assert (fallback["failed"], fallback["restored"]) == (2, 1)
    assert fallback["reason"].startswith("TLS handshake failed: ") and why in fallback["reason"]
    assert fallback["reason"] in raised
    async with running_station(config, csms()) as h:
        await h.booted()
        assert h.network.ports == [80]


# --- the charge point certificate -----------------------------------------------------------


@pytest.mark.tc("TC_074", "TC_083", "TC_087")
async def test_a_signed_certificate_then_profile_3_connects_with_it_over_mutual_tls(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """At profile 2: SignCertificate with a fresh EC P-256 key, CN the charge point id, O the
    CpoName; the certificate the central system's CA issues for it (CN only) is Accepted, its
    key kept mode 0600; profile 3, refused before, is then Accepted and the charger connects
    presenting that certificate to a central system that requires one."""
    pki = Pki()
    config = charger_config(tmp_path)
    provision(config, pki, profile=2)
    keys = {"AuthorizationKey": KEY, "CpoName": CPO}
    async with running_station(config, csms(), keys=keys, tls=pki.tls()) as h:
        await h.booted()
        assert await change_profile(h, 3) == "Rejected"  # no certificate yet
        csr = x509.load_pem_x509_csr((await signing_request(h)).encode())
        signed = await h.csms_call(
            call.CertificateSigned(
                certificate_chain=pki.sign(csr.public_bytes(Encoding.PEM).decode())
            )
        )
        assert signed.status == "Accepted"
        await trio.sleep(5)
        assert h.csms.connections == 1  # at profile 2 the certificate waits for profile 3
        h.network.ssl_context = pki.tls(ssl.CERT_REQUIRED)
        assert await change_profile(h, 3) == "Accepted"
        await h.csms.wait_connected(2)
        assert await reported_profile(h) == "3"
        presented = h.network.client_certificates[-1]
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CP_ID
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == CPO
    public_key = csr.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    assert presented is not None
    certificate = x509.load_der_x509_certificate(presented)
    assert certificate.public_key() == public_key
    keys_folder = config.data_dir / CERTIFICATES / "keys"
    [key_file] = keys_folder.glob("*.key")  # the pending key is gone
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.stem == hashlib.sha256(presented).hexdigest()  # named after its certificate


@pytest.mark.tc("TC_074")
async def test_tc_074_at_profile_3_a_new_certificate_is_used_by_reconnecting_at_once(
    autojump_clock: Any, tmp_path: Path
) -> None:
    pki = Pki()
    config = charger_config(tmp_path)
    provision(config, pki, profile=3)
    first = provision_certificate(config, pki)
    tls = pki.tls(ssl.CERT_REQUIRED)
    async with running_station(config, csms(basic_auth=False), keys={"CpoName": CPO}, tls=tls) as h:
        await h.booted()
        assert await reported_profile(h) == "3"
        chain = pki.sign(await signing_request(h))
        signed = await h.csms_call(call.CertificateSigned(certificate_chain=chain))
        assert signed.status == "Accepted"
        await h.csms.wait_connected(2)
        presented = list(h.network.client_certificates)
    new = x509.load_pem_x509_certificates(chain.encode())[0]
    assert presented == [der(first), der(new)]


@pytest.mark.tc("TC_077")
async def test_tc_077_an_invalid_certificate_signed_is_rejected_with_a_security_event(
    autojump_clock: Any, tmp_path: Path
) -> None:
    pki = Pki()
    config = with_chain_limit(charger_config(tmp_path), tmp_path, CHAIN_LIMIT)
    provision(config, pki)
    async with running_station(config, csms(basic_auth=False), keys={"CpoName": CPO}) as h:
        await h.booted()
        csr = await signing_request(h)
        other_key = ec.generate_private_key(ec.SECP256R1())
        foreign = issue("Other Root")
        invalid = {
            "wrong CN": pki.sign(csr, common_name="SOMEONE-ELSE"),
            "not chained": pem_of(sign_csr(csr, foreign)) + foreign.pem,
            "expired": pki.sign(
                csr,
                not_before=WALL_START - timedelta(days=30),
                not_after=WALL_START - timedelta(days=1),
            ),
            "too large": pki.sign(csr) + pki.issuing.pem * 2,
            "another key": pem_of(issue(CP_ID, pki.issuing, ca=False, key=other_key).certificate),
            "no certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        }
        answers = {}
        for case, chain in invalid.items():
            result = await h.csms_call(call.CertificateSigned(certificate_chain=chain))
            answers[case] = result.status
        await h.wait_until(
            lambda: len(security_events(h, "InvalidChargePointCertificate")) == len(invalid)
        )
        reasons = [e["tech_info"] for e in security_events(h, "InvalidChargePointCertificate")]
        # The request still stands: a valid answer is taken.
        valid = await h.csms_call(call.CertificateSigned(certificate_chain=pki.sign(csr)))
    assert answers == dict.fromkeys(invalid, "Rejected")
    assert reasons[0] == "its CN is SOMEONE-ELSE, not the charge point id"
    assert reasons[1].startswith("it does not chain to an installed CentralSystemRootCertificate")
    assert reasons[2].startswith("expired on ")
    assert reasons[3].startswith("the chain is ")
    assert reasons[3].endswith(f" characters, CertificateSignedMaxChainSize is {CHAIN_LIMIT}")
    assert len(pki.sign(csr)) <= CHAIN_LIMIT < len(invalid["too large"])
    assert reasons[4] == "its public key is not the one of the signing request"
    assert reasons[5].startswith("not PEM certificates that can be read")
    assert valid.status == "Accepted"


async def test_at_profile_3_a_certificate_near_expiry_is_renewed(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """Checked once registered and daily: 40 days before expiry nothing happens; once within
    the 30-day margin the charger asks for a new certificate (SignCertificate), once a day
    until one arrives."""
    pki = Pki()
    config = charger_config(tmp_path)
    provision(config, pki, profile=3)
    provision_certificate(config, pki, not_after=WALL_START + timedelta(days=40))
    tls = pki.tls()
    async with running_station(config, csms(basic_auth=False), keys={"CpoName": CPO}, tls=tls) as h:
        await h.booted()
        assert await reported_profile(h) == "3"
        day = 24 * 3600
        await trio.sleep(9 * day)
        assert h.csms.received("SignCertificate") == []
        await trio.sleep(2 * day)
        [request] = h.csms.received("SignCertificate")
        csr = x509.load_pem_x509_csr(str(request["csr"]).encode())
        await trio.sleep(day)
        assert len(h.csms.received("SignCertificate")) == 2
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CP_ID


async def test_without_a_certificate_profile_3_asks_for_one_once_registered(
    autojump_clock: Any, tmp_path: Path
) -> None:
    pki = Pki()
    config = charger_config(tmp_path)
    provision(config, pki, profile=3)
    tls = pki.tls(ssl.CERT_OPTIONAL)
    async with running_station(config, csms(), keys={"AuthorizationKey": KEY}, tls=tls) as h:
        await h.booted()
        [request] = await h.wait_calls("SignCertificate")
        # Until it has one, the connection is what it really is: TLS with Basic auth.
        assert await reported_profile(h) == "2"
        signed = await h.csms_call(
            call.CertificateSigned(certificate_chain=pki.sign(request["csr"]))
        )
        assert signed.status == "Accepted"
        await h.csms.wait_connected(2)  # at profile 3 with it at once
        assert await reported_profile(h) == "3"
        assert h.network.client_certificates[-1] is not None


def test_a_pending_request_and_the_certificate_survive_a_restart(tmp_path: Path) -> None:
    """The key of a request not answered yet is on disk (0600): a CertificateSigned after a
    restart still matches it; the certificate then installed is what the next start loads."""
    pki = Pki()
    store = CertificateStore(tmp_path / CERTIFICATES, clock=lambda: NOW)
    store.install(RootKind.CENTRAL_SYSTEM, pki.root.pem)

    def restarted() -> ChargePointCertificates:
        certificates = ChargePointCertificates(store, charge_point_id=CP_ID, clock=lambda: NOW)
        certificates.load()
        return certificates

    csr = restarted().new_request()
    pending = tmp_path / CERTIFICATES / "keys" / "charge-point-pending.key"
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600
    installed = restarted().install_signed(pki.sign(csr))
    assert not pending.exists()
    again = restarted()
    assert again.current == installed
    assert again.valid_now() and not again.pending
    assert again.renewal_reason() is None
