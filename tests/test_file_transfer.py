"""The file transfer service (dcocpp/ocpp/transfer) against real servers on loopback: the
in-process HTTP/HTTPS file server (tests/file_server.py) and pyftpdlib's FTP/FTPS server in its
own process (tests/peers/ftp_server.py, which requires the TLS session reuse vsftpd requires).

The deadlines here are real time, short: the bytes move through the kernel and, for FTP, a
worker thread, while an autojump clock would jump past them.
"""

from __future__ import annotations

import base64
import ftplib
import io
import logging
import os
import random
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio

from dcocpp.ocpp.errors import OcppError
from dcocpp.ocpp.transfer import (
    SUPPORTED_PROTOCOLS,
    TransferError,
    discard,
    download,
    upload,
)
from dcocpp.ocpp.transfer.partfile import partial_path, state_path
from dcocpp.ocpp.transfer.urls import parse
from tests.file_server import FileServer, Tls, serve_files
from tests.processes import ManagedProcess

USER = "charger"
PASSWORD = "s3cr3t-Pa55"
USERINFO = f"{USER}:{PASSWORD}"
FILE = random.Random(14).randbytes(300_000)  # several chunks of every protocol's size
CUT = 100_000
DEADLINE = 0.5


@attrs.frozen
class FtpServer:
    process: ManagedProcess
    root: Path
    port: int
    scheme: str

    def url(self, path: str, userinfo: str = USERINFO) -> str:
        return f"{self.scheme}://{userinfo}@127.0.0.1:{self.port}{path}"

    def command(self, cmd: str, nth: int = 1) -> dict[str, object]:
        """The `nth` `cmd` the server answered (waits for its report, at most 5 s)."""
        return self.process.stdout.wait_for_event(
            lambda e: e.get("event") == "command" and e.get("cmd") == cmd, 5, nth=nth
        )


@pytest.fixture
def ftp_server(tmp_path: Path, tls: Tls) -> Iterator[Callable[..., FtpServer]]:
    """Starts pyftpdlib (FTPS: `tls=True`, requiring TLS session reuse on data connections)."""
    started: list[ManagedProcess] = []

    def start(*, tls_on: bool = False, cut_after: int | None = None) -> FtpServer:
        root = tmp_path / f"ftp-root-{len(started)}"
        root.mkdir()
        argv = [sys.executable, "-m", "tests.peers.ftp_server", "--root", str(root)]
        argv += ["--user", USER, "--password", PASSWORD]
        if tls_on:
            argv += ["--cert", str(tls.server_pem), "--require-session-reuse"]
        if cut_after is not None:
            argv += ["--cut-after", str(cut_after)]
        process = ManagedProcess(argv, name="ftp server")
        started.append(process)
        line = process.stdout.wait_for_line(lambda s: s.startswith("LISTENING "), 15)
        return FtpServer(process, root, int(line.split()[1]), "ftps" if tls_on else "ftp")

    yield start
    for process in started:
        process.stop()


@pytest.fixture
async def http_server() -> AsyncIterator[FileServer]:
    async with serve_files(FileServer(files={"/fw/image.bin": FILE})) as server:
        yield server


@pytest.fixture
async def https_server(tls: Tls) -> AsyncIterator[FileServer]:
    server = FileServer(files={"/fw/image.bin": FILE})
    async with serve_files(server, tls.server_context) as running:
        yield running


class ProgressLog:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))

    def check(self, size: int) -> None:
        """Several reports, never backwards, the last one: all of `size` bytes."""
        assert len(self.calls) > 2
        done = [call[0] for call in self.calls]
        assert done == sorted(done)
        assert self.calls[-1] == (size, size)


def assert_no_credentials(text: str) -> None:
    assert PASSWORD not in text
    assert base64.b64encode(USERINFO.encode()).decode() not in text
    assert USERINFO not in text


# --- URLs -------------------------------------------------------------------------------------


