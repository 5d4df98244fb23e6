"""Opening OCPP-J WebSockets on real loopback sockets (port 0): subprotocol, Basic auth, TLS."""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import ssl
import struct
from functools import partial
from typing import Any

import pytest
import trio
import trustme
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from dcocpp.ocpp import authkey, transport
from dcocpp.ocpp.errors import TransportError


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("ws://h:9000/ocpp", "ws://h:9000/ocpp/CP%201"),
        ("ws://h:9000/ocpp/", "ws://h:9000/ocpp/CP%201"),
        (
            "ws://h/steve/websocket/CentralSystemService/",
            "ws://h/steve/websocket/CentralSystemService/CP%201",
        ),
        ("wss://h", "wss://h/CP%201"),
    ],
)
def test_charge_point_id_is_one_path_segment(base: str, expected: str) -> None:
    assert transport.endpoint_url(base, "CP 1") == expected


@pytest.mark.tc("TC_085")
def test_tc_085_basic_auth_password_is_the_keys_decoded_bytes() -> None:
    """The AuthorizationKey arrives in hex; the password is its bytes, printable or not."""
    key = "00ff3a0d0a" + "41" * 15  # a NUL, 0xff, ':' and CR LF among them: 20 bytes
    password = authkey.password(key)
    assert password == bytes.fromhex(key)
    name, value = transport.basic_auth_header("CP-1", password)
    assert name == b"Authorization"
    assert value == b"Basic " + base64.b64encode(b"CP-1:" + bytes.fromhex(key))
    # The server side reads the same bytes back: the password ends at the end, not at ':'.
    assert transport.parse_basic_auth([(b"authorization", value)]) == ("CP-1", password)
    assert transport.parse_basic_auth([(b"Authorization", b"Bearer x")]) is None
    assert transport.parse_basic_auth([(b"Authorization", b"Basic !!!")]) is None


def test_a_legacy_text_key_is_its_utf8_bytes() -> None:
    assert authkey.password("0123456789abcdef") == b"0123456789abcdef"  # 8 bytes: not hex
    assert authkey.password("A1" * 20) == b"\xa1" * 20  # 40 digits: hex


KEY = "c0ffee" * 7 + "00"  # an AuthorizationKey as OCPP sends it: 22 bytes in hex


async def serve_raw(
    nursery: trio.Nursery, on_request: Any, ssl_context: ssl.SSLContext | None = None
) -> int:
    server = await nursery.start(serve_websocket, on_request, "127.0.0.1", 0, ssl_context)
    return server.port  # type: ignore[no-any-return]


async def test_subprotocol_must_be_accepted(nursery: trio.Nursery) -> None:
    async def no_subprotocol(request: WebSocketRequest) -> None:
        ws = await request.accept()  # accepts without choosing ocpp1.6
        with pytest.raises(ConnectionClosed):  # the charge point hangs up
            await ws.get_message()

    port = await serve_raw(nursery, no_subprotocol)
    with pytest.raises(TransportError, match=r"did not accept subprotocol ocpp1\.6"):
        await nursery.start(
            partial(transport.run_client, f"ws://127.0.0.1:{port}/ocpp", charge_point_id="CP1")
        )


async def test_http_rejection_is_a_transport_error(nursery: trio.Nursery) -> None:
    async def reject(request: WebSocketRequest) -> None:
        await request.reject(401)

    port = await serve_raw(nursery, reject)
    with pytest.raises(TransportError, match="HTTP 401"):
        await nursery.start(
            partial(transport.run_client, f"ws://127.0.0.1:{port}/ocpp", charge_point_id="CP1")
        )


async def test_http_404_names_the_status_and_what_it_likely_means(nursery: trio.Nursery) -> None:
    async def not_found(request: WebSocketRequest) -> None:
        await request.reject(404)

    port = await serve_raw(nursery, not_found)
    with pytest.raises(TransportError) as info:
        await nursery.start(
            partial(transport.run_client, f"ws://127.0.0.1:{port}/ocpp", charge_point_id="CP1")
        )
    assert str(info.value) == (
        "the central system refused the WebSocket upgrade: HTTP 404 Not Found "
        "(wrong URL path, or a charge point id it does not know?)"
    )


async def test_connection_refused_is_a_transport_error() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    async with trio.open_nursery() as nursery:
        with pytest.raises(TransportError) as info:
            await nursery.start(
                partial(transport.run_client, f"ws://127.0.0.1:{port}/", charge_point_id="CP1")
            )
    # Not trio's "all attempts to connect to ... failed": the reason of the attempt.
    assert str(info.value) == (
        f"cannot connect to 127.0.0.1:{port}: connection refused "
        f"(nothing accepts connections on port {port})"
    )


