"""UpdateFirmware (OCPP 1.6 5.19, errata 3.47-3.49, 3.63) on a whole station against the
FakeCsms, the file served by real servers on loopback: the in-process HTTP(S) file server
(tests/file_server.py) and pyftpdlib in its own process (tests/peers/ftp_server.py); installs by
the built-in installer or by real hook scripts; restarts are new Stations on the same data
directory (a HardReset ends `Station.run`, as it ends `dcocpp run` with status 3).

Real time, short (the bytes move through the kernel, worker threads and child processes, where
an autojump clock would jump past them), except where only trio time passes (a server that
never answers).
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from ocpp.v16 import call

from dcocpp.cli.sim import format_status
from dcocpp.clock import ocpp_time
from dcocpp.config import ChargerConfig, ConfigError, FirmwareConfig, load_charger_config
from dcocpp.ocpp.errors import CallError
from dcocpp.ocpp.firmware import service as firmware_service
from dcocpp.ocpp.transfer.partfile import partial_path
from dcocpp.station.station import FIRMWARE_DIR, HardReset
from dcocpp.storage.database import Database
from tests.csms import FakeCsms
from tests.file_server import FileServer, Tls, serve_files
from tests.processes import ManagedProcess
from tests.station_harness import REPO, Harness, charger_config, running_station

USER = "charger"
PASSWORD = "s3cr3t-Pa55"
VERSION = "2.0.0-rc1"
IMAGE = f"DCOCPP-FIRMWARE {VERSION}\n".encode() + random.Random(44).randbytes(300_000)
NOT_AN_IMAGE = b"#!/bin/sh\necho this is no dcocpp image\n" + bytes(1000)
PATH = "/fw/dcocpp-2.0.bin"
LIMIT = 30.0  # seconds a step may take at most


def config_for(
    tmp_path: Path,
    *,
    tls: Tls | None = None,
    hook: list[str] | None = None,
    timeout: float = 600.0,
) -> ChargerConfig:
    """The 2-gun charger; its CA bundle the test CA's (`tls`), its install command `hook`."""
    config = charger_config(tmp_path)
    if tls is not None:
        config = attrs.evolve(
            config, security=attrs.evolve(config.security, csms_ca_bundle=tls.ca_bundle)
        )
    return attrs.evolve(
        config, firmware=FirmwareConfig(None if hook is None else tuple(hook), timeout)
    )


class FtpServer:
    def __init__(self, root: Path, tls: Tls | None = None) -> None:
        root.mkdir(parents=True)
        (root / "fw").mkdir()
        argv = [sys.executable, "-m", "tests.peers.ftp_server", "--root", str(root)]
        argv += ["--user", USER, "--password", PASSWORD]
        if tls is not None:
            argv += ["--cert", str(tls.server_pem), "--require-session-reuse"]
        self.root = root
        self.scheme = "ftp" if tls is None else "ftps"
        self.process = ManagedProcess(argv, name="ftp server")
        line = self.process.stdout.wait_for_line(lambda s: s.startswith("LISTENING "), 15)
        self.port = int(line.split()[1])

    def serve(self, content: bytes) -> str:
        (self.root / PATH.lstrip("/")).write_bytes(content)
        return f"{self.scheme}://{USER}:{PASSWORD}@127.0.0.1:{self.port}{PATH}"

    def retrievals(self) -> int:
        return sum(
            1
            for e in self.process.stdout.events
            if e.get("event") == "command" and e.get("cmd") == "RETR"
        )


@pytest.fixture
def ftp(tmp_path: Path) -> Iterator[Callable[..., FtpServer]]:
    started: list[FtpServer] = []

    def start(tls: Tls | None = None) -> FtpServer:
        server = FtpServer(tmp_path / f"ftp-root-{len(started)}", tls)
        started.append(server)
        return server

    yield start
    for server in started:
        server.process.stop()


@pytest.fixture
async def http() -> AsyncIterator[FileServer]:
    async with serve_files(FileServer(credentials=(USER, PASSWORD))) as server:
        yield server


def http_url(server: FileServer, content: bytes) -> str:
    server.files[PATH] = content
    return server.url(PATH, f"{USER}:{PASSWORD}")