def test_a_url_keeps_its_percent_encoded_credentials_apart_from_what_is_printed() -> None:
    url = parse("FTP://us%40er:p%3Aw%2F@[::1]:2121/%2Fsrv/f%20x.bin")
    assert (url.username, url.password) == ("us@er", "p:w/")
    assert (url.scheme, url.host, url.port) == ("ftp", "::1", 2121)
    assert url.file_path == "/srv/f x.bin"  # %2F: from the root, not the login directory
    assert str(url) == "ftp://[::1]:2121/%2Fsrv/f%20x.bin"
    assert "p:w" not in repr(url) and "us@er" not in repr(url)
    assert str(parse("https://h/up").child("diag 1.zip")) == "https://h/up/diag%201.zip"
    assert parse("http://h").path == "/"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sftp://u:pw@h/f", "sftp://h/f: sftp:// is not supported"),
        ("u:pw@h/f", "h/f: u:// is not supported"),
        ("//u:pw@h/f", "//h/f: no scheme (only ftp://"),
        ("ftp://u:pw@h:99999/f", "ftp://h:99999/f: not a valid URL"),
        ("http://u:pw@/f", "http:///f: no host"),
        ("http://u:pw@h/f%0D%0AHost:x", "http://h/f%0D%0AHost:x: the path holds a line break"),
    ],
)
def test_a_url_that_cannot_be_transferred_is_refused_without_its_password(
    text: str, message: str
) -> None:
    with pytest.raises(TransferError) as caught:
        parse(text)
    assert str(caught.value).startswith(message)
    assert ":pw" not in str(caught.value)


def test_an_upload_name_that_is_no_file_name_is_refused() -> None:
    for name in ("", "..", "a/b", "a\\b", "a\nb"):
        with pytest.raises(TransferError, match="is no file name"):
            parse("ftp://h/dir/").child(name)


# --- every protocol listed works both ways ---------------------------------------------------


@pytest.mark.parametrize("protocol", SUPPORTED_PROTOCOLS)
async def test_every_supported_protocol_downloads_and_uploads_a_file(
    protocol: str,
    tmp_path: Path,
    tls: Tls,
    ftp_server: Callable[..., FtpServer],
) -> None:
    scheme = protocol.lower()
    target = tmp_path / "data" / "image.bin"
    diagnostics = tmp_path / "diagnostics.tar.gz"
    diagnostics.write_bytes(FILE[:123_456])
    down, up = ProgressLog(), ProgressLog()
    if scheme.startswith("ftp"):
        server = ftp_server(tls_on=scheme == "ftps")
        (server.root / "fw").mkdir()
        (server.root / "fw" / "image.bin").write_bytes(FILE)
        (server.root / "upload").mkdir()
        assert await download(
            server.url("/fw/image.bin"), target, ca_bundle=tls.ca_bundle, progress=down
        ) == len(FILE)
        await upload(
            diagnostics, server.url("/upload/"), "diag.tar.gz", ca_bundle=tls.ca_bundle, progress=up
        )
        received = (server.root / "upload" / "diag.tar.gz").read_bytes()
    else:
        files = FileServer(files={"/fw/image.bin": FILE}, credentials=(USER, PASSWORD))
        context = tls.server_context if scheme == "https" else None
        async with serve_files(files, context) as http:
            assert http.scheme == scheme
            url = http.url("/fw/image.bin", USERINFO)
            assert await download(url, target, ca_bundle=tls.ca_bundle, progress=down) == len(FILE)
            location = http.url("/upload", USERINFO)
            await upload(diagnostics, location, "diag.tar.gz", ca_bundle=tls.ca_bundle, progress=up)
        received = files.received["/upload/diag.tar.gz"]
    assert target.read_bytes() == FILE
    assert not partial_path(target).exists() and not state_path(target).exists()
    assert received == diagnostics.read_bytes()
    down.check(len(FILE))
    up.check(123_456)


# --- HTTP -------------------------------------------------------------------------------------


