"""Security profile 3 as an operator runs it: `python -m dcocpp run` against the separate-process
asyncio central system serving wss:// with a per-test PKI, requiring a client certificate
(mutual TLS) and HTTP Basic auth whose password is the AuthorizationKey's bytes.

The charger starts on what an integrator provisions (charger.json's CA bundle and initial client
certificate, the hex AuthorizationKey); the central system then installs its root over OCPP,
reads back its hash data, has the charger ask for a new certificate and hangs up: the charger
comes back over mutual TLS trusting the root from its own store.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.pki import issue, pem_of, sign_csr
from tests.processes import REPO_ROOT, preset_user_keys, start_charger, start_peer_csms

pytestmark = pytest.mark.process

CHARGE_POINT_ID = "DCOCPP-001"  # configs/charger.json
TIMEOUT = 20.0
# 24 bytes, not all of them text: the Basic password is built from bytes (OCTT TC_085).
KEY = bytes(range(0xE8, 0x100)).hex()


def provision(tmp: Path) -> tuple[Path, list[str], str]:
    """A PKI, the charger's configuration pointing at its CA and initial client certificate,
    and the central system's TLS options; returns (charger.json, the CSMS's arguments, the
    root's PEM)."""
    root = issue("dcocpp test CSMS root")
    server = issue("localhost", root, ca=False)  # identity in the CN only, as OCPP allows
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CHARGE_POINT_ID)]))
        .sign(key, hashes.SHA256())
    )
    client = sign_csr(request.public_bytes(serialization.Encoding.PEM).decode(), root)

    pki = tmp / "pki"
    (pki / "client").mkdir(parents=True)
    (pki / "keys").mkdir(mode=0o700)
    (pki / "ca.pem").write_text(root.pem)
    (pki / "server.pem").write_text(server.pem + root.pem)
    (pki / "server.key").write_bytes(server.key_pem)
    (pki / "client" / "charge-point.pem").write_text(pem_of(client) + root.pem)
    client_key = pki / "keys" / "charge-point.key"
    client_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    client_key.chmod(0o600)

    source = REPO_ROOT / "configs" / "charger.json"
    document = json.loads(source.read_text(encoding="utf-8"))
    document["security"] = {
        "csmsCaBundle": str(pki / "ca.pem"),
        "clientCertDir": str(pki / "client"),
        "keyDir": str(pki / "keys"),
    }
    paths = document.setdefault("paths", {})
    paths["ocppConfig"] = str(source.parent / paths.get("ocppConfig", "ocpp16-config.json"))
    config = tmp / "charger.json"
    config.write_text(json.dumps(document, indent=2), encoding="utf-8")
    preset_user_keys(tmp, AuthorizationKey=KEY)
    csms_args = [
        "--tls-cert",
        str(pki / "server.pem"),
        "--tls-key",
        str(pki / "server.key"),
        "--tls-client-ca",
        str(pki / "ca.pem"),
        "--auth-key-hex",
        KEY,
    ]
    return config, csms_args, root.pem


STEPS: list[dict[str, Any]] = [
    {"wait_for": "StatusNotification", "count": 3, "timeout": TIMEOUT},
    {"call": "GetConfiguration", "payload": {"key": ["SecurityProfile"]}},
    {"call": "InstallCertificate", "payload": {"certificateType": "CentralSystemRootCertificate"}},
    {
        "call": "GetInstalledCertificateIds",
        "payload": {"certificateType": "CentralSystemRootCertificate"},
    },
    {
        "call": "ExtendedTriggerMessage",
        "payload": {"requestedMessage": "SignChargePointCertificate"},
    },
    {"wait_for": "SignCertificate", "timeout": TIMEOUT},
    # Hang up: the charger comes back over mutual TLS, trusting the root it installed.
    {"close": True},
    {"wait_for": "Heartbeat", "timeout": TIMEOUT},
]


def results(events: list[dict[str, Any]]) -> dict[int, Any]:
    return {e["step"]: e["payload"] for e in events if e.get("event") == "result"}


@pytest.mark.tc("TC_085", "TC_087")
def test_profile_3_over_mutual_tls_against_the_separate_process_central_system(
    tmp_path: Path,
) -> None:
    config, csms_args, root_pem = provision(tmp_path)
    steps = json.loads(json.dumps(STEPS))
    steps[2]["payload"]["certificate"] = root_pem
    csms, port = start_peer_csms(tmp_path, steps, extra_args=csms_args, timeout=TIMEOUT)
    charger = None
    try:
        charger = start_charger(tmp_path, f"wss://localhost:{port}/ocpp", config=config)
        try:
            csms.stdout.wait_for_event(lambda e: e.get("event") == "script_done", 3 * TIMEOUT)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{charger.describe()}") from None
        events = csms.stdout.events
    finally:
        if charger is not None:
            charger.stop()
        csms.stop()
    context = "\n".join(json.dumps(e) for e in events)
    problems = [e for e in events if e.get("event") in ("error", "wait_timeout")]
    assert problems == [], context

    connections = [e for e in events if e.get("event") == "connected"]
    assert len(connections) == 2, context  # the first, and the one after the hang-up
    for connection in connections:
        # Mutual TLS: the central system saw the charge point's certificate ...
        assert connection["client_subject"]["commonName"] == CHARGE_POINT_ID
        # ... and Basic auth with the key's bytes as password.
        scheme, token = connection["authorization"].split(" ", 1)
        assert scheme == "Basic"
        assert base64.b64decode(token) == CHARGE_POINT_ID.encode() + b":" + bytes.fromhex(KEY)

    answers = results(events)
    assert answers[1]["configurationKey"] == [
        {"key": "SecurityProfile", "readonly": False, "value": "3"}
    ]
    assert answers[2] == {"status": "Accepted"}
    root = x509.load_pem_x509_certificate(root_pem.encode())
    # RFC 6960 CertID of a self-signed root: over its own name and its own key's bits (for an
    # EC key, the subjectPublicKey BIT STRING holds the uncompressed point).
    key_bits = root.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert answers[3]["status"] == "Accepted"
    assert answers[3]["certificateHashData"] == [
        {
            "hashAlgorithm": "SHA256",
            "issuerNameHash": hashlib.sha256(root.subject.public_bytes()).hexdigest(),
            "issuerKeyHash": hashlib.sha256(key_bits).hexdigest(),
            "serialNumber": format(root.serial_number, "x"),
        }
    ]
    assert answers[4] == {"status": "Accepted"}
    # At profile 3 with only the initial certificate the charger asks for its own once
    # registered (README, Security); the trigger asks again, after its answer.
    signs = [e for e in events if e.get("event") == "call" and e["action"] == "SignCertificate"]
    triggered = next(
        i for i, e in enumerate(events) if e.get("event") == "result" and e["step"] == 4
    )
    assert any(events.index(e) > triggered for e in signs), context
    for sign in signs:
        csr = x509.load_pem_x509_csr(sign["payload"]["csr"].encode())
        assert csr.is_signature_valid
        assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CHARGE_POINT_ID