async def test_unknown_host_is_named() -> None:
    async def no_such_host(host: str, port: int) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async with trio.open_nursery() as nursery:
        with pytest.raises(TransportError) as info:
            await nursery.start(
                partial(
                    transport.run_client,
                    "ws://csms.invalid/ocpp",
                    charge_point_id="CP1",
                    open_stream=no_such_host,
                )
            )
    assert str(info.value) == (
        "cannot connect to csms.invalid:80: host name not found (Name or service not known)"
    )


async def test_server_side_checks_subprotocol_and_basic_auth(nursery: trio.Nursery) -> None:
    seen: list[str] = []

    async def handler(cp_id: str, ws: Any) -> None:
        seen.append(cp_id)
        await ws.send_message("hello")
        await ws.get_message()

    port = await nursery.start(
        partial(
            transport.serve,
            handler,
            "127.0.0.1",
            0,
            authenticate=lambda cp, pw: pw == bytes.fromhex(KEY),
        )
    )
    url = f"ws://127.0.0.1:{port}/ocpp"
    with pytest.raises(TransportError, match="HTTP 401"):
        await nursery.start(partial(transport.run_client, url, charge_point_id="CP 7"))
    async with trio.open_nursery() as client:
        ws = await client.start(
            partial(
                transport.run_client,
                url,
                charge_point_id="CP 7",
                password=authkey.password(KEY),
            )
        )
        assert ws.subprotocol == "ocpp1.6"
        assert await ws.get_message() == "hello"
        client.cancel_scope.cancel()
    assert seen == ["CP 7"]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tc_086_tls_with_a_trusted_certificate(nursery: trio.Nursery, ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)

    async def handler(cp_id: str, ws: Any) -> None:
        await ws.get_message()

    port = await nursery.start(
        partial(transport.serve, handler, "127.0.0.1", 0, ssl_context=server_context)
    )
    client_context = ssl.create_default_context()
    client_context.minimum_version = ssl.TLSVersion.TLSv1_2
    ca.configure_trust(client_context)
    async with trio.open_nursery() as client:
        ws = await client.start(
            partial(
                transport.run_client,
                f"wss://127.0.0.1:{port}/ocpp",
                charge_point_id="CP1",
                ssl_context=client_context,
            )
        )
        assert ws.subprotocol == "ocpp1.6"
        client.cancel_scope.cancel()


async def test_untrusted_certificate_fails_at_once_not_at_the_timeout(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_context)  # a CA we do not trust

    async def handler(cp_id: str, ws: Any) -> None:
        await ws.get_message()

    port = await nursery.start(
        partial(transport.serve, handler, "127.0.0.1", 0, ssl_context=server_context)
    )
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with trio.fail_after(5), pytest.raises(TransportError) as info:
        await nursery.start(
            partial(
                transport.run_client,
                f"wss://127.0.0.1:{port}/ocpp",
                charge_point_id="CP1",
                ssl_context=client_context,
            )
        )
    assert str(info.value).startswith(
        "TLS handshake failed: the central system's certificate is not trusted: "
        "unable to get local issuer certificate (CERTIFICATE_VERIFY_FAILED"
    )


async def test_wss_to_a_plain_port_says_it_is_not_tls(nursery: trio.Nursery) -> None:
    port = await serve_raw(nursery, lambda request: request.reject(400))
    with trio.fail_after(5), pytest.raises(TransportError) as info:
        await nursery.start(
            partial(transport.run_client, f"wss://127.0.0.1:{port}/ocpp", charge_point_id="CP1")
        )
    assert str(info.value) == (
        "TLS handshake failed: the server does not speak TLS on this port "
        "(ws:// instead of wss://?) (WRONG_VERSION_NUMBER)"
    )