async def test_http_upload_is_a_put_of_the_raw_file_with_its_content_length(
    http_server: FileServer, tmp_path: Path
) -> None:
    source = tmp_path / "diag.zip"
    source.write_bytes(FILE)
    assert await upload(source, http_server.url("/incoming/"), "diag 1.zip") == len(FILE)
    (put,) = http_server.requests_of("PUT")
    assert put.path == "/incoming/diag%201.zip"
    assert put.headers["content-length"] == str(len(FILE))
    assert "transfer-encoding" not in put.headers
    assert http_server.received["/incoming/diag%201.zip"] == FILE


async def test_http_upload_falls_back_to_a_multipart_post_when_put_is_refused(
    http_server: FileServer, tmp_path: Path
) -> None:
    http_server.refuse_put = True
    source = tmp_path / "diag.zip"
    source.write_bytes(FILE)
    progress = ProgressLog()
    await upload(source, http_server.url("/incoming"), "diag.zip", progress=progress)
    assert [seen.method for seen in http_server.requests] == ["PUT", "POST"]
    post = http_server.requests[-1]
    assert post.path == "/incoming"
    assert post.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert post.headers["content-length"] == str(len(post.body))
    assert http_server.received == {"/incoming/diag.zip": FILE}
    assert progress.calls[-1] == (len(FILE), len(FILE))


async def test_http_upload_refused_is_a_transfer_error_naming_each_refusal(
    http_server: FileServer, tmp_path: Path
) -> None:
    source = tmp_path / "diag.zip"
    source.write_bytes(b"x")
    http_server.credentials = ("someone", "else")
    with pytest.raises(TransferError) as caught:
        await upload(source, http_server.url("/in", USERINFO), "diag.zip")
    # A refusal of who we are is final: no POST after it.
    assert str(caught.value) == (
        f"http://127.0.0.1:{http_server.port}/in/diag.zip: PUT: HTTP 401 Unauthorized "
        "(wrong or missing user name and password in the URL?)"
    )
    assert [seen.method for seen in http_server.requests] == ["PUT"]
    http_server.credentials = None
    http_server.refuse_put = http_server.refuse_post = True
    with pytest.raises(TransferError) as caught:
        await upload(source, http_server.url("/in"), "diag.zip")
    assert str(caught.value) == (
        f"http://127.0.0.1:{http_server.port}/in/diag.zip: PUT: HTTP 405 Method Not Allowed; "
        f"multipart POST to http://127.0.0.1:{http_server.port}/in: HTTP 405 Method Not Allowed"
    )


