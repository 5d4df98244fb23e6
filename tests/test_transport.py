"""Opening OCPP-J WebSockets on real loopback sockets (port 0): subprotocol, Basic auth, TLS."""

from __future__ import annotations

import base64
import ssl
from functools import partial
from typing import Any

import pytest
import trio
import trustme
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from dcocpp.ocpp import transport
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


def test_tc_085_basic_auth_header_is_base64_of_id_and_key() -> None:
    name, value = transport.basic_auth_header("CP-1", "0123456789abcdef")
    assert name == b"Authorization"
    assert value == b"Basic " + base64.b64encode(b"CP-1:0123456789abcdef")
    assert transport.parse_basic_auth([(b"authorization", value)]) == ("CP-1", "0123456789abcdef")
    assert transport.parse_basic_auth([(b"Authorization", b"Bearer x")]) is None
    assert transport.parse_basic_auth([(b"Authorization", b"Basic !!!")]) is None


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


async def test_connection_refused_is_a_transport_error() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    async with trio.open_nursery() as nursery:
        with pytest.raises(TransportError, match="cannot connect"):
            await nursery.start(
                partial(transport.run_client, f"ws://127.0.0.1:{port}/", charge_point_id="CP1")
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
            authenticate=lambda cp, pw: pw == "0123456789abcdef",
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
                authorization_key="0123456789abcdef",
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
    with trio.fail_after(5), pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        await nursery.start(
            partial(
                transport.run_client,
                f"wss://127.0.0.1:{port}/ocpp",
                charge_point_id="CP1",
                ssl_context=client_context,
            )
        )