async def location(
    scheme: str, http: FileServer, ftp: Callable[..., FtpServer], content: bytes
) -> tuple[str, Callable[[], int]]:
    """The URL of `content` over `scheme` (http or ftp), and how many downloads the server saw."""
    if scheme == "http":
        return http_url(http, content), lambda: len(http.requests_of("GET"))
    server = ftp()
    return server.serve(content), server.retrievals


def update_firmware(h: Harness, url: str, *, after: float = 0, **fields: Any) -> Any:
    when = h.station.clock.now() + timedelta(seconds=after)
    return h.csms_call(call.UpdateFirmware(location=url, retrieve_date=ocpp_time(when), **fields))


def statuses(csms: FakeCsms) -> list[str]:
    return [p["status"] for p in csms.received("FirmwareStatusNotification")]


async def wait_statuses(h: Harness, *expected: str) -> None:
    """Until the central system heard `expected`, in that order, and nothing else."""
    await h.wait_until(lambda: len(statuses(h.csms)) >= len(expected), limit=LIMIT, poll=0.02)
    assert statuses(h.csms) == list(expected)


def firmware_files(config: ChargerConfig) -> list[str]:
    folder = config.data_dir / FIRMWARE_DIR
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def nothing(h: Harness) -> None:
    """What a test does while the station runs to its reboot on its own."""


async def until_hard_reset(
    config: ChargerConfig, csms: FakeCsms, body: Callable[[Harness], Awaitable[None]]
) -> None:
    """Run a station until it ends with HardReset (the process would exit with status 3)."""
    reset = False
    try:
        async with running_station(config, csms) as h:
            await h.booted()
            await body(h)
            await trio.sleep(LIMIT)
    except* HardReset:
        reset = True
    assert reset, "the station did not reboot"


async def next_boot(config: ChargerConfig, csms: FakeCsms) -> None:
    """The station after the reboot, until its queued messages are out."""
    async with running_station(config, csms) as h:
        await h.booted()
        outbox = h.station.outbox
        assert outbox is not None
        await h.wait_until(lambda: outbox.empty, limit=LIMIT, poll=0.02)
        await trio.sleep(0.2)


def versions_booted(csms: FakeCsms) -> list[str]:
    return [p["firmware_version"] for p in csms.received("BootNotification")]


# --- TC_044_1: download, install, reboot, Installed ----------------------------------------------


async def installs_and_reports_installed_once(config: ChargerConfig, url: str) -> FakeCsms:
    csms = FakeCsms(security_events=True)

    async def update(h: Harness) -> None:
        assert await update_firmware(h, url, retries=1, retry_interval=1) is not None
        await wait_statuses(h, "Downloading", "Downloaded", "Installing")

    await until_hard_reset(config, csms, update)
    assert statuses(csms) == ["Downloading", "Downloaded", "Installing"]  # Installed: after
    assert firmware_files(config) == []  # the file is gone once installed
    await next_boot(config, csms)
    await next_boot(config, csms)  # and once more: nothing is told twice
    assert statuses(csms) == ["Downloading", "Downloaded", "Installing", "Installed"]
    configured = config.charge_point.firmware_version
    assert versions_booted(csms) == [configured, VERSION, VERSION]
    events = [(p["type"], p.get("tech_info")) for p in csms.received("SecurityEventNotification")]
    assert events.count(("FirmwareUpdated", f"firmware {VERSION} installed")) == 1
    assert (
        "StartupOfTheDevice",
        f"reboot after the firmware update to {VERSION}",
    ) in events
    assert ("ResetOrReboot", "reboot into the installed firmware") in events
    return csms


@pytest.mark.tc("TC_044_1")
@pytest.mark.parametrize("scheme", ["http", "ftp"])
async def test_tc_044_1_firmware_is_downloaded_installed_and_reported_installed_once(
    scheme: str, http: FileServer, ftp: Callable[..., FtpServer], tmp_path: Path
) -> None:
    url, _ = await location(scheme, http, ftp, IMAGE)
    await installs_and_reports_installed_once(config_for(tmp_path), url)


@pytest.mark.tc("TC_044_1")
@pytest.mark.parametrize("scheme", ["https", "ftps"])
async def test_tc_044_1_firmware_over_tls_is_downloaded_from_a_verified_server(
    scheme: str, tls: Tls, ftp: Callable[..., FtpServer], tmp_path: Path
) -> None:
    config = config_for(tmp_path, tls=tls)
    if scheme == "ftps":
        await installs_and_reports_installed_once(config, ftp(tls).serve(IMAGE))
        return
    server = FileServer(files={PATH: IMAGE}, credentials=(USER, PASSWORD))
    async with serve_files(server, tls.server_context):
        await installs_and_reports_installed_once(config, server.url(PATH, f"{USER}:{PASSWORD}"))


