"""HTTP and HTTPS transfers with httpx2 (the maintained continuation of httpx) on trio.

Downloads stream to the partial file and resume with Range (If-Range: only the same version
of the file) where a connection breaks after bytes arrived. Uploads PUT the raw file to
`<location>/<fileName>` with its Content-Length (many servers refuse a chunked PUT); a server
that has no PUT there gets a multipart/form-data POST to `<location>`, the other common way to
take an upload. No time-outs: the caller's cancel scope is the deadline.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import socket
import ssl
from http import HTTPStatus
from pathlib import Path
from typing import Protocol

import httpx2
import trio

from dcocpp.ocpp.transfer import tls
from dcocpp.ocpp.transfer.errors import TransferError, http_refusal
from dcocpp.ocpp.transfer.partfile import PartialFile
from dcocpp.ocpp.transfer.progress import Progress
from dcocpp.ocpp.transfer.urls import TransferUrl
from dcocpp.storage.oserrors import reason

log = logging.getLogger(__name__)


CHUNK = 64 * 1024
# A server that takes no PUT at `<location>/<fileName>` (no such method there, no such
# resource to put): the upload is offered as a multipart POST to `<location>` instead.
PUT_REFUSED = frozenset({404, 405, 501})
UPLOAD_FIELD = "file"  # the form field of the multipart POST, as curl -F file=@... sends it

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")


def _client(url: TransferUrl, context: ssl.SSLContext, *, redirects: bool) -> httpx2.AsyncClient:
    # The credentials go as explicit Basic auth, never in the URL httpx sees: its log lines
    # and errors carry the URL. Redirects drop them when they leave the origin (httpx does).
    auth = httpx2.BasicAuth(url.username, url.password) if url.username or url.password else None
    return httpx2.AsyncClient(
        auth=auth,
        verify=context,
        timeout=None,  # the caller's cancel scope is the deadline
        trust_env=False,  # no proxy or .netrc from the environment: the URL says it all
        follow_redirects=redirects,
    )


async def download(
    url: TransferUrl, part: PartialFile, context: ssl.SSLContext, progress: Progress | None
) -> None:
    """GET `url` into `part`, resuming while broken connections still bring bytes."""
    async with _client(url, context, redirects=True) as client:
        while True:
            before = part.size
            try:
                await _get(client, url, part, progress)
                return
            except httpx2.TransportError as exc:
                if part.size == before or part.validator is None:
                    raise TransferError(f"{url}: {describe(exc)}") from exc
                log.info(
                    "%s: the connection broke at byte %d (%s); resuming there",
                    url,
                    part.size,
                    describe(exc),
                )
            except httpx2.HTTPError as exc:
                raise TransferError(f"{url}: {describe(exc)}") from exc


async def _get(
    client: httpx2.AsyncClient, url: TransferUrl, part: PartialFile, progress: Progress | None
) -> None:
    # The file as the server stores it: offsets and sizes are of those bytes.
    headers = {"Accept-Encoding": "identity"}
    if part.size and part.validator is not None:
        headers |= {"Range": f"bytes={part.size}-", "If-Range": part.validator}
    async with client.stream("GET", url.public, headers=headers) as response:
        validator = _validator(response)
        if response.status_code == 206:
            start, total = _content_range(url, response)
            if start != part.size or validator != part.validator:
                await trio.to_thread.run_sync(part.restart)
                raise TransferError(
                    f"{url}: the server resumed at byte {start} of another version of the "
                    f"file than asked for; the next attempt starts over"
                )
        elif response.status_code == 200:
            if part.size:
                log.info("%s: the server sends the whole file; starting over", url)
                await trio.to_thread.run_sync(part.restart)
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        elif response.status_code == 416 and part.size and _complete(response, part.size):
            return  # every byte was there already
        else:
            raise TransferError(
                f"{url}: {_status(response)}", refusal=http_refusal(response.status_code)
            )
        await trio.to_thread.run_sync(part.expect, validator, total)
        if progress is not None:
            progress(part.size, total)
        # As they arrive: a chunker would lose the bytes it holds when the connection breaks.
        async with contextlib.aclosing(response.aiter_raw()) as chunks:
            async for chunk in chunks:
                await trio.to_thread.run_sync(part.write, chunk)
                if progress is not None:
                    progress(part.size, total)


async def upload(
    source: Path,
    size: int,
    location: TransferUrl,
    file_name: str,
    context: ssl.SSLContext,
    progress: Progress | None,
) -> str:
    """PUT `source` to `<location>/<file_name>`, or POST it to `location` as a form where the
    server has no PUT there; returns the method that worked."""
    target = location.child(file_name)
    try:
        file = await trio.open_file(source, "rb")
    except OSError as exc:
        raise TransferError(f"{source}: cannot read: {reason(exc)}") from exc
    async with file, _client(location, context, redirects=False) as client:
        try:
            response = await client.put(
                target.public,
                content=_FileBody(file, source, size, progress),
                headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            )
            if response.is_success:
                return "PUT"
            if response.status_code not in PUT_REFUSED:
                raise TransferError(
                    f"{target}: PUT: {_status(response)}",
                    refusal=http_refusal(response.status_code),
                )
            refused = _status(response)
            log.info("%s: PUT: %s; trying a multipart POST to %s", target, refused, location)
            boundary = secrets.token_hex(16)
            head = (
                f"--{boundary}\r\n"
                f'Content-Disposition: form-data; name="{UPLOAD_FIELD}"; '
                f'filename="{_quoted(file_name)}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            tail = f"\r\n--{boundary}--\r\n".encode()
            response = await client.post(
                location.public,
                content=_FileBody(file, source, size, progress, head, tail),
                headers={
                    "Content-Length": str(len(head) + size + len(tail)),
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                },
            )
            if response.is_success:
                return "POST"
            raise TransferError(
                f"{target}: PUT: {refused}; multipart POST to {location}: {_status(response)}",
                refusal=http_refusal(response.status_code),
            )
        except httpx2.HTTPError as exc:
            raise TransferError(f"{target}: {describe(exc)}") from exc


class _Readable(Protocol):
    """What an upload needs of trio's wrapper of an open file."""

    async def seek(self, target: int, /) -> int: ...

    async def read(self, size: int, /) -> bytes: ...


