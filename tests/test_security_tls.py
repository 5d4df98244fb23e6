"""TLS to the central system as the security whitepaper wants it: TLS 1.2 or newer, the server
certificate verified against the installed CentralSystemRootCertificates (and the configured
CA bundle), the host name in the CN of a certificate without subjectAltName, the replaced root
as a fallback under AdditionalRootCertificateCheck."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from ocpp.v16 import call

from dcocpp.clock import ocpp_time
from dcocpp.config import ChargerConfig, SecurityConfig
from dcocpp.ocpp import transport
from dcocpp.ocpp.certificates.store import CertificateStore, RootKind
from dcocpp.ocpp.certificates.tls import client_context
from dcocpp.ocpp.errors import TransportError, UntrustedCertificate
from dcocpp.station.station import CERTIFICATES
from tests.pki import NOW, VALID_TO, Issued, issue
from tests.station_harness import charger_config, running_station

HOST = "csms.test"


async def to_loopback(host: str, port: int) -> trio.abc.Stream:
    """Whatever the URL's host, connect to loopback (the name is for TLS to check)."""
    return await trio.open_tcp_stream("127.0.0.1", port)


async def serve_tls(nursery: trio.Nursery, context: ssl.SSLContext) -> int:
    async def handler(cp_id: str, ws: Any) -> None:
        await ws.send_message(cp_id)
        await ws.get_message()

    return int(
        await nursery.start(partial(transport.serve, handler, "127.0.0.1", 0, ssl_context=context))
    )


def client(port: int, context: ssl.SSLContext, host: str = HOST) -> Any:
    """The charge point's side of a connection, for `nursery.start`."""
    return partial(
        transport.run_client,
        f"wss://{host}:{port}/ocpp",
        charge_point_id="CP1",
        ssl_context=context,
        open_stream=to_loopback,
    )


async def connect(port: int, context: ssl.SSLContext, host: str = HOST) -> str:
    """What the central system says once connected (our charge point id)."""
    async with trio.open_nursery() as nursery:
        ws = await nursery.start(client(port, context, host))
        message = await ws.get_message()
        nursery.cancel_scope.cancel()
    return str(message)


@pytest.mark.tc("TC_086")
async def test_a_cn_only_server_certificate_is_verified_by_its_cn(nursery: trio.Nursery) -> None:
    """OCPP's certificate profile puts the identity in the CN and needs no subjectAltName:
    the standard library's check accepts that (cryptography's WebPKI verifier would not)."""
    root = issue("CSMS Root")
    server = issue(HOST, root, ca=False)  # no subjectAltName at all
    port = await serve_tls(nursery, server.server_context())
    context = client_context(trusted_pem=root.pem, ca_bundle=None)
    assert await connect(port, context) == "CP1"
    with trio.fail_after(5), pytest.raises(UntrustedCertificate, match="Hostname mismatch"):
        await nursery.start(client(port, context, host="other.test"))


async def test_a_server_certificate_chains_through_an_intermediate(nursery: trio.Nursery) -> None:
    root = issue("CSMS Root")
    intermediate = issue("CSMS Issuing CA", root)
    server = issue(HOST, intermediate, ca=False, san=[HOST])
    port = await serve_tls(nursery, server.server_context(chain=[intermediate]))
    assert await connect(port, client_context(trusted_pem=root.pem, ca_bundle=None)) == "CP1"