async def test_the_operator_sees_the_update_with_its_progress_and_without_credentials(
    http: FileServer, tmp_path: Path
) -> None:
    config = config_for(tmp_path)
    url = http_url(http, IMAGE)

    async def update(h: Harness) -> None:
        await update_firmware(h, url, retries=2)
        await wait_statuses(h, "Downloading", "Downloaded")
        shown = h.station.snapshot()["chargePoint"]["firmware"]
        assert shown["version"] == config.charge_point.firmware_version
        update = shown["update"]
        assert update["location"] == http.url(PATH)
        assert (update["attempt"], update["attempts"]) == (1, 3)
        assert update["bytesDone"] == update["bytesTotal"] == len(IMAGE)
        assert update["percent"] == 100.0
        assert update["fileName"] == "dcocpp-2.0.bin"
        assert PASSWORD not in json.dumps(h.station.snapshot())
        assert "firmware" in format_status(h.station.snapshot())

    await until_hard_reset(config, FakeCsms(), update)


# --- TC_044_2: the download fails ----------------------------------------------------------------


@pytest.mark.tc("TC_044_2")
@pytest.mark.parametrize("scheme", ["http", "ftp"])
async def test_tc_044_2_download_failed_after_exactly_retries_plus_one_attempts(
    scheme: str, http: FileServer, ftp: Callable[..., FtpServer], tmp_path: Path
) -> None:
    url, seen = await location(scheme, http, ftp, IMAGE)
    url = url.replace("dcocpp-2.0.bin", "missing.bin")
    async with running_station(config_for(tmp_path)) as h:
        await h.booted()
        began = trio.current_time()
        await update_firmware(h, url, retries=2, retry_interval=1)
        await wait_statuses(h, "Downloading", "DownloadFailed")
        assert trio.current_time() - began >= 2  # two intervals between three attempts
        if scheme == "ftp":
            await h.wait_until(lambda: seen() == 3, limit=5, poll=0.05)
        assert seen() == 3
        shown = h.station.snapshot()["chargePoint"]["firmware"]
        assert shown["status"] == "DownloadFailed"
        assert shown["update"]["phase"] == "ended" and shown["update"]["error"]
        assert firmware_files(h.station.config) == []
        await trio.sleep(0.3)
        assert statuses(h.csms) == ["Downloading", "DownloadFailed"]
        assert [c.machine.status for c in h.station.connectors.values()] == ["Available"] * 2


async def test_a_location_that_is_no_transfer_url_fails_after_one_attempt(
    tmp_path: Path,
) -> None:
    """No retry mends it: a central system asking for 2**31 - 1 retries with no interval
    gets DownloadFailed at once, not a charger busy retrying for ever (found by the CSMS
    fuzz test)."""
    async with running_station(config_for(tmp_path)) as h:
        await h.booted()
        await update_firmware(h, "not a URL at all", retries=2**31 - 1, retry_interval=0)
        await wait_statuses(h, "Downloading", "DownloadFailed")
        update = h.station.snapshot()["chargePoint"]["firmware"]["update"]
    assert (update["attempt"], update["attempts"], update["phase"]) == (1, 1, "ended")
    assert update["error"] == (
        "not a URL at all: no scheme (only ftp://, ftps://, http://, https://)"
    )


# --- TC_044_3: not an image ----------------------------------------------------------------------


@pytest.mark.tc("TC_044_3")
@pytest.mark.parametrize("scheme", ["http", "ftp"])
async def test_tc_044_3_a_file_that_is_no_image_is_installation_failed_and_the_guns_return(
    scheme: str, http: FileServer, ftp: Callable[..., FtpServer], tmp_path: Path
) -> None:
    url, _ = await location(scheme, http, ftp, NOT_AN_IMAGE)
    config = config_for(tmp_path)
    async with running_station(config) as h:
        await h.booted()
        since = h.csms.mark()
        await update_firmware(h, url)
        await wait_statuses(h, "Downloading", "Downloaded", "Installing", "InstallationFailed")
        # Held for the install, then back to what the central system set (operative).
        for cid in (1, 2):
            await h.wait_status(cid, "Unavailable", since=since, limit=LIMIT)
            await h.wait_machine_status(cid, "Available", limit=LIMIT)
        assert firmware_files(config) == []
        await trio.sleep(0.3)
        assert "Installed" not in statuses(h.csms)
        assert h.station.snapshot()["chargePoint"]["firmware"]["version"] == (
            config.charge_point.firmware_version
        )