class _FileBody:
    """The body of an upload as httpx sends it: `head`, `size` bytes of the file from its
    start (what the Content-Length announced), `tail`. httpx's own multipart (files=) reads
    the file synchronously on the event loop; this reads it through trio's file wrapper. An
    iterator object, not an async generator: httpx may stop midway (a server that answers
    before the body is in), and trio warns about every generator left so."""

    def __init__(
        self,
        file: _Readable,
        source: Path,
        size: int,
        progress: Progress | None,
        head: bytes = b"",
        tail: bytes = b"",
    ) -> None:
        self._file = file
        self._source = source
        self._size = size
        self._progress = progress
        self._head = head
        self._tail = tail
        self._sent: int | None = None  # of the file; None: not begun

    def __aiter__(self) -> _FileBody:
        return self

    async def __anext__(self) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        try:
            if self._sent is None:
                await self._file.seek(0)
                self._sent = 0
                self._report()
            if self._sent < self._size:
                chunk = await self._file.read(min(CHUNK, self._size - self._sent))
                if not chunk:
                    raise TransferError(
                        f"{self._source}: it shrank to {self._sent} bytes during the upload"
                    )
                self._sent += len(chunk)
                self._report()
                return chunk
        except OSError as exc:
            raise TransferError(f"{self._source}: cannot read: {reason(exc)}") from exc
        if self._tail:
            tail, self._tail = self._tail, b""
            return tail
        raise StopAsyncIteration

    def _report(self) -> None:
        if self._progress is not None and self._sent is not None:
            self._progress(self._sent, self._size)


def _quoted(file_name: str) -> str:
    # As browsers write a file name in a form (the HTML standard's multipart encoding).
    return file_name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _validator(response: httpx2.Response) -> str | None:
    """What identifies this version of the file for If-Range: a strong ETag, or the
    Last-Modified date (a weak ETag cannot be used there)."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def _content_range(url: TransferUrl, response: httpx2.Response) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match is None or match.group(1) is None:
        raise TransferError(f"{url}: a partial answer (206) without a usable Content-Range")
    total = match.group(2)
    return int(match.group(1)), None if total == "*" else int(total)


def _complete(response: httpx2.Response, size: int) -> bool:
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    return match is not None and match.group(2) == str(size)


def _status(response: httpx2.Response) -> str:
    phrase = response.reason_phrase
    if not phrase:  # HTTP/2 has none, and an HTTP/1.1 server may send none
        with contextlib.suppress(ValueError):  # a status no standard names
            phrase = HTTPStatus(response.status_code).phrase
    text = f"HTTP {response.status_code} {phrase}".rstrip()
    if response.status_code in (401, 403):
        return f"{text} (wrong or missing user name and password in the URL?)"
    if response.status_code == 404:
        return f"{text} (no such file or directory on the server)"
    return text


def describe(exc: httpx2.HTTPError) -> str:
    """Why a request failed, in an operator's words (httpx keeps the socket's or TLS's error
    in the exception's causes)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return tls.describe(cause)
        if isinstance(cause, socket.gaierror):
            return f"host name not found ({cause.strerror})"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx2.RemoteProtocolError):
        return f"the server broke the connection: {exc}"
    if isinstance(exc, httpx2.TooManyRedirects):
        return "too many redirects"
    return str(exc) or type(exc).__name__