async def test_http_download_resumes_with_a_range_request_after_a_cut_mid_file(
    http_server: FileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    http_server.cut_after = CUT
    progress = ProgressLog()
    target = tmp_path / "image.bin"
    with caplog.at_level(logging.INFO, logger="dcocpp"):
        await download(http_server.url("/fw/image.bin"), target, progress=progress)
    assert target.read_bytes() == FILE
    first, second = http_server.requests_of("GET")
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={CUT}-"
    assert second.headers["if-range"].startswith('"')  # the ETag of the first answer
    assert (CUT, len(FILE)) in progress.calls
    progress.check(len(FILE))
    assert f"the connection broke at byte {CUT}" in caplog.text


async def test_a_later_download_resumes_what_a_cancelled_one_left(
    http_server: FileServer, tmp_path: Path
) -> None:
    target = tmp_path / "image.bin"
    url = http_server.url("/fw/image.bin")
    with trio.CancelScope() as scope:

        def stop_midway(done: int, total: int | None) -> None:
            if done >= CUT:
                scope.cancel()

        await download(url, target, progress=stop_midway)
    assert scope.cancelled_caught
    kept = partial_path(target).stat().st_size
    assert CUT <= kept < len(FILE)
    assert not target.exists()
    await download(url, target)
    assert target.read_bytes() == FILE
    assert http_server.requests_of("GET")[-1].headers["range"] == f"bytes={kept}-"


async def test_a_later_download_starts_over_when_the_file_changed_on_the_server(
    http_server: FileServer, tmp_path: Path
) -> None:
    target = tmp_path / "image.bin"
    url = http_server.url("/fw/image.bin")
    with trio.CancelScope() as scope:
        await download(url, target, progress=lambda done, total: done and scope.cancel())
    assert partial_path(target).stat().st_size > 0
    newer = FILE[::-1]
    http_server.files["/fw/image.bin"] = newer
    await download(url, target)
    assert target.read_bytes() == newer
    # It asked for the rest of the old version (If-Range), and got the whole new one.
    assert "if-range" in http_server.requests_of("GET")[-1].headers


async def test_discard_removes_what_a_download_left_to_resume(
    http_server: FileServer, tmp_path: Path
) -> None:
    target = tmp_path / "image.bin"
    with trio.CancelScope() as scope:
        await download(
            http_server.url("/fw/image.bin"), target, progress=lambda done, total: scope.cancel()
        )
    assert partial_path(target).exists() and state_path(target).exists()
    await discard(target)
    assert not partial_path(target).exists() and not state_path(target).exists()


async def test_http_server_that_never_answers_ends_at_the_callers_deadline(
    http_server: FileServer, tmp_path: Path
) -> None:
    http_server.silent = True
    started = trio.current_time()
    with trio.move_on_after(DEADLINE) as scope:
        await download(http_server.url("/fw/image.bin"), tmp_path / "image.bin")
    assert scope.cancelled_caught
    assert trio.current_time() - started < DEADLINE + 1
    assert len(http_server.requests) == 1  # it was asked, and never said a word
    with trio.fail_after(5):
        await http_server.hung_up.wait()  # and the charger hung up


async def test_https_server_whose_certificate_does_not_verify_fails_at_once(
    tls: Tls, tmp_path: Path
) -> None:
    async with serve_files(FileServer(files={"/f": FILE}), tls.stranger_context) as server:
        with trio.fail_after(5), pytest.raises(TransferError) as caught:
            await download(server.url("/f"), tmp_path / "f", ca_bundle=tls.ca_bundle)
        assert str(caught.value).startswith(
            f"https://127.0.0.1:{server.port}/f: TLS: the server's certificate is not trusted: "
        )
        assert server.requests == []  # nothing was sent to it
    # Without the CA bundle the system's CAs alone do not know the test CA either.
    async with serve_files(FileServer(files={"/f": FILE}), tls.server_context) as server:
        with trio.fail_after(5), pytest.raises(TransferError, match="not trusted"):
            await download(server.url("/f"), tmp_path / "f")


async def test_http_credentials_never_reach_the_logs_or_the_errors(
    http_server: FileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    http_server.credentials = (USER, PASSWORD)
    http_server.cut_after = CUT  # a resume, logged with the URL
    target = tmp_path / "image.bin"
    errors = []
    with caplog.at_level(logging.DEBUG):
        await download(http_server.url("/fw/image.bin", USERINFO), target)
        for path in ("/missing.bin", "/fw/image.bin"):
            userinfo = USERINFO if path == "/missing.bin" else f"{USER}:wrong{PASSWORD}"
            with pytest.raises(TransferError) as caught:
                await download(http_server.url(path, userinfo), tmp_path / "other.bin")
            errors.append(str(caught.value))
        with pytest.raises(TransferError) as caught:
            await download(f"sftp://{USERINFO}@127.0.0.1/x", tmp_path / "x")
        errors.append(str(caught.value))
    assert target.read_bytes() == FILE
    assert http_server.requests[0].headers["authorization"]  # they were sent, to the server
    assert errors == [
        f"http://127.0.0.1:{http_server.port}/missing.bin: HTTP 404 Not Found "
        "(no such file or directory on the server)",
        f"http://127.0.0.1:{http_server.port}/fw/image.bin: HTTP 401 Unauthorized "
        "(wrong or missing user name and password in the URL?)",
        "sftp://127.0.0.1/x: sftp:// is not supported (only ftp://, ftps://, http://, https://)",
    ]
    assert f"127.0.0.1:{http_server.port}/fw/image.bin" in caplog.text  # the URLs are logged
    assert_no_credentials(caplog.text)


# --- the disk ---------------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
@pytest.mark.parametrize("scheme", ["http", "ftp"])
async def test_a_full_disk_is_a_transfer_error_and_leaves_no_target(
    scheme: str, http_server: FileServer, ftp_server: Callable[..., FtpServer], tmp_path: Path
) -> None:
    """The partial file is /dev/full, where every write fails with ENOSPC as on a full disk."""
    if scheme == "ftp":
        server = ftp_server()
        (server.root / "image.bin").write_bytes(FILE)
        url = server.url("/image.bin")
    else:
        url = http_server.url("/fw/image.bin")
    target = tmp_path / "image.bin"
    partial_path(target).symlink_to("/dev/full")
    with trio.fail_after(10), pytest.raises(TransferError) as caught:
        await download(url, target)
    assert str(caught.value) == f"{partial_path(target)}: cannot write: no space left on device"
    assert not target.exists()


async def test_a_download_larger_than_the_free_space_fails_before_writing(
    http_server: FileServer, tmp_path: Path
) -> None:
    http_server.claimed_size = 10**18  # an exabyte
    target = tmp_path / "image.bin"
    with pytest.raises(TransferError, match=r"not enough space for the download: 10{18} more"):
        await download(http_server.url("/fw/image.bin"), target)
    assert partial_path(target).stat().st_size == 0
    assert not target.exists()


async def test_a_download_into_a_file_instead_of_a_directory_is_a_transfer_error(
    http_server: FileServer, tmp_path: Path
) -> None:
    (tmp_path / "data").write_text("not a directory")
    with pytest.raises(TransferError) as caught:
        await download(http_server.url("/fw/image.bin"), tmp_path / "data" / "image.bin")
    assert str(caught.value) == f"download directory {tmp_path / 'data'}: not a directory"
    assert isinstance(caught.value, OcppError)  # the OCPP layer's root
    assert http_server.requests == []


async def test_uploading_a_missing_file_is_a_transfer_error(
    http_server: FileServer, tmp_path: Path
) -> None:
    with pytest.raises(TransferError) as caught:
        await upload(tmp_path / "none.zip", http_server.url("/in"), "none.zip")
    assert str(caught.value) == f"{tmp_path / 'none.zip'}: cannot read: no such file or directory"


# --- FTP --------------------------------------------------------------------------------------


async def test_ftps_data_connections_resume_the_control_connections_tls_session(
    ftp_server: Callable[..., FtpServer], tls: Tls, tmp_path: Path
) -> None:
    server = ftp_server(tls_on=True)
    (server.root / "image.bin").write_bytes(FILE)

    def plain_ftplib() -> None:
        client = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=tls.ca_bundle))
        try:
            client.connect("127.0.0.1", server.port)
            client.auth()
            client.login(USER, PASSWORD)
            client.prot_p()
            client.retrbinary("RETR image.bin", io.BytesIO().write)
        finally:
            client.close()

    # The server refuses what the standard library does alone (CPython issue 63699)...
    with pytest.raises(ftplib.error_perm, match="522"):
        await trio.to_thread.run_sync(plain_ftplib)
    # ...and takes the service's data connections.
    await download(server.url("/image.bin"), tmp_path / "image.bin", ca_bundle=tls.ca_bundle)
    assert (tmp_path / "image.bin").read_bytes() == FILE