# --- TC_054: triggered statuses ------------------------------------------------------------------


async def trigger(h: Harness, message: str) -> str:
    since = h.csms.mark()
    result = await h.csms_call(call.TriggerMessage(requested_message=message))
    assert result.status == "Accepted"
    await h.wait_until(lambda: bool(h.csms.received(message, since)), limit=LIMIT, poll=0.02)
    return str(h.csms.received(message, since)[0]["status"])


@pytest.mark.tc("TC_054")
async def test_tc_054_triggered_firmware_status_is_the_current_step_or_idle(
    http: FileServer, tmp_path: Path
) -> None:
    config = config_for(tmp_path, hook=["/bin/sh", "-c", "sleep 1; exit 1", "hook"])
    url = http_url(http, IMAGE)
    del http.files[PATH]  # not there yet: the first attempt fails
    async with running_station(config) as h:
        await h.booted()
        fw = "FirmwareStatusNotification"
        assert await trigger(h, fw) == "Idle"
        await update_firmware(h, url, after=3600)
        assert await trigger(h, fw) == "Idle"  # waiting for its retrieveDate: nothing done yet
        await update_firmware(h, url, retries=1, retry_interval=3)  # replaces it: at once

        def between_attempts() -> bool:
            update = h.station.snapshot()["chargePoint"]["firmware"]["update"]
            return update["nextAttemptAt"] is not None and update["phase"] == "downloading"

        await h.wait_until(between_attempts, limit=LIMIT, poll=0.01)
        assert await trigger(h, fw) == "Downloading"  # also between attempts
        assert "waiting: next attempt at" in format_status(h.station.snapshot())
        http.files[PATH] = IMAGE
        await h.wait_until(lambda: "Installing" in statuses(h.csms), limit=LIMIT, poll=0.05)
        assert await trigger(h, fw) == "Installing"
        await h.wait_until(lambda: "InstallationFailed" in statuses(h.csms), limit=LIMIT)
        assert await trigger(h, fw) == "Idle"  # the last one ended


# --- faults of the server, the network and the disk ----------------------------------------------


async def test_a_server_certificate_that_fails_verification_fails_each_attempt_at_once(
    tls: Tls, tmp_path: Path
) -> None:
    server = FileServer(files={PATH: IMAGE})
    async with (
        serve_files(server, tls.stranger_context),
        running_station(config_for(tmp_path, tls=tls)) as h,
    ):
        await h.booted()
        began = trio.current_time()
        await update_firmware(h, server.url(PATH), retries=1, retry_interval=1)
        await wait_statuses(h, "Downloading", "DownloadFailed")
        assert trio.current_time() - began < 10  # not at the attempts' deadline
        error = h.station.snapshot()["chargePoint"]["firmware"]["update"]["error"]
        assert "not trusted" in error
        assert server.requests == []


class CutThenSilent(FileServer):
    """Cuts the first answer mid-file, then answers nothing until `silent` is cleared."""

    async def _get(self, stream: Any, connection: Any, seen: Any) -> bool:
        cutting = self.cut_after is not None
        answered = await super()._get(stream, connection, seen)
        if cutting and not answered:
            self.silent = True
        return answered


async def test_a_connection_cut_mid_file_is_resumed_and_the_installed_image_is_complete(
    http: FileServer, tmp_path: Path
) -> None:
    http.cut_after = 100_000
    await installs_and_reports_installed_once(config_for(tmp_path), http_url(http, IMAGE))
    gets = http.requests_of("GET")
    assert len(gets) == 2 and gets[1].headers["range"] == "bytes=100000-"