async def test_only_the_installed_roots_and_the_bundle_are_trusted(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    root, bundled = issue("CSMS Root"), issue("Bundle CA")
    bundle = tmp_path / "ca.pem"
    bundle.write_text(bundled.pem)
    port = await serve_tls(nursery, issue(HOST, bundled, ca=False).server_context())
    # The bundle's CA with an installed root beside it: both trusted.
    both = client_context(trusted_pem=root.pem, ca_bundle=bundle)
    assert await connect(port, both) == "CP1"
    # Neither (no file there): the system's CAs, which do not know the test CA.
    system = client_context(trusted_pem="", ca_bundle=tmp_path / "absent.pem")
    with trio.fail_after(5), pytest.raises(UntrustedCertificate, match="not trusted"):
        await nursery.start(client(port, system))


async def legacy_tls_server(nursery: trio.Nursery, context: ssl.SSLContext) -> int:
    """A server on OpenSSL's own blocking sockets (as nginx or Apache would run it) for one
    connection: it answers a handshake it cannot do with its TLS alert, then closes. (A trio
    server does not flush the alert before giving up, which would leave the client waiting.)
    Returns its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(5)  # the thread ends on its own should no client come

    def serve_one() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection, contextlib.suppress(ssl.SSLError):  # what it is there for
                context.wrap_socket(connection, server_side=True).close()

    nursery.start_soon(partial(trio.to_thread.run_sync, serve_one, abandon_on_cancel=True))
    return int(listener.getsockname()[1])


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
async def test_tc_086_a_server_below_tls_1_2_fails_at_once_with_the_tls_error(
    nursery: trio.Nursery, version: ssl.TLSVersion
) -> None:
    root = issue("CSMS Root")
    server = issue(HOST, root, ca=False, san=[HOST])
    port = await legacy_tls_server(nursery, server.server_context(maximum=version))
    with trio.fail_after(5), pytest.raises(TransportError) as info:
        await nursery.start(client(port, client_context(trusted_pem=root.pem, ca_bundle=None)))
    # OpenSSL's reason, with what it means.
    assert str(info.value) in (
        f"TLS handshake failed: no TLS version in common (TLS 1.2 or newer is required) ({reason})"
        for reason in ("TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL")
    ), str(info.value)
    assert not isinstance(info.value, UntrustedCertificate)
    assert info.value.security_event == "InvalidTLSVersion"  # for the security log


@pytest.mark.tc("TC_086")
async def test_tc_086_tls_1_2_and_1_3_are_accepted(nursery: trio.Nursery) -> None:
    root = issue("CSMS Root")
    server = issue(HOST, root, ca=False, san=[HOST])
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        port = await serve_tls(nursery, server.server_context(maximum=version))
        assert await connect(port, client_context(trusted_pem=root.pem, ca_bundle=None)) == "CP1"
    assert client_context(trusted_pem="", ca_bundle=None).minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("problem", ["expired", "untrusted"])
async def test_an_expired_or_untrusted_server_certificate_fails_at_once(
    nursery: trio.Nursery, problem: str
) -> None:
    """The handshake fails on the certificate itself, in real time well before the session's
    CONNECT_TIMEOUT (20 s), with what was wrong and the security event it is."""
    root = issue("CSMS Root")
    if problem == "expired":
        server = issue(
            HOST,
            root,
            ca=False,
            san=[HOST],
            not_before=NOW - timedelta(days=30),
            not_after=NOW - timedelta(days=1),
        )
        trusted = root
    else:
        server = issue(HOST, root, ca=False, san=[HOST])
        trusted = issue("Another Root")
    port = await serve_tls(nursery, server.server_context())
    with trio.fail_after(5), pytest.raises(UntrustedCertificate) as info:
        await nursery.start(client(port, client_context(trusted_pem=trusted.pem, ca_bundle=None)))
    assert info.value.security_event == "InvalidCentralSystemCertificate"
    expected = "certificate has expired" if problem == "expired" else "unable to get local issuer"
    assert expected in str(info.value), str(info.value)


# --- the station ------------------------------------------------------------------------------


async def install_csms_root(config: ChargerConfig, root: Issued) -> None:
    """Install `root` as a CentralSystemRootCertificate over ws://, as the central system
    does before it moves a charger to wss://."""
    async with running_station(config) as h:
        await h.booted()
        result = await h.csms_call(
            call.InstallCertificate(
                certificate_type="CentralSystemRootCertificate", certificate=root.pem
            )
        )
        assert result.status == "Accepted"


def over_wss(config: ChargerConfig, tmp_path: Path, **keys: Any) -> ChargerConfig:
    """`config` connecting to wss://csms.test/ocpp with no CA bundle and no client
    certificate, with `keys` in its key file."""
    document = json.loads(config.ocpp_config_path.read_text())
    document["Security"].update(keys)
    key_file = tmp_path / "ocpp16-config.json"
    key_file.write_text(json.dumps(document))
    security = SecurityConfig(tmp_path / "no-bundle.pem", tmp_path / "certs", tmp_path / "keys")
    return attrs.evolve(
        config,
        charge_point=attrs.evolve(config.charge_point, central_system_uri=f"wss://{HOST}/ocpp"),
        security=security,
        ocpp_config_path=key_file,
    )


async def test_a_csms_root_installed_over_ocpp_is_what_wss_trusts(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """Install the root over ws://, then the charger on wss:// (no csmsCaBundle) connects to a
    central system whose CN-only certificate chains to it, and refuses to delete it."""
    root = issue("CSMS Root")
    intermediate = issue("CSMS Issuing CA", root)
    server = issue(HOST, intermediate, ca=False)
    config = charger_config(tmp_path)
    await install_csms_root(config, root)
    tls = server.server_context(chain=[intermediate])
    async with running_station(over_wss(config, tmp_path), tls=tls) as h:
        await h.booted()
        assert h.network.tls_failures == []
        ids = await h.csms_call_raw(
            "GetInstalledCertificateIds", {"certificateType": "CentralSystemRootCertificate"}
        )
        [hash_data] = ids["certificateHashData"]
        deleted = await h.csms_call_raw("DeleteCertificate", {"certificateHashData": hash_data})
        assert h.station.session is not None
        profile = h.station.session.security_profile_in_use()
    assert deleted == {"status": "Failed"}  # the last root, on the connection that uses it
    assert profile == 0  # TLS without credentials (no AuthorizationKey, no client certificate)


async def test_the_status_shows_when_the_earliest_installed_csms_root_expires(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """What the console warns of before TLS to the central system stops working: how many
    CSMS roots are installed and the earliest notAfter among them (dates only, no PEM)."""
    later = issue("CSMS Root 2030", not_after=VALID_TO)
    sooner = issue("CSMS Root soon", not_after=VALID_TO - timedelta(days=200))
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()

        def security() -> dict[str, Any]:
            return dict(h.station.snapshot()["chargePoint"]["security"])

        before = security()
        for root in (later, sooner):
            result = await h.csms_call(
                call.InstallCertificate(
                    certificate_type="CentralSystemRootCertificate", certificate=root.pem
                )
            )
            assert result.status == "Accepted"
        after = security()
        shown = json.dumps(h.station.snapshot())
    assert (before["centralSystemRoots"], before["centralSystemRootsValidTo"]) == (0, None)
    assert after["centralSystemRoots"] == 2
    assert after["centralSystemRootsValidTo"] == ocpp_time(sooner.certificate.not_valid_after_utc)
    assert "BEGIN CERTIFICATE" not in shown and "PRIVATE" not in shown


async def test_without_an_installed_root_wss_to_a_private_pki_fails(
    autojump_clock: Any, tmp_path: Path
) -> None:
    server = issue(HOST, issue("CSMS Root"), ca=False)
    config = over_wss(charger_config(tmp_path), tmp_path)
    async with running_station(config, tls=server.server_context()) as h:
        await trio.sleep(30)
        assert h.csms.connections == 0
        assert h.station.session is not None and h.station.session.last_failure is not None
        reason = h.station.session.last_failure.reason
    assert reason.startswith(
        "TLS handshake failed: the central system's certificate is not trusted"
    )


async def test_a_replaced_csms_root_is_the_fallback_until_the_new_one_verifies(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """AdditionalRootCertificateCheck: the new root, signed by the old one, replaces it; while
    the central system still presents the old chain the old root is tried after the new one
    fails, and the first connection that verifies with the new root ends the fallback."""
    old = issue("CSMS Root 1")
    config = over_wss(charger_config(tmp_path), tmp_path, AdditionalRootCertificateCheck=True)
    provisioned = CertificateStore(config.data_dir / CERTIFICATES, clock=lambda: NOW)
    provisioned.install(RootKind.CENTRAL_SYSTEM, old.pem)
    new = issue("CSMS Root 2", old)
    old_chain = issue(HOST, old, ca=False).server_context()
    new_chain = issue(HOST, Issued(new.certificate, new.key), ca=False).server_context()
    async with running_station(config, tls=old_chain) as h:
        await h.booted()
        result = await h.csms_call(
            call.InstallCertificate(
                certificate_type="CentralSystemRootCertificate", certificate=new.pem
            )
        )
        assert result.status == "Accepted"
        await h.network.drop()
        await h.csms.wait_connected(2)  # with the old root, the fallback
        assert len(h.network.tls_failures) == 1  # the new root was tried first
        fallback = tmp_path / "data" / CERTIFICATES / "csms-root-fallback"
        assert len(list(fallback.glob("*.pem"))) == 1
        h.network.ssl_context = new_chain
        since = h.csms.mark()
        await h.network.drop()
        await h.wait_calls("Heartbeat", since=since)  # resumed with the new root: fallback gone
        assert list(fallback.glob("*.pem")) == []
        h.network.ssl_context = old_chain
        await h.network.drop()
        await trio.sleep(60)
        assert h.csms.connections == 3  # the old chain is no longer trusted