async def test_ftp_download_resumes_with_rest_after_a_cut_mid_file(
    ftp_server: Callable[..., FtpServer], tmp_path: Path
) -> None:
    server = ftp_server(cut_after=CUT)
    (server.root / "image.bin").write_bytes(FILE)
    target = tmp_path / "image.bin"
    progress = ProgressLog()
    await download(server.url("/image.bin"), target, progress=progress)
    assert target.read_bytes() == FILE
    server.process.stdout.wait_for_event(lambda e: e.get("event") == "cut", 5)
    assert server.command("REST")["arg"] == str(CUT)
    assert server.command("RETR", nth=2)["code"] in (125, 150)
    progress.check(len(FILE))


async def test_a_cancelled_ftp_download_writes_nothing_more_and_a_later_one_resumes_with_rest(
    ftp_server: Callable[..., FtpServer], tmp_path: Path
) -> None:
    """The worker thread is abandoned at the cancel: it must not write after it (a later
    attempt appends to the same file), and what it wrote is resumed."""
    big = FILE * 10
    server = ftp_server()
    (server.root / "image.bin").write_bytes(big)
    target = tmp_path / "image.bin"
    with trio.CancelScope() as scope:

        def stop_midway(done: int, total: int | None) -> None:
            if done >= CUT:
                scope.cancel()

        await download(server.url("/image.bin"), target, progress=stop_midway)
    assert scope.cancelled_caught
    kept = partial_path(target).stat().st_size
    await trio.sleep(0.2)  # time for a stray write, were there one
    assert partial_path(target).stat().st_size == kept
    assert CUT <= kept < len(big)
    await download(server.url("/image.bin"), target)
    assert target.read_bytes() == big
    assert server.command("REST")["arg"] == str(kept)