async def test_a_restart_during_the_download_resumes_it_with_one_downloading(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path)
    csms = FakeCsms(security_events=True)
    server = CutThenSilent(files={PATH: IMAGE}, cut_after=100_000)
    async with serve_files(server):
        url = server.url(PATH)
        async with running_station(config, csms) as h:
            await h.booted()
            await update_firmware(h, url)
            part = partial_path(config.data_dir / FIRMWARE_DIR / "dcocpp-2.0.bin")
            await h.wait_until(lambda: len(server.requests) == 2, limit=LIMIT, poll=0.02)
            assert part.stat().st_size == 100_000
        # The process is gone mid-download; the next one resumes where it was.
        server.silent = False
        await until_hard_reset(config, csms, nothing)
        assert server.requests[-1].headers["range"] == "bytes=100000-"
        await next_boot(config, csms)
    assert statuses(csms) == ["Downloading", "Downloaded", "Installing", "Installed"]
    assert versions_booted(csms)[-1] == VERSION


async def test_a_server_that_never_answers_fails_each_attempt_at_its_deadline(
    http: FileServer, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    http.silent = True
    async with running_station(config_for(tmp_path)) as h:
        await h.booted()
        began = trio.current_time()
        await update_firmware(h, http_url(http, IMAGE), retries=1, retry_interval=10)
        await wait_statuses_virtual(h, "Downloading", "DownloadFailed")
        elapsed = trio.current_time() - began
        deadline = firmware_service.ATTEMPT_TIMEOUT
        # Not before the deadlines; bounded after them (real socket I/O under the autojump
        # clock lets it jump to other timers now and then: up to a few hundred seconds).
        assert 2 * deadline + 10 <= elapsed < 4 * deadline
        error = h.station.snapshot()["chargePoint"]["firmware"]["update"]["error"]
        assert error == f"no answer within {deadline:g} s"


async def wait_statuses_virtual(h: Harness, *expected: str) -> None:
    await h.wait_until(lambda: len(statuses(h.csms)) >= len(expected), limit=3600)
    assert statuses(h.csms) == list(expected)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
async def test_a_full_disk_is_download_failed_and_nothing_is_installed(
    http: FileServer, tmp_path: Path
) -> None:
    config = config_for(tmp_path)
    folder = config.data_dir / FIRMWARE_DIR
    folder.mkdir(parents=True)
    partial_path(folder / "dcocpp-2.0.bin").symlink_to("/dev/full")
    async with running_station(config) as h:
        await h.booted()
        await update_firmware(h, http_url(http, IMAGE))
        await wait_statuses(h, "Downloading", "DownloadFailed")
        error = h.station.snapshot()["chargePoint"]["firmware"]["update"]["error"]
        assert "no space left on device" in error
        assert firmware_files(config) == []
        assert h.station.snapshot()["chargePoint"]["firmware"]["version"] == (
            config.charge_point.firmware_version
        )


# --- the plan across restarts --------------------------------------------------------------------


async def test_a_retrieve_date_in_the_future_is_waited_for_across_a_restart(
    http: FileServer, tmp_path: Path
) -> None:
    config = config_for(tmp_path)
    csms = FakeCsms(security_events=True)
    url = http_url(http, IMAGE)
    async with running_station(config, csms) as h:
        await h.booted()
        await update_firmware(h, url, after=4)
        await trio.sleep(1)
        shown = h.station.snapshot()["chargePoint"]["firmware"]
        assert shown["update"]["phase"] == "scheduled"
        assert shown["update"]["nextAttemptAt"] == shown["update"]["retrieveDate"]
    assert http.requests == [] and statuses(csms) == []
    began = trio.current_time()

    async def wait(h: Harness) -> None:
        await wait_statuses(h, "Downloading", "Downloaded", "Installing")

    await until_hard_reset(config, csms, wait)
    assert trio.current_time() - began >= 2  # not before its retrieveDate
    await next_boot(config, csms)
    assert statuses(csms) == ["Downloading", "Downloaded", "Installing", "Installed"]


async def test_a_restart_during_installing_reports_installation_failed_once(
    http: FileServer, tmp_path: Path
) -> None:
    config = config_for(tmp_path, hook=["/bin/sh", "-c", "sleep 60", "hook"])
    csms = FakeCsms()
    async with running_station(config, csms) as h:
        await h.booted()
        await update_firmware(h, http_url(http, IMAGE))
        await wait_statuses(h, "Downloading", "Downloaded", "Installing")
        outbox = h.station.outbox
        assert outbox is not None
        await h.wait_until(lambda: outbox.empty, limit=LIMIT, poll=0.02)  # Installing answered
    # Killed during the install: its outcome is unknown.
    for _ in range(2):
        async with running_station(config, csms) as h:
            await h.booted()
            await h.wait_until(lambda: "InstallationFailed" in statuses(csms), limit=LIMIT)
            await trio.sleep(0.2)
            assert [c.machine.status for c in h.station.connectors.values()] == ["Available"] * 2
            assert await trigger(h, "FirmwareStatusNotification") == "Idle"
    told = [s for s in statuses(csms) if s != "Idle"]  # the triggered ones aside
    assert told == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]
    assert firmware_files(config) == []


