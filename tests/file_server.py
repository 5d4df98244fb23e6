"""An HTTP/HTTPS file server for the file transfer tests: in-process, on trio and h11, on
127.0.0.1 port 0.

It serves `files` to GET (with ETag, Range and If-Range), stores PUT bodies and the files of
multipart/form-data POSTs in `received`, records every request it read in `requests`, and
misbehaves on demand: `cut_after` (the next GET answer stops after that many bytes of its body
and the connection drops), `claimed_size` (the next GET answer announces a file of that size,
then drops), `silent` (requests are read, never answered), `refuse_put`,
`refuse_post` (`refusal`, 405 unless set, to every PUT, POST), `credentials` (Basic auth
required).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import attrs
import h11
import trio
import trustme

CHUNK = 16 * 1024
_RANGE = re.compile(r"bytes=(\d+)-")


@attrs.frozen
class Seen:
    """A request as the server read it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@attrs.define
class FileServer:
    files: dict[str, bytes] = attrs.Factory(dict)
    received: dict[str, bytes] = attrs.Factory(dict)
    requests: list[Seen] = attrs.Factory(list)
    credentials: tuple[str, str] | None = None
    cut_after: int | None = None
    silent: bool = False
    refuse_put: bool = False
    refuse_post: bool = False
    refusal: int = 405  # the status of a refused PUT or POST
    claimed_size: int | None = None  # the next GET announces this size, sends nothing, drops
    # Set when the client closed a connection that a silent server held.
    hung_up: trio.Event = attrs.Factory(trio.Event)
    port: int = 0
    scheme: str = "http"

    def url(self, path: str, userinfo: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"{self.scheme}://{at}127.0.0.1:{self.port}{path}"

    def requests_of(self, method: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.method == method]

    async def handle(self, stream: trio.abc.Stream) -> None:
        connection = h11.Connection(h11.SERVER)
        try:
            while True:
                seen = await self._read_request(stream, connection)
                if seen is None:
                    return
                self.requests.append(seen)
                if self.silent:
                    while await stream.receive_some(CHUNK):
                        pass
                    self.hung_up.set()
                    return
                if not await self._answer(stream, connection, seen):
                    return  # cut
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    return
                connection.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return  # the client went away
        finally:
            await trio.aclose_forcefully(stream)

    async def _read_request(
        self, stream: trio.abc.Stream, connection: h11.Connection
    ) -> Seen | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(CHUNK)
                connection.receive_data(data)
                if not data and request is None:
                    return None
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                return Seen(request.method.decode(), request.target.decode(), headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _answer(
        self, stream: trio.abc.Stream, connection: h11.Connection, seen: Seen
    ) -> bool:
        """Answers `seen`; False when the connection was cut."""
        if self.credentials is not None and seen.headers.get("authorization") != _basic(
            *self.credentials
        ):
            await _send(stream, connection, 401, b"", [("WWW-Authenticate", 'Basic realm="f"')])
            return True
        if seen.method == "GET":
            return await self._get(stream, connection, seen)
        if seen.method == "PUT":
            if self.refuse_put:
                await _send(stream, connection, self.refusal, b"", [("Allow", "GET, POST")])
            else:
                self.received[seen.path] = seen.body
                await _send(stream, connection, 201, b"")
            return True
        if seen.method == "POST" and not self.refuse_post:
            for name, content in _form_files(seen).items():
                self.received[seen.path.rstrip("/") + "/" + name] = content
            await _send(stream, connection, 201, b"")
            return True
        await _send(stream, connection, self.refusal if self.refuse_post else 405, b"")
        return True

    async def _get(self, stream: trio.abc.Stream, connection: h11.Connection, seen: Seen) -> bool:
        content = self.files.get(seen.path)
        if content is None:
            await _send(stream, connection, 404, b"")
            return True
        etag = f'"{hashlib.sha256(content).hexdigest()[:16]}"'
        start = 0
        ranged = _RANGE.fullmatch(seen.headers.get("range", ""))
        if ranged and seen.headers.get("if-range", etag) == etag:
            start = int(ranged.group(1))
            if start >= len(content):
                headers = [("Content-Range", f"bytes */{len(content)}")]
                await _send(stream, connection, 416, b"", headers)
                return True
        if self.claimed_size is not None:
            headers = [("ETag", etag), ("Content-Length", str(self.claimed_size))]
            self.claimed_size = None
            await stream.send_all(connection.send(h11.Response(status_code=200, headers=headers)))
            return False
        body = content[start:]
        headers = [("ETag", etag), ("Accept-Ranges", "bytes"), ("Content-Length", str(len(body)))]
        if ranged and start:
            headers.append(("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}"))
        response = h11.Response(status_code=206 if start else 200, headers=headers)
        await stream.send_all(connection.send(response))
        cut, self.cut_after = self.cut_after, None
        if cut is not None:
            await stream.send_all(connection.send(h11.Data(data=body[:cut])))
            return False  # the connection drops mid-file
        for offset in range(0, len(body), CHUNK):
            await stream.send_all(connection.send(h11.Data(data=body[offset : offset + CHUNK])))
        await stream.send_all(connection.send(h11.EndOfMessage()))
        return True


async def _send(
    stream: trio.abc.Stream,
    connection: h11.Connection,
    status: int,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
) -> None:
    headers = [*(headers or []), ("Content-Length", str(len(body)))]
    data = connection.send(h11.Response(status_code=status, headers=headers))
    data += connection.send(h11.Data(data=body)) if body else b""
    data += connection.send(h11.EndOfMessage())
    await stream.send_all(data)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _form_files(seen: Seen) -> dict[str, bytes]:
    """The files of a multipart/form-data body, by file name (parsed by the standard
    library's MIME parser, not by the code under test)."""
    head = f"Content-Type: {seen.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + seen.body)
    files = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_filename()
        if name is not None:
            files[name] = part.get_payload(decode=True)
    return files


@asynccontextmanager
async def serve_files(
    server: FileServer, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[FileServer]:
    """Runs `server` until the block ends (https with `ssl_context`)."""
    async with trio.open_nursery() as nursery:
        if ssl_context is None:
            listeners = await nursery.start(
                partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
            )
        else:
            listeners = await nursery.start(
                partial(trio.serve_ssl_over_tcp, server.handle, 0, ssl_context, host="127.0.0.1")
            )
            server.scheme = "https"
        listener = listeners[0]
        tcp = listener.transport_listener if ssl_context is not None else listener
        server.port = tcp.socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


# --- TLS for the test servers -----------------------------------------------------------------


@attrs.frozen
class Tls:
    """A CA (trustme) and a server certificate from it, and one from a CA nobody trusts."""

    ca_bundle: Path  # the CA of every server's certificate
    server_pem: Path  # certificate and key, for the FTP server
    server_context: ssl.SSLContext
    stranger_context: ssl.SSLContext  # a certificate of a CA nobody trusts


def make_tls(folder: Path) -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    stranger_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(stranger_context)
    return Tls(folder / "ca.pem", folder / "server.pem", server_context, stranger_context)