async def test_ftp_server_that_never_answers_ends_at_the_callers_deadline(
    tmp_path: Path,
) -> None:
    """A server that accepts and never greets: the worker thread is blocked in a read when the
    deadline passes; the call returns at the deadline and the thread's socket is shut down."""
    hung_up = trio.Event()

    async def never_greet(stream: trio.SocketStream) -> None:
        while await stream.receive_some(1024):
            pass
        hung_up.set()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, never_greet, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        started = trio.current_time()
        with trio.move_on_after(DEADLINE) as scope:
            await download(f"ftp://{USERINFO}@127.0.0.1:{port}/f", tmp_path / "f")
        assert scope.cancelled_caught
        assert trio.current_time() - started < DEADLINE + 1
        with trio.fail_after(5):
            await hung_up.wait()
        nursery.cancel_scope.cancel()


async def test_ftps_server_whose_certificate_does_not_verify_fails_at_once(
    ftp_server: Callable[..., FtpServer], tmp_path: Path
) -> None:
    server = ftp_server(tls_on=True)
    (server.root / "image.bin").write_bytes(FILE)
    with trio.fail_after(5), pytest.raises(TransferError) as caught:
        await download(server.url("/image.bin"), tmp_path / "image.bin")  # no CA bundle
    assert str(caught.value).startswith(
        f"ftps://127.0.0.1:{server.port}/image.bin: TLS: the server's certificate is not trusted: "
    )


async def test_ftp_credentials_never_reach_the_logs_or_the_errors(
    ftp_server: Callable[..., FtpServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = ftp_server(cut_after=CUT)
    (server.root / "image.bin").write_bytes(FILE)
    with caplog.at_level(logging.DEBUG):
        await download(server.url("/image.bin"), tmp_path / "image.bin")
        with pytest.raises(TransferError) as wrong_password:
            await download(server.url("/image.bin", f"{USER}:x{PASSWORD}"), tmp_path / "x.bin")
        with pytest.raises(TransferError) as missing:
            await download(server.url("/nothing/here.bin"), tmp_path / "x.bin")
    assert str(wrong_password.value) == (
        f"ftp://127.0.0.1:{server.port}/image.bin: login: 530 Authentication failed."
    )
    assert str(missing.value).startswith(
        f"ftp://127.0.0.1:{server.port}/nothing/here.bin: RETR nothing/here.bin: 550 "
    )
    assert f"ftp://127.0.0.1:{server.port}/image.bin" in caplog.text  # the resume, logged
    assert_no_credentials(caplog.text + str(wrong_password.value) + str(missing.value))


async def test_ftp_upload_into_a_missing_directory_is_a_transfer_error(
    ftp_server: Callable[..., FtpServer], tmp_path: Path
) -> None:
    server = ftp_server()
    source = tmp_path / "diag.zip"
    source.write_bytes(FILE)
    with pytest.raises(TransferError) as caught:
        await upload(source, server.url("/no/such/dir"), "diag.zip")
    assert str(caught.value).startswith(
        f"ftp://127.0.0.1:{server.port}/no/such/dir: STOR no/such/dir/diag.zip: 550 "
    )
    assert not os.listdir(server.root)