# --- the guns during an update -------------------------------------------------------------------


async def test_the_install_waits_for_a_running_transaction_and_availability_is_restored(
    http: FileServer, tmp_path: Path
) -> None:
    config = config_for(tmp_path)
    async with running_station(config) as h:
        await h.booted()
        transaction_id = await h.start_charging(1, "TAG-1")
        await update_firmware(h, http_url(http, NOT_AN_IMAGE))
        await wait_statuses(h, "Downloading", "Downloaded")
        await h.wait_machine_status(2, "Unavailable", limit=LIMIT)  # idle: held
        assert h.connector(1).machine.status == "Charging"  # goes on
        await trio.sleep(0.5)
        assert statuses(h.csms) == ["Downloading", "Downloaded"]  # no install meanwhile
        with pytest.raises(ValueError, match="held for a firmware install"):
            await h.station.present_id(2, "TAG-2")
        result = await h.csms_call(call.RemoteStartTransaction(id_tag="TAG-2", connector_id=2))
        assert result.status == "Rejected"
        # The central system takes gun 2 out of service meanwhile: that is what counts after.
        result = await h.csms_call(call.ChangeAvailability(connector_id=2, type="Inoperative"))
        assert result.status == "Accepted"
        since = h.csms.mark()
        await h.csms_call(call.RemoteStopTransaction(transaction_id=transaction_id))
        await wait_statuses(h, "Downloading", "Downloaded", "Installing", "InstallationFailed")
        stop = h.csms.index_of("StopTransaction")
        installing = next(
            i
            for i, (_, action, p) in enumerate(h.csms.calls)
            if action == "FirmwareStatusNotification" and p["status"] == "Installing"
        )
        assert since <= stop < installing
        await h.hardware.unplug(1)
        await h.wait_machine_status(1, "Available", limit=LIMIT)
        await trio.sleep(0.3)
        assert h.connector(2).machine.status == "Unavailable"  # Inoperative, as set
        assert len(h.csms.received("StartTransaction")) == 1


async def test_a_second_update_replaces_the_first_before_its_install_and_is_refused_during_it(
    http: FileServer, tmp_path: Path
) -> None:
    marker = tmp_path / "hook-ran"
    hook = ["/bin/sh", "-c", f'echo "$1 $2" > {marker}; sleep 2; exit 1', "hook"]
    config = config_for(tmp_path, hook=hook)
    first = CutThenSilent(files={"/fw/first.bin": IMAGE}, cut_after=50_000)
    async with serve_files(first), running_station(config) as h:
        await h.booted()
        await update_firmware(h, first.url("/fw/first.bin"))
        await h.wait_until(lambda: len(first.requests) == 2, limit=LIMIT, poll=0.02)
        assert "first.bin.part" in firmware_files(config)
        await update_firmware(h, http_url(http, IMAGE))
        assert "first.bin.part" not in firmware_files(config)  # the first one's files are gone
        await wait_statuses(h, "Downloading", "Downloading", "Downloaded", "Installing")
        with pytest.raises(CallError) as refused:
            await update_firmware(h, http_url(http, IMAGE))
        assert refused.value.code == "GenericError"
        assert "in progress" in refused.value.description
        await h.wait_until(lambda: "InstallationFailed" in statuses(h.csms), limit=LIMIT)
        path = config.data_dir / FIRMWARE_DIR / "dcocpp-2.0.bin"
        assert marker.read_text().split() == [str(path), VERSION]
        await trio.sleep(0.3)
        assert statuses(h.csms) == [
            "Downloading",  # the first plan's
            "Downloading",
            "Downloaded",
            "Installing",
            "InstallationFailed",
        ]


# --- the install hook ----------------------------------------------------------------------------