def mutual_tls_server_context(ca: trustme.CA, version: ssl.TLSVersion) -> ssl.SSLContext:
    """A central system that wants a client certificate signed by `ca`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    context.maximum_version = version
    return context


@pytest.mark.tc("TC_087")
async def test_tc_087_mutual_tls_with_a_client_certificate(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    async def handler(cp_id: str, ws: Any) -> None:
        await ws.send_message(cp_id)
        await ws.get_message()

    server_context = mutual_tls_server_context(ca, ssl.TLSVersion.TLSv1_3)
    port = await nursery.start(
        partial(transport.serve, handler, "127.0.0.1", 0, ssl_context=server_context)
    )
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    ca.issue_cert("CP1").configure_cert(client_context)
    async with trio.open_nursery() as client:
        ws = await client.start(
            partial(
                transport.run_client,
                f"wss://127.0.0.1:{port}/ocpp",
                charge_point_id="CP1",
                ssl_context=client_context,
            )
        )
        assert await ws.get_message() == "CP1"
        client.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        # TLS 1.3: our side of the handshake completes before the server checks the client
        # certificate; a server that sends no alert just hangs up. Without the watch on the
        # stream this waited for the connect timeout and said "timed out".
        (
            ssl.TLSVersion.TLSv1_3,
            "the central system closed the connection without answering the upgrade "
            "(over TLS: does it require a client certificate?)",
        ),
        (
            ssl.TLSVersion.TLSv1_2,
            "TLS handshake failed: the central system hung up during the TLS handshake "
            "(is that port TLS at all, i.e. wss:// where it serves ws://? does it require a "
            "client certificate?) (UNEXPECTED_EOF_WHILE_READING)",
        ),
    ],
)
async def test_missing_client_certificate_fails_at_once_and_says_so(
    nursery: trio.Nursery, ca: trustme.CA, version: ssl.TLSVersion, expected: str
) -> None:
    server_context = mutual_tls_server_context(ca, version)

    async def tls_server(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server_context, server_side=True)
        with contextlib.suppress(trio.BrokenResourceError):
            await tls.do_handshake()  # fails: no client certificate
            await tls.receive_some()
        await trio.aclose_forcefully(tls)

    listeners = await nursery.start(partial(trio.serve_tcp, tls_server, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with trio.fail_after(5), pytest.raises(TransportError) as info:
        await nursery.start(
            partial(
                transport.run_client,
                f"wss://127.0.0.1:{port}/ocpp",
                charge_point_id="CP1",
                ssl_context=client_context,
            )
        )
    assert str(info.value) == expected


def reset_on_close(stream: trio.SocketStream) -> None:
    """Closing the socket then sends RST instead of FIN (SO_LINGER with a zero timeout)."""
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


HUNG_UP = "the central system closed the connection without answering the upgrade"
RESET = r"the connection broke before the WebSocket upgrade was answered: \[Errno \d+\] "


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize(
    ("how", "expected"),
    [
        # Having read the request, so that closing sends a FIN and nothing else.
        pytest.param("FIN after the request", re.escape(HUNG_UP), id="FIN-after-request"),
        # At once: the request may cross the FIN and be answered by a reset.
        pytest.param("FIN at once", f"{re.escape(HUNG_UP)}|{RESET}", id="FIN-at-once"),
        pytest.param("RST at once", RESET, id="RST-at-once"),
    ],
)
async def test_server_that_closes_before_the_upgrade_fails_at_once(
    nursery: trio.Nursery, ca: trustme.CA, scheme: str, how: str, expected: str
) -> None:
    """A server that accepts the TCP connection (and over wss:// the TLS handshake) and then
    closes it, politely or with a reset, fails the attempt at once with that reason instead
    of leaving it Connecting until the 20 s connect timeout (EVerest's tests found this)."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)

    async def hang_up(stream: trio.SocketStream) -> None:
        peer: trio.abc.Stream = stream
        if scheme == "wss":
            peer = trio.SSLStream(stream, server_context, server_side=True)
            await peer.do_handshake()
        if how == "FIN after the request":
            await peer.receive_some()
        if how.startswith("RST"):
            reset_on_close(stream)
        await trio.aclose_forcefully(stream)  # no TLS close_notify either: the socket goes

    listeners = await nursery.start(partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with trio.fail_after(5), pytest.raises(TransportError) as info:
        await nursery.start(
            partial(
                transport.run_client,
                f"{scheme}://127.0.0.1:{port}/ocpp",
                charge_point_id="CP1",
                ssl_context=client_context,
            )
        )
    assert re.match(expected, str(info.value)), str(info.value)


@pytest.mark.parametrize(
    ("url", "key", "certificate", "profile"),
    [
        ("ws://h/ocpp", False, False, 0),
        ("ws://h/ocpp", True, False, 1),
        ("ws://h/ocpp", True, True, 1),  # a client certificate needs TLS to be presented
        ("wss://h/ocpp", False, False, 0),
        ("wss://h/ocpp", True, False, 2),
        ("wss://h/ocpp", False, True, 3),
        ("wss://h/ocpp", True, True, 3),
    ],
)
def test_security_profile_of_a_connection(
    url: str, key: bool, certificate: bool, profile: int
) -> None:
    assert (
        transport.security_profile(url, authorization_key=key, client_certificate=certificate)
        == profile
    )
