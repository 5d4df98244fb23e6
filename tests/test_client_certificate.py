"""The charge point's TLS client certificate (security.clientCertDir / security.keyDir),
presented on wss:// for mutual TLS (OCPP 1.6 security profile 3)."""

from __future__ import annotations

import logging
import ssl
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trustme
from cryptography.hazmat.primitives import serialization

from dcocpp.config import ChargerConfig, SecurityConfig
from dcocpp.ocpp import transport
from dcocpp.station.station import CLIENT_CERTIFICATE, CLIENT_KEY, client_ssl_context
from tests.station_harness import charger_config


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def with_security(tmp_path: Path, ca: trustme.CA) -> ChargerConfig:
    """The shipped configuration, trusting `ca`, with its certificate and key directories
    (empty) under tmp_path."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    security = SecurityConfig(bundle, tmp_path / "certs" / "client", tmp_path / "keys")
    security.client_cert_dir.mkdir(parents=True)
    security.key_dir.mkdir(parents=True)
    return attrs.evolve(charger_config(tmp_path), security=security)


def install(config: ChargerConfig, cert: trustme.LeafCert, key_pem: bytes | None = None) -> None:
    cert.cert_chain_pems[0].write_to_path(str(config.security.client_cert_dir / CLIENT_CERTIFICATE))
    key = config.security.key_dir / CLIENT_KEY
    key.write_bytes(cert.private_key_pem.bytes() if key_pem is None else key_pem)


async def connect(port: int, context: ssl.SSLContext) -> str:
    """What the mutual-TLS central system on `port` says to us (our charge point id)."""
    async with trio.open_nursery() as nursery:
        ws = await nursery.start(
            partial(
                transport.run_client,
                f"wss://127.0.0.1:{port}/ocpp",
                charge_point_id="CP1",
                ssl_context=context,
            )
        )
        message = await ws.get_message()
        nursery.cancel_scope.cancel()
    assert isinstance(message, str)
    return message


@pytest.mark.tc("TC_087")
async def test_certificate_and_key_in_their_directories_are_presented(
    nursery: trio.Nursery, ca: trustme.CA, tmp_path: Path
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED

    async def handler(cp_id: str, ws: Any) -> None:
        await ws.send_message(cp_id)
        await ws.get_message()

    port = await nursery.start(
        partial(transport.serve, handler, "127.0.0.1", 0, ssl_context=server_context)
    )
    config = with_security(tmp_path, ca)
    install(config, ca.issue_cert("DCOCPP-001"))
    context, presented = client_ssl_context(config)
    assert presented
    assert await connect(port, context) == "CP1"


def test_no_certificate_is_nothing_to_present(
    ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, presented = client_ssl_context(with_security(tmp_path, ca))
    assert not presented
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_certificate_without_its_key_is_not_presented_and_says_what_is_missing(
    ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = with_security(tmp_path, ca)
    install(config, ca.issue_cert("DCOCPP-001"))
    (config.security.key_dir / CLIENT_KEY).unlink()
    _, presented = client_ssl_context(config)
    assert not presented
    assert caplog.messages == [
        f"no TLS client certificate presented: {config.security.key_dir / CLIENT_KEY} is missing"
    ]


@pytest.mark.parametrize("problem", ["another key", "encrypted key"])
def test_unusable_key_is_not_presented_and_the_error_is_logged(
    ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture, problem: str
) -> None:
    config = with_security(tmp_path, ca)
    cert = ca.issue_cert("DCOCPP-001")
    if problem == "another key":
        key_pem = ca.issue_cert("someone-else").private_key_pem.bytes()
        reason = "KEY_VALUES_MISMATCH"
    else:
        key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), None)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
        # Never OpenSSL's interactive prompt (it would wait on the terminal forever).
        reason = "the key is encrypted"
    install(config, cert, key_pem)
    _, presented = client_ssl_context(config)
    assert not presented
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("no TLS client certificate presented: ")
    assert reason in record.getMessage()