def hook_script(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "install-firmware"
    script.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    script.chmod(0o755)
    return [str(script), "--verbose"]


async def test_an_install_hook_that_exits_0_installs(http: FileServer, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    body = f'echo "$1|$2|$3|$DCOCPP_FIRMWARE_FILE|$DCOCPP_FIRMWARE_VERSION" > {seen}\necho done'
    config = config_for(tmp_path, hook=hook_script(tmp_path, body))
    await installs_and_reports_installed_once(config, http_url(http, IMAGE))
    path = str(config.data_dir / FIRMWARE_DIR / "dcocpp-2.0.bin")
    assert seen.read_text().strip().split("|") == ["--verbose", path, VERSION, path, VERSION]


async def test_an_install_hook_that_exits_1_is_installation_failed(
    http: FileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_for(tmp_path, hook=hook_script(tmp_path, "echo cannot flash >&2\nexit 1"))
    async with running_station(config) as h:
        await h.booted()
        await update_firmware(h, http_url(http, IMAGE))
        await wait_statuses(h, "Downloading", "Downloaded", "Installing", "InstallationFailed")
        error = h.station.snapshot()["chargePoint"]["firmware"]["update"]["error"]
        assert error == "install command exited with status 1"
    assert "cannot flash" in caplog.text  # its output is logged
    assert versions_booted(h.csms) == [config.charge_point.firmware_version]


async def test_an_install_hook_past_its_time_limit_is_killed_and_installation_failed(
    http: FileServer, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    body = f"sleep 60 &\necho $$ $! > {pids}\nwait"
    config = config_for(tmp_path, hook=hook_script(tmp_path, body), timeout=1.0)
    async with running_station(config) as h:
        await h.booted()
        await update_firmware(h, http_url(http, IMAGE))
        await wait_statuses(h, "Downloading", "Downloaded", "Installing", "InstallationFailed")
        error = h.station.snapshot()["chargePoint"]["firmware"]["update"]["error"]
        assert error == "install command killed after its time limit of 1 s"
    for pid in map(int, pids.read_text().split()):  # the hook and its child
        assert not alive(pid)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except (OSError, IndexError):
        return False


# --- configuration and storage -------------------------------------------------------------------


def test_the_install_hook_in_charger_json_is_checked(tmp_path: Path) -> None:
    document = json.loads((REPO / "configs" / "charger.json").read_text(encoding="utf-8"))
    for key, value in document["security"].items():
        document["security"][key] = str((REPO / "configs" / value).resolve())
    path = tmp_path / "charger.json"

    def load(firmware: Any) -> ChargerConfig:
        path.write_text(json.dumps({**document, "firmware": firmware}), encoding="utf-8")
        return load_charger_config(path)

    config = load({"installCommand": ["/usr/bin/rauc", "install"], "installTimeoutSeconds": 30})
    assert config.firmware == FirmwareConfig(("/usr/bin/rauc", "install"), 30.0)
    assert load({}).firmware == FirmwareConfig(None, 600.0)
    for bad, reason in [
        ({"installCommand": []}, "firmware.installCommand: must be a non-empty list of strings"),
        ({"installCommand": "/bin/x"}, "firmware.installCommand: must be a non-empty list"),
        ({"installCommand": ["/bin/x", 1]}, "firmware.installCommand: must be a non-empty"),
        ({"installTimeoutSeconds": 0}, "firmware.installTimeoutSeconds: must be a positive"),
        ({"installTimeoutSeconds": "10"}, "firmware.installTimeoutSeconds: must be a number"),
        ({"command": ["/bin/x"]}, "firmware.command: unknown field"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load(bad)
        assert str(caught.value).startswith(reason), (bad, str(caught.value))


def test_a_firmware_plan_row_that_cannot_be_read_is_dropped_with_one_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database.open(tmp_path)
    try:
        db._db.execute(
            "INSERT INTO firmware_plan (id, location, retrieve_date, attempts, retry_interval,"
            " attempt, phase, expected_version, file_name)"
            " VALUES (0, 'http://x/f', 'soon', 1, 60, 0, 'scheduled', NULL, 'f')"
        )
        db._db.commit()
        assert db.firmware_plan() is None
        assert db.firmware_plan() is None  # dropped
    finally:
        db.close()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "retrieve_date 'soon' is not a timestamp" in errors[0]
